"""PaymentIntents with Stripe's test cards: create, retrieve, update, confirm, cancel, capture, list;
`attempt_payment` (what invoices and subscriptions charge through); 3-D Secure completed by the admin
route `/_emulator/payment_intents/{id}/authenticate`. Internal facts (the invoice or Checkout Session
paid, the card of the payment page) live in `ctx.internal(id)`, never in the object."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import stripe

from ..cards import Card, card_outcome, charge_result, decline
from ..common import check_currency, check_descriptor, merge_metadata
from ..context import Ctx
from ..errors import JSON, StripeError, param_error
from ..events import emit
from ..listing import standard_routes
from ..params import MODELLED_PARAMS, PARAM_SPECS, Spec, spec_of
from ..registry import Call, Kind, register_kind, route
from ..rendering import render
from .charges import new_charge
from .invoices import mark_failed, mark_paid
from .payment_methods import check_reusable, method_card, payment_method_for_card, resolve_method
from .subscriptions import set_status


@dataclass(frozen=True, slots=True)
class Payment:
    intent: JSON  # the stored PaymentIntent, Stripe's shape
    charge: JSON | None  # the Charge attempted (succeeded or failed), None if none was attempted
    error: JSON | None  # Stripe's error body (type card_error, code, decline_code, message,
    #   payment_intent...) when declined or when authentication is required


def attempt_payment(
    ctx: Ctx,
    *,
    amount: int,
    currency: str,
    customer: str | None,
    payment_method: str | None,
    description: str | None = None,
    metadata: Mapping[str, str] | None = None,
    invoice: str | None = None,
    off_session: bool = False,
) -> Payment:
    """Create and confirm a PaymentIntent: status succeeded, requires_payment_method (declined or no
    payment method) or requires_action (3-D Secure cards 3155 when not set up / 3220 always), with the
    Charge and every event Stripe sends for it, in Stripe's order (payment_intent.created,
    charge.succeeded|charge.failed, payment_intent.succeeded|payment_intent.payment_failed|
    payment_intent.requires_action).

    `payment_method` may be a `pm_card_*` test id (a new PaymentMethod is made for it). `off_session`
    without an `invoice` declines a card needing authentication (`authentication_required`), as Stripe
    does; an invoice's payment goes to requires_action instead (Billing asks the customer to
    authenticate). No payment method: no attempt, no Charge, no error."""
    method = resolve_method(ctx, payment_method, "payment_method") if payment_method else None
    if method is not None:
        check_reusable(ctx, method)
    intent = new_intent(
        ctx,
        {
            "amount": amount,
            "currency": currency,
            "customer": customer,
            "description": description,
            "metadata": dict(metadata or {}),
            "payment_method_types": ["card"],  # an invoice's methods come from its payment_settings
        },
    )
    ctx.internal(intent["id"])["invoice"] = invoice
    emit(ctx, "payment_intent.created", "payment_intent", intent)
    if method is None:
        return Payment(intent, None, None)
    return confirm_intent(ctx, intent, method, off_session=off_session, billing=invoice is not None)


def default_payment_method(ctx: Ctx, customer: str) -> str | None:
    """The customer's invoice_settings.default_payment_method (or None)."""
    found = ctx.get("customer", customer)
    if found is None:
        return None
    value = found["invoice_settings"]["default_payment_method"]
    return str(value) if value else None


