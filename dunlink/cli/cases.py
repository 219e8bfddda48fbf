"""``dunlink cases``: what an operator needs to find, understand, retry or close a dunning case by hand.

The commands read and write the database through the same repositories and domain methods as the pipeline,
so a retry or a manual close is checked by the case's own rules and lands on its timeline like any other
step. Only ``retry`` touches the broker, and only to wake the case early: the database already says the case
is due, so the relay picks it up even when the broker cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from domain.case import CaseError, CaseState, DunningCase
from domain.money import Money
from domain.plans import Installment, InstallmentStatus
from dunlink.config.logs import mask_email
from dunlink.config.settings import Settings, settings

if TYPE_CHECKING:
    from adapters.db.uow import SqlUnitOfWork

Handler = Callable[[argparse.Namespace], int]

DEFAULT_LIMIT = 50
REASON_WIDTH = 48
AMBIGUOUS_SHOWN = 5  # ids named when a prefix matches several cases
# Detail keys of case events that hold amounts in minor units of the case's currency.
_AMOUNT_KEYS = frozenset({"outstanding", "amount"})
# On a timeline line the step comes first and long free text (an error, a reason, a note) last.
_DETAIL_ORDER = {"step": 0, "error": 2, "reason": 2, "note": 2}


class OpsError(Exception):
    """A request the operator has to change (unknown case, busy case, no database there); exit status 2."""


# -- wiring ---------------------------------------------------------------------------------------------------


@contextmanager
def _database(config: Settings) -> Iterator[SqlUnitOfWork]:
    """A unit of work on the configured database, and nothing else: no platform, mail or vendors needed."""
    from sqlalchemy.engine import make_url

    from adapters.db.engine import make_engine, make_session_factory
    from adapters.db.uow import SqlUnitOfWork

    url = make_url(config.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:" \
            and not url.database.startswith("file:") and not Path(url.database).exists():
        # Opening it would create an empty file here and answer "no cases", which is not true anywhere.
        raise OpsError(f"no database at {url.database}: set DUNLINK_DATABASE_URL to the one dunlink uses")
    engine = make_engine(config.database_url, pool_size=1)
    try:
        with SqlUnitOfWork(make_session_factory(engine)) as uow:
            yield uow
    finally:
        engine.dispose()


def _run(body: Callable[[argparse.Namespace, Settings], int]) -> Handler:
    """Turn operator mistakes into one line and exit 2, and a database that cannot answer into exit 1."""

    def handler(args: argparse.Namespace) -> int:
        # Imported here, not at the top: every 'dunlink' command builds this parser, most never need a database.
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import SQLAlchemyError

        config = settings()
        try:
            return body(args, config)
        except (OpsError, CaseError) as exc:
            print(f"dunlink: {exc}", file=sys.stderr)
            return 2
        except SQLAlchemyError as exc:
            where = make_url(config.database_url).render_as_string(hide_password=True)
            cause = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            print(f"dunlink: the database at {where} cannot answer: {cause} "
                  "(is DUNLINK_DATABASE_URL right, and has 'dunlink db upgrade' run?)", file=sys.stderr)
            return 1

    return handler


def _now() -> datetime:
    return datetime.now(UTC)


# -- formatting -----------------------------------------------------------------------------------------------


def _when(moment: datetime | None, *, seconds: bool = True) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def _owed(case: DunningCase) -> str:
    return str(case.outstanding) if case.outstanding is not None else "-"


def _shorten(text: str | None, width: int) -> str:
    if not text:
        return ""
    text = " ".join(mask_email(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [header, ["-" * width for width in widths], *rows]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def _detail(detail: dict[str, Any], currency: str | None) -> str:
    """One event's detail as ``key=value`` pairs: amounts with their currency, emails masked."""
    parts = []
    for key, value in sorted(detail.items(), key=lambda item: _DETAIL_ORDER.get(item[0], 1)):
        if value is None:
            continue
        if key in _AMOUNT_KEYS and currency is not None and isinstance(value, int):
            value = Money(value, currency)
        parts.append(f"{key}={mask_email(str(value))}")
    return "  ".join(parts)


