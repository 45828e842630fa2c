"""The billing cycle driven from outside (admin routes): renew a subscription, pay an invoice, cancel.

Every payment here is Billing's (`invoicing.collect`, the path of the API's `/pay` and of subscription
create): a PaymentIntent and its Charge with their events, then the invoice's and the subscription's.
A renewal charges what Stripe would, off-session: the subscription's `default_payment_method`, else the
customer's `invoice_settings.default_payment_method`. The admin routes may name a test card instead
(`card`, or an `outcome`), which stands for the card on file at that moment: a new PaymentMethod is
made for it; a card that paid is remembered for the next renewals of a subscription with nothing on
file."""

from __future__ import annotations

from ..cards import card_arg, card_of
from ..common import period_end
from ..context import Ctx
from ..errors import JSON, StripeError, admin_error
from ..events import emit, emit_update
from ..rendering import render, snapshot
from .invoices import build_invoice, finalize_invoice
from .invoicing import collect, payment_method_for
from .payment_methods import payment_method_for_card
from .payments import Payment
from .subscriptions import cancel_subscription

# The test card each `outcome` of the renew route stands for.
OUTCOME_CARDS = {
    "paid": "4242424242424242",
    "failed": "4000000000000002",
    "requires_action": "4000000000003220",
}
FALLBACK_CARD = "4242424242424242"  # a subscription with no payment method and no card remembered


def pay_invoice(ctx: Ctx, invoice: JSON, args: JSON) -> JSON:
    if invoice["status"] != "open":
        raise admin_error(f"The invoice {invoice['id']} is {invoice['status']}, not open.")
    return charge_with_card(ctx, invoice, card_arg(args))


def charge_with_card(ctx: Ctx, invoice: JSON, card: str, *, off_session: bool = False) -> JSON:
    """One payment attempt on the open `invoice` with test card `card` (a new PaymentMethod), through
    Billing's path; a card that paid a subscription's invoice pays its renewals when nothing else is
    on file."""
    payment = collect(ctx, invoice, payment_method_for_card(ctx, card), off_session=off_session)
    sub_id = subscription_of(invoice)
    if payment.outcome == "succeeded" and sub_id is not None:
        ctx.internal(sub_id)["card"] = card
    return payment_answer(invoice, payment)


def subscription_of(invoice: JSON) -> str | None:
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    return details.get("subscription")


def payment_answer(invoice: JSON, payment: Payment) -> JSON:
    """The admin answer for a payment attempt on `invoice`: `outcome` (succeeded, declined,
    requires_action: authenticate `payment_intent`), the invoice, its subscription, the PaymentIntent
    and its Charge, and Stripe's `error` of a decline."""
    answer: JSON = {
        "outcome": payment.outcome,
        "invoice": invoice["id"],
        "subscription": subscription_of(invoice),
        "payment_intent": payment.intent["id"],
        "charge": payment.charge["id"] if payment.charge is not None else None,
    }
    if payment.outcome == "declined" and payment.error is not None:
        answer["error"] = payment.error
    return answer


def renewal_card(args: JSON) -> str | None:
    """The test card the renew route names (`card`, or the one an `outcome` stands for), checked; None
    when it names none (the card on file pays)."""
    if "card" in args and "outcome" in args:
        raise admin_error('Give "card" or "outcome", not both.')
    if "outcome" in args:
        if args["outcome"] not in OUTCOME_CARDS:
            raise admin_error('"outcome" must be "paid", "failed" or "requires_action".')
        return OUTCOME_CARDS[args["outcome"]]
    if "card" in args:
        card = card_arg(args)
        card_of(card)
        return card
    return None


def renew(ctx: Ctx, sub: JSON, args: JSON) -> JSON:
    """The end of the current period: a new period and a `subscription_cycle` invoice, charged
    off-session (with `cancel_at_period_end`, the subscription ends instead)."""
    if sub["status"] not in ("active", "past_due", "unpaid", "trialing"):
        raise admin_error(f"The subscription {sub['id']} is {sub['status']}: it does not renew.")
    card = renewal_card(args)
    if sub["cancel_at_period_end"]:
        before = snapshot(ctx, "subscription", sub)
        cancel_subscription(ctx, sub, {})
        sub["cancellation_details"] = {**sub["cancellation_details"], "reason": "cancellation_requested"}
        sub["canceled_at"] = before["canceled_at"] or sub["canceled_at"]
        emit(ctx, "customer.subscription.deleted", "subscription", sub)
        return {"outcome": "canceled", "subscription": sub["id"]}
    invoice = _next_period(ctx, sub)
    if invoice["status"] == "paid":  # nothing was due
        return {"outcome": "succeeded", "invoice": invoice["id"], "subscription": sub["id"]}
    on_file = payment_method_for(ctx, invoice, None) if card is None else None
    if on_file is not None:
        return payment_answer(invoice, collect(ctx, invoice, on_file, off_session=True))
    fallback = card or str(ctx.internal(sub["id"]).get("card") or FALLBACK_CARD)
    return charge_with_card(ctx, invoice, fallback, off_session=True)


def _next_period(ctx: Ctx, sub: JSON) -> JSON:
    """The subscription moves to its next period (`customer.subscription.updated`) and the period
    that ended is invoiced: `invoice.created`, `invoice.finalized` (paid at once when nothing is due)."""
    before = snapshot(ctx, "subscription", sub)
    started = min(int(i["current_period_start"]) for i in sub["items"])
    ended = max(int(i["current_period_end"]) for i in sub["items"])
    for item in sub["items"]:
        start = int(item["current_period_end"])
        item["current_period_start"] = start
        item["current_period_end"] = period_end(start, ctx.acct.prices[item["price"]]["recurring"])
    invoice = build_invoice(ctx, sub, "subscription_cycle", started, ended)
    emit_update(ctx, "subscription", sub, before)
    emit(ctx, "invoice.created", "invoice", invoice)
    finalize_invoice(ctx, invoice)
    return invoice


def admin_cancel(ctx: Ctx, sub: JSON, args: JSON) -> JSON:
    try:
        cancel_subscription(ctx, sub, {})
    except StripeError as exc:
        raise admin_error(exc.message) from exc
    emit(ctx, "customer.subscription.deleted", "subscription", sub)
    return {"outcome": "canceled", "subscription": render(ctx, "subscription", sub, [])}
