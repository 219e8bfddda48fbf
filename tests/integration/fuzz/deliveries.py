"""Hypothesis strategies for deliveries to ``POST /webhooks/copecart/{vendor}``, each with the answer the
contract names for it ("Inbound: CopeCart IPN").

Every strategy builds the exact bytes sent and says, from the way it built them, what must come back:
the status, the start of the answer's text, and for a delivery that must be stored the deduplication key the
contract defines. Nothing here asks the app what it thinks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from tests.support.vendors import vendors_toml

FIXTURE = Path(__file__).parents[2] / "fixtures" / "copecart" / "payment_failed_breakdown.json"
MAX_BODY = 256 * 1024

# Each vendor signs with a secret of its own, so "signed for another vendor" is a wrong signature.
SECRETS = {"acme": "acme-ipn-secret-4b9d1f", "globex": "globex-ipn-secret-8c2e6a"}
VENDORS_TOML = vendors_toml(SECRETS)

ACTED_ON = ("payment.failed", "payment.made", "payment.refunded", "payment.charged_back",
            "payment.recurring.cancelled")
ALIASES = {"payment.charge_back": "payment.charged_back"}
# Fields dunlink reads as text; present with another JSON type, the delivery is malformed.
TEXT_FIELDS = ("order_id", "transaction_id", "payment_plan", "transaction_currency", "product_id", "product_name",
               "buyer_email", "buyer_firstname", "buyer_lastname", "buyer_country_code", "frequency")
HOSTILE = ("Anna\r\nBcc: victim@example.com", "Anna\nSubject: hacked", "<b>x</b>", "<script>alert(1)</script>",
           "\"><img src=x onerror=alert(1)>", "Zoë\u2028Bcc: x@example.com", "=?utf-8?q?=0D=0ABcc:_x?=",
           "Anna\x00Meier", "{{ 7*7 }}", "${jndi:ldap://x}", "Ünïcödé 🎉", "\u202eevil")


@dataclass(frozen=True)
class Delivery:
    """One request and what the contract says it must be answered."""

    kind: str
    vendor: str
    body: bytes
    signature: bytes | None  # the header's raw value; None leaves it out
    status: int
    answer_starts: str = ""  # a 400 names the field: "rate_number: ..."
    chunked: bool = False  # sent without Content-Length, as a stream
    key: tuple[str, str, str] | None = None  # (vendor, event_type, dedup key) of an event that must be stored
    acted_on: bool = False

    @property
    def path(self) -> str:
        return f"/webhooks/copecart/{quote(self.vendor, safe='')}"

    def __repr__(self) -> str:  # falsifying examples stay readable with 300 KiB bodies
        body = self.body if len(self.body) <= 300 else self.body[:300] + b"...(%d bytes)" % len(self.body)
        return (f"Delivery(kind={self.kind!r}, vendor={self.vendor!r}, status={self.status}, "
                f"chunked={self.chunked}, signature={self.signature!r}, body={body!r})")


def sign(vendor: str, body: bytes) -> bytes:
    """base64(HMAC-SHA256(vendor's secret, raw body)), as CopeCart signs."""
    return base64.b64encode(hmac.new(SECRETS[vendor].encode(), body, hashlib.sha256).digest())


_FIXTURE_FIELDS: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))


def base_fields() -> dict[str, Any]:
    """The sample failed installment's fields, a fresh copy (its values are all flat)."""
    return dict(_FIXTURE_FIELDS)


def dedup_key(fields: dict[str, Any], body: bytes) -> str:
    transaction = fields.get("transaction_id")
    if isinstance(transaction, str) and transaction:
        return transaction
    return "sha256:" + hashlib.sha256(body).hexdigest()


# -- pieces -------------------------------------------------------------------------------------------------

vendors = st.sampled_from(sorted(SECRETS))
printable = st.characters(exclude_categories=("Cc", "Cs"))
names = st.one_of(st.sampled_from(HOSTILE), st.text(st.characters(exclude_categories=("Cs",)), max_size=24))
identifiers = st.text(printable, min_size=1, max_size=40)
# Cheaper to draw, for events that are only the starting point of a malformed delivery.
plain_names = st.sampled_from(("Anna", "Zoë", *HOSTILE))
amounts = st.builds(lambda whole, cents: f"{whole}.{cents:02d}", st.integers(0, 99_999), st.integers(0, 99))
rate_numbers = st.one_of(st.integers(1, 1000), st.integers(1, 1000).map(str))
other_event_types = st.text(printable, min_size=1, max_size=64).filter(
    lambda t: t not in ACTED_ON and t not in ALIASES)
event_types = st.one_of(st.sampled_from((*ACTED_ON, *ALIASES)), other_event_types)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)