# -- list -----------------------------------------------------------------------------------------------------


def _state(text: str) -> str:
    try:
        return CaseState(text).value
    except ValueError:
        valid = ", ".join(state.value for state in CaseState)
        raise argparse.ArgumentTypeError(f"unknown state {text!r}; valid states: {valid}") from None


def _since(text: str) -> datetime:
    """An ISO-8601 date (midnight UTC) or datetime (UTC unless it names its offset)."""
    try:
        moment = datetime.fromisoformat(text)  # a bare date reads as its midnight
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO-8601 date or datetime: {text!r} (e.g. 2026-10-01 or 2026-10-01T08:00:00+02:00)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number above 0, got {text!r}")
    return value


def _case_json(case: DunningCase) -> dict[str, Any]:
    return {
        "id": case.id, "vendor": case.vendor, "original_order_id": case.original_order_id,
        "failed_installment": case.failed_installment, "state": case.state.value,
        "currency": case.currency, "outstanding_minor": case.outstanding_minor,
        "outstanding": case.outstanding.decimal_string() if case.outstanding is not None else None,
        "replacement_order_id": case.replacement_order_id, "payment_url": case.payment_url,
        "reason": mask_email(case.reason) if case.reason else None,
        "failed_step": case.failed_step.value if case.failed_step else None,
        "opened_at": case.opened_at.isoformat(), "updated_at": case.updated_at.isoformat(),
        "closed_at": case.closed_at.isoformat() if case.closed_at else None,
        "next_attempt_at": case.next_attempt_at.isoformat() if case.next_attempt_at else None,
    }


def _list(args: argparse.Namespace, config: Settings) -> int:
    with _database(config) as uow:
        cases = uow.cases.search(state=args.state, vendor=args.vendor, since=args.since, limit=args.limit)
    if args.json:
        print(json.dumps([_case_json(case) for case in cases], indent=2))
        return 0
    if not cases:
        print("no cases match" if args.state or args.vendor or args.since else "no cases yet")
        return 0
    rows = [[case.id, case.vendor, case.original_order_id, case.state.value, _owed(case),
             case.replacement_order_id or "-", _when(case.opened_at, seconds=False),
             _shorten(case.reason, REASON_WIDTH)] for case in cases]
    print(_table(["ID", "VENDOR", "ORIGINAL", "STATE", "OWED", "REPLACEMENT", "OPENED (UTC)", "REASON"], rows))
    more = f" (the newest {args.limit}; --limit shows more)" if len(cases) == args.limit else ""
    print(f"{len(cases)} case{'s' if len(cases) != 1 else ''}{more}")
    return 0


# -- show -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Line:
    """One line of the merged timeline; ``rank`` orders lines of the same instant (webhook, case, email)."""

    at: datetime
    rank: int
    source: str
    what: str
    detail: str


def _case_id(uow: SqlUnitOfWork, given: str) -> str:
    """The id of the one case whose id is ``given`` or starts with it, as an operator copies a short prefix."""
    from sqlalchemy import select

    from adapters.db.tables import CaseRow

    if uow.cases.get(given) is not None:
        return given
    query = select(CaseRow.id).where(CaseRow.id.startswith(given, autoescape=True)).order_by(CaseRow.id)
    found = list(uow.session.scalars(query.limit(AMBIGUOUS_SHOWN + 1)))
    if not found or not given:
        raise OpsError(f"no case {given}")
    if len(found) > 1:
        shown = ", ".join(found[:AMBIGUOUS_SHOWN]) + (", ..." if len(found) > AMBIGUOUS_SHOWN else "")
        raise OpsError(f"case id {given} is ambiguous: it starts {shown}; give more of the id")
    return str(found[0])


def _load(uow: SqlUnitOfWork, case_id: str) -> DunningCase:
    case = uow.cases.get(_case_id(uow, case_id))
    if case is None:
        raise OpsError(f"no case {case_id}")
    return case


