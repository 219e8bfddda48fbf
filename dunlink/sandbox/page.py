"""``GET /pay/{id}``: what the buyer would see behind the link in the dunning email."""

from __future__ import annotations

from html import escape

from adapters.platform.port import Order
from domain.money import Money

_OWED = ("open", "failed")


def payment_page(order: Order) -> str:
    """A small page; every value is escaped because names and products come from outside."""

    def money(minor: int) -> str:
        return escape(f"{Money(minor, order.currency).decimal_string()} {order.currency}")

    owed = [i for i in order.plan.installments if i.status in _OWED]
    rows = "\n".join(
        f"<tr><td>{i.number}</td><td>{escape(i.due_date.isoformat())}</td><td>{money(i.amount)}</td>"
        f"<td>{escape(i.status)}</td></tr>"
        for i in order.plan.installments
    )
    buyer = escape(f"{order.buyer.first_name} {order.buyer.last_name}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Pay {escape(order.id)}</title></head>
<body>
<h1>{escape(order.product_name)}</h1>
<p>Order <code>{escape(order.id)}</code> for {buyer} &middot; status <strong>{escape(order.status)}</strong></p>
<p>Amount owed: <strong id="owed">{money(sum(i.amount for i in owed))}</strong>
 in {len(owed)} installment{"" if len(owed) == 1 else "s"}</p>
<table><thead><tr><th>#</th><th>due</th><th>amount</th><th>status</th></tr></thead>
<tbody>
{rows}
</tbody></table>
<p><em>This is the dunlink sandbox: nothing is charged.</em></p>
</body></html>
"""
