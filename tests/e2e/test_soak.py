"""``dunlink soak`` as an operator runs it: every process under faults, kills and a Redis restart, judged from
the platform's and the mail server's records; and its judge, shown that it names what goes wrong."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psycopg
import pytest

from adapters.email.capture import ReceivedMail
from dunlink.devtools.soak import CHECK_NAMES, Plan, Records, SoakOrder, check
from tests.support.command import run_to_end
from tests.support.db import ADMIN_URL

RUN_TIMEOUT_S = 270.0
CHECKS = (
    "every IPN answered OK is reflected",
    "at most one replacement per original",
    "each original cancelled by at most one effective call",
    "no original and replacement both active for one case",
    "one payment-link email per case (by Message-ID)",
    "no case stuck outside an end or waiting state",
)


def _soak(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``dunlink soak`` in ``folder``; on a hang, stop it (SIGTERM) so it stops what it started."""
    return run_to_end("soak", *args, cwd=folder, env=os.environ, timeout=RUN_TIMEOUT_S, stop=signal.SIGTERM,
                      grace=30)


def _processes_in(folder: Path) -> list[str]:
    """Processes whose working directory is under ``folder``: the soak starts every child there."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if Path(os.readlink(proc / "cwd")).is_relative_to(folder):
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append(f"{proc.name}: {command}")
        except OSError:
            continue
    return found


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
def test_two_hundred_failures_under_faults_kills_and_a_redis_restart_lose_nothing_and_double_nothing(
        tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    # Also 3% of the platform's answers lost after it acted: creates and cancels that took effect unseen.
    result = _soak(tmp_path, "--cases", "200", "--kills", "2", "--seed", "7", "--postgres", ADMIN_URL,
                   "--lost-answers", "0.03", "--folder", str(tmp_path / "runs"), "--report", str(report_path),
                   "--deadline", "220")
    out = result.stdout
    assert result.returncode == 0, f"{out}\n{result.stderr[-4000:]}"
    for name in CHECKS:
        assert any(line.startswith(f"  ok    {name}") for line in out.splitlines()), f"{name!r} not ok:\n{out}"
    assert "FAIL" not in out
    assert "soak passed" in out
    assert "cases settled" in out  # the progress line
    assert "time to drain:" in out

    report: dict[str, Any] = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["passed"] is True
    assert [c["name"] for c in report["checks"]] == list(CHECK_NAMES)
    assert report["kills"] == 2 and report["redis_restarted_at_s"] is not None
    assert report["fails_sent"] == 200
    assert report["duplicates_sent"] > 0 and report["race_pays"] > 0 and report["replacement_pays"] > 0
    assert report["platform_faults"].keys() == {"error", "timeout", "rate_limit"}
    assert report["drain_s"] is not None and report["cases_per_s"] > 0

    # Everything it started is stopped, and its database is gone.
    assert _processes_in(tmp_path / "runs") == []
    with psycopg.connect(ADMIN_URL.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as admin:
        names = [row[0] for row in admin.execute("SELECT datname FROM pg_database")]
    assert report["database"] not in names


def test_help_answers(tmp_path: Path) -> None:
    result = subprocess.run([str(Path(sys.executable).parent / "dunlink"), "soak", "--help"], capture_output=True,
                            text=True, timeout=30, cwd=tmp_path, check=False)
    assert result.returncode == 0
    for option in ("--cases", "--vendors", "--workers", "--kills", "--database-url", "--seed", "--report",
                   "--deadline"):
        assert option in result.stdout


# -- the judge --------------------------------------------------------------------------------------------------


def _order(order_id: str, status: str = "active", replaces: str | None = None) -> dict[str, Any]:
    return {"id": order_id, "status": status, "replaces": replaces, "payment_url": f"http://sbx/pay/{order_id}"}


def _link_mail(case_id: str, to: str, tmp_path: Path) -> ReceivedMail:
    message = EmailMessage()
    message["Message-ID"] = f"<dunlink.{case_id}.send_link@soak.example>"
    message["X-Dunlink-Case"] = case_id
    message.set_content("pay here")
    return ReceivedMail("dunning@soak.example", (to,), message, tmp_path / f"{case_id}.eml", None)


def test_the_judge_names_the_order_and_case_of_every_violation(tmp_path: Path) -> None:
    plans = {f"SKab12-0000{n}": SoakOrder(f"SKab12-0000{n}", "acme", (5000,) * 4, 2, Plan.PLAIN,
                                          f"skab12-0000{n}@buyers.soak.example", "Anna") for n in (1, 2, 3)}
    records = Records(
        tag="ab12",
        orders={o["id"]: o for o in [
            _order("SKab12-00001", "cancelled"), _order("CC-1", replaces="SKab12-00001"),
            _order("CC-2", replaces="SKab12-00001"),                 # a second replacement
            _order("SKab12-00002"), _order("CC-3", replaces="SKab12-00002"),  # both active
            _order("SKab12-00003", "cancelled")]},                   # cancelled, nothing to pay
        requests=[{"method": "POST", "path": "/v1/orders/SKab12-00001/cancel", "effect": "cancelled"}] * 2,
        ipns=[{"transaction_id": f"T{n}", "event_type": "payment.failed", "order_id": f"SKab12-0000{n}",
               "status": 200} for n in (1, 2, 3)],
        accepted={"T1", "T2", "T3"},
        mails=[_link_mail("c1", "skab12-00001@buyers.soak.example", tmp_path),
               _link_mail("c9", "skab12-00001@buyers.soak.example", tmp_path)],
        case_rows=[("SKab12-00001", "awaiting_payment", None, "c1"), ("SKab12-00002", "planned", None, "c2"),
                   ("SKab12-00003", "needs_person", "create_replacement failed: 422", "c3")])

    judged = {c.name: c for c in check(plans, records)}

    assert [c.name for c in judged.values()] == list(CHECK_NAMES)
    assert not any(c.ok for c in judged.values())
    problems = {name: "\n".join(c.problems) for name, c in judged.items()}
    assert "order SKab12-00003 (case c3): original cancelled but no replacement" in problems[CHECK_NAMES[0]]
    assert "order SKab12-00001 (case c1): 2 replacements CC-1, CC-2" in problems[CHECK_NAMES[1]]
    assert "order SKab12-00001 (case c1): SKab12-00001 cancelled by 2 effective calls" in problems[CHECK_NAMES[2]]
    assert "order SKab12-00002 (case c2): original active and replacement CC-3 active" in problems[CHECK_NAMES[3]]
    assert "order SKab12-00001 (case c1): 2 payment-link emails for cases ['c1', 'c9']" in problems[CHECK_NAMES[4]]
    assert "order SKab12-00002 (case c2): stuck in planned" in problems[CHECK_NAMES[5]]
    assert "order SKab12-00003 (case c3): handed to a person without cause" in problems[CHECK_NAMES[5]]
