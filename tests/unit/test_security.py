"""Security checks a payment operator asks about: where the link in a buyer's email may point, what webhook text
can do to an email's headers, Flower's password, and the audit of the installed dependencies."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import date
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.db.engine import make_engine, make_session_factory
from adapters.email.memory import MemoryMailSender
from adapters.email.message import compose
from adapters.email.render import EmailRenderer, PaymentLinkContext, ScheduleLine
from adapters.platform.memory import InMemoryPlatform
from domain.case import CaseState
from domain.money import Money
from dunlink.config.settings import Settings
from dunlink.config.vendors import load_vendors
from dunlink.runtime.bootstrap import Services
from dunlink.usecases import pipeline
from tests.support import db
from tests.support.sandbox import sample_order

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = "https://platform.example"
FIXTURE = ROOT / "tests" / "fixtures" / "copecart" / "payment_failed_breakdown.json"
INJECTED = "Anna\r\nBcc: victim@example.com"
VENDORS = textwrap.dedent("""\
    [vendors.acme]
    name = "ACME\\r\\nBcc: victim@example.com\\r\\n\\r\\n<b>Academy</b>"
    summary_email = "owner@acme.example"
    locale = "en"
    timezone = "Europe/Berlin"
    reply_to = "support@acme.example"
    copecart_ipn_secret = "security-test-ipn-secret-91c4"
    replacement = "remaining_installments"
    reminder_days = [3, 7]
    expire_after_days = 14
    """)
# What a payment-link email carries, and nothing else.
HEADERS = {"From", "To", "Reply-To", "Subject", "Date", "Message-ID", "X-Dunlink-Case", "Auto-Submitted",
           "MIME-Version", "Content-Type"}


def over_the_wire(message: EmailMessage) -> EmailMessage:
    """The message as a mail server receives it: serialised, then parsed again."""
    received = BytesParser(policy=policy.default).parsebytes(message.as_bytes())
    assert isinstance(received, EmailMessage)
    return received


def assert_no_injected_headers(message: EmailMessage, *, to: str) -> None:
    received = over_the_wire(message)
    assert set(received.keys()) <= HEADERS, received.keys()
    assert len(received.keys()) == len(set(received.keys())), received.keys()
    assert [a.addr_spec for a in received["To"].addresses] == [to]
    raw_headers = message.as_bytes().split(b"\n\n", 1)[0]
    assert not re.search(rb"^(bcc|cc|subject: hacked)", raw_headers, re.IGNORECASE | re.MULTILINE)


# -- a payment_url anywhere but the platform -----------------------------------------------------------------

class Run:
    """The pipeline with the platform and the mail server in memory, over a SQLite file of the test's own."""

    def __init__(self, tmp_path: Path, *, checkout_base: str) -> None:
        vendors = tmp_path / "vendors.toml"
        vendors.write_text(VENDORS, encoding="utf-8")
        config = Settings(database_url=db.fresh_sqlite(tmp_path), vendors_file=vendors, platform_url=PLATFORM,
                          platform_token="security-test-platform-token-62d0")
        engine = make_engine(config.database_url)
        self.platform = InMemoryPlatform(base_url=checkout_base)
        self.mail = MemoryMailSender()
        self.published: list[tuple[str, list[Any], str]] = []
        self.services = Services(settings=config, vendors=load_vendors(vendors), engine=engine,
                                 session_factory=make_session_factory(engine), platform=self.platform,
                                 mail=self.mail, renderer=EmailRenderer(),
                                 enqueue=lambda task, args, queue: self.published.append((task, args, queue)))

    def failed_installment(self) -> str:
        """The original order with hostile names, its third installment failed; returns the case id."""
        original = sample_order("CC-1001", product_name="Course\r\nSubject: hacked <script>x</script>")
        self.platform.seed(dataclasses.replace(original, buyer=dataclasses.replace(original.buyer,
                                                                                    first_name=INJECTED)))
        body = FIXTURE.read_text(encoding="utf-8")
        with self.services.uow() as uow:
            event = uow.inbox.add(vendor="acme", event_type="payment.failed", dedup_key="T-90003",
                                  order_id="CC-1001", body=body, now=self.services.clock())
            uow.commit()
        outcome = pipeline.handle_event(self.services, event.id)
        assert outcome.outcome == "case_opened" and outcome.case_id is not None
        return outcome.case_id

    def case_state(self, case_id: str) -> tuple[CaseState, str | None]:
        with self.services.uow() as uow:
            case = uow.cases.get(case_id)
            assert case is not None
            return case.state, case.reason

    def close(self) -> None:
        self.services.engine.dispose()


