"""Digistore24 IPNs as the sandbox sends them: the fields of tests/fixtures/digistore24/ipn, form-encoded, with the
``sha_sign`` Digistore24 computes (``platforms.digistore24.signature``) over the vendor's IPN passphrase.

Which fields each event carries follows those samples: a payment carries its transaction and, while payments are
left, ``next_payment_at``; a missed payment carries ``billing_stop_reason`` (empty while the rebilling runs, then
the missed payment's due date is ``next_payment_at``; after a stop, ``rebill_stop_noted_at`` instead); a rebilling
stop carries its reason and the number of payments made. ``pay_sequence_no`` is the payment's place in the plan,
0 for a single payment.
"""

from __future__ import annotations

import zlib
from urllib.parse import urlencode

from dunlink.sandbox.ds24_purchases import SINGLE_PAYMENT, Purchase, Transaction, timestamp
from platforms.digistore24.signature import SIGNATURE_FIELD, sha_sign

PAYMENT, MISSED, REBILL_CANCELLED = "on_payment", "on_payment_missed", "on_rebill_cancelled"
_GERMAN = ("DE", "AT", "CH", "LI", "LU")


def merchant_id(vendor: str) -> str:
    """A stable Digistore24-looking merchant id per vendor slug."""
    return str(30000000 + zlib.crc32(vendor.encode("utf-8")) % 10000000)


def _common(purchase: Purchase, event: str) -> dict[str, str]:
    buyer = purchase.buyer
    created = purchase.created_at
    return {
        "event": event, "api_mode": "live", "ipn_version": "1.6", "ipn_config_id": "654321",
        "ipn_config_api_key_id": "1234567", "ipn_config_product_ids": purchase.product_id,
        "merchant_id": merchant_id(purchase.vendor), "merchant_name": purchase.vendor, "order_id": purchase.id,
        "order_date": created.date().isoformat(), "order_date_time": timestamp(created),
        "order_item_id": str(purchase.order_item_id), "order_type": "regular", "product_id": purchase.product_id,
        "product_name": purchase.product_name, "product_name_intern": purchase.product_name, "quantity": "1",
        "billing_type": purchase.billing_type, "number_of_installments": str(purchase.number_of_installments),
        "currency": purchase.currency, "amount": purchase.first_amount.decimal_string(),
        "first_amount": purchase.first_amount.decimal_string(),
        "other_amounts": purchase.other_amounts.decimal_string(),
        "first_billing_interval": purchase.first_billing_interval,
        "other_billing_intervals": purchase.other_billing_intervals, "custom": purchase.custom,
        "trackingkey": purchase.tracking.get("trackingkey", ""),
        "campaignkey": purchase.tracking.get("campaignkey", ""), "affiliate_name": "", "voucher_code": "",
        "tags": "", "buyer_email": buyer["email"], "buyer_first_name": buyer["first_name"], "buyer_id": buyer["id"],
        "buyer_last_name": buyer["last_name"], "buyer_language": "de" if buyer["country"] in _GERMAN else "en",
        "email": buyer["email"], "address_first_name": buyer["first_name"], "address_last_name": buyer["last_name"],
        "address_country": buyer["country"], "address_city": "", "address_street": "", "address_zipcode": "",
        "country": buyer["country"], "rebilling_stop_url": "", "renew_url": "",
        "billing_status": purchase.billing_status,
    }


def payment_ipn(purchase: Purchase, transaction: Transaction) -> dict[str, str]:
    """``on_payment`` for ``transaction``, after it was recorded on ``purchase``."""
    fields = _common(purchase, PAYMENT)
    fields.update({
        "transaction_id": str(transaction.id), "transaction_amount": transaction.amount.decimal_string(),
        "transaction_currency": transaction.amount.currency,
        "transaction_date": transaction.created_at.date().isoformat(), "transaction_type": "payment",
        "pay_sequence_no": "0" if purchase.billing_type == SINGLE_PAYMENT else str(transaction.number),
    })
    due = purchase.next_due()
    if due is not None:
        fields["next_payment_at"] = due.isoformat()
    return fields


def missed_ipn(purchase: Purchase, number: int) -> dict[str, str]:
    """``on_payment_missed`` for payment ``number``: a failed charge while the rebilling runs, else after a stop."""
    fields = _common(purchase, MISSED)
    fields.update({"billing_stop_reason": purchase.billing_stop_reason, "pay_sequence_no": str(number)})
    if purchase.stopped_at is not None:
        fields["rebill_stop_noted_at"] = timestamp(purchase.stopped_at)
    elif purchase.rebilling_active:
        fields["next_payment_at"] = purchase.due_date(number).isoformat()
    return fields


def rebill_cancelled_ipn(purchase: Purchase) -> dict[str, str]:
    """``on_rebill_cancelled``, sent at once when the rebilling is stopped."""
    fields = _common(purchase, REBILL_CANCELLED)
    fields.update({"billing_stop_reason": purchase.billing_stop_reason, "pay_sequence_no": str(purchase.paid)})
    return fields


def signed_body(fields: dict[str, str], passphrase: str) -> tuple[bytes, str]:
    """The form body as posted, ``sha_sign`` last as in Digistore24's samples, and that signature."""
    signature = sha_sign(fields, passphrase)
    return urlencode([*fields.items(), (SIGNATURE_FIELD, signature)]).encode("ascii"), signature
