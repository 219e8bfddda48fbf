"""The vendors the tests run with, defined once: a test's vendors file names which of them it needs and the
IPN secret each one signs with."""

from __future__ import annotations

from collections.abc import Mapping

_TABLES = {
    "acme": """\
[vendors.acme]
name = "ACME Academy"
summary_email = "owner@acme.example"
locale = "de"
timezone = "Europe/Berlin"
reply_to = "support@acme.example"
copecart_ipn_secret = "{secret}"
replacement = "remaining_installments"
reminder_days = [3, 7]
expire_after_days = 14
""",
    "globex": """\
[vendors.globex]
name = "Globex Courses"
summary_email = "billing@globex.example"
locale = "en"
timezone = "Europe/London"
copecart_ipn_secret = "{secret}"
replacement = "single_payment"
reminder_days = [2, 5]
expire_after_days = 10
""",
    "initech": """\
[vendors.initech]
name = "Initech Learning"
summary_email = "owner@initech.example"
locale = "en"
timezone = "Europe/Berlin"
copecart_ipn_secret = "{secret}"
replacement = "remaining_installments"
reminder_days = [3, 7]
expire_after_days = 14
grace_hours = 24
""",
    # Makes its replacements by hand in CopeCart: task emails, the vendor page, links on the sandbox's host.
    "hooli": """\
[vendors.hooli]
name = "Hooli Kurse"
summary_email = "owner@hooli.example"
tasks_email = "tasks@hooli.example"
locale = "de"
timezone = "Europe/Berlin"
copecart_ipn_secret = "{secret}"
replacement = "remaining_installments"
replacement_by = "vendor"
payment_hosts = ["127.0.0.1"]
reminder_days = [3, 7]
expire_after_days = 14
""",
    # Sells on Digistore24: a signed form IPN, and a payment link made through its API.
    "umbrella": """\
[vendors.umbrella]
name = "Umbrella Courses"
summary_email = "owner@umbrella.example"
locale = "en"
timezone = "Europe/Berlin"
platform = "digistore24"
digistore24_ipn_passphrase = "{secret}"
digistore24_api_key = "{secret}-api-key"
replacement = "remaining_installments"
reminder_days = [3, 7]
expire_after_days = 14
""",
}


def vendors_toml(secrets: Mapping[str, str]) -> str:
    """A vendors file holding the vendors named in ``secrets`` (acme, globex, initech, hooli, umbrella), each
    with its secret."""
    return "\n".join(_TABLES[slug].format(secret=secret) for slug, secret in secrets.items())