def new_intent(ctx: Ctx, p: JSON) -> JSON:
    """A stored PaymentIntent (requires_payment_method) from create-route params; no event."""
    intent_id = ctx.fresh_id("pi_", 24)
    automatic = p.get("automatic_payment_methods")
    if "payment_method_types" not in p and automatic is None:
        automatic = {"enabled": True}
    intent: JSON = {
        "id": intent_id,
        "object": "payment_intent",
        "amount": p["amount"],
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": None
        if automatic is None
        else {"allow_redirects": automatic.get("allow_redirects", "always"), "enabled": automatic["enabled"]},
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": p.get("capture_method", "automatic_async"),
        "client_secret": f"{intent_id}_secret_{ctx.fresh_id('', 25)}",
        "confirmation_method": "automatic",
        "created": int(time.time()),
        "currency": p["currency"],
        "customer": p.get("customer"),
        "customer_account": None,
        "description": p.get("description"),
        "excluded_payment_method_types": None,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": ctx.livemode,
        "metadata": p.get("metadata") or {},
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": None,
        "payment_method_configuration_details": None,
        "payment_method_options": {
            "card": {
                "installments": None,
                "mandate_options": None,
                "network": None,
                "request_three_d_secure": "automatic",
            }
        },
        "payment_method_types": list(p.get("payment_method_types") or ["card"]),
        "processing": None,
        "receipt_email": p.get("receipt_email"),
        "review": None,
        "setup_future_usage": None,
        "shipping": _shipping(p["shipping"]) if p.get("shipping") else None,
        "source": None,
        "statement_descriptor": p.get("statement_descriptor"),
        "statement_descriptor_suffix": p.get("statement_descriptor_suffix"),
        "status": "requires_payment_method",
        "transfer_data": None,
        "transfer_group": None,
    }
    ctx.put("payment_intent", intent)
    return intent


def confirm_intent(
    ctx: Ctx,
    intent: JSON,
    method: JSON,
    *,
    off_session: bool,
    billing: bool = False,
    return_url: str | None = None,
) -> Payment:
    """One payment attempt of `intent` with `method` (its events emitted). `billing`: an invoice's
    payment, where a card needing authentication asks for it even off-session. With a `return_url`,
    3-D Secure is a redirect to the authentication page (`next_action.redirect_to_url`) that comes back
    to it; without, the `use_stripe_sdk` action Stripe.js handles."""
    card = method_card(ctx, method)
    authenticated = bool(ctx.internal(method["id"]).get("authenticated"))
    outcome, code = charge_result(card, off_session=off_session and not billing, authenticated=authenticated)
    intent["payment_method"] = method["id"]
    intent["last_payment_error"] = None
    ctx.internal(method["id"])["used"] = True
    if outcome == "requires_action":
        intent["status"] = "requires_action"
        authenticate = (
            f"http://{ctx.host or '127.0.0.1'}/_emulator/payment_intents/{intent['id']}/authenticate"
        )
        intent["next_action"] = (
            {"type": "redirect_to_url", "redirect_to_url": {"return_url": return_url, "url": authenticate}}
            if return_url
            else {
                "type": "use_stripe_sdk",
                "use_stripe_sdk": {
                    "source": ctx.fresh_id("src_", 24),
                    "stripe_js": authenticate,
                    "type": "three_d_secure_redirect",
                },
            }
        )
        emit(ctx, "payment_intent.requires_action", "payment_intent", intent)
        error = _card_error(ctx, intent, method, "authentication_required", None)
        return Payment(intent, None, error)
    return _charge(ctx, intent, method, card, code)


# What follows when a payment waiting for 3-D Secure ends (the admin route): the module owning what
# an intent pays registers a hook here (invoices: paid or failed); each hook skips intents not its own.
AFTER_AUTHENTICATION: list[Callable[[Ctx, Payment], None]] = []
# The same when the client confirms an intent through the API (an invoice's `confirmation_secret`).
AFTER_CONFIRMATION: list[Callable[[Ctx, Payment], None]] = []


def authenticate_intent(ctx: Ctx, intent: JSON, succeeded: bool) -> Payment:
    """The customer completed (or failed) 3-D Secure for an intent in requires_action, then the
    `AFTER_AUTHENTICATION` hooks run."""
    payment = _authenticated(ctx, intent, succeeded)
    for hook in AFTER_AUTHENTICATION:
        hook(ctx, payment)
    return payment


def _authenticated(ctx: Ctx, intent: JSON, succeeded: bool) -> Payment:
    """The payment goes on (the card counts as set up for later off-session payments), or the intent
    fails with `payment_intent_authentication_failure`."""
    method = ctx.need("payment_method", str(intent["payment_method"]))
    intent["next_action"] = None
    if succeeded:
        ctx.internal(method["id"])["authenticated"] = True
        card = method_card(ctx, method)
        return _charge(ctx, intent, method, card, card.decline_code)
    intent["status"] = "requires_payment_method"
    intent["payment_method"] = None
    intent["last_payment_error"] = {
        "code": "payment_intent_authentication_failure",
        "doc_url": "https://stripe.com/docs/error-codes/payment-intent-authentication-failure",
        "message": "The provided PaymentMethod has failed authentication. You can provide "
        "payment_method_data or a new PaymentMethod to attempt to fulfill this PaymentIntent again.",
        "payment_method": render(ctx, "payment_method", method, []),
        "type": "invalid_request_error",
    }
    emit(ctx, "payment_intent.payment_failed", "payment_intent", intent)
    return Payment(intent, None, dict(intent["last_payment_error"]))


