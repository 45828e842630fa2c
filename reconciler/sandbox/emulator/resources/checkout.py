"""Checkout Sessions (`mode=subscription`): create, retrieve (`line_items`), expire, list; and what
completing one makes."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import stripe

from ..common import EMAIL_RE, merge_metadata, random_id
from ..context import Ctx
from ..errors import JSON, StripeError, admin_error, missing, no_such, param_error, unmodelled
from ..events import emit
from ..listing import standard_routes
from ..params import MODELLED_NESTED
from ..registry import Call, Kind, register_kind, route
from ..rendering import render, snapshot
from .customers import create_customer
from .invoices import build_invoice, finalize_invoice, line_amount, mark_paid
from .subscriptions import build_subscription, check_items, new_item, subscribable_price


def create_checkout_session(ctx: Ctx, p: JSON) -> JSON:
    if "mode" not in p:
        raise missing("mode")
    if p["mode"] != "subscription":
        raise param_error(
            f"The parameter `mode={p['mode']}` is valid for Stripe, but this Stripe emulator models only "
            "`mode=subscription` Checkout Sessions.",
            "mode",
        )
    if "customer" in p and "customer_email" in p:
        raise param_error(
            "You may only specify one of these parameters: customer, customer_email.",
            "customer_email",
            "parameters_exclusive",
        )
    customer = None
    if "customer" in p:
        customer = ctx.acct.customers.get(p["customer"])
        if customer is None:
            raise no_such("customer", p["customer"], "customer", status=400)
    email = p.get("customer_email")
    if email is not None and (len(email) > 512 or not EMAIL_RE.match(email)):
        raise param_error(f"Invalid email address: {email}", "customer_email", "email_invalid")
    reference = p.get("client_reference_id")
    if reference is not None and len(reference) > 200:
        raise param_error(
            "Invalid client_reference_id: must be at most 200 characters.", "client_reference_id"
        )
    if "success_url" not in p:
        # The SDK types it optional because embedded and custom `ui_mode`s forbid it; a hosted
        # session (the only `ui_mode` modelled here) needs it.
        raise missing("success_url")
    for key in ("success_url", "cancel_url"):
        if key in p:
            parts = urlsplit(p[key])
            if parts.scheme not in ("http", "https") or not parts.hostname or len(p[key]) > 5000:
                raise param_error("Not a valid URL", key, "url_invalid")
    if not p.get("line_items"):
        raise param_error(
            "`line_items` is required in `subscription` mode.", "line_items", "parameter_missing"
        )
    now = int(time.time())
    lines: list[JSON] = []
    currencies: set[str] = set()
    for i, given in enumerate(p["line_items"]):
        if "price" not in given:
            raise missing(f"line_items[{i}][price]")
        price = subscribable_price(ctx, given["price"], f"line_items[{i}][price]")
        metered = price["recurring"]["usage_type"] == "metered"
        if metered and "quantity" in given:
            raise param_error(
                "Quantity should not be specified where usage_type is `metered`.",
                f"line_items[{i}][quantity]",
            )
        if not metered and "quantity" not in given:
            raise missing(f"line_items[{i}][quantity]")
        quantity = given.get("quantity")
        if quantity is not None and not 1 <= quantity <= 999_999:
            raise param_error(
                "Invalid quantity: must be between 1 and 999999.",
                f"line_items[{i}][quantity]",
                "parameter_invalid_integer",
            )
        if any(line["price"] == price["id"] for line in lines):
            raise param_error(
                f"Cannot add multiple subscription items with the same plan: {price['id']}", "line_items"
            )
        currencies.add(price["currency"])
        lines.append({"price": price["id"], "quantity": quantity})
    if len(currencies) > 1:
        raise param_error(
            "All line items of a Checkout Session must use the same currency; got "
            f"{', '.join(sorted(currencies))}.",
            "line_items",
        )
    expires_at = p.get("expires_at", now + CHECKOUT_LIFETIME)
    if not now + 1800 <= expires_at <= now + CHECKOUT_LIFETIME:
        raise param_error(
            "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout Session "
            "creation.",
            "expires_at",
        )
    sub_data = p.get("subscription_data") or {}
    sub_metadata = merge_metadata({}, sub_data.get("metadata"), "subscription_data[metadata]")
    subtotal = sum(line_amount(ctx.acct.prices[line["price"]], line["quantity"]) for line in lines)
    session_id = ctx.fresh_id(f"cs_{ctx.mode}_", 58)
    host = ctx.host or "127.0.0.1"
    session: JSON = {
        "id": session_id,
        "object": "checkout.session",
        "adaptive_pricing": None,
        "after_expiration": None,
        "allow_promotion_codes": None,
        "amount_subtotal": subtotal,
        "amount_total": subtotal,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": None,
        "cancel_url": p.get("cancel_url"),
        "client_reference_id": reference,
        "client_secret": None,
        "collected_information": None,
        "consent": None,
        "consent_collection": None,
        "created": now,
        "currency": currencies.pop(),
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": customer["id"] if customer is not None else None,
        "customer_account": None,
        "customer_creation": None,
        "customer_details": None,
        "customer_email": email,
        "discounts": [],
        "expires_at": expires_at,
        "invoice": None,
        "invoice_creation": None,
        "livemode": ctx.mode == "live",
        "locale": None,
        "metadata": merge_metadata({}, p.get("metadata"), "metadata"),
        "mode": "subscription",
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": "always",
        "payment_method_options": {},
        "payment_method_types": ["card"],
        "payment_status": "unpaid",
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": "open",
        "submit_type": None,
        "subscription": None,
        "success_url": p.get("success_url"),
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted",
        "url": f"http://{host}/_emulator/checkout/{session_id}",
    }
    ctx.put("checkout_session", session)
    # Internal (never rendered): what completing the session needs.
    ctx.internal(session_id).update(
        line_items=lines,
        subscription_metadata=sub_metadata,
        subscription_description=sub_data.get("description"),
        api_version=ctx.version or stripe.api_version,
        pending_subscription=None,
    )
    return session


def session_line_items(ctx: Ctx, session: JSON) -> JSON:
    data = []
    for n, line in enumerate(ctx.internal(session["id"])["line_items"]):
        price = ctx.acct.prices[line["price"]]
        product = ctx.acct.products.get(price["product"])
        amount = line_amount(price, line["quantity"])
        data.append(
            {
                "id": f"li_{session['id'][-20:]}{n:04d}",
                "object": "item",
                "amount_discount": 0,
                "amount_subtotal": amount,
                "amount_tax": 0,
                "amount_total": amount,
                "currency": price["currency"],
                "description": product["name"] if product is not None else None,
                "price": render(ctx, "price", price, []),
                "quantity": line["quantity"],
            }
        )
    return {
        "object": "list",
        "data": data,
        "has_more": False,
        "url": f"/v1/checkout/sessions/{session['id']}/line_items",
    }


def expire_session(ctx: Ctx, session: JSON) -> None:
    if session["status"] != "open":
        raise StripeError(
            400,
            'Only Checkout Sessions with a status in ["open"] can be expired. This Checkout Session has '
            f"a status of `{session['status']}`.",
        )
    before = snapshot(ctx, "checkout_session", session)
    session["status"] = "expired"
    emit(ctx, "checkout.session.expired", "checkout_session", session)
    del before  # Stripe's expired event carries no previous_attributes


def expire_due(ctx: Ctx) -> None:
    """Open sessions past their `expires_at` expire (lazily, when the account is next used)."""
    now = int(time.time())
    for session in list(ctx.acct.checkout_sessions.values()):
        if session["status"] == "open" and session["expires_at"] <= now:
            expire_session(ctx, session)


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


def checkout_subscription(ctx: Ctx, session: JSON, customer: JSON, card: str) -> JSON:
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
    sub["default_payment_method"] = random_id("pm_", 24)
    ctx.internal(sub["id"])["card"] = card
    customer["currency"] = customer["currency"] or currency
    return sub


def complete_session(ctx: Ctx, session: JSON, sub: JSON, invoice: JSON) -> None:
    customer = ctx.acct.customers[sub["customer"]]
    session["status"] = "complete"
    session["payment_status"] = "paid"
    session["subscription"] = sub["id"]
    session["invoice"] = invoice["id"]
    session["customer"] = customer["id"]
    session["customer_details"] = {
        "address": customer["address"],
        "business_name": None,
        "email": customer["email"],
        "individual_name": None,
        "name": customer["name"],
        "phone": customer["phone"],
        "tax_exempt": customer["tax_exempt"],
        "tax_ids": [],
    }
    emit(ctx, "checkout.session.completed", "checkout_session", session)


def fulfil_session(ctx: Ctx, session: JSON, card: str, args: JSON) -> JSON:
    """The paid session (API 2025-03-31.basil on): payment first, then customer, an active
    subscription and its paid first invoice, then `checkout.session.completed`."""
    customer = checkout_customer(ctx, session, args)
    sub = checkout_subscription(ctx, session, customer, card)
    now = int(sub["created"])
    invoice = build_invoice(ctx, sub, "subscription_create", now, now)
    ctx.put("subscription", sub)
    emit(ctx, "customer.subscription.created", "subscription", sub)
    emit(ctx, "invoice.created", "invoice", invoice)
    finalize_invoice(ctx, invoice)
    mark_paid(ctx, invoice)
    complete_session(ctx, session, sub, invoice)
    return {"outcome": "succeeded", "subscription": sub["id"], "invoice": invoice["id"]}


CHECKOUT_LIFETIME = 24 * 3600  # a session's default (and longest) life, as Stripe's
# From this API version on, a subscription-mode Checkout Session creates its subscription only after the
# payment succeeded (docs.stripe.com/changelog/basil/2025-03-31/checkout-legacy-subscription-upgrade).
CHECKOUT_BASIL = "2025-03-31"


def _render(ctx: Ctx, obj: JSON, out: JSON, groups: dict[str, list[str]], depth: int) -> dict[str, list[str]]:
    if "line_items" in groups and not groups["line_items"]:
        del groups["line_items"]
        out["line_items"] = session_line_items(ctx, obj)
    return groups


def _matches(obj: JSON, p: JSON) -> bool:
    return all(obj[key] == p[key] for key in ("customer", "status", "subscription") if key in p)


register_kind(
    Kind(
        "checkout_session",
        "checkout_sessions",
        noun="checkout.session",
        event_prefix="checkout.session",
        path="/v1/checkout/sessions",
        expandable={
            "customer": "customer",
            "invoice": "invoice",
            "subscription": "subscription",
            "payment_intent": "",
            "payment_link": "",
            "setup_intent": "",
        },
        matches=_matches,
        render=_render,
    )
)
standard_routes("checkout_session")


@route("POST", "/v1/checkout/sessions", "checkout_session.create")
def _create(ctx: Ctx, call: Call) -> JSON:
    p = call.params
    for name, allowed in MODELLED_NESTED.items():
        if name in p:
            entries = p[name] if isinstance(p[name], list) else [p[name]]
            for i, entry in enumerate(entries):
                for key in entry:
                    if key not in allowed:
                        raise unmodelled(
                            f"{name}[{i}][{key}]" if isinstance(p[name], list) else f"{name}[{key}]"
                        )
    return render(ctx, "checkout_session", create_checkout_session(ctx, p), call.expand)


@route("POST", "/v1/checkout/sessions/{id}/expire", "checkout_session.expire")
def _expire(ctx: Ctx, call: Call) -> JSON:
    session = ctx.need("checkout_session", call.ids[0])
    expire_session(ctx, session)
    return render(ctx, "checkout_session", session, call.expand)