@pytest.fixture
def run_with(tmp_path: Path) -> Iterator[Callable[[str], Run]]:
    runs: list[Run] = []

    def make(checkout_base: str) -> Run:
        folder = tmp_path / f"run{len(runs)}"
        folder.mkdir()
        runs.append(Run(folder, checkout_base=checkout_base))
        return runs[-1]

    yield make
    for run in runs:
        run.close()


@pytest.mark.parametrize("checkout_base", [
    "https://evil.example",  # another host
    "https://platform.example.evil.example",  # the platform's name as a prefix of another
    "https://platform.example@evil.example",  # the platform's name as user info
    "ftp://platform.example",  # not a web link
    "javascript://platform.example/%0aalert(1)//",
    "//evil.example",  # scheme-relative
    "http://platform.example",  # plain http when the platform speaks https
    "https://evil.example\\@platform.example",  # browsers read evil.example as the host
    "https://platform.example:8443",  # another port on the platform's host
])
def test_a_payment_url_outside_the_platform_goes_to_a_person_and_no_email_is_sent(
        run_with: Callable[[str], Run], checkout_base: str) -> None:
    run = run_with(checkout_base)
    case_id = run.failed_installment()

    assert pipeline.advance_case(run.services, case_id) == "needs_person"
    assert pipeline.send_email(run.services, case_id) == "needs_person"

    state, reason = run.case_state(case_id)
    assert state is CaseState.NEEDS_PERSON
    assert reason is not None and "payment_url" in reason
    assert run.mail.sent == []
    assert [task for task, _, _ in run.published if task == "dunlink.send_email"] == []
    # No link can reach the buyer, so the original order stays open for them to pay.
    assert run.platform.order("CC-1001").status == "active"
    assert run.platform.effects("cancelled") == []


def test_the_platforms_own_link_reaches_the_buyer_with_no_header_injected_by_names(
        run_with: Callable[[str], Run]) -> None:
    run = run_with(PLATFORM)
    case_id = run.failed_installment()

    pipeline.advance_case(run.services, case_id)
    pipeline.send_email(run.services, case_id)

    [sent] = run.mail.sent
    replacement = run.platform.orders_replacing("CC-1001")[0]
    assert replacement.payment_url == f"{PLATFORM}/pay/{replacement.id}"
    assert replacement.payment_url in sent.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert_no_injected_headers(sent, to="anna@example.com")
    received = over_the_wire(sent)
    assert received["From"].addresses[0].display_name == "ACME Bcc: victim@example.com <b>Academy</b>"
    assert "\n" not in str(received["Subject"]) and "Course Subject: hacked" in str(received["Subject"])


# -- names in headers, whatever they hold --------------------------------------------------------------------

line_breaks = st.sampled_from(["\r\n", "\n", "\r", "\x85", "\u2028", "\u2029", "\x0b", "\x0c", "\x00", "\r\n\t"])
header_lines = st.sampled_from(["Bcc: victim@example.com", "Subject: hacked", "Content-Type: text/html",
                                "To: victim@example.com", "Reply-To: attacker@example.com",
                                "=?utf-8?q?=0D=0ABcc:_victim@example.com?="])
hostile_names = st.one_of(
    st.builds(lambda a, br, line: f"{a}{br}{line}", st.text(max_size=10), line_breaks, header_lines),
    st.text(max_size=40),
)


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=(HealthCheck.too_slow,))
@given(first_name=hostile_names, last_name=hostile_names, vendor_name=hostile_names, product_name=hostile_names)
def test_no_name_from_a_webhook_or_the_vendors_file_adds_a_header(first_name: str, last_name: str, vendor_name: str,
                                                                  product_name: str) -> None:
    rendered = RENDERER.payment_link(PaymentLinkContext(
        case_id="c0ffee", locale="en", vendor_name=vendor_name, buyer_first_name=first_name,
        buyer_last_name=last_name, product_name=product_name, outstanding=Money(20000, "EUR"), installments_left=1,
        schedule=(ScheduleLine(1, Money(20000, "EUR"), date(2026, 12, 1)),),
        payment_url=f"{PLATFORM}/pay/CC-2", reply_to=None, order_id="CC-1"))
    message = compose(rendered=rendered, case_id="c0ffee", step="payment_link", to_address="anna@example.com",
                      to_name=f"{first_name} {last_name}", from_address="dunning@acme.example",
                      from_name=vendor_name, reply_to=None)
    assert_no_injected_headers(message, to="anna@example.com")


