"""``dunlink cases link`` and ``dunlink cases original-cancelled``: what the vendor page does, from a shell, for
a case whose vendor makes the replacement by hand; run as the installed console script on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

from adapters.db.engine import make_engine, make_session_factory
from adapters.db.uow import SqlUnitOfWork
from domain.case import Buyer, CaseState, DunningCase
from domain.money import Money
from domain.plans import Frequency, Installment, InstallmentPlan, InstallmentStatus
from domain.policy import ReplacementBy, ReplacementKind
from tests.support.command import DUNLINK
from tests.support.stack import SECRET
from tests.support.vendors import vendors_toml

T = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
CASE = "feed000000000001"
LINK = "http://127.0.0.1:8090/pay/CC-900001"


def _store(database_url: str) -> None:
    statuses = [InstallmentStatus.PAID] * 2 + [InstallmentStatus.FAILED] + [InstallmentStatus.OPEN] * 3
    plan = InstallmentPlan("EUR", Frequency.MONTHLY, tuple(
        Installment(n, Money(5000, "EUR"), date(2026, 7 + n, 1) if n < 6 else date(2027, 1, 1), status)
        for n, status in enumerate(statuses, start=1)))
    case = DunningCase.open(case_id=CASE, vendor="hooli", original_order_id="CC-1001", failed_installment=3,
                            replacement_kind=ReplacementKind.REMAINING_INSTALLMENTS, now=T,
                            replacement_by=ReplacementBy.VENDOR)
    case.plan(plan, order_vendor="hooli", order_status="active", buyer=Buyer("anna@example.com", "Anna", "Meier"),
              product_id="p-42", product_name="Coaching", today=T.date(), now=T)
    case.vendor_task_sent(now=T)
    engine = make_engine(database_url)
    try:
        with SqlUnitOfWork(make_session_factory(engine)) as uow:
            uow.cases.add(case)
            uow.commit()
    finally:
        engine.dispose()


def _case(database_url: str) -> DunningCase:
    engine = make_engine(database_url)
    try:
        with SqlUnitOfWork(make_session_factory(engine)) as uow:
            case = uow.cases.get(CASE)
    finally:
        engine.dispose()
    assert case is not None
    return case


def _dunlink(database_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    vendors = tmp_path / "vendors.toml"
    vendors.write_text(vendors_toml({"hooli": SECRET}), encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if not key.startswith("DUNLINK_")}
    env |= {"DUNLINK_DATABASE_URL": database_url, "DUNLINK_BROKER_URL": "redis://127.0.0.1:1/0",
            "DUNLINK_VENDORS_FILE": str(vendors)}
    return subprocess.run([str(DUNLINK), "cases", *args], env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def test_a_link_on_the_vendors_hosts_is_recorded_and_the_cancel_then_sends_the_buyer_email(
        database_url: str, tmp_path: Path) -> None:
    _store(database_url)
    refused = _dunlink(database_url, tmp_path, "link", CASE[:8], "https://evil.example/pay")
    assert refused.returncode == 2
    assert "evil.example" in refused.stderr and "127.0.0.1" in refused.stderr
    assert _case(database_url).payment_url is None

    given = _dunlink(database_url, tmp_path, "link", CASE[:8], LINK, "--order-id", "CC-900001")
    assert given.returncode == 0, given.stderr
    assert f"case {CASE}: recorded; it is awaiting_original_cancel, waiting for the original order to be " \
           "cancelled" in given.stdout
    again = _dunlink(database_url, tmp_path, "link", CASE, LINK)
    assert "already recorded: nothing changed" in again.stdout

    cancelled = _dunlink(database_url, tmp_path, "original-cancelled", CASE)
    assert cancelled.returncode == 0, cancelled.stderr
    case = _case(database_url)
    assert case.state is CaseState.ORIGINAL_CANCELLED and case.payment_url == LINK
    assert case.replacement_order_id == "CC-900001"
    assert "the relay will pick the case up" in cancelled.stdout  # the broker is down; the case is due anyway

    shown = _dunlink(database_url, tmp_path, "show", CASE)
    assert "made by" in shown.stdout and "known cancelled" in shown.stdout


def test_the_vendors_commands_refuse_a_case_made_through_the_order_api(database_url: str, tmp_path: Path) -> None:
    engine = make_engine(database_url)
    try:
        with SqlUnitOfWork(make_session_factory(engine)) as uow:
            uow.cases.add(DunningCase.open(case_id=CASE, vendor="hooli", original_order_id="CC-1", failed_installment=1,
                                           replacement_kind=ReplacementKind.SINGLE_PAYMENT, now=T))
            uow.commit()
    finally:
        engine.dispose()
    answer = _dunlink(database_url, tmp_path, "original-cancelled", CASE)
    assert answer.returncode == 2 and "through the order API" in answer.stderr
