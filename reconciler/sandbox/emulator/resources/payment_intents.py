"""PaymentIntents through the API, with Stripe's test cards: create, retrieve, update, confirm, cancel,
capture, list; the kind, its parameters and the checks of each route. The object and what confirming it
does (the Charge, the events, 3-D Secure) are in `payments`."""

from __future__ import annotations

import time

import stripe

from ..common import check_currency, check_descriptor, merge_metadata
from ..context import Ctx
from ..errors import JSON, StripeError, param_error
from ..events import emit
from ..listing import standard_routes
from ..params import MODELLED_PARAMS, PARAM_SPECS, Spec, spec_of
from ..registry import Call, Kind, register_kind, route
from ..rendering import render
from .payment_methods import check_reusable, resolve_method
from .payments import AFTER_CONFIRMATION, confirm_intent, new_intent, raise_declined, shipping_of

register_kind(
    Kind(
        "payment_intent",
        "payment_intents",
        noun="payment_intent",
        path="/v1/payment_intents",
        expandable={
            "application": "",
            "customer": "customer",
            "customer_account": "",
            "latest_charge": "charge",
            "on_behalf_of": "",
            "payment_method": "payment_method",
            "review": "",
        },
        matches=lambda obj, p: "customer" not in p or obj["customer"] == p["customer"],
    )
)
standard_routes("payment_intent")

_P = stripe.params
# The Stripe CLI (no Stripe-Version: the account's version) still sends `payment_method_types[]` and
# `automatic_payment_methods`, which the SDK's pinned version no longer types: accepted here.
_CREATE = spec_of(_P.PaymentIntentCreateParams)
_CREATE = Spec(
    "object",
    fields={
        **_CREATE.fields,
        "payment_method_types": Spec("list", item=Spec("str")),
        "automatic_payment_methods": Spec(
            "object",
            fields={"enabled": Spec("bool"), "allow_redirects": Spec("enum", enum=("always", "never"))},
            required=frozenset({"enabled"}),
        ),
    },
    required=_CREATE.required,
)
PARAM_SPECS.update(
    {
        "payment_intent.create": _CREATE,
        "payment_intent.retrieve": spec_of(_P.PaymentIntentRetrieveParams),
        "payment_intent.update": spec_of(_P.PaymentIntentUpdateParams),
        "payment_intent.confirm": spec_of(_P.PaymentIntentConfirmParams),
        "payment_intent.cancel": spec_of(_P.PaymentIntentCancelParams),
        "payment_intent.capture": spec_of(_P.PaymentIntentCaptureParams),
        "payment_intent.list": spec_of(_P.PaymentIntentListParams),
    }
)
_PAGING = frozenset({"created", "ending_before", "expand", "limit", "starting_after"})
_FIELDS = frozenset(
    {
        "amount",
        "currency",
        "customer",
        "description",
        "expand",
        "metadata",
        "payment_method",
        "receipt_email",
        "shipping",
        "statement_descriptor",
        "statement_descriptor_suffix",
    }
)
MODELLED_PARAMS.update(
    {
        "payment_intent.create": _FIELDS
        | {
            "automatic_payment_methods",
            "capture_method",
            "confirm",
            "off_session",
            "payment_method_types",
            "return_url",
        },
        "payment_intent.update": _FIELDS,
        "payment_intent.confirm": frozenset(
            {"expand", "off_session", "payment_method", "receipt_email", "return_url", "shipping"}
        ),
        "payment_intent.cancel": frozenset({"cancellation_reason", "expand"}),
        "payment_intent.capture": frozenset({"amount_to_capture", "expand", "metadata"}),
        "payment_intent.list": _PAGING | {"customer"},
    }
)

_UPDATABLE = ("requires_payment_method", "requires_confirmation", "requires_action")
_CANCELABLE = ("requires_payment_method", "requires_capture", "requires_confirmation", "requires_action")


def _method_param(ctx: Ctx, ref: str | None) -> JSON | None:
    if not ref:
        return None
    method = resolve_method(ctx, ref, "payment_method")
    check_reusable(ctx, method)
    return method


