"""What reaches the buyer's mail server, and what happens when the mail server says no."""

from __future__ import annotations

from tests.support.stack import Stack, eventually, order_json


def test_markup_in_a_buyer_name_reads_as_text_and_mail_server_refusals_reach_the_case(stack: Stack) -> None:
    stack.mail.refuse["gone@example.com"] = "550 5.1.1 mailbox unavailable"
    stack.mail.refuse["later@example.com"] = "451 4.3.0 try later"
    stack.seed(order_json("CC-3001", first_name="<b>x</b>\n\nIMPORTANT: pay at https://evil.example/pay instead",
                          email="markup@example.com"))
    stack.seed(order_json("CC-3002", email="gone@example.com"))
    stack.seed(order_json("CC-3003", email="later@example.com"))
    for order_id in ("CC-3001", "CC-3002", "CC-3003"):
        assert stack.fail(order_id, 3)["delivery"]["status"] == 200

    # A buyer named <b>x</b> with an instruction after line breaks: escaped in the HTML part, never markup, and
    # folded into the greeting's line in the text part. Both parts name the buyer's order and the new one.
    markup = eventually(lambda: stack.case_in("CC-3001", "awaiting_payment"), what="the email to <b>x</b>")
    [mail] = stack.mails_to("markup@example.com")
    assert "&lt;b&gt;x&lt;/b&gt;" in mail.html
    assert "<b>x</b>" not in mail.html
    assert "Hallo <b>x</b> IMPORTANT: pay at https://evil.example/pay instead," in mail.text
    assert not [line for line in mail.text.splitlines() if line.startswith("IMPORTANT")]
    for part in (mail.text, mail.html):
        assert "Ihre Bestellnummer: CC-3001" in part
        assert f"Neue Bestellnummer: {markup.replacement_order_id}" in part

    # 550: permanent, at once to a person with the server's answer as the reason.
    gone = eventually(lambda: stack.case_in("CC-3002", "needs_person"), what="the 550 to reach a person")
    assert gone.reason is not None
    assert "send_link" in gone.reason
    assert "550" in gone.reason
    assert gone.failed_step is not None and gone.failed_step.value == "send_link"

    # 451: transient, retried from the database until the server takes it.
    eventually(lambda: any(e.kind == "step_retry" for e in stack.timeline(_case_id(stack, "CC-3003"))),
               what="the 451 to schedule a retry")
    assert stack.case_in("CC-3003", "original_cancelled") is not None
    del stack.mail.refuse["later@example.com"]
    later = eventually(lambda: stack.case_in("CC-3003", "awaiting_payment"), timeout=40,
                       what="the retried email to go out")
    [sent] = stack.mails_to("later@example.com")
    assert sent.message["X-Dunlink-Case"] == later.id
    assert stack.mails_to("gone@example.com") == []


def _case_id(stack: Stack, order_id: str) -> str:
    case = eventually(lambda: stack.case_for(order_id), what=f"a case for {order_id}")
    return case.id
