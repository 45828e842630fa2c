"""A PaymentIntent and paying it with Stripe's test cards: the object (`new_intent`); one confirmation
attempt (`confirm_intent`: the Charge, the events, Stripe's `card_error` of a decline, or 3-D Secure's
`requires_action`); the end of 3-D Secure (`authenticate_intent`, for the admin route
`/_emulator/payment_intents/{id}/authenticate`); the hooks by which the module owning what an intent
pays follows it. And what Billing charges every invoice through, whoever asks (the API's `/pay`,
subscription create, renewals, Checkout): `attempt_payment`. The API's routes are in
`payment_intents`. Internal facts (the invoice or Checkout Session paid) live in `ctx.internal(id)`,
never in the object."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..cards import authentication_failure, charge_result, decline
from ..context import Ctx
from ..errors import JSON, StripeError
from ..events import emit
from ..rendering import render
from .charges import new_charge
from .payment_methods import check_reusable, method_card, resolve_method


@dataclass(frozen=True, slots=True)
class Payment:
    intent: JSON  # the stored PaymentIntent, Stripe's shape
    charge: JSON | None  # the Charge attempted (succeeded or failed), None if none was attempted
    error: JSON | None  # Stripe's error body (type card_error, code, decline_code, message,
    #   payment_intent...) when declined or when authentication is required

    @property
    def outcome(self) -> str:
        """What the admin routes answer for it: succeeded, requires_action or declined."""
        status = self.intent["status"]
        if status == "requires_action":
            return "requires_action"
        return "succeeded" if status in ("succeeded", "requires_capture") else "declined"


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
        "setup_future_usage": p.get("setup_future_usage"),  # Checkout's; refused by the API here
        "shipping": shipping_of(p["shipping"]) if p.get("shipping") else None,
        "source": None,
        "statement_descriptor": p.get("statement_descriptor"),
        "statement_descriptor_suffix": p.get("statement_descriptor_suffix"),
        "status": "requires_payment_method",
        "transfer_data": None,
        "transfer_group": None,
    }
    ctx.put("payment_intent", intent)
    return intent


def shipping_of(given: JSON) -> JSON:
    """An intent's `shipping` from the `shipping` param."""
    addr = given.get("address") or {}
    return {
        "address": {k: addr.get(k) for k in ("city", "country", "line1", "line2", "postal_code", "state")},
        "carrier": given.get("carrier"),
        "name": given["name"],
        "phone": given.get("phone"),
        "tracking_number": given.get("tracking_number"),
    }


# Alike in signature only to api._execute (values, then keyword options): nothing is shared.
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
        intent["next_action"] = _authentication_action(ctx, intent, return_url)
        emit(ctx, "payment_intent.requires_action", "payment_intent", intent)
        error = _card_error(ctx, intent, method, "authentication_required", None)
        return Payment(intent, None, error)
    return _charge(ctx, intent, method, code)


def _authentication_action(ctx: Ctx, intent: JSON, return_url: str | None) -> JSON:
    """The `next_action` of an intent waiting for 3-D Secure: a redirect to the authentication page
    coming back to `return_url`, or (without one) the `use_stripe_sdk` action Stripe.js handles."""
    authenticate = f"http://{ctx.host or '127.0.0.1'}/_emulator/payment_intents/{intent['id']}/authenticate"
    if return_url:
        return {"type": "redirect_to_url", "redirect_to_url": {"return_url": return_url, "url": authenticate}}
    return {
        "type": "use_stripe_sdk",
        "use_stripe_sdk": {
            "source": ctx.fresh_id("src_", 24),
            "stripe_js": authenticate,
            "type": "three_d_secure_redirect",
        },
    }


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
        return _charge(ctx, intent, method, method_card(ctx, method).decline_code)
    intent["status"] = "requires_payment_method"
    intent["payment_method"] = None
    intent["last_payment_error"] = authentication_failure(
        "payment_intent_authentication_failure",
        "The provided PaymentMethod has failed authentication. You can provide payment_method_data or a "
        "new PaymentMethod to attempt to fulfill this PaymentIntent again.",
        render(ctx, "payment_method", method, []),
    )
    emit(ctx, "payment_intent.payment_failed", "payment_intent", intent)
    return Payment(intent, None, dict(intent["last_payment_error"]))


def _charge(ctx: Ctx, intent: JSON, method: JSON, code: str | None) -> Payment:
    """Charge the card (`code`: the decline, None when it goes through)."""
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
