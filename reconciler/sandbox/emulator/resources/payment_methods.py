"""PaymentMethods (cards only, from Stripe's test tokens and test PaymentMethods): create, retrieve,
update, list, attach to a customer, detach. A `pm_card_*` id names a test card, not a stored object:
using it (attach, a PaymentIntent, a customer's `payment_method`) makes a new `pm_` PaymentMethod, as
Stripe does. The card number behind a PaymentMethod is internal (`ctx.internal(id)["card"]`)."""

from __future__ import annotations

import time

import stripe

from ..cards import CARDS, TEST_PAYMENT_METHODS, TEST_TOKENS, Card, card_details, card_of, decline
from ..common import address, merge_metadata
from ..context import Ctx
from ..errors import JSON, StripeError, no_such, param_error, unmodelled
from ..events import emit, emit_update
from ..listing import list_objects, standard_routes
from ..params import MODELLED_PARAMS, PARAM_SPECS, spec_of
from ..registry import Call, Kind, register_kind, route
from ..rendering import render, snapshot

RAW_CARD_NUMBERS = (
    "Sending credit card numbers directly to the Stripe API is generally unsafe. We suggest you use test "
    "tokens that map to the test card you are using, see https://stripe.com/docs/testing. To enable testing "
    "raw card data APIs, see https://support.stripe.com/questions/enabling-access-to-raw-card-data-apis."
)


def new_card_method(ctx: Ctx, card: Card, p: JSON | None = None) -> JSON:
    """A stored, unattached card PaymentMethod for a test card (`p`: billing_details, metadata,
    allow_redisplay as the create route takes them)."""
    p = p or {}
    method: JSON = {
        "id": ctx.fresh_id("pm_", 24),
        "object": "payment_method",
        "allow_redisplay": p.get("allow_redisplay", "unspecified"),
        "billing_details": _billing_details({}, dict(p.get("billing_details") or {})),
        "card": card_details(ctx.mode, card),
        "created": int(time.time()),
        "customer": None,
        "customer_account": None,
        "livemode": ctx.livemode,
        "metadata": merge_metadata({}, p.get("metadata"), "metadata"),
        "type": "card",
    }
    ctx.put("payment_method", method)
    ctx.internal(method["id"])["card"] = card.number
    return method


def payment_method_for_card(ctx: Ctx, number: str) -> str:
    """A new PaymentMethod for a test card number (the hosted payment page's card field)."""
    return str(new_card_method(ctx, card_of(number))["id"])


def method_card(ctx: Ctx, method: JSON) -> Card:
    return CARDS[str(ctx.internal(method["id"])["card"])]


def resolve_method(ctx: Ctx, ref: str, param: str) -> JSON:
    """The PaymentMethod `ref` names: a new one for a `pm_card_*` test id, else the stored one (or
    Stripe's "No such PaymentMethod", 400, naming `param`)."""
    if ref in TEST_PAYMENT_METHODS:
        return new_card_method(ctx, CARDS[TEST_PAYMENT_METHODS[ref]])
    return ctx.need("payment_method", ref, param, status=400)


def attach_method(ctx: Ctx, method: JSON, customer: JSON) -> None:
    """Attach `method` to `customer`: the card is checked first (a declining test card other than
    4000 0000 0000 0341 is refused with Stripe's 402 card_error); emits payment_method.attached."""
    if method["customer"] == customer["id"]:
        return
    check_attachable(ctx, method)
    method["customer"] = customer["id"]
    emit(ctx, "payment_method.attached", "payment_method", method)


def check_reusable(ctx: Ctx, method: JSON) -> None:
    """A PaymentMethod used once without a customer, or detached, cannot be used again (Stripe's 400)."""
    if method["customer"] is None and ctx.internal(method["id"]).get("used"):
        raise param_error(REUSED, "payment_method")


REUSED = (
    "The provided PaymentMethod was previously used with a PaymentIntent without Customer attachment, "
    "shared with a connected account without Customer attachment, or was detached from a Customer. It "
    "may not be used again. To use a PaymentMethod multiple times, you must attach it to a Customer first."
)


