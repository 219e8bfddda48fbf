"""The soak's verdict on its Digistore24 purchases: the same invariants as for CopeCart's orders, read from what
Digistore24 (the sandbox) recorded.

Digistore24 makes no replacement order: dunlink makes one buy URL for what is owed (``createBuyUrl``, the case id
as its tracking ``custom``), then stops the original's rebilling (``stopRebilling``), then emails the link. So
"one replacement" is one buy URL, "the original cancelled once" is the rebilling stopped once, and "never both
open" is no buyer holding a link while the original still charges. Digistore24 has no idempotency keys: a
``createBuyUrl`` whose answer dunlink never read may be made again, so a spare link is allowed for each such
lost answer, provided nobody is shown or pays it. The sandbox's request log names no purchase, so which
purchase a call was about, and in what order a case's calls came, is read from the soak's pass-through
(:class:`~dunlink.devtools.soak.model.ApiCall`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from domain.money import Money
from dunlink.devtools.soak.controls import BUY_URL
from dunlink.devtools.soak.model import _LINK_ID, CHECK_NAMES, Check, Plan, Records, SoakOrder, ipn_key, order_of

RUNNING = frozenset({"paying", "reminding", "unpaid"})  # the purchase still charges the buyer
MISSED, PAYMENT, STOPPED = "on_payment_missed", "on_payment", "on_rebill_cancelled"
Who = Callable[[str], str]


@dataclass
class Purchase:
    """What the platform and the mail server show of one soak purchase."""

    order: SoakOrder
    record: dict[str, Any]
    case_ids: list[str]
    links: list[dict[str, Any]] = field(default_factory=list)  # buy URLs whose tracking names its case
    shown: set[str] = field(default_factory=set)  # buy URL ids in its buyer's payment-link emails
    mail_cases: set[str] = field(default_factory=set)  # the cases those emails name (Message-ID)

    @property
    def race_paid(self) -> bool:
        """The missed payment was made on the original after all."""
        return any(t["pay_sequence_no"] == self.order.failed for t in self.record.get("transactions", []))

    @property
    def stopped(self) -> bool:
        return self.record.get("billing_status") == "aborted"

    @property
    def paid_links(self) -> set[str]:
        return {link["id"] for link in self.links if link["purchases"]}


def digistore24_checks(plans: dict[str, SoakOrder], records: Records,
                       cases: dict[str, list[tuple[str, str, str | None]]]) -> list[Check]:
    """The six Digistore24 checks, in the order of :data:`CHECK_NAMES`, for the soak's Digistore24 purchases."""

    def who(purchase_id: str) -> str:
        ids = ",".join(c[0] for c in cases.get(purchase_id, [])) or "none"
        return f"purchase {purchase_id} (case {ids})"

    mine = {order_id: order for order_id, order in plans.items() if order.on_digistore24}
    seen, strays = _gather(mine, records, cases)
    return [_reflected(seen, records, who), _one_link(seen, records, who, strays), _stopped_once(seen, records, who),
            _never_both(seen, who), _emails(seen, records, who), _counted_once(seen, records, who)]


def _gather(plans: dict[str, SoakOrder], records: Records,
            cases: dict[str, list[tuple[str, str, str | None]]]) -> tuple[dict[str, Purchase], list[str]]:
    """Each purchase with its links and emails; and the links that belong to no case of the soak."""
    seen = {order_id: Purchase(order, records.purchases.get(order_id, {}), [c[0] for c in cases.get(order_id, [])])
            for order_id, order in sorted(plans.items())}
    by_case = {case_id: purchase for purchase in seen.values() for case_id in purchase.case_ids}
    strays = []
    for link in records.links:
        owner = by_case.get(link["tracking"].get("custom", ""))
        if owner is None:
            strays.append(f"buy URL {link['id']} tracks {link['tracking'].get('custom')!r}: no case of this soak")
            continue
        owner.links.append(link)
        if link["buyer"].get("email") != owner.order.email:
            strays.append(f"buy URL {link['id']} of case {link['tracking']['custom']} is for "
                          f"{link['buyer'].get('email')}, not the purchase's buyer")
    for mail in records.mails:
        found = _LINK_ID.fullmatch(str(mail.message.get("Message-ID", "")))
        purchase = seen.get(order_of(mail, records.tag)) if found else None
        if found and purchase is not None:
            purchase.mail_cases.add(found.group(1))
            purchase.shown.update(BUY_URL.findall(mail.text))
    return seen, strays