def _charge(ctx: Ctx, intent: JSON, method: JSON, card: Card, code: str | None) -> Payment:
    """Charge the card (`code`: the decline, None when it goes through)."""
    del card
    intent["next_action"] = None
    charge = new_charge(ctx, intent, method, code)
    intent["latest_charge"] = charge["id"]
    if code is not None:
        intent["status"] = "requires_payment_method"
        error = _card_error(ctx, intent, method, code, charge)
        intent["payment_method"] = None
        intent["last_payment_error"] = {
            k: v for k, v in error.items() if k not in ("payment_intent", "request_log_url")
        }
        emit(ctx, "charge.failed", "charge", charge)
        emit(ctx, "payment_intent.payment_failed", "payment_intent", intent)
        error["payment_intent"] = render(ctx, "payment_intent", intent, [])
        return Payment(intent, charge, error)
    if intent["capture_method"] == "manual":
        charge["captured"] = False
        charge["amount_captured"] = 0
        intent["status"] = "requires_capture"
        intent["amount_capturable"] = intent["amount"]
        emit(ctx, "charge.succeeded", "charge", charge)
        emit(ctx, "payment_intent.amount_capturable_updated", "payment_intent", intent)
        return Payment(intent, charge, None)
    intent["status"] = "succeeded"
    intent["amount_received"] = intent["amount"]
    emit(ctx, "charge.succeeded", "charge", charge)
    emit(ctx, "payment_intent.succeeded", "payment_intent", intent)
    return Payment(intent, charge, None)


def _card_error(ctx: Ctx, intent: JSON, method: JSON, code: str, charge: JSON | None) -> JSON:
    """Stripe's card_error body for a decline of `intent` (the `error` object, sorted)."""
    error = decline(code)
    if charge is not None:
        error["charge"] = charge["id"]
    error["payment_intent"] = render(ctx, "payment_intent", intent, [])
    error["payment_method"] = render(ctx, "payment_method", method, [])
    return {k: error[k] for k in sorted(error)}


def raise_declined(payment: Payment) -> None:
    """Answer a declined payment as Stripe does: HTTP 402 with its card_error; what it made stays."""
    error = payment.error
    if error is None or payment.intent["status"] != "requires_payment_method":
        return
    extra = {k: v for k, v in error.items() if k not in ("code", "doc_url", "message", "type", "param")}
    raise StripeError(
        402, str(error["message"]), type_="card_error", code=str(error["code"]), kept=True, extra=extra
    )


def _shipping(given: JSON) -> JSON:
    addr = given.get("address") or {}
    return {
        "address": {k: addr.get(k) for k in ("city", "country", "line1", "line2", "postal_code", "state")},
        "carrier": given.get("carrier"),
        "name": given["name"],
        "phone": given.get("phone"),
        "tracking_number": given.get("tracking_number"),
    }


# ----------------------------------------------------------------- the payment page and renewals


def new_payment_intent(
    ctx: Ctx, card: str, amount: int, currency: str, *, session: str | None, invoice: str | None
) -> JSON:
    """A PaymentIntent waiting for 3-D Secure on the hosted payment page (Checkout) or for an invoice
    payment of the admin routes: no events (those flows emit their own)."""
    intent = new_intent(ctx, {"amount": amount, "currency": currency, "payment_method_types": ["card"]})
    intent["payment_method"] = payment_method_for_card(ctx, card)
    intent["status"] = "requires_action"
    ctx.internal(intent["id"]).update({"card": card, "checkout_session": session, "invoice": invoice})
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


# ----------------------------------------------------------------- routes

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
        out["shipping"] = _shipping(p["shipping"]) if p["shipping"] else None
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
        intent["shipping"] = _shipping(p["shipping"]) if p["shipping"] else None
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
