"""Digistore24's IPN: a form-encoded POST whose ``sha_sign`` field signs every other field with the vendor's
IPN passphrase (``signature.py``), read into the domain's events (``ipn.py``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from domain.events import IpnFieldError, PaymentEvent, dedup_key
from platforms.digistore24.ipn import ConnectionTest, DigistoreIpn, parse_ipn, read_form
from platforms.digistore24.signature import EmptyPassphrase, verify
from platforms.port import ConnectionCheck, Received, Unreadable


def _event(ipn: DigistoreIpn) -> PaymentEvent:
    """The domain event, with what matches a payment to its case: the buyer, the product, the tracking."""
    return dataclasses.replace(ipn.event, buyer_email=ipn.buyer_email, product_id=ipn.product_id,
                               tracking=ipn.tracking)


class Digistore24Webhook:
    name = "digistore24"

    def verify(self, secret: str, body: bytes, headers: Mapping[str, str]) -> bool:
        try:
            return verify(read_form(body), secret)
        except (IpnFieldError, EmptyPassphrase):
            return False  # a body that is no form cannot carry a signature; an empty passphrase signs nothing

    def receive(self, body: bytes) -> Received | ConnectionCheck:
        try:
            fields = read_form(body)
            parsed = parse_ipn(fields)
        except IpnFieldError as exc:
            raise Unreadable(str(exc)) from None
        if isinstance(parsed, ConnectionTest):
            return ConnectionCheck()
        return Received(_event(parsed), dedup_key(fields, body), body.decode("utf-8"))

    def event_of(self, stored: str) -> PaymentEvent:
        parsed = parse_ipn(read_form(stored.encode("utf-8")))
        if isinstance(parsed, ConnectionTest):
            raise IpnFieldError("event", "a connection test is never stored")
        return _event(parsed)
