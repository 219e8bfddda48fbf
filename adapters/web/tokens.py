"""The vendor page's tokens: unguessable, signed with ``DUNLINK_SECRET_KEY``, bound to one case.

A token is the case id signed with HMAC-SHA1 under a key derived from the secret and this purpose
(itsdangerous, the signer Flask and Django-style frameworks use), so a token made for anything else never
passes here. Its signature is compared in constant time. A token does not expire by itself: it is valid
while its case is open, which the page checks on every request. Whoever holds the secret key can open every
case's page, so it is a secret like the IPN secrets.
"""

from __future__ import annotations

import hmac

from itsdangerous import BadSignature, URLSafeSerializer

_PURPOSE = "dunlink.vendor-page.v1"
# Case ids are short hex; a token far longer than one is not worth verifying.
MAX_TOKEN = 256


class VendorTokens:
    def __init__(self, secret_key: str) -> None:
        self._serializer = URLSafeSerializer(secret_key, salt=_PURPOSE)

    def token(self, case_id: str) -> str:
        return str(self._serializer.dumps(case_id))

    def case_id(self, token: str) -> str | None:
        """The case a token was made for, or None for a token this key did not sign (altered, foreign)."""
        if not token or len(token) > MAX_TOKEN or not token.isascii():
            return None
        try:
            value = self._serializer.loads(token)
        except BadSignature:
            return None
        if not isinstance(value, str):
            return None
        # Base64 leaves spare bits in a signature's last character: a token with those bits changed decodes to the
        # same signature. Only the token as it was issued is accepted.
        return value if hmac.compare_digest(self.token(value), token) else None
