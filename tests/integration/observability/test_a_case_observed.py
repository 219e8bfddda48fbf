"""What operators see of one case run end to end by the real processes on PostgreSQL: the figures at
``/metrics`` and the log files, which hold neither the buyer's address nor any secret."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.support import db
from tests.support import stack as stack_support
from tests.support.stack import OPS_HEADERS, OPS_TOKEN, REDIS_BASE, SECRET, Stack, eventually, order_json, running_stack

BUYER = "anna.observed@example.com"
TOKEN = "observability-platform-token-5f2c"


@dataclass
class Observed:
    case_id: str
    replacement_id: str
    metrics: dict[tuple[str, frozenset[tuple[str, str]]], float]
    logs: dict[str, str]


def _scrape(stack: Stack) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(f"{stack.api_url}/metrics", headers=OPS_HEADERS, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def _value(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def _skip_to_an_idle_redis_db() -> None:
    """Other suites run stacks at the same time on the same Redis: start on a database no client is using,
    so no other worker takes this stack's messages."""
    with redis.Redis.from_url(REDIS_BASE) as client:
        busy = {int(c["db"]) for c in client.client_list()}
    for _ in range(15):
        candidate = next(stack_support._redis_dbs)
        if candidate not in busy:
            # running_stack takes the next one; step back by cycling the remaining 14.
            for _ in range(14):
                next(stack_support._redis_dbs)
            return


@pytest.fixture(scope="module")
def observed(postgres_template: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    """One failed installment taken to a recovered case, then everything the operators can see of it."""
    root = tmp_path_factory.mktemp("observed")
    _skip_to_an_idle_redis_db()
    with db.fresh_postgres(postgres_template) as url, running_stack(
            root, url, extra_env={"DUNLINK_PLATFORM_TOKEN": TOKEN}) as stack:
        stack.seed(order_json("CC-5001", email=BUYER))
        assert stack.fail("CC-5001", 3)["delivery"]["status"] == 200
        eventually(lambda: stack.mails_to(BUYER), timeout=45, what="the payment-link email")
        case = eventually(lambda: stack.case_in("CC-5001", "awaiting_payment"), what="the case to await payment")
        [replacement] = stack.replacements("CC-5001")
        assert stack.pay(replacement["id"], 1)["delivery"]["status"] == 200
        eventually(lambda: stack.case_in("CC-5001", "recovered"), what="the case to be recovered")
        metrics = _scrape(stack)
        logs = {path.name: path.read_text(encoding="utf-8", errors="replace")
                for path in sorted((root / "logs").glob("*.log"))}
        yield Observed(case.id, replacement["id"], metrics, logs)


def test_the_case_its_email_and_the_money_recovered_are_counted(observed: Observed) -> None:
    metrics = observed.metrics
    assert _value(metrics, "dunlink_database_up") == 1
    assert _value(metrics, "dunlink_cases", state="recovered") == 1
    assert _value(metrics, "dunlink_cases", state="needs_person") == 0
    assert _value(metrics, "dunlink_emails_total", outcome="sent") == 1
    assert _value(metrics, "dunlink_emails_total", outcome="failed") == 0
    assert _value(metrics, "dunlink_recovered_minor_units_total", currency="EUR") == 5000
    for step in ("fetch_original", "create_replacement", "cancel_original"):
        assert _value(metrics, "dunlink_platform_calls_total", step=step, outcome="ok") == 1
    assert _value(metrics, "dunlink_webhooks_total", vendor="acme", event="payment.failed", answer="200") == 1
    assert _value(metrics, "dunlink_webhooks_total", vendor="acme", event="payment.made", answer="200") == 1
    assert ("dunlink_relay_requeued_events_total", frozenset()) in metrics


def test_the_time_from_ipn_to_email_is_one_histogram_observation(observed: Observed) -> None:
    buckets = {dict(labels)["le"]: value for (name, labels), value in observed.metrics.items()
               if name == "dunlink_ipn_to_email_seconds_bucket"}
    assert buckets["+Inf"] == 1
    assert _value(observed.metrics, "dunlink_ipn_to_email_seconds_gcount") == 1
    seconds = _value(observed.metrics, "dunlink_ipn_to_email_seconds_gsum")
    assert 0 < seconds < 60
    assert buckets["60.0"] == 1
    counts = [buckets[le] for le in sorted(buckets, key=lambda le: float(le))]
    assert counts == sorted(counts)  # cumulative


def test_no_log_holds_the_buyers_address_or_a_secret(observed: Observed) -> None:
    assert {"api.log", "worker1.log", "beat.log", "sandbox.log"} <= set(observed.logs)
    for name, text in observed.logs.items():
        for leaked in (BUYER, SECRET, TOKEN, OPS_TOKEN):
            assert leaked not in text, f"{leaked!r} in {name}"
    assert "a***@example.com" in observed.logs["worker1.log"]  # the SMTP adapter's line, masked


def test_worker_lines_are_one_json_format_and_lines_about_the_case_name_vendor_and_order(observed: Observed) -> None:
    lines = [json.loads(line) for line in observed.logs["worker1.log"].splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert any(str(event).endswith("ready.") for event in events), "Celery's own lines are JSON as well"
    assert {"step_done", "event_processed"} <= set(events)
    about_the_case = [line for line in lines if line.get("case") == observed.case_id]
    assert len(about_the_case) >= 5
    for line in about_the_case:
        # The order is the original, or the replacement when the line is about a payment on it.
        assert line.get("vendor") == "acme", line
        assert line.get("order") in ("CC-5001", observed.replacement_id), line
        assert {"timestamp", "level", "logger"} <= set(line)