def _timeline(uow: SqlUnitOfWork, case: DunningCase) -> list[_Line]:
    lines = [_Line(event.received_at, 0, "webhook", event.event_type,
                   f"order={event.order_id}  outcome={event.outcome or 'not processed yet'}"
                   + (f"  processed={_when(event.processed_at)}" if event.processed_at else ""))
             for event in uow.inbox.for_case(case.id)]
    lines += [_Line(event.at, 1, "case", event.kind, _detail(event.detail, case.currency))
              for event in uow.cases.timeline(case.id)]
    for email in uow.emails.for_case(case.id):
        detail = (f"message_id={email.message_id}  to={mask_email(email.recipient)}  status={email.status}"
                  f"  attempts={email.attempts}")
        if email.error:
            detail += f"  error={mask_email(email.error)}"
        lines.append(_Line(email.sent_at or email.created_at, 2, "email", email.step, detail))
    return sorted(lines, key=lambda line: (line.at, line.rank))


def _header(case: DunningCase) -> list[tuple[str, str]]:
    fields = [("vendor", case.vendor),
              ("original order", f"{case.original_order_id} (installment {case.failed_installment} failed)"),
              ("replacement", f"{case.replacement_order_id or 'not created'} ({case.replacement_kind.value})")]
    if case.buyer is not None:
        name = " ".join(part for part in (case.buyer.first_name, case.buyer.last_name) if part)
        fields.append(("buyer", f"{name} <{mask_email(case.buyer.email)}>".strip()))
    if case.product_name:
        fields.append(("product", f"{case.product_name} ({case.product_id})"))
    fields.append(("owed", _owed(case)))
    if case.recovered_minor and case.currency:
        fields.append(("recovered", str(Money(case.recovered_minor, case.currency))))
    if case.replacement is not None:
        for installment, status in _installments_paid(case):
            fields.append(("plan" if installment.number == 1 else "",
                           f"{installment.number}. {installment.amount} due {installment.due_date.isoformat()}"
                           f" ({status})"))
    fields.append(("payment link", case.payment_url or "-"))
    if case.by_vendor:
        fields.append(("made by", "the vendor, by hand in CopeCart (replacement_by = \"vendor\")"))
        if case.vendor_task_sent_at:
            fields.append(("vendor task", f"sent {_when(case.vendor_task_sent_at)}, "
                                          f"{case.vendor_reminders_sent} reminder(s) since"))
        fields.append(("original", "known cancelled" if case.original_known_cancelled else "not known cancelled"))
        if case.cannot_generate:
            fields.append(("", "the vendor says the phone offer cannot make the link: 'dunlink cases link "
                               f"{case.id} URL' once it exists"))
        if case.confirmed_paid:
            fields.append(("confirmed paid", ", ".join(map(str, case.confirmed_paid))))
    if case.link_sent_at:
        fields.append(("link sent", _when(case.link_sent_at)))
    fields.append(("state", case.state.value))
    if case.reason:
        fields.append(("reason", mask_email(case.reason)))
    if case.reason_code:
        fields.append(("reason code", mask_email(case.reason_code + "".join(
            f"  {key}={value}" for key, value in sorted(case.reason_params.items())))))
    if case.failed_step is not None:
        fields.append(("failed step", f"{case.failed_step.value} after {case.attempts} attempt(s); "
                                      f"'dunlink cases retry {case.id}' runs it again"))
    elif case.state is CaseState.NEEDS_PERSON:
        fields.append(("next", f"settle it outside dunlink, then 'dunlink cases resolve {case.id} --note ...'"))
    if case.next_attempt_at:
        fields.append(("next attempt", _when(case.next_attempt_at)))
    fields += [("opened", _when(case.opened_at)), ("updated", _when(case.updated_at))]
    if case.closed_at:
        fields.append(("closed", _when(case.closed_at)))
    return fields


def _installments_paid(case: DunningCase) -> list[tuple[Installment, str]]:
    """The replacement's installments with what the payments recorded on the case paid of them, in order.

    The plan is stored as it was sent to the platform, all installments open; a payment on the replacement is
    recorded as the amount recovered. That amount pays the installments from the first, as the platform
    collects them.
    """
    assert case.replacement is not None
    left = case.recovered_minor
    shown = []
    for installment in case.replacement.installments:
        status = installment.status.value
        if left > 0 and installment.status is InstallmentStatus.OPEN:
            if left >= installment.amount.minor:
                status = "paid"
            else:
                status = f"partly paid: {Money(left, installment.amount.currency)}"
            left -= installment.amount.minor
        shown.append((installment, status))
    return shown


