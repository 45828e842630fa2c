"""Checkout Sessions in `payment`, `setup` and `subscription` mode: create, retrieve (`line_items`),
list their line items, expire, list. What a session sells and how its line items are listed is
`checkout_lines`; what completing one makes, `checkout_completion` (paying a session is
`payment_pages.pay_session`)."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import stripe

from ..common import EMAIL_RE, merge_metadata
from ..context import Ctx
from ..errors import JSON, StripeError, missing, no_such, param_error, unmodelled
from ..events import emit
from ..listing import standard_routes
from ..params import MODELLED_PARAMS, PARAM_SPECS, spec_of
from ..registry import Call, Kind, register_kind, route
from ..rendering import render, snapshot
from .checkout_lines import session_line_items, session_lines
from .setup_intents import new_setup_intent

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
    mode = _checked_mode(p)
    customer = _checked_customer(ctx, p)
    reference = p.get("client_reference_id")
    if reference is not None and len(reference) > 200:
        raise param_error(
            "Invalid client_reference_id: must be at most 200 characters.", "client_reference_id"
        )
    _check_urls(p)
    now = int(time.time())
    lines, currency, subtotal = session_lines(ctx, p, mode)
    expires_at = _checked_expiry(p, now)
    data = p.get(MODE_DATA[mode]) or {}
    data_metadata = merge_metadata({}, data.get("metadata"), f"{MODE_DATA[mode]}[metadata]")
    # One keyword a line, as FaultSettings(...) in cli/sandbox.py: alike in shape, nothing shared.
    session = _new_session(
        ctx,
        p,
        mode=mode,
        customer=customer,
        currency=currency,
        subtotal=subtotal,
        now=now,
        expires_at=expires_at,
    )
    if mode == "setup":
        # Setup mode still makes its SetupIntent with the session (only subscription mode lost it).
        intent = new_setup_intent(
            ctx, customer=session["customer"], description=data.get("description"), metadata=data_metadata
        )
        session["setup_intent"] = intent["id"]
    ctx.put("checkout_session", session)
    # Internal (never rendered): what completing the session needs.
    ctx.internal(session["id"]).update(
        line_items=lines,
        subscription_metadata=data_metadata if mode == "subscription" else {},
        subscription_description=data.get("description") if mode == "subscription" else None,
        payment_intent_data=({**data, "metadata": data_metadata} if mode == "payment" else None),
        api_version=ctx.version or stripe.api_version,
        pending_subscription=None,
    )
    return session


def _checked_mode(p: JSON) -> str:
    """The session's `mode`, and only the nested data and customer creation that mode takes."""
    if "mode" not in p:
        raise missing("mode")
    mode = str(p["mode"])
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
    return mode


def _checked_customer(ctx: Ctx, p: JSON) -> JSON | None:
    """The existing `customer` the session is for, if given; else a well-formed `customer_email`, if
    given (not both)."""
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
    return customer


def _check_urls(p: JSON) -> None:
    """`success_url` (required) and `cancel_url`: absolute http(s) URLs."""
    if "success_url" not in p:
        # The SDK types it optional because embedded and custom `ui_mode`s forbid it; a hosted
        # session (the only `ui_mode` modelled here) needs it.
        raise missing("success_url")
    for key in ("success_url", "cancel_url"):
        if key in p:
            parts = urlsplit(p[key])
            if parts.scheme not in ("http", "https") or not parts.hostname or len(p[key]) > 5000:
                raise param_error("Not a valid URL", key, "url_invalid")


def _checked_expiry(p: JSON, now: int) -> int:
    """`expires_at`: 30 minutes to 24 hours from now, 24 hours when not given."""
    expires_at = int(p.get("expires_at", now + CHECKOUT_LIFETIME))
    if not now + 1800 <= expires_at <= now + CHECKOUT_LIFETIME:
        raise param_error(
            "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout Session "
            "creation.",
            "expires_at",
        )
    return expires_at


def _new_session(
    ctx: Ctx,
    p: JSON,
    *,
    mode: str,
    customer: JSON | None,
    currency: str | None,
    subtotal: int | None,
    now: int,
    expires_at: int,
) -> JSON:
    """A new open session, hosted at `/_emulator/checkout/{id}` (not stored)."""
    session_id = ctx.fresh_id(f"cs_{ctx.mode}_", 58)
    host = ctx.host or "127.0.0.1"
    session: JSON = {
        "id": session_id,
        "object": "checkout.session",
        "amount_subtotal": subtotal,
        "amount_total": subtotal,
        "cancel_url": p.get("cancel_url"),
        "client_reference_id": p.get("client_reference_id"),
        "created": now,
        "currency": currency,
        "customer": customer["id"] if customer is not None else None,
        # Since API 2022-08-01 payment mode creates a Customer only if required (`if_required`).
        "customer_creation": None if mode == "subscription" else p.get("customer_creation", "if_required"),
        "customer_email": p.get("customer_email"),
        "expires_at": expires_at,
        "invoice_creation": (
            {"enabled": False, "invoice_data": _NO_INVOICE_DATA} if mode == "payment" else None
        ),
        "livemode": ctx.mode == "live",
        "metadata": merge_metadata({}, p.get("metadata"), "metadata"),
        "mode": mode,
        "payment_method_collection": "always" if mode == "subscription" else "if_required",
        "payment_status": "no_payment_required" if mode == "setup" else "unpaid",
        "success_url": p.get("success_url"),
        "total_details": (
            None if mode == "setup" else {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0}
        ),
        "url": f"http://{host}/_emulator/checkout/{session_id}",
    }
    return session | _session_defaults()


def _session_defaults() -> JSON:
    """What a new hosted session starts with: open, card only, nothing made yet, and the features not
    modelled (tax, discounts, shipping, consent, custom fields, promotion codes...) off."""
    return {
        "adaptive_pricing": None,
        "after_expiration": None,
        "allow_promotion_codes": None,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": None,
        "client_secret": None,
        "collected_information": None,
        "consent": None,
        "consent_collection": None,
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer_account": None,
        "customer_details": None,
        "discounts": [],
        "invoice": None,
        "locale": None,
        # Since API 2022-08-01 a payment-mode session makes its PaymentIntent when it is confirmed.
        "payment_intent": None,
        "payment_link": None,
        "payment_method_options": {},
        "payment_method_types": ["card"],
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
        "ui_mode": "hosted",
    }


_NO_INVOICE_DATA: JSON = {
    "account_tax_ids": None,
    "custom_fields": None,
    "description": None,
    "footer": None,
    "issuer": None,
    "metadata": {},
    "rendering_options": None,
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


CHECKOUT_LIFETIME = 24 * 3600  # a session's default (and longest) life, as Stripe's


def _render(ctx: Ctx, obj: JSON, out: JSON, groups: dict[str, list[str]], depth: int) -> dict[str, list[str]]:
    if "line_items" in groups and not groups["line_items"]:
        del groups["line_items"]
        out["line_items"] = session_line_items(ctx, obj)
    return groups


# Declared as every Kind is (invoices.py alike): the registry's form, this resource's fields.
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
