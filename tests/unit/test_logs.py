"""Log lines never carry a buyer's address or a credential, whichever logger wrote them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from dunlink.config.logs import (
    _ASSIGNED,
    _BEARER,
    _EMAIL,
    _EMAIL_ENCODED,
    _URL_PASSWORD,
    REDACTED,
    _may_need_scrubbing,
    configure_logging,
    log_lines,
    mask_email,
    redact_secrets,
    scrub,
    scrub_text,
)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Logging configured as in production (JSON) onto a buffer; restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(json_output=True, stream=stream)
    yield stream
    root.handlers, root.level = handlers, level
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_an_email_keeps_its_first_letter_and_domain() -> None:
    assert mask_email("to Anna <anna.meier+x@mail.example.co.uk>, cc bob@b.de") == \
        "to Anna <a***@mail.example.co.uk>, cc b***@b.de"


@pytest.mark.parametrize(("text", "masked"), [
    ("550 5.1.1 <zelda@exämple.com>: rejected", "550 5.1.1 <z***@exämple.com>: rejected"),
    ("<mary-jane.o'connor@example.com>", "<m***@example.com>"),
    ("refused <zelda!buyer@example.com>", "refused <z***@example.com>"),
    ("'v_recipient': 'Zelda Buyer <zelda@ex\u00e4mple.com>'", "'v_recipient': 'Zelda Buyer <z***@ex\u00e4mple.com>'"),
    ("x@exa_mple.com", "x***@exa_mple.com"),
    ("refused zelda,buyer@example.com", "refused z***@example.com"),
    ("anna@xn--exmple-cua.com", "a***@xn--exmple-cua.com"),
    ("https://pay.example/?email=zelda.buyer%40example.com&x=1", "https://pay.example/?email=z***%40example.com&x=1"),
])
def test_an_address_in_any_script_or_encoding_is_masked(text: str, masked: str) -> None:
    assert scrub_text(text) == masked


def test_a_known_secret_is_redacted_wherever_it_appears() -> None:
    redact_secrets(["Tok-Secret-4711", "p@ss word/1", "short", None])

    assert scrub_text("platform said: token Tok-Secret-4711 was revoked") == \
        f"platform said: token {REDACTED} was revoked"
    assert scrub_text("connecting as u:p%40ss%20word%2F1@db") == f"connecting as u:{REDACTED}@db"
    assert scrub_text("a short answer") == "a short answer"  # too short to be told from ordinary words


def test_a_celery_node_name_stays_readable() -> None:
    assert scrub_text("soak1-2@abc ready.") == "soak1-2@abc ready."


def test_text_without_emails_is_left_alone() -> None:
    text = "POST http://127.0.0.1:8090/v1/orders/CC-1001/cancel 200 in 12ms"
    assert scrub_text(text) == text


def test_credentials_inside_text_are_removed() -> None:
    assert scrub_text("smtp+starttls://mailer:s3cr3t-pw@smtp.example.com:587") == \
        f"smtp+starttls://mailer:{REDACTED}@smtp.example.com:587"
    assert scrub_text("Authorization: Bearer sandbox-token") == f"Authorization: Bearer {REDACTED}"
    assert scrub_text("login failed, password=pw1 token: abc") == f"login failed, password={REDACTED} token: {REDACTED}"
    assert scrub_text("password='pw 1' PGPASSWORD=pw2 api-key: k3") == \
        f"password={REDACTED} PGPASSWORD={REDACTED} api-key: {REDACTED}"


def test_the_processor_redacts_secret_fields_and_masks_every_other_value() -> None:
    event = {
        "event": "sending to anna@example.com", "platform_token": "t0k3n", "copecart_ipn_secret": "shh",
        "smtp_password": "pw", "X-Copecart-Signature": "c2ln", "Authorization": "Bearer t0k3n",
        "buyer": {"email": "anna@example.com", "api_key": "k"}, "recipients": ["anna@example.com"],
        "attempt": 2, "transient": True, "_record": object(), "message_id": "<3f9a@dunlink.example>",
    }
    out = scrub(None, "info", event)
    assert out["event"] == "sending to a***@example.com"
    for key in ("platform_token", "copecart_ipn_secret", "smtp_password", "X-Copecart-Signature", "Authorization"):
        assert out[key] == REDACTED
    assert out["buyer"] == {"email": "a***@example.com", "api_key": REDACTED}
    assert out["recipients"] == ["a***@example.com"]
    assert (out["attempt"], out["transient"]) == (2, True)
    assert out["message_id"] == "<3f9a@dunlink.example>"  # identifies a message, not a person


def test_structlog_and_library_lines_share_one_masked_json_format(captured: io.StringIO) -> None:
    structlog.get_logger("dunlink.pipeline").info("link_sent", case="c1", vendor="acme", order="CC-1",
                                                  to="anna@example.com")
    logging.getLogger("aiosmtpd.example").info("RCPT TO:<%s> accepted", "anna@example.com")
    logging.getLogger("httpx").warning("HTTP Request: %s", "GET http://u:pw@host.example/x")

    ours, library, http = _lines(captured)
    assert ours["event"] == "link_sent"
    assert (ours["case"], ours["vendor"], ours["order"]) == ("c1", "acme", "CC-1")
    assert ours["to"] == "a***@example.com"
    assert library["event"] == "RCPT TO:<a***@example.com> accepted"
    assert http["event"] == f"HTTP Request: GET http://u:{REDACTED}@host.example/x"
    for line in (ours, library, http):
        assert {"timestamp", "level", "logger"} <= set(line)
    assert "anna@example.com" not in captured.getvalue()


def test_context_bound_for_a_task_reaches_library_lines(captured: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(case="c9", vendor="acme", order="CC-9")
    logging.getLogger("adapters.platform.http").warning("retrying after %s", "503")
    [line] = _lines(captured)
    assert (line["case"], line["vendor"], line["order"]) == ("c9", "acme", "CC-9")


def test_tracebacks_are_masked_too(captured: io.StringIO) -> None:
    try:
        raise ValueError("recipient anna@example.com refused, password=hunter2 at smtps://u:hunter2@mx.example")
    except ValueError:
        logging.getLogger("adapters.email.smtp").exception("send failed")
        structlog.get_logger("dunlink.pipeline").exception("step_failed", case="c1")
    text = captured.getvalue()
    assert text.count("ValueError") >= 2
    assert "anna@example.com" not in text
    assert "hunter2" not in text


def test_a_terminal_gets_readable_lines_not_json() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = Terminal()
    try:
        configure_logging(stream=stream)
        structlog.get_logger("dunlink.pipeline").info("link_sent", case="c1", to="anna@example.com")
    finally:
        root.handlers, root.level = handlers, level
        structlog.reset_defaults()
    text = stream.getvalue()
    assert "link_sent" in text
    assert "a***@example.com" in text
    assert not text.lstrip().startswith("{")


_FRAGMENTS = ("anna", "@", "%40", "example.com", "://", "u:", "pw", "Bearer", "bearer", "Basic", " ", "abcdefgh12",
              "PassWord", "passwd", "Secret", "token", "API_KEY", "api-key", "'", "=", ":", "\t", "-", ".")


@settings(max_examples=1000, deadline=None, database=None)
@given(st.lists(st.sampled_from(_FRAGMENTS) | st.text(max_size=4), max_size=12).map("".join))
def test_text_the_quick_check_lets_through_is_text_no_pattern_matches(text: str) -> None:
    if not _may_need_scrubbing(text):
        patterns = (_EMAIL, _EMAIL_ENCODED, _URL_PASSWORD, _BEARER, _ASSIGNED)
        assert not any(pattern.search(text) for pattern in patterns), text
        assert scrub_text(text) == text


def test_a_batch_of_lines_renders_as_structlog_lines_do(captured: io.StringIO) -> None:
    fields = {"vendor": "acme", "event_type": "payment.failed", "order": "anna@example.com", "event_id": 7,
              "duplicate": False, "token": "t0k3n"}
    structlog.contextvars.bind_contextvars(request="r-1", vendor="bound")
    structlog.get_logger("dunlink.webhook").info("webhook_stored", **fields)
    log_lines("dunlink.webhook", [("webhook_stored", fields), ("webhook_stored", {**fields, "event_id": 8})])
    logging.getLogger("dunlink.webhook").setLevel(logging.WARNING)
    try:
        log_lines("dunlink.webhook", [("webhook_stored", fields)])  # below the level: not written
    finally:
        logging.getLogger("dunlink.webhook").setLevel(logging.NOTSET)

    lines = captured.getvalue().splitlines()
    assert len(lines) == 3
    one, batched, second = (json.loads(line) for line in lines)
    assert list(batched) == list(one)  # same fields, in the same order
    assert {**batched, "timestamp": one["timestamp"]} == one
    assert (batched["order"], batched["token"], batched["vendor"], batched["request"]) == (
        "a***@example.com", REDACTED, "acme", "r-1")
    assert second["event_id"] == 8
    assert batched["timestamp"].endswith("Z")


def test_a_batch_of_lines_on_a_terminal_goes_through_structlog() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging(json_output=False, stream=stream)
        log_lines("dunlink.webhook", [("webhook_stored", {"order": "anna@example.com"})])
    finally:
        root.handlers, root.level = handlers, level
        structlog.reset_defaults()
    assert "webhook_stored" in stream.getvalue()
    assert "a***@example.com" in stream.getvalue()