# Stripe's answer to a confirmation without `return_url` of an intent that accepts the Dashboard's
# payment methods, redirect-based ones included (`automatic_payment_methods` enabled, the default since
# 2023-08-16, with `allow_redirects` not `never`), whatever the method confirmed with: a 400 recorded
# from real Stripe (a `confirm=true` create with `payment_method` and nothing else, request
# req_mjlOiBWWeKkHEH in a public project's notes).
_RETURN_URL_REQUIRED = (
    "A `return_url` must be specified because this Payment Intent is configured to automatically accept the "
    "payment methods enabled in the Dashboard, some of which may require a full page redirect to succeed. "
    "If you do not want to accept redirect-based payment methods, set `automatic_payment_methods[enabled]` "
    "to `true` and `automatic_payment_methods[allow_redirects]` to `never` when creating Setup Intents and "
    "Payment Intents."
)


def _check_return_url(automatic: JSON | None, return_url: str | None) -> None:
    """Refuse to confirm an intent that may redirect without a `return_url` to come back to."""
    if (
        automatic
        and automatic.get("enabled")
        and automatic.get("allow_redirects") != "never"
        and not return_url
    ):
        raise StripeError(400, _RETURN_URL_REQUIRED)


def _unexpected(message: str) -> StripeError:
    return StripeError(400, message, code="payment_intent_unexpected_state")


def _check_fields(ctx: Ctx, p: JSON, current: JSON | None) -> JSON:
    """Checked values of the fields create and update share."""
    out: JSON = {k: p[k] or None for k in ("description", "receipt_email") if k in p}
    if "amount" in p:
        currency = p.get("currency", current["currency"] if current else "usd")
        if p["amount"] < 1 or (currency == "usd" and p["amount"] < 50):
            raise StripeError(
                400, "Amount must be at least $0.50 usd", code="amount_too_small", param="amount"
            )
        out["amount"] = p["amount"]
    if "currency" in p:
        out["currency"] = check_currency(p["currency"], "currency")
    if "customer" in p:
        out["customer"] = (
            ctx.need("customer", p["customer"], "customer", 400)["id"] if p["customer"] else None
        )
    for key in ("statement_descriptor", "statement_descriptor_suffix"):
        if p.get(key):
            check_descriptor(p[key], key)
            out[key] = p[key]
    if "shipping" in p:
        out["shipping"] = shipping_of(p["shipping"]) if p["shipping"] else None
    if "metadata" in p:
        out["metadata"] = merge_metadata(current["metadata"] if current else {}, p["metadata"], "metadata")
    return out


@route("POST", "/v1/payment_intents", "payment_intent.create")
def _create(ctx: Ctx, call: Call) -> JSON:
    p = call.params
    for key in ("amount", "currency"):
        if key not in p:
            raise param_error(f"Missing required param: {key}.", key, "parameter_missing")
    if "payment_method_types" in p and "automatic_payment_methods" in p:
        raise param_error(
            "You may only specify one of these parameters: automatic_payment_methods, payment_method_types.",
            "automatic_payment_methods",
        )
    for kind in p.get("payment_method_types") or []:
        if kind != "card":
            raise param_error(
                f"The payment method type `{kind}` is valid for Stripe, but this Stripe emulator only models "
                "`card`. Remove it, or extend the emulator.",
                "payment_method_types",
            )
    for key in ("off_session", "return_url"):
        if p.get(key) and not p.get("confirm"):
            raise param_error(f"You may only specify `{key}` when `confirm` is true.", key)
    fields = _check_fields(ctx, p, None)
    method = _method_param(ctx, p.get("payment_method"))
    if p.get("confirm") and method is not None and "payment_method_types" not in p:
        _check_return_url(p.get("automatic_payment_methods") or {"enabled": True}, p.get("return_url"))
    intent = new_intent(ctx, {**p, **fields})
    emit(ctx, "payment_intent.created", "payment_intent", intent)
    if method is not None:
        intent["payment_method"] = method["id"]
        intent["status"] = "requires_confirmation"
        if p.get("confirm"):
            off_session, return_url = bool(p.get("off_session")), p.get("return_url")
            raise_declined(
                confirm_intent(ctx, intent, method, off_session=off_session, return_url=return_url)
            )
    elif p.get("confirm"):
        raise _unexpected(_MISSING_METHOD)
    return render(ctx, "payment_intent", intent, call.expand)


_MISSING_METHOD = (
    "You cannot confirm this PaymentIntent because it's missing a payment method. You can either update the "
    "PaymentIntent with a payment method and then confirm it again, or confirm it again directly with a "
    "payment method."
)


