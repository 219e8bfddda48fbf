"""Run ``dunlink sandbox`` as a real subprocess for integration and end-to-end tests."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx

from adapters.platform.port import Buyer, NewOrder, Order, Plan, PlanInstallment
from tests.support.vendors import vendors_toml
from workers.processes import free_port, stop_process
from workers.serving import LISTENING

START_TIMEOUT_S = 15.0


def write_vendors_file(directory: Path, *, secret: str = "test-ipn-secret") -> Path:
    """A vendors file with one vendor, ``acme``, whose IPN secret is ``secret``."""
    path = directory / "vendors.toml"
    path.write_text(vendors_toml({"acme": secret}), encoding="utf-8")
    return path


@contextlib.contextmanager
def running_sandbox(*, vendors_file: Path, webhook_base: str, token: str = "sandbox-token",
                    timeout_hold_s: float | None = None) -> Iterator[str]:
    """Start the sandbox on a free port, yield its base URL once it answers, stop it afterwards.

    ``timeout_hold_s`` shortens how long a timeout fault holds a request, so a test can wait one out."""
    executable = Path(sys.executable).parent / "dunlink"
    env = {**os.environ, "DUNLINK_VENDORS_FILE": str(vendors_file), "DUNLINK_PLATFORM_TOKEN": token}
    with tempfile.TemporaryFile() as output:
        port = free_port()
        hold = [] if timeout_hold_s is None else ["--timeout-hold", str(timeout_hold_s)]
        process = subprocess.Popen(
            [str(executable), "sandbox", "--port", str(port), "--webhook-base", webhook_base, *hold],
            env=env, stdout=output, stderr=subprocess.STDOUT,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_up(base_url, process, output)
            yield base_url
        finally:
            stop_process(process, grace=5)


def _wait_until_up(base_url: str, process: subprocess.Popen[bytes], output: IO[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output.seek(0)
            raise RuntimeError(f"sandbox exited with {process.returncode}: {output.read().decode()[-2000:]}")
        # pread: the sandbox writes through the same file offset, which a seek would move under it.
        if LISTENING.encode() in os.pread(output.fileno(), 1 << 16, 0):  # the port is the sandbox's own
            try:
                httpx.get(f"{base_url}/sandbox/requests", timeout=0.5)
                return
            except httpx.TransportError:
                pass
        time.sleep(0.05)
    raise RuntimeError(f"sandbox at {base_url} did not answer within {START_TIMEOUT_S} s")


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
