"""What completing a Checkout Session makes: its customer (the session's, else a new one from the
details typed on the page), in subscription mode the card saved for the customer and its subscription
(`fulfil_session`: with the first invoice paid by the session's PaymentIntent, as since
2025-03-31.basil), then `checkout.session.completed`. Paying a session, and which flow its API version
follows (`CHECKOUT_BASIL`), is `payment_pages.pay_session`."""

from __future__ import annotations

import time

from ..context import Ctx
from ..errors import JSON, StripeError, admin_error
from ..events import emit
from .customers import create_customer
from .invoices import build_invoice, finalize_invoice
from .invoicing import attach_payment
from .payment_methods import attach_method
from .payments import Payment
from .subscription_items import check_items, new_item
from .subscriptions import build_subscription

# From this API version on, a subscription-mode Checkout Session creates its subscription only after the
# payment succeeded (docs.stripe.com/changelog/basil/2025-03-31/checkout-legacy-subscription-upgrade).
CHECKOUT_BASIL = "2025-03-31"


def checkout_customer(ctx: Ctx, session: JSON, args: JSON) -> JSON:
    if session["customer"] is not None:
        return ctx.acct.customers[session["customer"]]
    params: JSON = {}
    email = session["customer_email"] or args.get("email")
    if email:
        params["email"] = email
    if args.get("name"):
        params["name"] = args["name"]
    try:
        customer = create_customer(ctx, params)
    except StripeError as exc:
        raise admin_error(exc.message) from exc
    emit(ctx, "customer.created", "customer", customer)
    session["customer"] = customer["id"]
    return customer


def checkout_subscription(ctx: Ctx, session: JSON, customer: JSON, method: str) -> JSON:
    """The session's subscription for `customer`, paid with PaymentMethod `method` (its
    `default_payment_method`: its renewals are charged to it)."""
    now = int(time.time())
    sub_id = ctx.fresh_id("sub_", 24)
    items = []
    for line in ctx.internal(session["id"])["line_items"]:
        price = ctx.acct.prices[line["price"]]
        item = new_item(ctx, sub_id, price, now)
        item["quantity"] = line["quantity"]
        items.append(item)
    try:
        currency = check_items(ctx, items, customer, None)
    except StripeError as exc:
        raise admin_error(exc.message) from exc
    sub = build_subscription(
        ctx,
        sub_id,
        customer,
        items,
        currency,
        now,
        ctx.internal(session["id"])["subscription_metadata"],
        ctx.internal(session["id"])["subscription_description"],
    )
    sub["default_payment_method"] = method
    customer["currency"] = customer["currency"] or currency
    return sub


def complete_session(
    ctx: Ctx,
    session: JSON,
    *,
    billing: JSON | None = None,
    sub: JSON | None = None,
    invoice: JSON | None = None,
    payment_status: str = "paid",
) -> None:
    """The session is complete: its customer's details (else the `billing` details typed on the page),
    what it made, then `checkout.session.completed`."""
    customer = ctx.acct.customers.get(session["customer"] or "")
    session["status"] = "complete"
    session["payment_status"] = payment_status
    if sub is not None:
        session["subscription"] = sub["id"]
    if invoice is not None:
        session["invoice"] = invoice["id"]
    source = customer if customer is not None else billing or {}
    session["customer_details"] = {
        "address": source.get("address"),
        "business_name": None,
        "email": source.get("email") or session["customer_email"],
        "individual_name": None,
        "name": source.get("name"),
        "phone": source.get("phone"),
        "tax_exempt": source.get("tax_exempt", "none"),
        "tax_ids": [],
    }
    emit(ctx, "checkout.session.completed", "checkout_session", session)


def save_card(ctx: Ctx, method: JSON, customer: JSON) -> None:
    """The card that paid a subscription session is saved for its customer (`payment_method.attached`):
    the subscription's renewals are charged to it. Saved by this very payment, so not used up (Stripe's
    one-use rule is for a PaymentMethod used without a customer)."""
    if method["customer"] is None:
        ctx.internal(method["id"]).pop("used", None)
        attach_method(ctx, method, customer)


def fulfil_session(ctx: Ctx, session: JSON, method: JSON, details: JSON, payment: Payment | None) -> JSON:
    """The paid session (API 2025-03-31.basil on): `payment` went through first (None when nothing
    was due); then the customer, the card saved for it, an active subscription and its first invoice,
    paid by that PaymentIntent, then `checkout.session.completed`."""
    customer = checkout_customer(ctx, session, details)
    save_card(ctx, method, customer)
    sub = checkout_subscription(ctx, session, customer, method["id"])
    now = int(sub["created"])
    invoice = build_invoice(ctx, sub, "subscription_create", now, now)
    ctx.put("subscription", sub)
    emit(ctx, "customer.subscription.created", "subscription", sub)
    emit(ctx, "invoice.created", "invoice", invoice)
    finalize_invoice(ctx, invoice)  # paid at once when nothing is due
    answer: JSON = {"outcome": "succeeded", "subscription": sub["id"], "invoice": invoice["id"]}
    if payment is not None:
        for paid in (payment.intent, payment.charge):  # made before the customer existed
            if paid is not None:
                paid["customer"] = customer["id"]
        attach_payment(ctx, invoice, payment)
        answer["payment_intent"] = payment.intent["id"]
    complete_session(ctx, session, sub=sub, invoice=invoice)
    return answer