def _show(args: argparse.Namespace, config: Settings) -> int:
    with _database(config) as uow:
        case = _load(uow, args.case_id)
        lines = _timeline(uow, case)
    if args.json:
        document = _case_json(case) | {"reason_code": case.reason_code, "reason_params": case.reason_params,
                                        "timeline": [
            {"at": line.at.isoformat(), "source": line.source, "what": line.what, "detail": line.detail}
            for line in lines]}
        print(json.dumps(document, indent=2))
        return 0
    print(f"case {case.id}")
    for label, value in _header(case):
        print(f"  {label:<15} {value}")
    print("\ntimeline (UTC)")
    if not lines:
        print("  (nothing recorded)")
    for line in lines:
        print(f"  {_when(line.at)}  {line.source:<7}  {line.what:<22}  {line.detail}".rstrip())
    return 0


# -- retry and resolve ----------------------------------------------------------------------------------------


def _change(config: Settings, case_id: str, change: Callable[[DunningCase, datetime], None]) -> DunningCase:
    """Apply ``change`` under the case's lease, so no worker or webhook writes the case at the same time."""
    now = _now()
    with _database(config) as uow:
        case_id = _case_id(uow, case_id)
        if not uow.cases.claim(case_id, now=now, until=now + timedelta(seconds=config.lease_seconds)):
            _load(uow, case_id)
            raise OpsError(f"case {case_id} is being worked on right now; try again in a minute")
        case = _load(uow, case_id)
        change(case, now)
        uow.cases.save(case)
        uow.cases.release(case_id)
        uow.commit()
    return case


def _retry(args: argparse.Namespace, config: Settings) -> int:
    def retry(case: DunningCase, now: datetime) -> None:
        case.retry(now=now)

    case = _change(config, args.case_id, retry)
    step = case.next_step
    print(f"case {case.id} is {case.state.value} again; next step {step.value if step else '-'}")
    try:
        _wake(config, case)
    except Exception as exc:  # any broker failure: the case is stored as due, which is what counts
        print(f"the broker at {_safe_broker(config)} could not be reached ({type(exc).__name__}); "
              "the relay will pick the case up once it is: it is due in the database")
        return 0
    print("woken: a worker will run it shortly")
    return 0


def _wake(config: Settings, case: DunningCase) -> None:
    """Publish the wake-up through the pipeline's own routing, with only the broker wired in."""
    from adapters.db.engine import make_engine, make_session_factory
    from adapters.email.render import EmailRenderer
    from adapters.email.smtp import SmtpSender
    from adapters.platform.http import HttpPlatform
    from dunlink.runtime.bootstrap import Services
    from dunlink.usecases.pipeline import wake
    from workers.celery_app import send

    engine = make_engine(config.database_url, pool_size=1)
    try:
        # The outbound adapters are built (cheaply, no connection) but never called; vendors are not needed,
        # so an operator's shell does not have to hold the vendors' webhook secrets.
        services = Services(settings=config, vendors={}, engine=engine, session_factory=make_session_factory(engine),
                            platform=HttpPlatform(config.platform_url, config.platform_token),
                            mail=SmtpSender.from_url(config.smtp_url), renderer=EmailRenderer(), enqueue=send)
        wake(services, case.id, case.next_step)
    finally:
        engine.dispose()


def _safe_broker(config: Settings) -> str:
    parts = urlsplit(config.broker_url)
    if parts.password is None:
        return config.broker_url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _resolve(args: argparse.Namespace, config: Settings) -> int:
    def resolve(case: DunningCase, now: datetime) -> None:
        case.resolve(note=args.note, now=now)

    case = _change(config, args.case_id, resolve)
    print(f"case {case.id} is {case.state.value}; note recorded on its timeline")
    return 0


