"""Which pasted payment links may be emailed to a buyer."""

from __future__ import annotations

import pytest

from domain.links import DEFAULT_PAYMENT_HOSTS, LinkProblem, refused_link


@pytest.mark.parametrize("url", [
    "https://copecart.com/pay/CC-1",
    "https://checkout.copecart.com/orders/CC-1?token=abc",
    "https://www.COPECART.com:443/x",
])
def test_links_on_the_vendors_payment_hosts_pass(url: str) -> None:
    assert refused_link(url, DEFAULT_PAYMENT_HOSTS) is None


@pytest.mark.parametrize(("url", "problem", "host"), [
    ("https://evil.example/pay", LinkProblem.HOST_NOT_ALLOWED, "evil.example"),
    ("https://copecart.com.evil.example/pay", LinkProblem.HOST_NOT_ALLOWED, "copecart.com.evil.example"),
    ("https://notcopecart.com/pay", LinkProblem.HOST_NOT_ALLOWED, "notcopecart.com"),
    ("https://copecart.com@evil.example/", LinkProblem.HOST_NOT_ALLOWED, "evil.example"),
    ("https://copecart.com:8443/pay", LinkProblem.HOST_NOT_ALLOWED, "copecart.com:8443"),
    ("http://copecart.com/pay", LinkProblem.SCHEME_NOT_ALLOWED, "copecart.com"),
    ("javascript://copecart.com/%0aalert(1)", LinkProblem.SCHEME_NOT_ALLOWED, "copecart.com"),
    ("copecart.com/pay", LinkProblem.NOT_A_URL, None),
    ("https://copecart.com/pay now", LinkProblem.NOT_A_URL, None),
    ("https://copecart.com/pay\nBcc: x", LinkProblem.NOT_A_URL, None),
    ("https:\\\\copecart.com", LinkProblem.NOT_A_URL, None),
    ("", LinkProblem.NOT_A_URL, None),
    ("https://copecart.com/" + "a" * 2100, LinkProblem.NOT_A_URL, None),
])
def test_anything_else_is_refused_naming_why(url: str, problem: LinkProblem, host: str | None) -> None:
    refused = refused_link(url, DEFAULT_PAYMENT_HOSTS)
    assert refused is not None and refused.problem is problem and refused.host == host


def test_plain_http_only_on_a_loopback_host_for_rehearsals() -> None:
    assert refused_link("http://127.0.0.1:8090/pay/CC-900001", ("127.0.0.1",)) is None
    assert refused_link("http://127.0.0.1:8090/pay/CC-900001", DEFAULT_PAYMENT_HOSTS) is not None
