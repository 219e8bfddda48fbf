"""``GET /ds24/buy/{id}``: the order form behind a buy URL, showing what the buyer would pay and when."""

from __future__ import annotations

import datetime as dt
from html import escape

from domain.money import Money
from dunlink.sandbox.ds24_links import BuyLink


def _every(interval: str) -> str:
    count, unit = interval.split("_", 1)
    return f"every {count} {unit}{'' if count == '1' else 's'}"


def buy_page(link: BuyLink, *, now: dt.datetime) -> tuple[int, str]:
    """The status and page; every value is escaped because names and products come from the API call."""
    if link.expired(now):
        return 410, _page("Link expired", "<p>This payment link has expired.</p>")

    def money(amount: Money) -> str:
        return escape(f"{amount.decimal_string()} {amount.currency}")

    count = link.number_of_installments
    lines = [f'<p>Pay now: <strong id="pay-now">{money(link.first_amount)}</strong></p>']
    if count != 1:
        then = "until cancelled" if count == 0 else f"{count - 1} more payment{'' if count == 2 else 's'}"
        lines.append(f'<p>Then <span id="later">{money(link.other_amounts)}</span> '
                     f"{escape(_every(link.other_billing_intervals))}, {then}</p>")
    if count:
        total = Money(link.first_amount.minor + link.other_amounts.minor * (count - 1), link.currency)
        lines.append(f'<p>Total: <strong id="total">{money(total)}</strong></p>')
    buyer = " ".join(v for v in (link.buyer.get("first_name"), link.buyer.get("last_name")) if v)
    until = link.valid_until.strftime("%Y-%m-%d %H:%M UTC") if link.valid_until else "no expiry"
    body = "\n".join([f"<h1>{escape(link.product_name)}</h1>",
                      f"<p>For {escape(buyer or 'the buyer')} &lt;{escape(link.buyer.get('email', ''))}&gt;</p>",
                      *lines, f"<p>Valid until {escape(until)}</p>"])
    return 200, _page(f"Order {link.product_name}", body)


def _page(title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title></head>
<body>
{body}
<p><em>This is the dunlink sandbox playing Digistore24's order form: nothing is charged.</em></p>
</body></html>
"""