def _vendor_change(args: argparse.Namespace, config: Settings,
                   change: Callable[[DunningCase, datetime], bool]) -> int:
    """Record what the vendor did, as the vendor page does, and wake the case when that made a step due."""
    outcome: list[bool] = []

    def apply(case: DunningCase, now: datetime) -> None:
        if not case.by_vendor:
            raise OpsError(f"case {case.id}: its vendor's replacements are made through the order API "
                           "(replacement_by = \"api\"), not by hand")
        outcome.append(change(case, now))

    case = _change(config, args.case_id, apply)
    waiting = {"link": "the vendor's payment link", "original_cancelled": "the original order to be cancelled"}
    what = "recorded" if outcome and outcome[0] else "already recorded: nothing changed"
    print(f"case {case.id}: {what}; it is {case.state.value}"
          + (f", waiting for {waiting[case.vendor_waiting_for]}" if case.vendor_waiting_for in waiting
             and not case.is_closed and case.link_sent_at is None else ""))
    if outcome and outcome[0] and case.is_due(_now()):
        try:
            _wake(config, case)
        except Exception as exc:  # the case is due in the database; the relay takes it from there
            print(f"the broker at {_safe_broker(config)} could not be reached ({type(exc).__name__}); "
                  "the relay will pick the case up once it is: it is due in the database")
    return 0


def _link(args: argparse.Namespace, config: Settings) -> int:
    from domain.links import refused_link
    from dunlink.config.vendors import load_vendors

    vendors = load_vendors(config.vendors_file)
    url, order_id = args.url.strip(), (args.order_id or "").strip() or None

    def give(case: DunningCase, now: datetime) -> bool:
        vendor = vendors.get(case.vendor)
        refused = refused_link(url, vendor.payment_hosts if vendor else ())
        if refused is not None:
            allowed = ", ".join(vendor.payment_hosts) if vendor else "none: the vendor is not in the vendors file"
            raise OpsError(f"the link cannot be sent to a buyer ({refused.problem.value.replace('_', ' ')}"
                           f"{': ' + refused.host if refused.host else ''}); it must be an https:// link on "
                           f"the vendor's payment_hosts ({allowed})")
        return case.link_given(payment_url=url, order_id=order_id, now=now)

    status = _vendor_change(args, config, give)
    if order_id is not None:
        _replay_unmatched_payments(config, args.case_id, order_id)
    return status


def _replay_unmatched_payments(config: Settings, given: str, order_id: str) -> None:
    """Payments on the named order that came before it was named matched no case: the relay applies them now."""
    with _database(config) as uow:
        case = _load(uow, _case_id(uow, given))
        reopened = uow.inbox.reopen_unmatched_payments(case.vendor, order_id)
        uow.commit()
    if reopened:
        print(f"{len(reopened)} payment(s) already received on order {order_id} will be applied to the case")


def _original_cancelled(args: argparse.Namespace, config: Settings) -> int:
    return _vendor_change(args, config, lambda case, now: case.original_cancel_known(now=now, by="cli"))


def _confirm_paid(args: argparse.Namespace, config: Settings) -> int:
    def confirm(case: DunningCase, now: datetime) -> bool:
        case.confirm_paid(tuple(args.installments), now=now)
        return True

    return _vendor_change(args, config, confirm)


def _installment(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"an installment number from 1, got {text!r}")
    return int(text)


