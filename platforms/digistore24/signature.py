"""Digistore24's IPN signature, ``sha_sign``, computed and checked exactly as Digistore24's reference does.

Digistore24 signs the form fields it posts, not the body: every field except ``sha_sign`` and ``SHASIGN``,
keys sorted as byte strings (PHP's ``SORT_STRING``), empty values left out, each remaining field appended as
``key=value`` followed by the passphrase, the UTF-8 bytes hashed with SHA-512, the digest in upper-case hex.
Field order on the wire therefore does not matter; field names keep their case; values are taken as they
arrive after form decoding, with no trimming and no HTML-entity decoding (the reference's default).

Where the published sources offer variants (upper-cased field names, a case-insensitive comparison, HTML
decoding in a 2019 example) only the reference's default is accepted: a signature computed any other way is
refused, and the sender sees the refusal (docs/platforms/digistore24.md, "Signature").
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

SIGNATURE_FIELD = "sha_sign"
# Both spellings are left out of the signed text, as the reference does; only ``sha_sign`` is read.
UNSIGNED_FIELDS = frozenset({"sha_sign", "SHASIGN"})


class EmptyPassphrase(ValueError):
    """No passphrase to sign with: refusing is the only safe answer, a bypass would accept anything."""

    def __init__(self) -> None:
        super().__init__("the Digistore24 IPN passphrase is empty")


def signed_text(fields: Mapping[str, str], passphrase: str) -> str:
    """The text Digistore24 hashes: ``key=value`` + passphrase for each non-empty field, keys in byte order.

    Python orders ``str`` by code point, which for UTF-8 is the byte order PHP's ``SORT_STRING`` compares.
    """
    if not passphrase:
        raise EmptyPassphrase
    return "".join(f"{key}={fields[key]}{passphrase}" for key in sorted(fields)
                   if key not in UNSIGNED_FIELDS and fields[key] != "")


def sha_sign(fields: Mapping[str, str], passphrase: str) -> str:
    """The ``sha_sign`` Digistore24 sends with ``fields``: SHA-512 of :func:`signed_text`, upper-case hex."""
    return hashlib.sha512(signed_text(fields, passphrase).encode("utf-8")).hexdigest().upper()


def verify(fields: Mapping[str, str], passphrase: str) -> bool:
    """True only when ``fields`` carries the ``sha_sign`` that ``passphrase`` gives; compared in constant time.

    An empty passphrase raises :class:`EmptyPassphrase` rather than answering: a vendor configured without one
    is a start-up error, never an open door.
    """
    expected = sha_sign(fields, passphrase)
    received = fields.get(SIGNATURE_FIELD)
    if not isinstance(received, str):
        return False
    return hmac.compare_digest(received.encode("utf-8"), expected.encode("ascii"))