def check_attachable(ctx: Ctx, method: JSON) -> None:
    """Refuse a PaymentMethod attached elsewhere or used up, or a test card whose check declines
    (Stripe's 402)."""
    check_reusable(ctx, method)
    if method["customer"] is not None:
        raise param_error(
            "The payment method you provided has already been attached to a customer.", "payment_method"
        )
    card = method_card(ctx, method)
    if not card.attachable:
        body = decline(card.decline_code)
        raise StripeError(
            402,
            body["message"],
            type_="card_error",
            code=body["code"],
            extra={"decline_code": card.decline_code},
        )


def detach_method(ctx: Ctx, method: JSON) -> None:
    """Detach `method` from its customer (who loses it as default payment method): emits
    payment_method.detached (previous_attributes: the customer) and the customer's update."""
    customer_id = method["customer"]
    if customer_id is None:
        raise param_error(
            "The payment method you provided is not attached to a customer so detachment is impossible.",
            None,
        )
    method["customer"] = None
    ctx.internal(method["id"])["used"] = True
    emit(ctx, "payment_method.detached", "payment_method", method, {"customer": customer_id})
    customer = ctx.get("customer", customer_id)
    if customer is not None and customer["invoice_settings"]["default_payment_method"] == method["id"]:
        before = snapshot(ctx, "customer", customer)
        customer["invoice_settings"]["default_payment_method"] = None
        emit_update(ctx, "customer", customer, before)


def _billing_details(current: JSON, given: JSON) -> JSON:
    merged: JSON = {
        "address": current.get("address") or address({}),
        "email": current.get("email"),
        "name": current.get("name"),
        "phone": current.get("phone"),
        "tax_id": current.get("tax_id"),
    }
    for key in ("email", "name", "phone", "tax_id"):
        if key in given:
            merged[key] = given[key] or None
    if "address" in given:
        merged["address"] = address({**merged["address"], **(given["address"] or {})})
    return merged


register_kind(
    Kind(
        "payment_method",
        "payment_methods",
        noun="PaymentMethod",
        path="/v1/payment_methods",
        expandable={"customer": "customer", "customer_account": ""},
        filters=("customer", "type", "allow_redisplay"),
    )
)
standard_routes("payment_method", retrieve=False)

_P = stripe.params
PARAM_SPECS.update(
    {
        "payment_method.create": spec_of(_P.PaymentMethodCreateParams),
        "payment_method.retrieve": spec_of(_P.PaymentMethodRetrieveParams),
        "payment_method.update": spec_of(_P.PaymentMethodUpdateParams),
        "payment_method.list": spec_of(_P.PaymentMethodListParams),
        "payment_method.attach": spec_of(_P.PaymentMethodAttachParams),
        "payment_method.detach": spec_of(_P.PaymentMethodDetachParams),
        "customer.list_payment_methods": spec_of(_P.CustomerListPaymentMethodsParams),
        "customer.retrieve_payment_method": spec_of(_P.CustomerRetrievePaymentMethodParams),
    }
)
_PAGING = frozenset({"created", "ending_before", "expand", "limit", "starting_after"})
MODELLED_PARAMS.update(
    {
        "payment_method.create": frozenset(
            {"type", "card", "billing_details", "metadata", "allow_redisplay", "expand"}
        ),
        "payment_method.update": frozenset({"billing_details", "metadata", "allow_redisplay", "expand"}),
        "payment_method.list": _PAGING | {"customer", "type", "allow_redisplay"},
        "payment_method.attach": frozenset({"customer", "expand"}),
        "customer.list_payment_methods": _PAGING | {"type", "allow_redisplay"},
    }
)


