"""Why a case waits for a person, and what to do about it, in the reader's language: one line per reason code.

The domain records a stable code with parameters beside the free-text reason (``domain/case.py``); the free
text stays for operators in ``dunlink cases show``, and emails word the code through the catalogue, with
amounts formatted for the reader's locale. A code this table does not know (one added without a line here,
or a case handed over before codes were recorded) gets the general line, never raw English.

To add a reason: one line in :data:`REASONS` (``%(name)s`` takes a parameter of that name), and its German in
``templates/locale/de/LC_MESSAGES/messages.po`` (a test checks that every message here has one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass


def N_(message: str) -> str:
    """Marks a message for the catalogue; it is translated when an email is rendered."""
    return message


_RETRY = N_("Fix the cause (see 'dunlink cases show' for the platform's answer), then retry the case.")
_EMAIL = N_("Check the buyer's email address; then retry the case, or send the payment link yourself.")
_LINK_BY_HAND = N_("Check the order on the platform; if the buyer still owes money, make a payment link by hand "
                   "and send it, then close the case.")
_CHECK_ORDER = N_("Check the order on the platform; then retry the case, or close it if nothing is owed.")
_ADJUST = N_("Check what the buyer still owes and adjust the new order on the platform by hand.")

# code: (why, what to do)
REASONS: dict[str, tuple[str, str]] = {
    "paid_after_cancel": (N_("The buyer paid installment %(installment)s on the original order after it was "
                             "cancelled."),
                          N_("Refund that payment, or count it against the new order; then close the case.")),
    "paid_twice": (N_("The buyer paid both the original order and the new one (%(amount)s on the new order)."),
                   N_("Refund one of the two payments on the platform and let the buyer know.")),
    "paid_after_close": (N_("The buyer paid %(amount)s on the new order after the case had ended."),
                         N_("Check the payment on the platform: refund it or settle it with the buyer.")),
    "refunded_after_replacement": (N_("Installment %(installment)s of the original order was refunded after the "
                                      "new order was made."), _ADJUST),
    "charged_back_after_replacement": (N_("Installment %(installment)s of the original order was charged back "
                                          "after the new order was made."), _ADJUST),
    "original_cancelled": (N_("The original order was already cancelled on the platform."), _LINK_BY_HAND),
    "original_completed": (N_("The original order was already completed on the platform."), _LINK_BY_HAND),
    "original_inactive": (N_("The original order is no longer active on the platform."), _LINK_BY_HAND),
    "fetch_original_failed": (N_("dunlink could not read the original order from the platform."), _RETRY),
    "create_replacement_failed": (N_("The platform refused the new order, or answered with a payment link dunlink "
                                     "does not trust."),
                                  N_("Fix the cause and retry the case, or make a payment link by hand and send "
                                     "it to the buyer.")),
    "cancel_original_failed": (N_("The platform refused to cancel the original order, so the buyer has not "
                                  "been sent the new link yet."), _RETRY),
    "send_link_failed": (N_("The email with the payment link could not be sent to the buyer."), _EMAIL),
    "send_reminder_failed": (N_("A reminder could not be sent to the buyer."), _EMAIL),
    "send_final_notice_failed": (N_("The last reminder could not be sent to the buyer."), _EMAIL),
    "cancel_replacement_failed": (N_("The new order could not be withdrawn; it may have been paid as well."),
                                  N_("Check both orders on the platform; if both were paid, refund one.")),
    "expire_failed": (N_("The new order could not be cancelled at its deadline; it may have been paid in full."),
                      N_("Check the payment on the platform, then close the case.")),
    "platform_unavailable": (N_("The platform did not answer through %(attempts)s attempts."),
                             N_("Once the platform answers again, retry the case.")),
    "mail_server_unavailable": (N_("The mail server did not take the email through %(attempts)s attempts."),
                                N_("Once the mail server takes mail again, retry the case.")),
    "installment_not_in_plan": (N_("Installment %(installment)s named in the failed-payment notice is not "
                                   "in the original order. Nothing was done."), _CHECK_ORDER),
    "link_undeliverable": (N_("The payment link could not be emailed to the buyer's address. Nothing was done."),
                           N_("Correct the buyer's email address on the platform, then retry the case.")),
    "no_replacement_plan": (N_("No new order can be planned from the original order's amounts. Nothing was "
                               "done."), _CHECK_ORDER),
    "order_of_another_vendor": (N_("The failed-payment notice named an order of another vendor. Nothing was "
                                   "done."),
                                N_("Check who sent the notice and whether your IPN secret has leaked; then close "
                                   "the case.")),
    "platform_disagrees": (N_("An hour after the failed-payment notice, the platform still does not show "
                              "installment %(installment)s as failed. Nothing was done."), _CHECK_ORDER),
    "payment_not_countable": (N_("A payment arrived that dunlink cannot count (not positive, or in another "
                                 "currency)."),
                              N_("Check the payment on the platform and settle it with the buyer; then close "
                                 "the case.")),
    "event_failed": (N_("A notice from the platform about this case could not be applied."),
                     N_("Read the notice in 'dunlink cases show' and settle the case by hand.")),
    "installments_unseen": (N_("No payment was seen for installments %(installments)s before the failed one, so "
                               "what is owed cannot be known from CopeCart's notices. Nothing was done."),
                            N_("Check those installments in CopeCart; confirm the paid ones with 'dunlink cases "
                               "confirm-paid', or close the case.")),
    "cannot_generate_link": (N_("CopeCart's phone offer could not make the payment link for this order."),
                             N_("Add the seller DunningCopeCart to the product in CopeCart or ask CopeCart's "
                                "support for the link; paste it on the case's page or give it with 'dunlink cases "
                                "link'.")),
    "vendor_did_not_act": (N_("The steps in CopeCart were not finished after %(days)s days of reminders."),
                           N_("Make the payment link and cancel the original order in CopeCart, then record "
                              "both on the case's page; or close the case.")),
    "later_installment_paid": (N_("Installment %(installment)s was paid on the original order while the new one was "
                                  "being made, so the amounts the vendor was given ask for it again."),
                               N_("Adjust the new order in CopeCart to what is still owed, then record its link; "
                                  "or close the case.")),
    "payment_ambiguous": (N_("A payment on order %(order)s fits %(cases)s cases of the same buyer and product."),
                          N_("Check in CopeCart which order was paid and settle the cases by hand.")),
    "plan_from_ipns_failed": (N_("What is owed could not be worked out from CopeCart's notices."), _CHECK_ORDER),
    "send_vendor_task_failed": (N_("The task email could not be sent to the vendor's tasks address."),
                                N_("Check tasks_email in the vendors file; then retry the case.")),
    "send_vendor_reminder_failed": (N_("A reminder could not be sent to the vendor's tasks address."),
                                    N_("Check tasks_email in the vendors file; then retry the case.")),
    "send_deactivate_link_failed": (N_("The email asking to deactivate the payment link could not be sent."),
                                    N_("Deactivate the new order's payment link in CopeCart, then close the case.")),
}

UNKNOWN = (N_("This case needs a person: see 'dunlink cases show %(case)s'."),
           N_("Look at the case's timeline and decide how to settle it."))


@dataclass(frozen=True, slots=True)
class WordedReason:
    why: str
    what_to_do: str


def word_reason(code: str | None, params: Mapping[str, object], *, case_id: str, gettext: Callable[[str], str],
                format_value: Callable[[object], str]) -> WordedReason:
    """The reason of ``code`` in the reader's language; the general line when the code or a parameter its
    message needs is unknown (or the translation asks for one that is missing)."""
    values = {name: format_value(value) for name, value in params.items()} | {"case": case_id}
    why, what_to_do = REASONS.get(code or "", UNKNOWN)
    try:
        return WordedReason(gettext(why) % values, gettext(what_to_do) % values)
    except (KeyError, ValueError, TypeError):
        why, what_to_do = UNKNOWN
        return WordedReason(gettext(why) % {"case": case_id}, gettext(what_to_do))
