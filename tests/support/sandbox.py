"""Run ``dunlink sandbox`` as a real subprocess for integration and end-to-end tests."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from adapters.platform.port import Buyer, NewOrder, Order, Plan, PlanInstallment
from dunlink.devtools.processes import ProcessGroup, free_port, sandbox_command
from tests.support.vendors import vendors_toml

START_TIMEOUT_S = 15.0


def write_vendors_file(directory: Path, *, secret: str = "test-ipn-secret-0a5e7c") -> Path:
    """A vendors file with one vendor, ``acme``, whose IPN secret is ``secret``."""
    path = directory / "vendors.toml"
    path.write_text(vendors_toml({"acme": secret}), encoding="utf-8")
    return path


@contextlib.contextmanager
def running_sandbox(*, vendors_file: Path, webhook_base: str, token: str = "sandbox-token",
                    timeout_hold_s: float | None = None) -> Iterator[str]:
    """Start the sandbox on a free port, yield its base URL once it answers, stop it afterwards.

    ``timeout_hold_s`` shortens how long a timeout fault holds a request, so a test can wait one out."""
    env = {**os.environ, "DUNLINK_VENDORS_FILE": str(vendors_file), "DUNLINK_PLATFORM_TOKEN": token}
    port = free_port()
    command = sandbox_command(port, webhook_base=webhook_base)
    hold = [] if timeout_hold_s is None else ["--timeout-hold", str(timeout_hold_s)]
    with tempfile.TemporaryDirectory() as logs, ProcessGroup(env=env, log_dir=Path(logs)) as group:
        group.start("sandbox", [*command.args, *hold], ready=command.ready, timeout=START_TIMEOUT_S)
        yield f"http://127.0.0.1:{port}"


def sample_order(order_id: str = "CC-1001", *, status: str = "active", paid: int = 2, count: int = 6,
                 amount: int = 5000, product_name: str = "Coaching Program") -> Order:
    """An installment order of ``count`` monthly payments of ``amount`` cents, the first ``paid`` paid."""
    installments = tuple(
        PlanInstallment(number=n, amount=amount, due_date=dt.date(2026, 7 + n, 1) if n <= 5
                        else dt.date(2027, n - 5, 1), status="paid" if n <= paid else "open")
        for n in range(1, count + 1)
    )
    return Order(
        id=order_id, vendor="acme", status=status, product_id="p-42", product_name=product_name,
        buyer=Buyer(id="b-7", email="anna@example.com", first_name="Anna", last_name="Meier",
                    country_code="DE"),
        currency="EUR", plan=Plan(kind="installments", frequency="monthly", installments=installments),
        payment_url=None, replaces=None,
    )


def replacement_for(order: Order, *, amount: int | None = None) -> NewOrder:
    """A single-payment replacement for what is still owed on ``order``."""
    owed = sum(i.amount for i in order.plan.installments if i.status in ("open", "failed"))
    return NewOrder(
        vendor=order.vendor, product_id=order.product_id, buyer=order.buyer, currency=order.currency,
        plan=Plan(kind="one_time", frequency=None, installments=(
            PlanInstallment(number=1, amount=owed if amount is None else amount,
                            due_date=dt.date(2026, 10, 8), status="open"),)),
        replaces=order.id, metadata={"case": f"case-{order.id}"},
    )