@st.composite
def event_fields(draw: st.DrawFn, *, event_type: str | None = None, rich: bool = False) -> dict[str, Any]:
    """The fields of an event the contract says is stored.

    ``rich``: every field dunlink reads drawn, names and product as hostile as text gets. Otherwise a cheaper
    variation of the sample, for events that are only the starting point of a malformed delivery.
    """
    fields = base_fields()
    if rich:
        fields.update(
            event_type=event_type or draw(event_types), order_id=draw(identifiers),
            transaction_id=draw(identifiers),
            payment_plan=draw(st.sampled_from(("breakdown_payment", "single_payment", "subscription"))),
            rate_number=draw(rate_numbers), transaction_amount=draw(amounts),
            transaction_currency=draw(st.sampled_from(("EUR", "USD", "CHF"))),
            buyer_firstname=draw(names), buyer_lastname=draw(names), product_name=draw(names))
    else:
        number, name = draw(st.integers(0, 10**9)), draw(plain_names)
        fields.update(event_type=event_type or draw(st.sampled_from((*ACTED_ON, *ALIASES))),
                      order_id=f"CC-{number % 10_000}", transaction_id=f"T-{number}", buyer_firstname=name,
                      product_name=name)
    if draw(st.booleans()):
        del fields["transaction_id"]  # then the SHA-256 of the body is the key
    return fields


def encode(fields: dict[str, Any], *, ascii_only: bool) -> bytes:
    return json.dumps(fields, ensure_ascii=ascii_only).encode("utf-8")


# -- deliveries the contract says are stored ----------------------------------------------------------------

@st.composite
def stored(draw: st.DrawFn) -> Delivery:
    """Correctly signed, every field dunlink reads well formed: ``200 OK`` and stored once."""
    vendor = draw(vendors)
    fields = draw(event_fields(rich=True))
    fields["order_source_identifier"] = draw(json_values)  # fields dunlink does not read may be anything
    body = encode(fields, ascii_only=draw(st.booleans()))
    event_type = ALIASES.get(fields["event_type"], fields["event_type"])
    return Delivery("stored", vendor, body, sign(vendor, body), 200, "OK",
                    key=(vendor, event_type, dedup_key(fields, body)), acted_on=event_type in ACTED_ON)


# -- deliveries the contract says are refused ---------------------------------------------------------------

def deep(depth: int, opener: bytes, closer: bytes) -> bytes:
    return opener * depth + b"1" + closer * depth


any_bodies = st.one_of(
    st.binary(max_size=512),
    st.builds(lambda fields: encode(fields, ascii_only=True), event_fields()),
    st.integers(20_000, 100_000).map(lambda depth: b"[" * depth),
)


@st.composite
def badly_signed(draw: st.DrawFn) -> Delivery:
    """Missing, empty, truncated, for another body or vendor, hex instead of base64, garbage: ``401``."""
    vendor = draw(vendors)
    body = draw(any_bodies)
    right = sign(vendor, body)
    other_vendor = next(v for v in SECRETS if v != vendor)
    signature = draw(st.one_of(
        st.none(),
        st.just(b""),
        st.just(right[:-4]),
        st.just(right[:-2] + (b"A=" if right[-2:] != b"A=" else b"B=")),
        st.just(sign(other_vendor, body)),
        st.just(sign(vendor, body + b" ")),
        st.just(hmac.new(SECRETS[vendor].encode(), body, hashlib.sha256).hexdigest().encode()),
        st.just(base64.b64encode(hashlib.sha256(body).digest())),  # unkeyed
        st.binary(max_size=64).filter(lambda raw: not any(c in raw for c in b"\r\n\x00")),
    ))
    return Delivery("bad_signature", vendor, body, signature, 401)


@st.composite
def unknown_vendor(draw: st.DrawFn) -> Delivery:
    slug = draw(st.text(st.characters(exclude_characters="/", exclude_categories=("Cs",)), min_size=1,
                        max_size=30).filter(lambda s: s not in SECRETS and s.strip(".") != ""))
    body = draw(any_bodies)
    signature = draw(st.one_of(st.none(), st.just(sign("acme", body))))
    return Delivery("unknown_vendor", slug, body, signature, 404)


@st.composite
def not_json(draw: st.DrawFn) -> Delivery:
    """Correctly signed bytes that are no JSON object in UTF-8: ``400`` naming the body."""
    vendor = draw(vendors)
    fields = draw(event_fields())
    valid = encode(fields, ascii_only=False)
    body = draw(st.one_of(
        st.binary(max_size=512).filter(lambda raw: not raw.strip().startswith(b"{")),
        st.integers(0, len(valid) - 1).map(lambda cut: valid[:cut]),  # truncated in transit
        st.sampled_from((b"}", b"\x00", b"{}")).map(lambda extra: valid + extra),
        st.just(b"\xef\xbb\xbf").map(lambda bom: bom + valid),  # a BOM: not JSON text (RFC 8259 section 8.1)
        st.sampled_from(("utf-16", "utf-16-le", "utf-32")).map(lambda codec: valid.decode().encode(codec)),
        st.integers(0, len(valid)).map(lambda at: valid[:at] + b"\xff\xfe" + valid[at:]),  # not UTF-8
        st.just("Zoë").map(  # a sender that is not speaking UTF-8
            lambda name: json.dumps({**fields, "buyer_firstname": name}, ensure_ascii=False).encode("latin-1",
                                                                                                 "replace")),
        json_values.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
        st.integers(20_000, 100_000).map(lambda depth: b"[" * depth),
        st.integers(20_000, 100_000).map(lambda depth: deep(depth, b"[", b"]")),
        st.integers(20_000, 40_000).map(lambda depth: deep(depth, b'{"a":', b"}")),
        st.integers(20_000, 40_000).map(lambda depth: valid[:-1] + b', "metadata": ' + deep(depth, b"[", b"]")
                                       + b"}"),
    ))
    return Delivery("not_json", vendor, body, sign(vendor, body), 400, "body:")


