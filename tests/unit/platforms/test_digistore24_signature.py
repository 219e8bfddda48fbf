"""sha_sign against Digistore24's published vectors and its PHP reference, and what verification refuses."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from platforms.digistore24.ipn import read_form
from platforms.digistore24.signature import EmptyPassphrase, sha_sign, signed_text, verify

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "digistore24"
PUBLISHED = json.loads((FIXTURES / "signature_vectors.json").read_text(encoding="utf-8"))
REFERENCE = json.loads((FIXTURES / "reference_vectors.json").read_text(encoding="utf-8"))
PASSPHRASE = REFERENCE["passphrase"]
MISSED = (FIXTURES / "ipn" / "on_payment_missed_installment_3.form").read_bytes()


def _as_posted(params: dict[str, str]) -> dict[str, str]:
    """The fields as a receiver reads them from the wire: what the vectors describe is a posted form."""
    return read_form(urlencode(params).encode())


def _vectors(document: dict[str, Any], *, variants: bool) -> list[Any]:
    rows = [v for v in document["vectors"] if (v["uppercaseKeys"] or v.get("htmlDecode", False)) == variants]
    assert rows, "the fixture must hold vectors of this kind"
    return [pytest.param(v, id=v["name"]) for v in rows]


@pytest.mark.parametrize("vector", _vectors(PUBLISHED, variants=False))
def test_reproduces_digistore24s_published_vectors(vector: dict[str, Any]) -> None:
    assert sha_sign(vector["params"], PUBLISHED["passphrase"]) == vector["expected"]


@pytest.mark.parametrize("vector", _vectors(REFERENCE, variants=False))
def test_reproduces_the_php_reference_over_posted_forms(vector: dict[str, Any]) -> None:
    fields = _as_posted(vector["params"])

    assert sha_sign(fields, PASSPHRASE) == vector["expected"]
    assert verify({**fields, "sha_sign": vector["expected"]}, PASSPHRASE)


@pytest.mark.parametrize("vector", [*_vectors(PUBLISHED, variants=True), *_vectors(REFERENCE, variants=True)])
def test_signatures_of_the_reference_s_other_variants_are_refused(vector: dict[str, Any]) -> None:
    """Upper-cased field names and HTML-decoded values are options of the reference, not its default."""
    passphrase = PUBLISHED["passphrase"] if vector in PUBLISHED["vectors"] else PASSPHRASE
    fields = _as_posted(vector["params"])

    assert not verify({**fields, "sha_sign": vector["expected"]}, passphrase)


def test_the_signed_text_is_each_field_then_the_passphrase_in_byte_order() -> None:
    fields = {"product_id": "42", "Zeta": "z", "order_id": "ORD-1", "note": "", "sha_sign": "X", "SHASIGN": "Y"}

    assert signed_text(fields, "pw") == "Zeta=zpworder_id=ORD-1pwproduct_id=42pw"


def test_a_signed_sample_verifies_as_posted() -> None:
    assert verify(read_form(MISSED), PASSPHRASE)


def test_the_order_of_fields_on_the_wire_does_not_matter() -> None:
    pairs = MISSED.decode().split("&")
    for seed in range(5):
        random.Random(seed).shuffle(pairs)
        assert verify(read_form("&".join(pairs).encode()), PASSPHRASE)


@pytest.mark.parametrize(("field", "value"), [
    ("pay_sequence_no", "2"), ("order_id", "K7ZQ2M4Q"), ("billing_stop_reason", "by_buyer"),
    ("amount", "5.00"), ("buyer_email", "mallory@example.com"), ("custom", "someone-elses-case"),
])
def test_a_tampered_field_is_refused(field: str, value: str) -> None:
    fields = read_form(MISSED)
    assert fields.get(field, "") != value

    assert not verify({**fields, field: value}, PASSPHRASE)


def test_an_added_or_removed_field_is_refused_unless_it_is_empty() -> None:
    fields = read_form(MISSED)

    assert not verify({**fields, "voucher": "FREE"}, PASSPHRASE)
    assert not verify({k: v for k, v in fields.items() if k != "product_id"}, PASSPHRASE)
    # Empty values are not signed, by the reference's rule: adding or dropping one changes nothing.
    assert verify({**fields, "utm_source": ""}, PASSPHRASE)
    assert verify({k: v for k, v in fields.items() if k != "custom"}, PASSPHRASE)


def test_a_field_name_in_other_case_is_another_field() -> None:
    fields = read_form(MISSED)
    renamed = {("Order_Id" if k == "order_id" else k): v for k, v in fields.items()}

    assert not verify(renamed, PASSPHRASE)


@pytest.mark.parametrize("received", [
    pytest.param(None, id="missing"),
    pytest.param("lower", id="lower-case hex"),
    pytest.param("short", id="truncated"),
    pytest.param("flipped", id="one character changed"),
    pytest.param("Ä" * 128, id="not hex at all"),
])
def test_a_missing_or_altered_signature_is_refused(received: str | None) -> None:
    fields = read_form(MISSED)
    good = fields.pop("sha_sign")
    sent = {"lower": good.lower(), "short": good[:-1], "flipped": good[:-1] + ("A" if good[-1] != "A" else "B"),
            None: None}.get(received, received)
    if sent is not None:
        fields["sha_sign"] = sent

    assert not verify(fields, PASSPHRASE)


def test_shasign_alone_is_not_read_as_the_signature() -> None:
    fields = read_form(MISSED)
    fields["SHASIGN"] = fields.pop("sha_sign")

    assert not verify(fields, PASSPHRASE)


def test_another_passphrase_is_refused() -> None:
    assert not verify(read_form(MISSED), PASSPHRASE + "x")


@pytest.mark.parametrize("call", [sha_sign, verify, signed_text])
def test_an_empty_passphrase_is_refused_not_skipped(call: Any) -> None:
    with pytest.raises(EmptyPassphrase):
        call(read_form(MISSED), "")
