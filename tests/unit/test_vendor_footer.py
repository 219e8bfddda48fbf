"""The vendors file's ``imprint`` and ``support_url``: read onto the vendor as written, or refused at start-up with
one line naming the vendor and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dunlink.config.vendors import Vendor, VendorsFileError, load_vendors
from tests.support.vendors import vendors_toml

ROOT = Path(__file__).resolve().parents[2]
SECRET = "acme-ipn-secret-for-the-footer-tests"


def acme(tmp_path: Path, extra: str) -> Vendor:
    path = tmp_path / "vendors.toml"
    path.write_bytes((vendors_toml({"acme": SECRET}) + extra).encode("utf-8"))
    return load_vendors(path, environ={})["acme"]


def test_an_imprint_and_a_support_url_are_read_onto_the_vendor(tmp_path: Path) -> None:
    vendor = acme(tmp_path, 'imprint = """\r\nACME Academy GmbH  \r\nMusterstraße 1, 10115 Berlin\r\n'
                            'USt-IdNr.: DE123456789\r\n"""\nsupport_url = "https://acme.example/help?lang=de"\n')

    assert vendor.imprint == "ACME Academy GmbH\nMusterstraße 1, 10115 Berlin\nUSt-IdNr.: DE123456789"
    assert vendor.support_url == "https://acme.example/help?lang=de"


def test_both_are_optional(tmp_path: Path) -> None:
    vendor = acme(tmp_path, "")

    assert (vendor.imprint, vendor.support_url) == (None, None)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/help", "http://localhost/help", "http://[::1]:8000/"])
def test_plain_http_is_fine_on_a_loopback_host_for_rehearsals(tmp_path: Path, url: str) -> None:
    assert acme(tmp_path, f'support_url = "{url}"\n').support_url == url


@pytest.mark.parametrize(("extra", "problem"), [
    ('support_url = "http://acme.example/help"', "support_url: must be an https:// URL (http:// only on a loopback"),
    ('support_url = "javascript:alert(1)"', "support_url: must be an https:// URL"),
    ('support_url = "https://me@acme.example/help"', "support_url: must be an https:// URL"),
    ('support_url = "https://acme.example/a b"', "support_url: must be an https:// URL"),
    ('support_url = "https://"', "support_url: must be an https:// URL"),
    ("support_url = 443", "support_url: must be a non-empty string"),
    ('imprint = ""', "imprint: must be a non-empty string"),
    ("imprint = 42", "imprint: must be a non-empty string"),
    ('imprint = "ACME GmbH\\tBerlin"', "imprint: must be printable text (line breaks are fine, tabs"),
    ('imprint = "ACME GmbH\\u202eBerlin"', "imprint: must be printable text"),
    ('imprint = """\n' + "line\n" * 13 + '"""', "imprint: at most 12 lines and 1000 characters"),
    (f'imprint = "{"x" * 1001}"', "imprint: at most 12 lines and 1000 characters"),
])
def test_a_bad_imprint_or_support_url_stops_start_up_naming_vendor_and_key(tmp_path: Path, extra: str,
                                                                           problem: str) -> None:
    with pytest.raises(VendorsFileError) as raised:
        acme(tmp_path, extra + "\n")

    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'vendors.toml'}: vendor 'acme': ")
    assert problem in message
    assert "\n" not in message


def test_the_example_vendors_file_shows_both_keys() -> None:
    environ = {"ACME_COPECART_IPN_SECRET": SECRET, "NORTHWIND_COPECART_IPN_SECRET": SECRET,
               "LUMEN_COPECART_IPN_SECRET": SECRET, "LUMEN_DIGISTORE24_IPN_PASSPHRASE": SECRET,
               "LUMEN_DIGISTORE24_API_KEY": SECRET}
    vendors = load_vendors(ROOT / "vendors.example.toml", environ=environ)
    assert vendors["copecart-only"].by_vendor and vendors["copecart-only"].tasks_email == "shop@lumen.example"

    with_imprint = [vendor for vendor in vendors.values() if vendor.imprint and vendor.support_url]
    assert with_imprint, "vendors.example.toml shows imprint and support_url"
    assert len(with_imprint[0].imprint.splitlines()) >= 3  # type: ignore[union-attr]
