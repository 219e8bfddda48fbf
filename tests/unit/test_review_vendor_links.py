"""Pasted payment links under attack: what a leaked vendor page token, or a careless paste, could put in front of
a buyer. A link reaches the buyer's email verbatim, in the HTML part and on a line of its own in the text part,
where mail programs turn what looks like an address into a link by their own rules (most end an address at
``"``, ``<``, ``>`` or a space). So a link passes only when every reading of it lands on the vendor's payment
hosts: a plain host name, and only characters a URL may carry unescaped."""

from __future__ import annotations

import pytest

from domain.links import DEFAULT_PAYMENT_HOSTS, MAX_LINK, refused_link

# -- defects: each of these fails on the code as it is ------------------------------------------------------


@pytest.mark.parametrize("url", [
    # A host that merely ends in ".copecart.com": read up to the quote or bracket, it is evil.example.
    'https://evil.example".copecart.com/pay',
    "https://evil.example<x>.copecart.com/pay",
    "https://evil.example'.copecart.com/pay",
    "https://evil.example%2F.copecart.com/pay",
    "https://evil.example%40x.copecart.com/pay",
    "https://evil.example$.copecart.com/pay",
    "https://evil.example;.copecart.com/pay",
    # Not a host a browser can reach: empty labels.
    "https://.copecart.com/pay",
    "https://a..copecart.com/pay",
    "https://copecart.com../pay",
])
def test_a_host_that_is_not_a_plain_host_name_is_refused(url: str) -> None:
    assert refused_link(url, DEFAULT_PAYMENT_HOSTS) is not None


@pytest.mark.parametrize("url", [
    # After a character no URL carries unescaped, a mail program starts a second link to another host.
    'https://checkout.copecart.com/pay"https://evil.example/',
    "https://checkout.copecart.com/pay<https://evil.example/>",
    "https://checkout.copecart.com/pay|https://evil.example/",
    "https://checkout.copecart.com/pay{x}",
    "https://checkout.copecart.com/pay^x`",
])
def test_characters_a_url_never_carries_unescaped_are_refused(url: str) -> None:
    assert refused_link(url, DEFAULT_PAYMENT_HOSTS) is not None


# -- guarantees that hold ---------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "https://checkout.copecart.com/pay/CC-1?token=a%20b&x=1#top",
    "HTTPS://Checkout.CopeCart.com/pay/CC-1",
    "https://copecart.com:443/pay",
    "https://copecart.com./pay",
    "https://copecart.com/" + "a" * (MAX_LINK - len("https://copecart.com/")),
])
def test_plain_links_on_the_payment_hosts_pass(url: str) -> None:
    assert refused_link(url, DEFAULT_PAYMENT_HOSTS) is None


@pytest.mark.parametrize("url", [
    "https://copecart.com.evil.example/pay",
    "https://evilcopecart.com/pay",
    "https://copecart.com@evil.example/pay",
    "https://@copecart.com/pay",
    "https://user:pass@copecart.com/pay",
    "https://copecart.com:443@evil.example/pay",
    "https://copecart.com\\@evil.example/pay",
    "https:\\\\evil.example\\.copecart.com",
    "https://evil.example\\.copecart.com/",
    "https://evil.example\uff0f.copecart.com/",  # fullwidth solidus: NFKC makes it a slash
    "https://evil.example\u3002copecart.com/",  # ideographic full stop
    "https://\u0441opecart.com/pay",  # Cyrillic es
    "https://xn--opecart-2ve.com/pay",
    "https://\uff43opecart.com/pay",  # fullwidth c
    "https://copecart.com\u200b/pay",
    "https://evil.example\u00ad.copecart.com/",
    "https://copecart.com%2eevil.example/pay",
    "https://copecart.com:8443/pay",
    "https://copecart.com:99999/pay",
    "https://[::1]/pay",
    "https://127.0.0.1/pay",
    "http://copecart.com/pay",
    "ftp://copecart.com/pay",
    "javascript:alert(1)//copecart.com",
    "data:text/html,https://copecart.com",
    "//copecart.com/pay",
    "https:/copecart.com/pay",
    "https:///copecart.com/pay",
    "https://copecart.com/pay\r\nBcc: x@evil.example",
    "https://copecart.com/pay\tx",
    "https://copecart.com/" + "a" * MAX_LINK,
])
def test_everything_that_reads_as_another_host_or_no_url_is_refused(url: str) -> None:
    assert refused_link(url, DEFAULT_PAYMENT_HOSTS) is not None


def test_plain_http_and_other_ports_only_on_a_loopback_host_the_vendor_named() -> None:
    rehearsal = ("127.0.0.1",)
    assert refused_link("http://127.0.0.1:8090/pay/CC-1", rehearsal) is None
    assert refused_link("http://localhost:8090/pay/CC-1", rehearsal) is not None
    assert refused_link("http://127.0.0.2:8090/pay/CC-1", rehearsal) is not None
    assert refused_link("http://[::1]:8090/pay/CC-1", rehearsal) is not None
    assert refused_link("http://127.0.0.1.copecart.com/pay", DEFAULT_PAYMENT_HOSTS) is not None
