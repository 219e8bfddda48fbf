"""The baseline of ``bench/chain.py``: a plain Celery chain doing dunlink's work without its durability.

The same web stack takes the IPN (FastAPI under uvicorn, signature checked, JSON parsed with
``platforms.copecart.ipn``), then publishes a chain of four tasks straight away, with nothing stored:

    fetch (GET the original)  ->  create (POST the replacement)  ->  cancel (POST cancel the original)
        ->  email (render with adapters/email/render.py, compose, send over SMTP)

The platform calls go through the same ``HttpPlatform`` adapter to the same sandbox, the replacement plan
comes from the same domain function, and the email is the same payment-link email. What is left out is
everything that makes dunlink safe to run twice or to crash: no inbox, no case row, no leases, no email
ledger, no relay, no late acks. A lost message here is a lost case.

    python bench/chain_app.py api --port 8001        # the intake
    celery -A chain_app worker -c 2 ...               # from bench/, the worker

Settings come from the same DUNLINK_* variables as dunlink (broker, platform, SMTP, vendors file).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from celery import Celery, chain  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import PlainTextResponse, Response  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402

from adapters.email.message import compose  # noqa: E402
from adapters.email.render import EmailRenderer, PaymentLinkContext, ScheduleLine  # noqa: E402
from adapters.email.smtp import SmtpSender  # noqa: E402
from adapters.platform.http import HttpPlatform  # noqa: E402
from adapters.platform.port import Buyer, NewOrder, Plan  # noqa: E402
from domain.plans import InstallmentPlan, InstallmentStatus, replacement_plan  # noqa: E402
from dunlink.config.settings import settings  # noqa: E402
from dunlink.config.vendors import Vendor, load_vendors  # noqa: E402
from platforms.copecart import ipn  # noqa: E402
from platforms.copecart.webhook import SIGNATURE_HEADER, signature_matches  # noqa: E402

QUEUE = "chain"
app = Celery("chain", broker=settings().broker_url)
app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True, result_backend=None,
                worker_prefetch_multiplier=1, task_default_queue=QUEUE, worker_send_task_events=False,
                task_send_sent_event=False, broker_connection_retry_on_startup=True, timezone="UTC")


@lru_cache(maxsize=1)
def vendors() -> dict[str, Vendor]:
    return load_vendors(settings().vendors_file)


@lru_cache(maxsize=1)
def platform() -> HttpPlatform:
    config = settings()
    return HttpPlatform(config.platform_url, config.platform_token, read_timeout=config.platform_timeout,
                        connect_timeout=min(3.0, config.platform_timeout))


@lru_cache(maxsize=1)
def renderer() -> EmailRenderer:
    return EmailRenderer()


@app.task(name="chain.fetch")  # type: ignore[untyped-decorator]
def fetch(job: dict[str, Any]) -> dict[str, Any]:
    order = platform().get_order(job["order_id"])
    original = InstallmentPlan.from_order(order.to_json())
    failed = job["installment"]
    if original.installment(failed).status is InstallmentStatus.OPEN:
        original = original.with_status(failed, InstallmentStatus.FAILED)
    vendor = vendors()[job["vendor"]]
    today = datetime.now(UTC).astimezone(vendor.zone).date()
    planned = replacement_plan(original, kind=vendor.policy.replacement, failed_number=failed, today=today)
    assert planned is not None
    buyer = order.buyer
    return {**job, "plan": planned.to_json(), "currency": planned.currency, "product_id": order.product_id,
            "product_name": order.product_name,
            "buyer": {"id": buyer.id, "email": buyer.email, "first_name": buyer.first_name,
                      "last_name": buyer.last_name, "country_code": buyer.country_code}}


@app.task(name="chain.create")  # type: ignore[untyped-decorator]
def create(job: dict[str, Any]) -> dict[str, Any]:
    new = NewOrder(vendor=job["vendor"], product_id=job["product_id"], currency=job["currency"],
                   buyer=Buyer(**job["buyer"]), plan=Plan.parse(job["plan"]), replaces=job["order_id"],
                   metadata={"failed_installment": str(job["installment"])})
    order = platform().create_order(new, idempotency_key=f"chain-{job['order_id']}-create")
    return {**job, "replacement_id": order.id, "payment_url": order.payment_url}


@app.task(name="chain.cancel")  # type: ignore[untyped-decorator]
def cancel(job: dict[str, Any]) -> dict[str, Any]:
    platform().cancel_order(job["order_id"], idempotency_key=f"chain-{job['order_id']}-cancel",
                            reason=f"replaced by order {job['replacement_id']}")
    return job


@app.task(name="chain.email")  # type: ignore[untyped-decorator]
def email(job: dict[str, Any]) -> str:
    vendor = vendors()[job["vendor"]]
    plan = InstallmentPlan.from_order({"currency": job["currency"], "plan": job["plan"]})
    buyer = job["buyer"]
    case_id = f"chain-{job['order_id']}"
    rendered = renderer().payment_link(PaymentLinkContext(
        case_id=case_id, locale=vendor.locale, vendor_name=vendor.name, buyer_first_name=buyer["first_name"],
        buyer_last_name=buyer["last_name"], product_name=job["product_name"], outstanding=plan.outstanding,
        installments_left=len(plan.installments),
        schedule=tuple(ScheduleLine(i.number, i.amount, i.due_date) for i in plan.installments),
        payment_url=job["payment_url"], reply_to=vendor.reply_to, accent_colour=vendor.accent_colour,
        logo_url=vendor.logo_url, order_id=job["order_id"]))
    message = compose(rendered=rendered, case_id=case_id, step="payment_link", to_address=buyer["email"],
                      to_name=f"{buyer['first_name']} {buyer['last_name']}".strip(),
                      from_address=settings().mail_from, from_name=vendor.name, reply_to=vendor.reply_to,
                      sent_at=datetime.now(UTC))
    SmtpSender.from_url(settings().smtp_url).send(message)
    return "sent"


def intake_app() -> FastAPI:
    """The same checks as dunlink's webhook up to the store, then the chain is published instead."""
    web = FastAPI(docs_url=None, redoc_url=None)

    async def copecart(request: Request) -> Response:
        vendor: str = request.path_params["vendor"]
        body = await request.body()
        config = vendors().get(vendor)
        if config is None:
            return PlainTextResponse("unknown vendor", status_code=404)
        if not signature_matches(config.copecart_ipn_secret, body, request.headers.get(SIGNATURE_HEADER)):
            return PlainTextResponse("signature missing or wrong", status_code=401)
        event = ipn.parse_event(json.loads(body.decode("utf-8")))
        if event.event_type == ipn.FAILED and event.starts_dunning and event.rate_number is not None:
            job = {"vendor": vendor, "order_id": event.order_id, "installment": event.rate_number}
            await run_in_threadpool(chain(fetch.s(job), create.s(), cancel.s(), email.s()).apply_async)
        return PlainTextResponse("OK")

    # A plain route, as dunlink's webhook is: no parameter solving on either side.
    web.add_route("/webhooks/copecart/{vendor}", copecart, methods=["POST"], include_in_schema=False)

    @web.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return web


if __name__ == "__main__" and sys.argv[1:2] == ["api"]:
    import uvicorn

    uvicorn.run(intake_app(), host="127.0.0.1", port=int(sys.argv[3]), log_level="warning", access_log=False,
                log_config=None)
