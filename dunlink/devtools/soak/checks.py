"""The soak's verdict, from the platform's and the mail server's own records."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from dunlink.devtools.soak.ds24_checks import digistore24_checks
from dunlink.devtools.soak.model import (
    _LINK_ID,
    CHECK_NAMES,
    ENDS,
    PAID_AFTER_CANCEL,
    WAITING,
    Check,
    Plan,
    Records,
    SoakOrder,
    ipn_key,
    order_of,
)

# -- checks ----------------------------------------------------------------------------------------------------


def check(plans: dict[str, SoakOrder], records: Records) -> list[Check]:
    """Judge the run from the sandbox's orders, purchases, buy URLs, request log and IPN log and the mail
    catcher's messages: CopeCart's orders here, Digistore24's purchases in ``ds24_checks``, and whether any
    case of either is stuck."""
    cases: dict[str, list[tuple[str, str, str | None]]] = defaultdict(list)
    for order_id, state, reason, case_id in records.case_rows:
        cases[order_id].append((case_id, state, reason))
    copecart = {order_id: order for order_id, order in plans.items() if not order.on_digistore24}
    return [*_copecart_checks(copecart, records, cases), *digistore24_checks(plans, records, cases),
            _nothing_stuck(plans, cases)]


def _copecart_checks(plans: dict[str, SoakOrder], records: Records,
                     cases: dict[str, list[tuple[str, str, str | None]]]) -> list[Check]:
    """The CopeCart orders: reflected, one replacement, one effective cancel, never both open, one email."""

    def who(order_id: str) -> str:
        ids = ",".join(c[0] for c in cases.get(order_id, [])) or "none"
        return f"order {order_id} (case {ids})"

    replacements: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for order in records.orders.values():
        if order.get("replaces"):
            replacements[order["replaces"]].append(order)
    live = ("active", "completed")

    # Every accepted IPN reflected on the platform.
    reflected = Check(CHECK_NAMES[0], "")
    outcomes: Counter[str] = Counter()
    ipns = [e for e in records.ipns if e.get("platform", "copecart") == "copecart"]
    failed_ok = {e["order_id"] for e in ipns if e["event_type"] == "payment.failed" and ipn_key(e) in records.accepted}
    for e in ipns:
        if ipn_key(e) not in records.accepted:
            reflected.problems.append(f"IPN {ipn_key(e)} ({e['event_type']} on {e['order_id']}) never answered OK")
    for order_id, plan in sorted(plans.items()):
        if order_id not in failed_ok:
            reflected.problems.append(f"{who(order_id)}: its payment.failed IPN was never accepted")
            continue
        original = records.orders[order_id]
        mine = replacements.get(order_id, [])
        active = [r for r in mine if r["status"] in live]
        if original["status"] == "cancelled":
            if not active:
                reflected.problems.append(f"{who(order_id)}: original cancelled but no replacement to pay")
            outcomes["replaced"] += 1
        elif active:
            outcomes["both active"] += 1  # reported by its own check
        elif plan.plan is Plan.RACE:
            outcomes["kept (paid in the race)" if not mine else "kept, replacement withdrawn"] += 1
        else:
            reflected.problems.append(f"{who(order_id)}: installment failed and was never paid, yet the original "
                                      f"is {original['status']} without a replacement")
    for replacement, original_id in ((r, o.order_id) for o in plans.values() if (r := o.replacement_paid)):
        if records.orders.get(replacement, {}).get("status") == "cancelled":
            reflected.problems.append(f"{who(original_id)}: the replacement {replacement} was paid, then cancelled")
    reflected.summary = ", ".join(f"{n} {what}" for what, n in sorted(outcomes.items())) or "nothing"

    # At most one replacement per original.
    single = Check(CHECK_NAMES[1],
                   f"{sum(len(v) for v in replacements.values())} replacements for {len(replacements)} originals")
    for order_id, mine in sorted(replacements.items()):
        if len(mine) > 1:
            single.problems.append(f"{who(order_id)}: {len(mine)} replacements {', '.join(r['id'] for r in mine)}")

    # One effective cancel per order.
    cancels: Counter[str] = Counter(r["path"].split("/")[3] for r in records.requests
                                    if r.get("effect") == "cancelled")
    replays = sum(1 for r in records.requests if r.get("effect") in ("replayed", "already_cancelled")
                  and r["path"].endswith("/cancel"))
    withdrawn = sum(1 for order_id in cancels if order_id not in plans)
    once = Check(CHECK_NAMES[2],
                 f"{len(cancels) - withdrawn} originals and {withdrawn} replacements cancelled, "
                 f"{replays} repeated cancels without effect")
    for order_id, count in sorted(cancels.items()):
        if count > 1:
            once.problems.append(f"{who(records.orders.get(order_id, {}).get('replaces') or order_id)}: "
                                 f"{order_id} cancelled by {count} effective calls")

    # Never both open.
    both = Check(CHECK_NAMES[3], "")
    for order_id in sorted(plans):
        original = records.orders[order_id]
        open_ids = [r["id"] for r in replacements.get(order_id, []) if r["status"] in live]
        if original["status"] in live and open_ids:
            both.problems.append(f"{who(order_id)}: original {original['status']} and replacement "
                                 f"{', '.join(open_ids)} active")
    both.summary = f"{len(both.problems)} of {len(plans)}"

    # One payment-link email per case.
    link_ids: dict[str, set[str]] = defaultdict(set)
    copies: Counter[str] = Counter()
    emails = Check(CHECK_NAMES[4], "")
    for mail in records.mails:
        found = _LINK_ID.fullmatch(str(mail.message.get("Message-ID", "")))
        if found:
            order_id = order_of(mail, records.tag)
            link_ids[order_id].add(found.group(1))
            copies[str(mail.message["Message-ID"])] += 1
            if str(mail.message.get("X-Dunlink-Case")) != found.group(1):
                emails.problems.append(f"{who(order_id)}: Message-ID names case {found.group(1)}, X-Dunlink-Case "
                                       f"{mail.message.get('X-Dunlink-Case')}")
    emails.summary = f"{len(copies)} link emails, {sum(n - 1 for n in copies.values())} identical resends"
    for order_id, plan in sorted(plans.items()):
        ids = link_ids.get(order_id, set())
        original = records.orders[order_id]
        active = [r for r in replacements.get(order_id, []) if r["status"] in live]
        if len(ids) > 1:
            emails.problems.append(f"{who(order_id)}: {len(ids)} payment-link emails for cases {sorted(ids)}")
        elif ids and not active:
            emails.problems.append(f"{who(order_id)}: a payment link was sent but no replacement is payable")
        elif not ids and original["status"] == "cancelled" and plan.plan is not Plan.RACE:
            emails.problems.append(f"{who(order_id)}: original cancelled, replacement made, no link email")
    return [reflected, single, once, both, emails]


def _nothing_stuck(plans: dict[str, SoakOrder], cases: dict[str, list[tuple[str, str, str | None]]]) -> Check:
    """Every case at an end or waiting, from dunlink's database: a case's state is not visible elsewhere."""

    def who(order_id: str) -> str:
        ids = ",".join(c[0] for c in cases.get(order_id, [])) or "none"
        return f"{'purchase' if plans[order_id].on_digistore24 else 'order'} {order_id} (case {ids})"

    states: Counter[str] = Counter()
    stuck = Check(CHECK_NAMES[-1], "")
    for order_id, plan in sorted(plans.items()):
        opened = cases.get(order_id, [])
        if len(opened) != 1:
            stuck.problems.append(f"{who(order_id)}: {len(opened)} cases")
            continue
        _, state, reason = opened[0]
        states[state] += 1
        if state not in ENDS | WAITING:
            stuck.problems.append(f"{who(order_id)}: stuck in {state}")
        elif state == "needs_person" and not (plan.plan is Plan.RACE and PAID_AFTER_CANCEL in (reason or "")):
            stuck.problems.append(f"{who(order_id)}: handed to a person without cause: {reason}")
        elif plan.plan is Plan.PAYS_REPLACEMENT and state != "recovered":
            stuck.problems.append(f"{who(order_id)}: replacement paid, case {state}")
    stuck.summary = ", ".join(f"{state} {n}" for state, n in sorted(states.items()))
    return stuck
