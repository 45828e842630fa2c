"""The hosted payment page's steps (admin routes): complete a Checkout Session with a card, authenticate 3-D
Secure."""

from __future__ import annotations

from ..cards import card_arg, card_outcome, decline
from ..context import Ctx
from ..errors import JSON, admin_error
from ..events import emit
from ..rendering import render
from .checkout import (
    CHECKOUT_BASIL,
    checkout_customer,
    checkout_subscription,
    complete_session,
    fulfil_session,
)
from .invoices import build_invoice, finalize_invoice, mark_failed, mark_paid
from .payment_intents import authenticate_intent, charge_invoice, new_payment_intent
from .subscriptions import set_status


def complete_checkout(ctx: Ctx, session: JSON, args: JSON) -> JSON:
    card = card_arg(args)
    if session["status"] != "open":
        raise admin_error(f"The Checkout Session {session['id']} is {session['status']}, not open.")
    outcome, decline_code = card_outcome(card)
    if str(ctx.internal(session["id"])["api_version"]) >= CHECKOUT_BASIL:
        if outcome == "succeeded":
            answer = fulfil_session(ctx, session, card, args)
        elif outcome == "declined":
            # Checkout shows the decline on its page; nothing is created and the session stays open.
            answer = {"outcome": "declined", "error": decline(decline_code)}
        else:
            intent = new_payment_intent(
                ctx, card, session["amount_total"], session["currency"], session=session["id"], invoice=None
            )
            ctx.internal(intent["id"])["args"] = {k: args[k] for k in ("email", "name") if k in args}
            answer = {"outcome": "requires_action", "payment_intent": intent["id"]}
    else:
        # Before 2025-03-31.basil, Checkout made an incomplete subscription with an open first invoice,
        # then attempted the payment; a declined card left them for the next attempt.
        sub_id = ctx.internal(session["id"])["pending_subscription"]
        if sub_id is None:
            customer = checkout_customer(ctx, session, args)
            sub = checkout_subscription(ctx, session, customer, card)
            now = int(sub["created"])
            invoice = build_invoice(ctx, sub, "subscription_create", now, now)
            sub["status"] = "incomplete"
            ctx.put("subscription", sub)
            ctx.internal(session["id"])["pending_subscription"] = sub["id"]
            emit(ctx, "customer.subscription.created", "subscription", sub)
            emit(ctx, "invoice.created", "invoice", invoice)
            finalize_invoice(ctx, invoice)
        else:
            sub = ctx.acct.subscriptions[sub_id]
            invoice = ctx.acct.invoices[sub["latest_invoice"]]
        answer = charge_invoice(ctx, invoice, card)
        if answer["outcome"] == "requires_action":
            ctx.internal(answer["payment_intent"])["checkout_session"] = session["id"]
        if answer["outcome"] == "succeeded":
            complete_session(ctx, session, sub, invoice)
    answer["checkout_session"] = render(ctx, "checkout_session", session, [])
    return answer


def authenticate_payment(ctx: Ctx, intent: JSON, args: JSON) -> JSON:
    if intent["status"] != "requires_action":
        raise admin_error(f"The PaymentIntent {intent['id']} is {intent['status']}, not requires_action.")
    result = args.get("outcome", "succeeded")
    if result not in ("succeeded", "failed"):
        raise admin_error('"outcome" must be "succeeded" or "failed".')
    info = ctx.internal(intent["id"])
    if "card" not in info:  # a PaymentIntent of the API: its payment goes on
        payment = authenticate_intent(ctx, intent, result == "succeeded")
        return {"payment_intent": render(ctx, "payment_intent", payment.intent, []), "outcome": result}
    intent["status"] = "succeeded" if result == "succeeded" else "requires_payment_method"
    intent["next_action"] = None
    session = ctx.acct.checkout_sessions.get(info["checkout_session"] or "")
    answer: JSON = {"payment_intent": intent["id"], "outcome": result}
    if info["invoice"] is None:  # a Checkout payment (basil): nothing exists before it succeeds
        assert session is not None
        if result == "succeeded":
            if session["status"] != "open":
                raise admin_error(f"The Checkout Session {session['id']} is {session['status']}.")
            answer.update(fulfil_session(ctx, session, info["card"], info.get("args", {})))
    else:
        invoice = ctx.acct.invoices[info["invoice"]]
        sub = ctx.acct.subscriptions[invoice["parent"]["subscription_details"]["subscription"]]
        if result == "succeeded" and invoice["status"] == "open":
            ctx.internal(sub["id"])["card"] = info["card"]
            mark_paid(ctx, invoice)
            if sub["status"] in ("incomplete", "past_due", "unpaid"):
                set_status(ctx, sub, "active")
            if session is not None and session["status"] == "open":
                complete_session(ctx, session, sub, invoice)
        elif result == "failed":
            mark_failed(ctx, invoice, action_required=False)
        answer.update({"invoice": invoice["id"], "subscription": sub["id"]})
    if session is not None:
        answer["checkout_session"] = render(ctx, "checkout_session", session, [])
    return answer
