"""The vendor page of a case: where a CopeCart vendor without an order API finds what to type into the phone
offer, pastes the payment link it made, and confirms that the original order is cancelled.

The page is a pure function of :class:`VendorPageContext`, rendered with the emails' Jinja2 environment (the
same filters, catalog and boundary for text from outside, :func:`adapters.email.render._from_outside`), so the
page and the task email say the same thing in the same words. It works without JavaScript: forms post as plain
HTML, and ``page.js`` only adds copy buttons. Nothing is inline, so the page runs under
:data:`CONTENT_SECURITY_POLICY`, which the route must send with it (:data:`PAGE_HEADERS`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from importlib import resources
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader

from adapters.email.render import LOCALES, VendorTaskContext, _environment, _from_outside, _translations

CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https:; "
                           "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
# The page's address carries the case's token: no referrer may leak it to a link the vendor follows, and no cache
# may keep it.
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
# Where the route serves :meth:`VendorPage.asset`; the page links its assets here.
STATIC_PATH = "/vendor/static/"
ASSETS = {"page.css": "text/css; charset=utf-8", "page.js": "text/javascript; charset=utf-8"}

WAITING_FOR = ("link", "original_cancelled", "person", "buyer_payment", "ended")
ENDINGS = ("recovered", "lost", "resolved", "cancelled")
PROBLEMS = ("not_a_url", "scheme_not_allowed", "host_not_allowed", "link_already_sent")
# A form action is a path on dunlink's own host: no scheme, no host, nothing that leaves the attribute.
_ACTION = re.compile(r"^/(?!/)[A-Za-z0-9._~!$&()*+,;=:@%/-]*$")


@dataclass(frozen=True, slots=True)
class VendorPageContext:
    """One case as its vendor page shows it: the task's facts and where the vendor's part stands.

    ``waiting_for`` is what dunlink waits for (``"link"``, ``"original_cancelled"``, ``"person"``,
    ``"buyer_payment"``, ``"ended"`` with ``ended_as``); ``problem`` the code of a link just refused, shown at the
    link form. The form actions default to the page's own path plus ``/link``, ``/original-cancelled`` and
    ``/cannot-generate``, as the api serves them.
    """

    task: VendorTaskContext
    waiting_for: str
    payment_url: str | None
    new_order_id: str | None
    original_cancelled: bool
    buyer_emailed: bool
    cannot_generate: bool
    ended_as: str | None
    problem: str | None = None
    problem_host: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    link_action: str = ""
    cancelled_action: str = ""
    cannot_generate_action: str = ""

    def __post_init__(self) -> None:
        if self.waiting_for not in WAITING_FOR:
            raise ValueError(f"waiting_for must be one of {', '.join(WAITING_FOR)}, got {self.waiting_for!r}")
        if (self.waiting_for == "ended") != (self.ended_as is not None):
            raise ValueError("ended_as says how the case ended, exactly when waiting_for is 'ended'")
        if self.ended_as is not None and self.ended_as not in ENDINGS:
            raise ValueError(f"ended_as must be one of {', '.join(ENDINGS)}, got {self.ended_as!r}")
        if self.problem is not None and self.problem not in PROBLEMS:
            raise ValueError(f"problem must be one of {', '.join(PROBLEMS)}, got {self.problem!r}")
        if self.payment_url is not None and not _is_web_url(self.payment_url):
            raise ValueError("payment_url must be an http:// or https:// URL without spaces or control characters")
        for name in ("link_action", "cancelled_action", "cannot_generate_action"):
            if getattr(self, name) and not _ACTION.match(getattr(self, name)):
                raise ValueError(f"{name} must be a path on this host, such as /vendor/cases/<token>/link")


class VendorPage:
    """Renders the vendor page in the vendor's locale and serves its two static files.

    Build one per process: it reads the catalogs, compiles the template and reads the assets once.
    """

    def __init__(self) -> None:
        loader = PackageLoader("templates", ".")
        self._environments: dict[str, Environment] = {
            locale: _environment(locale, loader, _translations(locale)) for locale in LOCALES
        }
        static = resources.files("templates").joinpath("vendor_page", "static")
        self._assets = {name: (static.joinpath(name).read_bytes(), kind) for name, kind in ASSETS.items()}

    def render(self, ctx: VendorPageContext) -> str:
        """The whole HTML document of the page, in ``ctx.task.locale``."""
        env = self._environments[ctx.task.locale]
        return env.get_template("vendor_page/page.html").render(_page_values(ctx))

    def asset(self, name: str) -> tuple[bytes, str]:
        """The bytes and content type of ``page.css`` or ``page.js``; any other name is a :class:`KeyError`."""
        return self._assets[name]


def _page_values(ctx: VendorPageContext) -> dict[str, object]:
    """What the template sees: every field across the boundary for text from outside, then what follows from
    the state (which forms apply), so the template only lays it out."""
    values: dict[str, object] = {f.name: _from_outside(f.name, getattr(ctx, f.name)) for f in fields(ctx)}
    task = ctx.task
    ended = ctx.waiting_for == "ended"
    page_path = urlsplit(task.page_url).path.rstrip("/")
    values.update(
        buyer_name=_from_outside("buyer_name", f"{task.buyer_first_name} {task.buyer_last_name}"),
        single=len(task.schedule) == 1,
        static=STATIC_PATH,
        link_action=ctx.link_action or f"{page_path}/link",
        cancelled_action=ctx.cancelled_action or f"{page_path}/original-cancelled",
        cannot_generate_action=ctx.cannot_generate_action or f"{page_path}/cannot-generate",
        # A link may be replaced until the buyer has it; after that a new one would leave them two to pay.
        show_link_form=not ended and not ctx.buyer_emailed,
        show_cancelled_form=not ended and not ctx.original_cancelled,
        show_cannot_generate_form=not ended and ctx.payment_url is None and not ctx.cannot_generate,
        show_exception_steps=not ended and ctx.payment_url is None and ctx.cannot_generate,
    )
    return values


def _is_web_url(url: str) -> bool:
    return url.startswith(("https://", "http://")) and url.isprintable() and not any(c.isspace() for c in url)