# What a field dunlink reads can be instead of what it must be. Each value is wrong for its field.
_NOT_TEXT = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(),
                      st.lists(json_scalars, max_size=3), st.dictionaries(st.text(max_size=4), json_scalars,
                                                                          max_size=3))
_BAD_IDENTIFIER = st.one_of(_NOT_TEXT, st.just(""), st.just(None),
                            st.text(printable, min_size=1, max_size=8).map(lambda t: t + "\x00"),
                            st.text(printable, max_size=8).map(lambda t: t + "\ud800"),
                            st.text(st.characters(categories=("Cc",)), min_size=1, max_size=3))
_WRONG: dict[str, Any] = {
    "event_type": st.one_of(_BAD_IDENTIFIER, st.text(printable, min_size=65, max_size=90)),
    "order_id": st.one_of(_BAD_IDENTIFIER, st.text(printable, min_size=129, max_size=160)),
    "transaction_id": st.one_of(_NOT_TEXT, st.text(printable, max_size=8).map(lambda t: t + "\x00"),
                                st.text(printable, max_size=8).map(lambda t: "\udc80" + t)),
    "payment_plan": st.one_of(_NOT_TEXT, st.just(""), st.just(None)),
    "rate_number": st.one_of(
        st.none(), st.booleans(), st.floats(), st.lists(st.integers(1, 9), max_size=2), st.integers(-(10**30), 0),
        st.integers(1001, 10**30), st.integers(-(10**30), 0).map(str), st.integers(1001, 10**30).map(str),
        st.sampled_from(("", " ", "3.0", "3a", "three", "+3", "-1", "0x3", "1e2", "²", "٣", "３", "9" * 5000))),
    "transaction_currency": st.one_of(_NOT_TEXT, st.just(""), st.just(None),
                                      st.sampled_from(("eur", "EURO", "XXX", "€", "E\x00R"))),
    "transaction_amount": st.one_of(
        _NOT_TEXT, st.none(), st.sampled_from(("", "abc", "50,00", "1e3", "50.001", "NaN", "Infinity", "٥٠",
                                               "50.00.00", "--5", "currency", "9" * 5000, "0." + "1" * 40))),
    **{name: _NOT_TEXT for name in ("product_id", "product_name", "buyer_email", "buyer_firstname",
                                     "buyer_lastname", "buyer_country_code", "frequency")},
}


@st.composite
def wrong_field(draw: st.DrawFn) -> Delivery:
    """Correctly signed, one field dunlink relies on missing or of the wrong type: ``400`` naming it."""
    vendor = draw(vendors)
    field = draw(st.sampled_from(sorted(_WRONG)))
    # An event on an installment plan with an amount: every field above is required or checked for it.
    fields = draw(event_fields(event_type=draw(st.sampled_from(("payment.failed", "payment.made",
                                                                "payment.refunded", "payment.charge_back")))))
    fields["payment_plan"] = "breakdown_payment"
    if draw(st.booleans()) and field not in TEXT_FIELDS:
        fields.pop(field, None)
    else:
        fields[field] = draw(_WRONG[field])
    body = encode(fields, ascii_only=True)
    return Delivery("wrong_field", vendor, body, sign(vendor, body), 400, f"{field}:")


@st.composite
def too_large(draw: st.DrawFn) -> Delivery:
    """Over 256 KiB, signed or not, declared or streamed: ``413``."""
    vendor = draw(vendors)
    size = draw(st.integers(MAX_BODY + 1, MAX_BODY + 32 * 1024))
    fields = draw(event_fields())
    shape = draw(st.sampled_from(("padded_event", "filler", "nested")))
    if shape == "padded_event":
        fields["metadata"] = "x" * size
        body = encode(fields, ascii_only=True)
    elif shape == "filler":
        body = draw(st.sampled_from((b"x", b"\xff", b" ", b"{"))) * size
    else:
        body = b"[" * size
    signature = draw(st.one_of(st.just(sign(vendor, body)), st.none()))
    return Delivery("too_large", vendor, body, signature, 413, chunked=draw(st.booleans()))