RENDERER = EmailRenderer()


# -- pip-audit in CI ------------------------------------------------------------------------------------------

def fake_pip_audit(tmp_path: Path, *, report: dict[str, Any] | None, exit_code: int, stderr: str = "") -> Path:
    """A stand-in for pip-audit that writes ``report`` to its ``-o`` file, says ``stderr`` and exits."""
    script = tmp_path / "pip-audit"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, sys
        args = sys.argv[1:]
        report = {report!r}
        if report is not None:
            with open(args[args.index("-o") + 1], "w") as out:
                json.dump(report, out)
        with open({str(tmp_path / "calls")!r}, "a") as calls:
            calls.write(" ".join(args) + "\\n")
        sys.stderr.write({stderr!r})
        sys.exit({exit_code})
        """), encoding="utf-8")
    script.chmod(0o755)
    return script


def make_audit(pip_audit: Path) -> subprocess.CompletedProcess[str]:
    # -o: the virtualenv is as the test run found it; only the audit step itself runs.
    return subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", "audit",
                           f"PIP_AUDIT={pip_audit}"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False)


CLEAN = {"dependencies": [{"name": "celery", "version": "5.5.0", "vulns": []},
                          {"name": "httpx", "version": "0.28.1", "vulns": []}], "fixes": []}
VULNERABLE = {"dependencies": [
    {"name": "celery", "version": "5.5.0", "vulns": []},
    {"name": "jinja2", "version": "3.1.2", "vulns": [{"id": "GHSA-h5c8-rqwp-cp95", "fix_versions": ["3.1.3"],
                                                       "aliases": ["CVE-2024-22195"], "description": "xss"}]}],
    "fixes": []}
NOT_FOUND = {"dependencies": [
    {"name": "celery", "skip_reason": "Dependency not found on PyPI and could not be audited: celery (5.5.0)"},
    {"name": "httpx", "skip_reason": "Dependency not found on PyPI and could not be audited: httpx (0.28.1)"}],
    "fixes": []}
UNREACHABLE = ("requests.exceptions.ConnectionError: HTTPSConnectionPool(host='api.osv.dev', port=443): Max retries "
               "exceeded (Caused by NameResolutionError(\"Failed to resolve 'api.osv.dev'\"))\n")


def test_audit_fails_ci_on_a_known_vulnerability_and_names_it(tmp_path: Path) -> None:
    result = make_audit(fake_pip_audit(tmp_path, report=VULNERABLE, exit_code=1, stderr="Found 1 known vulnerability"))
    assert result.returncode != 0
    assert "jinja2 3.1.2: GHSA-h5c8-rqwp-cp95 (CVE-2024-22195), fixed in 3.1.3" in result.stdout + result.stderr
    calls = (tmp_path / "calls").read_text(encoding="utf-8")
    # The locked versions exactly, as CI installs them, the dev tools' too: nothing resolved, nothing installed.
    assert "-r requirements.lock -r requirements-dev.lock --no-deps --disable-pip" in calls and "-f json" in calls


def test_audit_passes_a_clean_environment(tmp_path: Path) -> None:
    result = make_audit(fake_pip_audit(tmp_path, report=CLEAN, exit_code=0))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no known vulnerabilities in 2 packages" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


@pytest.mark.parametrize(("report", "stderr"), [(None, UNREACHABLE), (NOT_FOUND, "")],
                         ids=["service unreachable", "no package found by the service"])
def test_audit_warns_but_passes_when_no_vulnerability_service_answers(
        tmp_path: Path, report: dict[str, Any] | None, stderr: str) -> None:
    result = make_audit(fake_pip_audit(tmp_path, report=report, exit_code=1 if report is None else 0, stderr=stderr))
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("WARNING: pip-audit")]
    assert len(warnings) == 1 and "NOT audited" in warnings[0]
    # Both services were tried before giving up.
    calls = (tmp_path / "calls").read_text(encoding="utf-8").splitlines()
    assert [call.split("-s ")[1].split()[0] for call in calls] == ["osv", "pypi"]


def test_audit_fails_when_pip_audit_itself_breaks(tmp_path: Path) -> None:
    result = make_audit(fake_pip_audit(tmp_path, report=None, exit_code=2, stderr="error: unrecognized arguments\n"))
    assert result.returncode != 0
    assert "unrecognized arguments" in result.stdout + result.stderr