def _reflected(seen: dict[str, Purchase], records: Records, who: Who) -> Check:
    """Every missed payment answered OK ends with the rebilling stopped and a link to pay, or paid after all."""
    check = Check(CHECK_NAMES[5], "")
    ipns = [e for e in records.ipns if e.get("platform") == "digistore24"]
    for entry in ipns:
        if ipn_key(entry) not in records.accepted:
            check.problems.append(f"IPN {entry['event_type']} on {entry['order_id']} never answered OK")
    missed = {e["order_id"] for e in ipns if e["event_type"] == MISSED and ipn_key(e) in records.accepted}
    outcomes: Counter[str] = Counter()
    for purchase_id, purchase in seen.items():
        if purchase_id not in missed:
            check.problems.append(f"{who(purchase_id)}: its {MISSED} IPN was never accepted")
        elif purchase.stopped:
            outcomes["paid in the race, then stopped" if purchase.race_paid else "stopped, buy URL made"] += 1
            if not purchase.links:
                check.problems.append(f"{who(purchase_id)}: rebilling stopped but no buy URL to pay")
        elif purchase.race_paid:
            outcomes["kept (paid in the race)"] += 1
        else:
            check.problems.append(f"{who(purchase_id)}: payment {purchase.order.failed} missed and never paid, yet "
                                  f"the rebilling is {purchase.record.get('billing_status')} and was never stopped")
    check.summary = ", ".join(f"{n} {what}" for what, n in sorted(outcomes.items())) or "no Digistore24 purchases"
    return check


def _one_link(seen: dict[str, Purchase], records: Records, who: Who, strays: list[str]) -> Check:
    """One buy URL per dunned purchase, for exactly what is owed; a spare only for an answer dunlink lost."""
    lost = Counter(call.custom for call in records.calls
                   if call.function == "createBuyUrl" and call.lost and call.result in ("success", "no answer"))
    check = Check(CHECK_NAMES[6], "", list(strays))
    spares = 0
    for purchase_id, purchase in seen.items():
        made = sorted(link["id"] for link in purchase.links)
        allowed = sum(lost[case_id] for case_id in purchase.case_ids)
        spares += min(max(0, len(made) - 1), allowed)
        if len(made) > 1 + allowed:
            check.problems.append(f"{who(purchase_id)}: {len(made)} buy URLs {', '.join(made)} with {allowed} "
                                  "createBuyUrl answers lost")
        used = purchase.shown | purchase.paid_links
        if len(used) > 1:
            check.problems.append(f"{who(purchase_id)}: the buyer was shown or paid {len(used)} buy URLs "
                                  f"{', '.join(sorted(used))}")
        check.problems.extend(f"{who(purchase_id)}: {problem}" for problem in _plan_problems(purchase))
    created = sum(1 for r in records.requests if r["path"].startswith("/api/call/createBuyUrl")
                  and r.get("effect") == "created")
    if created != len(records.links):
        check.problems.append(f"the sandbox logged {created} createBuyUrl calls with effect but holds "
                              f"{len(records.links)} buy URLs")
    check.summary = (f"{len(records.links)} buy URLs for {sum(1 for p in seen.values() if p.links)} purchases, "
                     f"{spares} spare after lost answers (never shown or paid)")
    return check


def owed_plan(order: SoakOrder) -> tuple[int, int, int, str]:
    """What the buy URL must ask for: first amount, each later amount, number of payments, interval."""
    left, amount = len(order.amounts) - order.paid, order.amounts[0]
    if order.single_payment or left == 1:
        return left * amount, 0, 1, ""
    return amount, amount, left, "1_month"