# -- the parser -----------------------------------------------------------------------------------------------


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``cases`` with its actions to the ``dunlink`` parser."""
    cases = commands.add_parser(
        "cases", help="find, inspect, retry or close dunning cases (the operator's tools)",
        description="Inspect and act on dunning cases in DUNLINK_DATABASE_URL. Cases in needs_person wait for "
        "you: 'show' tells why, 'retry' runs a failed step again, 'resolve' closes a case you settled by hand.")
    actions = cases.add_subparsers(dest="cases_command", metavar="ACTION", required=True)

    listing = actions.add_parser(
        "list", help="a table of cases, newest first",
        description="List cases, newest first: id, vendor, original order, state, amount owed, replacement "
        "order, when opened, and why a person is needed.")
    listing.add_argument("--state", type=_state, help="only cases in this state, e.g. needs_person (valid: "
                         + ", ".join(state.value for state in CaseState) + ")")
    listing.add_argument("--vendor", help="only this vendor's cases (its slug in the vendors file)")
    listing.add_argument("--since", type=_since, help="only cases opened at or after this ISO-8601 date or "
                         "datetime (UTC unless an offset is given), e.g. 2026-10-01")
    listing.add_argument("--limit", type=_limit, default=DEFAULT_LIMIT,
                         help=f"at most this many cases (default {DEFAULT_LIMIT})")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler=_run(_list))

    show = actions.add_parser(
        "show", help="one case: its orders, amounts, link, state, and its whole timeline",
        description="Show one case (buyer emails masked) and its timeline: the case's events, the webhooks "
        "stored for it and the emails of its ledger, in the order they happened.")
    show.add_argument("case_id", metavar="ID", help="the case id, as 'cases list' prints it, or enough of its "
                      "start to name one case")
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    show.set_defaults(handler=_run(_show))

    retry = actions.add_parser(
        "retry", help="run a case in needs_person again from the step that failed",
        description="Run a case in needs_person again from the step that failed (after you fixed the cause, "
        "e.g. the platform's answer or the vendor's settings). The case is made due in the database and a "
        "worker is woken through DUNLINK_BROKER_URL; if the broker is down the relay picks it up later. "
        "Cases handed over without a failed step (e.g. a payment on a cancelled order) cannot be retried: "
        "settle them and use 'resolve'.")
    retry.add_argument("case_id", metavar="ID", help="the case id, or enough of its start to name one case")
    retry.set_defaults(handler=_run(_retry))

    resolve = actions.add_parser(
        "resolve", help="close a case by hand, with a note saying what you did",
        description="Close an open case by hand, e.g. after you made and sent the payment link yourself or "
        "refunded a double payment. The note is kept on the case's timeline.")
    resolve.add_argument("case_id", metavar="ID", help="the case id, or enough of its start to name one case")
    resolve.add_argument("--note", required=True, help="what was done, for whoever reads the case later")
    resolve.set_defaults(handler=_run(_resolve))

    link = actions.add_parser(
        "link", help="record the payment link a vendor made in CopeCart (as the vendor page does)",
        description="For a vendor with replacement_by = \"vendor\": record the payment link the vendor made with "
        "CopeCart's phone offer, as the vendor page's link form does. It must be an https:// link on one of the "
        "vendor's payment_hosts. The buyer is emailed once the link is recorded and the original order is known "
        "cancelled. The same link again changes nothing; another link is refused once the buyer was emailed.")
    link.add_argument("case_id", metavar="ID", help="the case id, or enough of its start to name one case")
    link.add_argument("url", metavar="URL", help="the payment link CopeCart generated")
    link.add_argument("--order-id", help="the new order's id in CopeCart, if known: the buyer's payment is then "
                      "matched by it rather than by buyer and product")
    link.set_defaults(handler=_run(_link))

    cancelled = actions.add_parser(
        "original-cancelled", help="record that the vendor cancelled the original order in CopeCart",
        description="For a vendor with replacement_by = \"vendor\": record that the original order is cancelled "
        "in CopeCart (as the vendor page's button does), so the buyer cannot pay twice. CopeCart's "
        "payment.recurring.cancelled IPN for the original records the same by itself.")
    cancelled.add_argument("case_id", metavar="ID", help="the case id, or enough of its start to name one case")
    cancelled.set_defaults(handler=_run(_original_cancelled))

    confirm = actions.add_parser(
        "confirm-paid", help="confirm earlier installments paid, for a case whose plan the IPNs cannot settle",
        description="For a case in needs_person because no payment was seen for earlier installments "
        "(installments_unseen): after checking the order in CopeCart, confirm which of them were paid; the case "
        "plans its replacement again. Installments you do not confirm count as unpaid only if a failure was seen.")
    confirm.add_argument("case_id", metavar="ID", help="the case id, or enough of its start to name one case")
    confirm.add_argument("installments", metavar="N", nargs="+", type=_installment,
                         help="installment numbers found paid in CopeCart")
    confirm.set_defaults(handler=_run(_confirm_paid))