@route("POST", "/v1/payment_methods", "payment_method.create")
def _create(ctx: Ctx, call: Call) -> JSON:
    p = call.params
    if "type" not in p:
        raise param_error("Missing required param: type.", "type", "parameter_missing")
    if p["type"] != "card":
        raise param_error(
            f"The payment method type `{p['type']}` is valid for Stripe, but this Stripe emulator only "
            "models `card`. Use type=card, or extend the emulator.",
            "type",
        )
    given = p.get("card")
    if not isinstance(given, dict) or not given:
        raise param_error("Missing required param: card.", "card", "parameter_missing")
    if "number" in given:
        raise StripeError(400, RAW_CARD_NUMBERS)
    for key in given:
        if key != "token":
            raise unmodelled(f"card[{key}]")
    token = given.get("token")
    if token is None:
        raise param_error("Missing required param: card[token].", "card[token]", "parameter_missing")
    if token not in TEST_TOKENS:
        raise no_such("token", token, "card[token]", status=400)
    method = new_card_method(ctx, CARDS[TEST_TOKENS[token]], p)
    return render(ctx, "payment_method", method, call.expand)


@route("GET", "/v1/payment_methods/{id}", "payment_method.retrieve")
def _retrieve(ctx: Ctx, call: Call) -> JSON:
    ref = call.ids[0]
    if ref in TEST_PAYMENT_METHODS:  # Stripe answers with a new PaymentMethod for the test card
        method = resolve_method(ctx, ref, "id")
        ctx.dirty = True
    else:
        method = ctx.need("payment_method", ref)
    return render(ctx, "payment_method", method, call.expand)


@route("POST", "/v1/payment_methods/{id}", "payment_method.update")
def _update(ctx: Ctx, call: Call) -> JSON:
    method = ctx.need("payment_method", call.ids[0])
    p = call.params
    if method["customer"] is None:
        raise param_error("You must save this PaymentMethod to a customer before you can update it.", None)
    before = snapshot(ctx, "payment_method", method)
    metadata = merge_metadata(method["metadata"], p["metadata"], "metadata") if "metadata" in p else None
    if "billing_details" in p:
        method["billing_details"] = _billing_details(method["billing_details"], p["billing_details"] or {})
    if metadata is not None:
        method["metadata"] = metadata
    if "allow_redisplay" in p:
        method["allow_redisplay"] = p["allow_redisplay"]
    emit_update(ctx, "payment_method", method, before)
    return render(ctx, "payment_method", method, call.expand)


@route("POST", "/v1/payment_methods/{id}/attach", "payment_method.attach")
def _attach(ctx: Ctx, call: Call) -> JSON:
    if "customer" not in call.params:
        raise param_error("Missing required param: customer.", "customer", "parameter_missing")
    customer = ctx.need("customer", call.params["customer"], "customer", status=400)
    ref = call.ids[0]
    method = (
        resolve_method(ctx, ref, "payment_method")
        if ref in TEST_PAYMENT_METHODS
        else ctx.need("payment_method", ref, "payment_method")
    )
    attach_method(ctx, method, customer)
    return render(ctx, "payment_method", method, call.expand)


@route("POST", "/v1/payment_methods/{id}/detach", "payment_method.detach")
def _detach(ctx: Ctx, call: Call) -> JSON:
    method = ctx.need("payment_method", call.ids[0])
    detach_method(ctx, method)
    return render(ctx, "payment_method", method, call.expand)


@route("GET", "/v1/customers/{id}/payment_methods", "customer.list_payment_methods")
def _customer_methods(ctx: Ctx, call: Call) -> JSON:
    customer = ctx.need("customer", call.ids[0])
    listed = list_objects(ctx, "payment_method", {**call.params, "customer": customer["id"]}, call.expand)
    listed["url"] = f"/v1/customers/{customer['id']}/payment_methods"
    return listed


@route("GET", "/v1/customers/{id}/payment_methods/{method}", "customer.retrieve_payment_method")
def _customer_method(ctx: Ctx, call: Call) -> JSON:
    customer = ctx.need("customer", call.ids[0])
    method = ctx.get("payment_method", call.ids[1])
    if method is None or method["customer"] != customer["id"]:
        raise no_such("PaymentMethod", call.ids[1], "payment_method")
    return render(ctx, "payment_method", method, call.expand)