def _plan_problems(purchase: Purchase) -> Iterable[str]:
    owed = owed_plan(purchase.order)
    for link in purchase.links:
        plan = link["payment_plan"]
        asked = (Money.parse(plan["first_amount"], "EUR").minor, Money.parse(plan["other_amounts"], "EUR").minor,
                 plan["number_of_installments"], plan["other_billing_intervals"])
        if asked != owed or plan["currency"] != "EUR" or plan["first_billing_interval"] != asked[3]:
            yield f"buy URL {link['id']} asks for {_described(asked, plan['currency'])}, owed {_described(owed)}"
        if link["product"]["id"] != purchase.record.get("product", {}).get("id"):
            yield f"buy URL {link['id']} sells product {link['product']['id']}, the purchase's is another"


def _described(plan: tuple[int, int, int, str], currency: str = "EUR") -> str:
    first, later, count, interval = plan
    if count == 1:
        return f"{Money(first, currency).decimal_string()} {currency} at once"
    return (f"{Money(first, currency).decimal_string()} {currency}, then {count - 1} x "
            f"{Money(later, currency).decimal_string()} every {interval}")


def _stopped_once(seen: dict[str, Purchase], records: Records, who: Who) -> Check:
    """Each rebilling stopped by at most one effective call, and only once a buy URL for its case existed."""
    check = Check(CHECK_NAMES[7], "")
    notices = Counter(e["order_id"] for e in records.ipns if e.get("platform") == "digistore24"
                      and e["event_type"] == STOPPED)
    stops: dict[str, list[Any]] = defaultdict(list)
    for call in records.calls:
        if call.function == "stopRebilling" and call.modified:
            stops[call.purchase_id].append(call)
    for purchase_id, purchase in seen.items():
        effective = stops.get(purchase_id, [])
        if len(effective) > 1 or notices[purchase_id] > 1:
            check.problems.append(f"{who(purchase_id)}: rebilling stopped by {len(effective)} effective calls, "
                                  f"{notices[purchase_id]} {STOPPED} IPNs")
        if purchase.stopped and not effective:
            check.problems.append(f"{who(purchase_id)}: rebilling stopped, but by no stopRebilling call seen")
        for stop in effective[:1]:
            if not any(call.function == "createBuyUrl" and call.result == "success" and call.custom in
                       purchase.case_ids and call.answered is not None and call.answered < stop.arrived
                       for call in records.calls):
                check.problems.append(f"{who(purchase_id)}: rebilling stopped (call #{stop.seq}) before any buy "
                                      "URL for its case existed")
    logged = Counter(r.get("effect") for r in records.requests if r["path"].startswith("/api/call/stopRebilling"))
    stopped = sum(1 for p in records.purchases.values() if p.get("billing_status") == "aborted")
    if logged["stopped"] != stopped:
        check.problems.append(f"the sandbox logged {logged['stopped']} stopRebilling calls with effect, "
                              f"{stopped} purchases are stopped")
    check.summary = f"{stopped} purchases stopped, {logged['already_stopped']} repeated stops without effect"
    return check


def _never_both(seen: dict[str, Purchase], who: Who) -> Check:
    """No buyer is asked to pay through a link while the original purchase can still charge them."""
    check = Check(CHECK_NAMES[8], "")
    for purchase_id, purchase in seen.items():
        held = purchase.shown | purchase.paid_links
        status = purchase.record.get("billing_status")
        if status in RUNNING and held:
            check.problems.append(f"{who(purchase_id)}: rebilling {status} while the buyer holds buy URL "
                                  f"{', '.join(sorted(held))}")
    check.summary = f"{len(check.problems)} of {len(seen)}"
    return check