@route("POST", "/v1/payment_intents/{id}", "payment_intent.update")
def _update(ctx: Ctx, call: Call) -> JSON:
    intent = ctx.need("payment_intent", call.ids[0])
    p = call.params
    fields = _check_fields(ctx, p, intent)
    for key in ("amount", "currency", "customer", "payment_method", "shipping"):
        if key in p and intent["status"] not in _UPDATABLE:
            raise _unexpected(
                f"This PaymentIntent's {key} could not be updated because it has a status of "
                f"{intent['status']}. You may only update the {key} of a PaymentIntent with one of the "
                f"following statuses: {', '.join(_UPDATABLE)}."
            )
    method = _method_param(ctx, p.get("payment_method"))
    intent.update(fields)
    if "payment_method" in p:
        intent["payment_method"] = method["id"] if method else None
        intent["status"] = "requires_confirmation" if method else "requires_payment_method"
        intent["next_action"] = None
    return render(ctx, "payment_intent", intent, call.expand)


@route("POST", "/v1/payment_intents/{id}/confirm", "payment_intent.confirm")
def _confirm(ctx: Ctx, call: Call) -> JSON:
    intent = ctx.need("payment_intent", call.ids[0])
    p = call.params
    if intent["status"] == "succeeded":
        raise _unexpected(
            "You cannot confirm this PaymentIntent because it has already succeeded after being previously "
            "confirmed."
        )
    if intent["status"] not in _UPDATABLE:
        raise _unexpected(
            f"This PaymentIntent's status is {intent['status']}: it cannot be confirmed. Only a "
            f"PaymentIntent with one of the following statuses may be confirmed: {', '.join(_UPDATABLE)}."
        )
    ref = p.get("payment_method") or intent["payment_method"]
    if not ref:
        raise _unexpected(_MISSING_METHOD)
    method = resolve_method(ctx, str(ref), "payment_method")
    if method["id"] != intent["payment_method"]:  # its own may be confirmed again (after requires_action)
        check_reusable(ctx, method)
    _check_return_url(intent["automatic_payment_methods"], p.get("return_url"))
    if "receipt_email" in p:
        intent["receipt_email"] = p["receipt_email"] or None
    if "shipping" in p:
        intent["shipping"] = shipping_of(p["shipping"]) if p["shipping"] else None
    payment = confirm_intent(
        ctx, intent, method, off_session=bool(p.get("off_session")), return_url=p.get("return_url")
    )
    for hook in AFTER_CONFIRMATION:
        hook(ctx, payment)
    raise_declined(payment)
    return render(ctx, "payment_intent", intent, call.expand)


@route("POST", "/v1/payment_intents/{id}/cancel", "payment_intent.cancel")
def _cancel(ctx: Ctx, call: Call) -> JSON:
    intent = ctx.need("payment_intent", call.ids[0])
    if intent["status"] not in _CANCELABLE:
        raise _unexpected(
            f"You cannot cancel this PaymentIntent because it has a status of {intent['status']}. Only a "
            f"PaymentIntent with one of the following statuses may be canceled: {', '.join(_CANCELABLE)}, "
            "processing."
        )
    intent["status"] = "canceled"
    intent["canceled_at"] = int(time.time())
    intent["cancellation_reason"] = call.params.get("cancellation_reason")
    intent["next_action"] = None
    intent["amount_capturable"] = 0
    emit(ctx, "payment_intent.canceled", "payment_intent", intent)
    return render(ctx, "payment_intent", intent, call.expand)


@route("POST", "/v1/payment_intents/{id}/capture", "payment_intent.capture")
def _capture(ctx: Ctx, call: Call) -> JSON:
    intent = ctx.need("payment_intent", call.ids[0])
    p = call.params
    if intent["status"] != "requires_capture":
        raise _unexpected(
            f"This PaymentIntent could not be captured because it has a status of {intent['status']}. Only a "
            "PaymentIntent with one of the following statuses may be captured: requires_capture."
        )
    amount = int(p.get("amount_to_capture") or intent["amount_capturable"])
    if not 1 <= amount <= intent["amount_capturable"]:
        raise param_error(
            f"The amount to capture must be between 1 and {intent['amount_capturable']}.", "amount_to_capture"
        )
    if "metadata" in p:
        intent["metadata"] = merge_metadata(intent["metadata"], p["metadata"], "metadata")
    charge = ctx.need("charge", str(intent["latest_charge"]))
    charge.update({"captured": True, "amount_captured": amount})
    intent.update({"status": "succeeded", "amount_capturable": 0, "amount_received": amount})
    emit(ctx, "charge.captured", "charge", charge)
    emit(ctx, "payment_intent.succeeded", "payment_intent", intent)
    return render(ctx, "payment_intent", intent, call.expand)
