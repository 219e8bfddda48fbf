"""CopeCart's IPN: JSON, signed with base64(HMAC-SHA256(the vendor's IPN secret, the raw body)) in the
``X-Copecart-Signature`` header."""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Mapping

from domain.events import PaymentEvent, dedup_key
from platforms.copecart.ipn import IpnFieldError, parse_event
from platforms.port import ConnectionCheck, Received, Unreadable

SIGNATURE_HEADER = "x-copecart-signature"


def signature(secret: str, body: bytes) -> str:
    """base64(HMAC-SHA256(secret, body)), as CopeCart signs its IPNs."""
    return base64.b64encode(hmac.digest(secret.encode(), body, "sha256")).decode()


def signature_matches(secret: str, body: bytes, given: str | None) -> bool:
    if not given:
        return False
    try:
        given_bytes = given.strip().encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(signature(secret, body).encode("ascii"), given_bytes)


class CopeCartWebhook:
    name = "copecart"

    def verify(self, secret: str, body: bytes, headers: Mapping[str, str]) -> bool:
        return signature_matches(secret, body, headers.get(SIGNATURE_HEADER))

    def receive(self, body: bytes) -> Received | ConnectionCheck:
        # Parse the text that is stored, exactly as the workers will read it again: bytes given to json.loads
        # would also pass UTF-16, UTF-32 and a UTF-8 BOM, which the stored text then fails on.
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise Unreadable("body: not UTF-8") from None
        try:
            fields = json.loads(text)
        except (ValueError, RecursionError):
            raise Unreadable("body: not JSON") from None
        if not isinstance(fields, dict):
            raise Unreadable("body: must be a JSON object")
        try:
            event = parse_event(fields)
        except IpnFieldError as exc:
            raise Unreadable(str(exc)) from None
        return Received(event, dedup_key(fields, body), text)

    def event_of(self, stored: str) -> PaymentEvent:
        return parse_event(json.loads(stored))
