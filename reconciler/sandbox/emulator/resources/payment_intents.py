"""Card payments with Stripe's test cards (internal PaymentIntents: no Stripe route yet)."""

from __future__ import annotations

import time

from ..cards import card_outcome, decline
from ..context import Ctx
from ..errors import JSON
from ..registry import Kind, register_kind
from .invoices import mark_failed, mark_paid
from .subscriptions import set_status


def new_payment_intent(
    ctx: Ctx, card: str, amount: int, currency: str, *, session: str | None, invoice: str | None
) -> JSON:
    intent = {
        "id": ctx.fresh_id("pi_", 24),
        "object": "payment_intent",
        "amount": amount,
        "currency": currency,
        "card": card,
        "checkout_session": session,
        "invoice": invoice,
        "status": "requires_action",
        "created": int(time.time()),
    }
    ctx.put("payment_intent", intent)
    return intent


def charge_invoice(ctx: Ctx, invoice: JSON, card: str) -> JSON:
    """One payment attempt on an open invoice with a test card; the subscription follows. Returns the
    admin answer (`outcome`, and the PaymentIntent to authenticate when 3D Secure is required)."""
    outcome, decline_code = card_outcome(card)
    sub = ctx.acct.subscriptions[invoice["parent"]["subscription_details"]["subscription"]]
    first = invoice["billing_reason"] == "subscription_create"
    answer: JSON = {"outcome": outcome, "invoice": invoice["id"], "subscription": sub["id"]}
    if outcome == "succeeded":
        ctx.internal(sub["id"])["card"] = card
        mark_paid(ctx, invoice)
        if sub["status"] in ("incomplete", "past_due", "unpaid"):
            set_status(ctx, sub, "active")
        return answer
    if outcome == "requires_action":
        intent = new_payment_intent(
            ctx, card, invoice["amount_due"], invoice["currency"], session=None, invoice=invoice["id"]
        )
        answer["payment_intent"] = intent["id"]
    else:
        answer["error"] = decline(decline_code)
    mark_failed(ctx, invoice, action_required=outcome == "requires_action")
    if not first and sub["status"] == "active":
        set_status(ctx, sub, "past_due")
    return answer


# Card payments waiting for 3-D Secure: internal records, not Stripe's PaymentIntent shape (no route).
register_kind(Kind("payment_intent", "payment_intents"))
