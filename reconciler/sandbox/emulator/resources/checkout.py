"""Checkout Sessions in `payment`, `setup` and `subscription` mode: create, retrieve (`line_items`),
list their line items, expire, list; and what completing a subscription session makes (paying a
session is `payment_pages.pay_session`)."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import stripe

from ..common import EMAIL_RE, check_currency, merge_metadata
from ..context import Ctx
from ..errors import JSON, StripeError, admin_error, missing, no_such, param_error, unmodelled
from ..events import emit
from ..listing import standard_routes
from ..params import MODELLED_PARAMS, PARAM_SPECS, spec_of
from ..registry import Call, Kind, register_kind, route
from ..rendering import list_object, render, snapshot
from .customers import create_customer
from .invoices import build_invoice, finalize_invoice, line_amount, mark_paid
from .setup_intents import new_setup_intent
from .subscriptions import build_subscription, check_items, new_item, subscribable_price

MODES = ("payment", "setup", "subscription")
# What this emulator models of each nested create parameter; the rest is refused loudly.
MODELLED_NESTED = {
    "line_items": frozenset({"price", "quantity"}),
    "subscription_data": frozenset({"description", "metadata"}),
    "payment_intent_data": frozenset(
        {"capture_method", "description", "metadata", "setup_future_usage", "shipping"}
    ),
    "setup_intent_data": frozenset({"description", "metadata"}),
}
# The nested parameters each mode takes (Stripe refuses the others' data in a mode).
MODE_DATA = {
    "payment": "payment_intent_data",
    "setup": "setup_intent_data",
    "subscription": "subscription_data",
}


def create_checkout_session(ctx: Ctx, p: JSON) -> JSON:
    if "mode" not in p:
        raise missing("mode")
    mode = p["mode"]
    if mode not in MODES:
        raise param_error(
            f"Invalid mode: must be one of {', '.join(MODES)}.", "mode", "parameter_invalid_string"
        )
    for other, other_data in MODE_DATA.items():
        if other != mode and other_data in p:
            raise param_error(f"You can not pass `{other_data}` in `{mode}` mode.", other_data)
    if "customer_creation" in p and mode == "subscription":
        raise param_error(
            "`customer_creation` can only be used in `payment` and `setup` mode.", "customer_creation"
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
    now = int(time.time())
    if mode == "setup":
        if p.get("line_items"):
            raise param_error("You can not pass `line_items` in `setup` mode.", "line_items")
        if "currency" not in p:
            # Stripe: `currency` is required in setup mode when `payment_method_types` is not set (it is
            # not modelled here, so always).
            raise missing("currency")
        lines: list[JSON] = []
        currency: str | None = check_currency(p["currency"], "currency")
        subtotal: int | None = None
    else:
        if "currency" in p:
            raise unmodelled("currency")  # the prices' currency is the session's
        lines, currency = _line_items(ctx, p, mode)
        subtotal = sum(line_amount(ctx.acct.prices[line["price"]], line["quantity"]) for line in lines)
        if mode == "payment" and currency == "usd" and subtotal < 50:
            raise param_error(
                "The Checkout Session's total amount due must add up to at least $0.50 usd", "line_items"
            )
    expires_at = p.get("expires_at", now + CHECKOUT_LIFETIME)
    if not now + 1800 <= expires_at <= now + CHECKOUT_LIFETIME:
        raise param_error(
            "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout Session "
            "creation.",
            "expires_at",
        )
    data = p.get(MODE_DATA[mode]) or {}
    data_metadata = merge_metadata({}, data.get("metadata"), f"{MODE_DATA[mode]}[metadata]")
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
        "currency": currency,
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
        # Since API 2022-08-01 payment mode creates a Customer only if required (`if_required`).
        "customer_creation": None if mode == "subscription" else p.get("customer_creation", "if_required"),
        "customer_details": None,
        "customer_email": email,
        "discounts": [],
        "expires_at": expires_at,
        "invoice": None,
        "invoice_creation": (
            {"enabled": False, "invoice_data": _NO_INVOICE_DATA} if mode == "payment" else None
        ),
        "livemode": ctx.mode == "live",
        "locale": None,
        "metadata": merge_metadata({}, p.get("metadata"), "metadata"),
        "mode": mode,
        # Since API 2022-08-01 a payment-mode session makes its PaymentIntent when it is confirmed.
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": "always" if mode == "subscription" else "if_required",
        "payment_method_options": {},
        "payment_method_types": ["card"],
        "payment_status": "no_payment_required" if mode == "setup" else "unpaid",
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
        "total_details": (
            None if mode == "setup" else {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0}
        ),
        "ui_mode": "hosted",
        "url": f"http://{host}/_emulator/checkout/{session_id}",
    }
    if mode == "setup":
        # Setup mode still makes its SetupIntent with the session (only subscription mode lost it).
        intent = new_setup_intent(
            ctx, customer=session["customer"], description=data.get("description"), metadata=data_metadata
        )
        session["setup_intent"] = intent["id"]
    ctx.put("checkout_session", session)
    # Internal (never rendered): what completing the session needs.
    ctx.internal(session_id).update(
        line_items=lines,
        subscription_metadata=data_metadata if mode == "subscription" else {},
        subscription_description=data.get("description") if mode == "subscription" else None,
        payment_intent_data=({**data, "metadata": data_metadata} if mode == "payment" else None),
        api_version=ctx.version or stripe.api_version,
        pending_subscription=None,
    )
    return session


_NO_INVOICE_DATA: JSON = {
    "account_tax_ids": None,
    "custom_fields": None,
    "description": None,
    "footer": None,
    "issuer": None,
    "metadata": {},
    "rendering_options": None,
}


def _line_items(ctx: Ctx, p: JSON, mode: str) -> tuple[list[JSON], str]:
    """The checked `line_items` of a payment or subscription session, and their one currency."""
    if not p.get("line_items"):
        raise param_error(f"`line_items` is required in `{mode}` mode.", "line_items", "parameter_missing")
    lines: list[JSON] = []
    currencies: set[str] = set()
    for i, given in enumerate(p["line_items"]):
        param = f"line_items[{i}][price]"
        if "price" not in given:
            raise missing(param)
        if mode == "subscription":
            price = subscribable_price(ctx, given["price"], param)
            metered = price["recurring"]["usage_type"] == "metered"
        else:
            price = _one_time_price(ctx, given["price"], param)
            metered = False
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
        if mode == "subscription" and any(line["price"] == price["id"] for line in lines):
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
    return lines, currencies.pop()


def _one_time_price(ctx: Ctx, price_id: str, param: str) -> JSON:
    price = ctx.acct.prices.get(price_id)
    if price is None:
        raise no_such("price", price_id, param, status=400)
    if not price["active"]:
        raise param_error("The price specified is inactive. This field only accepts active prices.", param)
    if price["type"] == "recurring":
        raise param_error(
            "You specified `payment` mode but passed a recurring price. Either switch to `subscription` "
            "mode or use only one-time prices.",
            param,
        )
    product = ctx.acct.products.get(price["product"])
    if product is not None and not product["active"]:
        raise param_error(
            f"The product `{product['id']}` is marked as inactive. You provided the price `{price_id}`.",
            param,
        )
    return price


def session_line_items(ctx: Ctx, session: JSON, p: JSON | None = None) -> JSON:
    """The session's line items as Stripe lists them (in the order given), paged by `limit`,
    `starting_after`, `ending_before` (the line items' ids)."""
    p = p or {}
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
    limit = p.get("limit", 10)
    if not 1 <= limit <= 100:
        raise param_error("Invalid limit: must be between 1 and 100", "limit")
    if "starting_after" in p and "ending_before" in p:
        raise param_error(
            "You may only specify one of these parameters: ending_before, starting_after.",
            "ending_before",
            "parameters_exclusive",
        )
    ids = [item["id"] for item in data]
    for cursor in ("starting_after", "ending_before"):
        if cursor in p and p[cursor] not in ids:
            raise no_such("line_item", p[cursor], cursor, status=400)
    if "starting_after" in p:
        rest = data[ids.index(p["starting_after"]) + 1 :]
        page, has_more = rest[:limit], len(rest) > limit
    elif "ending_before" in p:
        rest = data[: ids.index(p["ending_before"])]
        page, has_more = rest[-limit:], len(rest) > limit
    else:
        page, has_more = data[:limit], len(data) > limit
    return list_object(page, f"/v1/checkout/sessions/{session['id']}/line_items", has_more=has_more)


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


def checkout_subscription(ctx: Ctx, session: JSON, customer: JSON, card: str, method: str) -> JSON:
    """The session's subscription for `customer`, paid with PaymentMethod `method` (test card `card`)."""
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
    ctx.internal(sub["id"])["card"] = card
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


def fulfil_session(ctx: Ctx, session: JSON, card: str, method: str, args: JSON) -> JSON:
    """The paid session (API 2025-03-31.basil on): payment first, then customer, an active
    subscription and its paid first invoice, then `checkout.session.completed`."""
    customer = checkout_customer(ctx, session, args)
    sub = checkout_subscription(ctx, session, customer, card, method)
    now = int(sub["created"])
    invoice = build_invoice(ctx, sub, "subscription_create", now, now)
    ctx.put("subscription", sub)
    emit(ctx, "customer.subscription.created", "subscription", sub)
    emit(ctx, "invoice.created", "invoice", invoice)
    finalize_invoice(ctx, invoice)
    mark_paid(ctx, invoice)
    complete_session(ctx, session, sub=sub, invoice=invoice)
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
            "payment_intent": "payment_intent",
            "payment_link": "",
            "setup_intent": "setup_intent",
        },
        filters=("customer", "status", "subscription"),
        render=_render,
    )
)
standard_routes("checkout_session")
PARAM_SPECS["checkout_session.line_items"] = spec_of(stripe.params.checkout.SessionListLineItemsParams)
_PAGING = frozenset({"ending_before", "expand", "limit", "starting_after"})
MODELLED_PARAMS.update(
    {
        "checkout_session.create": frozenset(
            {
                "cancel_url",
                "client_reference_id",
                "currency",
                "customer",
                "customer_creation",
                "customer_email",
                "expand",
                "expires_at",
                "line_items",
                "metadata",
                "mode",
                "payment_intent_data",
                "setup_intent_data",
                "subscription_data",
                "success_url",
            }
        ),
        "checkout_session.list": _PAGING | {"created", "customer", "status", "subscription"},
        "checkout_session.line_items": _PAGING,
    }
)


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


@route("GET", "/v1/checkout/sessions/{id}/line_items", "checkout_session.line_items")
def _line_items_route(ctx: Ctx, call: Call) -> JSON:
    session = ctx.need("checkout_session", call.ids[0])
    listed = session_line_items(ctx, session, call.params)
    if call.expand:
        # `expand[]=data.price.product`: the prices are already whole; their products expand.
        listed["data"] = [
            {**item, "price": render(ctx, "price", ctx.acct.prices[item["price"]["id"]], _inner(call.expand))}
            for item in listed["data"]
        ]
    return listed


def _inner(expand: list[str]) -> list[str]:
    inner = []
    for path in expand:
        if not path.startswith("data.price."):
            raise param_error(f"This property cannot be expanded ({path}).", "expand")
        inner.append(path[len("data.price.") :])
    return inner


@route("POST", "/v1/checkout/sessions/{id}/expire", "checkout_session.expire")
def _expire(ctx: Ctx, call: Call) -> JSON:
    session = ctx.need("checkout_session", call.ids[0])
    expire_session(ctx, session)
    return render(ctx, "checkout_session", session, call.expand)