def _emails(seen: dict[str, Purchase], records: Records, who: Who) -> Check:
    """One payment-link email per case, carrying the case's own buy URL; none when the racing payment won."""
    check = Check(CHECK_NAMES[9], "")
    copies: Counter[str] = Counter()
    for mail in records.mails:
        found = _LINK_ID.fullmatch(str(mail.message.get("Message-ID", "")))
        if found and order_of(mail, records.tag) in seen:
            copies[str(mail.message["Message-ID"])] += 1
            if str(mail.message.get("X-Dunlink-Case")) != found.group(1):
                check.problems.append(f"{who(order_of(mail, records.tag))}: Message-ID names case {found.group(1)}, "
                                      f"X-Dunlink-Case {mail.message.get('X-Dunlink-Case')}")
    for purchase_id, purchase in seen.items():
        made = {link["id"] for link in purchase.links}
        if len(purchase.mail_cases) > 1:
            check.problems.append(f"{who(purchase_id)}: {len(purchase.mail_cases)} payment-link emails for cases "
                                  f"{sorted(purchase.mail_cases)}")
        elif purchase.mail_cases and not purchase.shown:
            check.problems.append(f"{who(purchase_id)}: its payment-link email carries no buy URL")
        elif purchase.shown - made:
            check.problems.append(f"{who(purchase_id)}: emailed buy URL {', '.join(sorted(purchase.shown - made))}, "
                                  "not one made for its case")
        if purchase.mail_cases and purchase.race_paid and not purchase.stopped:
            check.problems.append(f"{who(purchase_id)}: paid in the race, yet emailed a buy URL")
        elif not purchase.mail_cases and purchase.stopped and purchase.links and not purchase.race_paid:
            check.problems.append(f"{who(purchase_id)}: rebilling stopped, buy URL made, no link email")
    check.summary = f"{len(copies)} link emails, {sum(n - 1 for n in copies.values())} identical resends"
    return check


def _counted_once(seen: dict[str, Purchase], records: Records, who: Who) -> Check:
    """A payment through a buy URL is one purchase, answered OK, and recovers its case by exactly its amount."""
    check = Check(CHECK_NAMES[10], "")
    accepted = {e["order_id"] for e in records.ipns if e.get("platform") == "digistore24"
                and e["event_type"] == PAYMENT and ipn_key(e) in records.accepted}
    paid = counted = 0
    for purchase_id, purchase in seen.items():
        for link in purchase.links:
            if not link["purchases"]:
                continue
            paid += 1
            problems = _payment_problems(purchase, link, records, accepted)
            check.problems.extend(f"{who(purchase_id)}: {problem}" for problem in problems)
            counted += not problems
        asked = purchase.order.replacement_paid
        if asked and asked not in purchase.paid_links:
            check.problems.append(f"{who(purchase_id)}: the soak paid through buy URL {asked}; Digistore24 shows "
                                  "no purchase made through it")
    check.summary = f"{paid} buy URLs paid through, {counted} counted once"
    return check


def _payment_problems(purchase: Purchase, link: dict[str, Any], records: Records, accepted: set[str]) -> list[str]:
    problems = []
    if len(link["purchases"]) > 1:
        problems.append(f"buy URL {link['id']} paid through {len(link['purchases'])} times: "
                        f"{', '.join(link['purchases'])}")
    if purchase.order.plan is not Plan.PAYS_REPLACEMENT or purchase.order.replacement_paid != link["id"]:
        problems.append(f"buy URL {link['id']} paid through, but not by the soak's buyer")
    problems.extend(f"the payment through buy URL {link['id']} ({made}) was never answered OK"
                    for made in link["purchases"] if made not in accepted)
    first = Money.parse(link["payment_plan"]["first_amount"], link["payment_plan"]["currency"]).minor
    recovered = sum(records.recovered.get(case_id, 0) for case_id in purchase.case_ids)
    if recovered != first:
        problems.append(f"paid {Money(first, 'EUR').decimal_string()} through buy URL {link['id']}, dunlink "
                        f"counted {Money(recovered, 'EUR').decimal_string()}")
    return problems
