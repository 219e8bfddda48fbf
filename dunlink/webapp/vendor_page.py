"""The vendor page, served by ``dunlink api``: where a vendor who makes replacements by hand in CopeCart sees
what to enter, pastes the link it made and says the original is cancelled.

``/vendor/cases/{token}``: the token is the case id signed with ``DUNLINK_SECRET_KEY``
(:mod:`adapters.web.tokens`). An unknown, altered or foreign token, or a case that is over, answers a plain
404 that says nothing more. Forms are POST only and answer ``303`` to the page by a relative ``Location``
(never built from the request's Host). No cookies are set; every answer says ``Referrer-Policy: no-referrer``
(the token must not leak to CopeCart when the vendor follows a link) and carries a strict Content Security
Policy: the page's only script and style come from ``/vendor/static/``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from adapters.web.vendor_page import PAGE_HEADERS, VendorPage, VendorPageContext
from domain.case import DEACTIVATE_EXPIRED, CaseState, DunningCase
from domain.links import LinkProblem
from dunlink.runtime.bootstrap import Services
from dunlink.usecases.vendor_actions import ActionResult, Answer, cannot_generate, give_link, original_cancelled
from dunlink.usecases.vendor_made import page_path, task_context

# A form with a link and an order id: anything larger is not one of ours.
MAX_FORM = 8 * 1024
# The page's own headers (a strict CSP, no referrer, no caching), and no framing by older browsers either.
_HEADERS = {**PAGE_HEADERS, "X-Frame-Options": "DENY"}
_WAITING = {
    CaseState.PLANNED: "link", CaseState.AWAITING_VENDOR_LINK: "link",
    CaseState.AWAITING_ORIGINAL_CANCEL: "original_cancelled", CaseState.NEEDS_PERSON: "person",
    CaseState.ORIGINAL_CANCELLED: "buyer_payment", CaseState.AWAITING_PAYMENT: "buyer_payment",
    CaseState.DEACTIVATING_LINK: "ended",
}


def _not_found() -> Response:
    return PlainTextResponse("Not Found", status_code=404, headers=_HEADERS)


def add_vendor_routes(app: FastAPI, services: Services) -> None:
    """Serve the vendor page; without DUNLINK_SECRET_KEY there is none (every path is a 404)."""
    tokens = services.tokens
    if tokens is None:
        return
    page = VendorPage()

    def case_of(token: str) -> DunningCase | None:
        case_id = tokens.case_id(token)
        if case_id is None:
            return None
        with services.uow() as uow:
            case = uow.cases.get(case_id)
        if case is None or not case.by_vendor or case.is_closed or case.replacement is None \
                or case.vendor not in services.vendors:
            return None
        return case

    def render(case: DunningCase, *, status: int = 200, problem: str | None = None,
               problem_host: str | None = None) -> Response:
        vendor = services.vendors[case.vendor]
        path = page_path(services, case.id)
        ended_as = None
        if case.state is CaseState.DEACTIVATING_LINK:
            ended_as = "lost" if case.reason == DEACTIVATE_EXPIRED else "resolved"
        context = VendorPageContext(
            task=task_context(services, case, vendor), waiting_for=_WAITING.get(case.state, "ended"),
            payment_url=case.payment_url, new_order_id=case.replacement_order_id,
            original_cancelled=case.original_known_cancelled, buyer_emailed=case.link_sent_at is not None,
            cannot_generate=case.cannot_generate, ended_as=ended_as, problem=problem, problem_host=problem_host,
            allowed_hosts=vendor.payment_hosts, link_action=f"{path}/link",
            cancelled_action=f"{path}/original-cancelled", cannot_generate_action=f"{path}/cannot-generate")
        return HTMLResponse(page.render(context), status_code=status, headers=_HEADERS)

    async def show(request: Request) -> Response:
        """``GET /vendor/cases/{token}``: the page, or 404."""
        case = await run_in_threadpool(case_of, request.path_params["token"])
        if case is None:
            return _not_found()
        return await run_in_threadpool(render, case)

    def acting(act: Callable[[str, dict[str, str]], ActionResult]) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            token = request.path_params["token"]
            case = await run_in_threadpool(case_of, token)
            if case is None:
                return _not_found()
            form = await _form(request)
            if form is None:
                return PlainTextResponse("a form of at most 8 KiB, application/x-www-form-urlencoded",
                                         status_code=400, headers=_HEADERS)
            result = await run_in_threadpool(act, case.id, form)
            return await run_in_threadpool(_answer, result, token, case)

        return handler

    def _answer(result: ActionResult, token: str, case: DunningCase) -> Response:
        if result.answer in (Answer.RECORDED, Answer.UNCHANGED):
            headers = dict(_HEADERS, Location=f"/vendor/cases/{token}")  # relative: never from the Host header
            return Response(status_code=303, headers=headers)
        if result.answer is Answer.NOT_FOUND:
            return _not_found()
        if result.answer is Answer.BUSY:
            return PlainTextResponse(result.message, status_code=503, headers=dict(_HEADERS, **{"Retry-After": "2"}))
        shown = result.case or case
        if shown.is_closed:
            return _not_found()
        if result.answer is Answer.REFUSED:
            refused = result.refused
            return render(shown, status=400, problem=refused.problem.value if refused else LinkProblem.NOT_A_URL,
                          problem_host=refused.host if refused else None)
        return render(shown, status=409, problem="link_already_sent")

    def link(case_id: str, form: dict[str, str]) -> ActionResult:
        return give_link(services, case_id, form.get("payment_url", ""), order_id=form.get("order_id"))

    # Every method reaches these handlers, so that even a 405 carries the page's headers (the framework's own
    # answers would not); anything else under /vendor/ is the catch-all's plain 404.
    routes = {
        "/vendor/cases/{token}": (show, ("GET", "HEAD")),
        "/vendor/cases/{token}/link": (acting(link), ("POST",)),
        "/vendor/cases/{token}/original-cancelled": (
            acting(lambda case_id, _form: original_cancelled(services, case_id, by="vendor_page")), ("POST",)),
        "/vendor/cases/{token}/cannot-generate": (
            acting(lambda case_id, _form: cannot_generate(services, case_id)), ("POST",)),
    }
    for path, (handler, allowed) in routes.items():
        app.add_route(path, _only(handler, allowed), methods=list(_ANY_METHOD), include_in_schema=False)

    async def static(request: Request) -> Response:
        try:
            content, content_type = page.asset(request.path_params["name"])
        except KeyError:
            return _not_found()
        return Response(content, media_type=content_type,
                        headers=dict(_HEADERS, **{"Cache-Control": "public, max-age=3600"}))

    app.add_route("/vendor/static/{name}", _only(static, ("GET", "HEAD")), methods=list(_ANY_METHOD),
                  include_in_schema=False)

    async def elsewhere(_request: Request) -> Response:
        return _not_found()

    app.add_route("/vendor/{rest:path}", elsewhere, methods=list(_ANY_METHOD), include_in_schema=False)


_ANY_METHOD = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _only(handler: Callable[[Request], Awaitable[Response]],
          allowed: tuple[str, ...]) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` for the ``allowed`` methods; a 405 with the page's headers for the others."""
    async def answer(request: Request) -> Response:
        if request.method not in allowed:
            return PlainTextResponse("Method Not Allowed", status_code=405,
                                     headers=dict(_HEADERS, Allow=", ".join(allowed)))
        return await handler(request)

    return answer


async def _form(request: Request) -> dict[str, str] | None:
    """The urlencoded form of a vendor page POST, bounded; None for anything else."""
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > MAX_FORM:
            return None
    try:
        fields = parse_qs(received.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                          max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return None
    return {name: values[0] for name, values in fields.items() if values}
