"""A stored event that cannot be applied is tried a bounded number of times, then kept as failed with its
error, its case (if it has one) handed to a person, and never re-sent by the relay again."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from domain.case import Buyer, CaseState, DunningCase
from domain.plans import InstallmentPlan
from domain.policy import ReplacementKind
from dunlink.config.settings import Settings
from dunlink.runtime.bootstrap import Services, build_services
from dunlink.usecases.pipeline import handle_event, relay
from tests.support.command import DUNLINK
from tests.support.stack import SECRET
from tests.support.vendors import vendors_toml

T = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
FIXTURES = Path(__file__).parents[2] / "fixtures" / "copecart"
BUYER = Buyer("anna@example.com", "Anna", "Meier", "DE", "b-7")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def services(database_url: str, tmp_path: Path) -> Iterator[tuple[Services, Clock]]:
    (tmp_path / "vendors.toml").write_text(vendors_toml({"acme": SECRET}), encoding="utf-8")
    settings = Settings(database_url=database_url, vendors_file=tmp_path / "vendors.toml", event_max_attempts=3)
    clock = Clock(T)
    built = dataclasses.replace(build_services(settings, enqueue=lambda *_: None), clock=clock)
    yield built, clock
    built.engine.dispose()


def _store(services: Services, body: str, *, order_id: str, event_type: str = "payment.made") -> int:
    with services.uow() as uow:
        stored = uow.inbox.add(vendor="acme", event_type=event_type, dedup_key=f"T-{order_id}", order_id=order_id,
                               body=body, now=T)
        uow.commit()
    return stored.id


def _event(services: Services, event_id: int) -> Any:
    with services.uow() as uow:
        return uow.inbox.get(event_id)


def test_an_event_that_keeps_failing_is_tried_n_times_then_kept_as_failed_and_never_sent_again(
        services: tuple[Services, Clock]) -> None:
    pipeline, clock = services
    # Valid JSON but no object: nothing any version of the webhook stores, so nothing the code foresees.
    event_id = _store(pipeline, "[1, 2]", order_id="CC-404")
    clock.now = T + timedelta(seconds=40)
    assert relay(pipeline).events == 1  # still pending: the relay sends it again

    outcomes = []
    for _ in range(3):
        clock.now += timedelta(seconds=31)
        outcomes.append(handle_event(pipeline, event_id).outcome)
    assert outcomes == ["retry_later", "retry_later", "failed"]

    row = _event(pipeline, event_id)
    assert (row.outcome, row.attempts, row.processed_at, row.case_id) == ("failed", 3, clock.now, None)
    assert row.error == "AttributeError: 'list' object has no attribute 'get'"
    clock.now += timedelta(minutes=5)
    assert relay(pipeline).events == 0
    assert handle_event(pipeline, event_id).outcome == "already_processed"


def _awaiting_payment(services: Services) -> DunningCase:
    fields = json.loads((FIXTURES / "payment_failed_breakdown.json").read_text(encoding="utf-8"))
    case = DunningCase.open(case_id="c0ffee0000000001", vendor="acme", original_order_id="CC-1001",
                            failed_installment=3, replacement_kind=ReplacementKind.REMAINING_INSTALLMENTS, now=T)
    case.plan(InstallmentPlan.from_ipn(fields), order_vendor="acme", order_status="active", buyer=BUYER,
              product_id="p-42", product_name="Coaching Program", today=date(2026, 10, 1), now=T)
    case.replacement_created(order_id="CC-1001-R", payment_url="http://127.0.0.1:8090/pay/CC-1001-R", now=T)
    case.original_cancelled(now=T)
    case.link_sent(now=T)
    with services.uow() as uow:
        uow.cases.add(case)
        uow.commit()
    return case


def test_an_event_that_fails_for_good_hands_its_case_to_a_person_at_once(services: tuple[Services, Clock]) -> None:
    pipeline, clock = services
    case = _awaiting_payment(pipeline)
    # Stored before the webhook refused amounts too large for the database: a payment no try can record.
    fields = json.loads((FIXTURES / "payment_made_breakdown.json").read_text(encoding="utf-8"))
    fields.update(order_id="CC-1001-R", rate_number="1", transaction_amount="99999999999999999999.00")
    event_id = _store(pipeline, json.dumps(fields), order_id="CC-1001-R")
    clock.now = T + timedelta(seconds=10)

    assert handle_event(pipeline, event_id).outcome == "failed"
    row = _event(pipeline, event_id)
    error = ("IpnFieldError: transaction_amount: too large to store: more than 9223372036854775807 minor units "
             "of EUR")
    assert (row.outcome, row.attempts, row.case_id, row.error) == ("failed", 1, case.id, error)

    env = {key: value for key, value in os.environ.items() if not key.startswith("DUNLINK_")}
    listed = subprocess.run([str(DUNLINK), "cases", "list", "--state", "needs_person", "--json"], check=True,
                            env={**env, "DUNLINK_DATABASE_URL": pipeline.settings.database_url},
                            capture_output=True, text=True, timeout=60)
    [person] = json.loads(listed.stdout)
    assert (person["id"], person["state"], person["failed_step"]) == (case.id, CaseState.NEEDS_PERSON.value, None)
    assert person["reason"] == f"a payment.made event could not be applied: {error}"
    clock.now += timedelta(minutes=5)
    assert relay(pipeline).events == 0
