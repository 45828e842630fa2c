"""The billing cycle driven from outside (admin routes): renew a subscription, pay an invoice, cancel."""

from __future__ import annotations

from ..cards import card_arg
from ..common import period_end
from ..context import Ctx
from ..errors import JSON, StripeError, admin_error
from ..events import emit, emit_update
from ..rendering import render, snapshot
from .invoices import build_invoice, finalize_invoice
from .payments import charge_invoice
from .subscriptions import cancel_subscription


def pay_invoice(ctx: Ctx, invoice: JSON, args: JSON) -> JSON:
    if invoice["status"] != "open":
        raise admin_error(f"The invoice {invoice['id']} is {invoice['status']}, not open.")
    return charge_invoice(ctx, invoice, card_arg(args))


def renew(ctx: Ctx, sub: JSON, args: JSON) -> JSON:
    """The end of the current period: a new period and a `subscription_cycle` invoice, charged."""
    if sub["status"] not in ("active", "past_due", "unpaid", "trialing"):
        raise admin_error(f"The subscription {sub['id']} is {sub['status']}: it does not renew.")
    if "card" in args and "outcome" in args:
        raise admin_error('Give "card" or "outcome", not both.')
    if "outcome" in args:
        outcomes = {
            "paid": "4242424242424242",
            "failed": "4000000000000002",
            "requires_action": "4000000000003220",
        }
        if args["outcome"] not in outcomes:
            raise admin_error('"outcome" must be "paid", "failed" or "requires_action".')
        card = outcomes[args["outcome"]]
    else:
        card = (
            card_arg(args)
            if "card" in args
            else str(ctx.internal(sub["id"]).get("card") or "4242424242424242")
        )
    if sub["cancel_at_period_end"]:
        before = snapshot(ctx, "subscription", sub)
        cancel_subscription(ctx, sub, {})
        sub["cancellation_details"] = {**sub["cancellation_details"], "reason": "cancellation_requested"}
        sub["canceled_at"] = before["canceled_at"] or sub["canceled_at"]
        emit(ctx, "customer.subscription.deleted", "subscription", sub)
        return {"outcome": "canceled", "subscription": sub["id"]}
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
    finalize_invoice(ctx, invoice)  # pays it when nothing is due
    if invoice["status"] == "paid":
        return {"outcome": "succeeded", "invoice": invoice["id"], "subscription": sub["id"]}
    return charge_invoice(ctx, invoice, card)


def admin_cancel(ctx: Ctx, sub: JSON, args: JSON) -> JSON:
    try:
        cancel_subscription(ctx, sub, {})
    except StripeError as exc:
        raise admin_error(exc.message) from exc
    emit(ctx, "customer.subscription.deleted", "subscription", sub)
    return {"outcome": "canceled", "subscription": render(ctx, "subscription", sub, [])}
