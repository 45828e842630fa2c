"""SetupIntents, as far as Checkout's `mode=setup` makes them: one is created with the session and
confirmed by the payment page with a card PaymentMethod (saved for later off-session payments);
retrieve and list. Creating or confirming one through `/v1/setup_intents` is not routed."""

from __future__ import annotations

import time

import stripe

from ..cards import authentication_failure, decline
from ..context import Ctx
from ..errors import JSON
from ..events import emit
from ..listing import standard_routes
from ..params import MODELLED_PARAMS, PARAM_SPECS, spec_of
from ..registry import Kind, register_kind
from ..rendering import render
from .payment_methods import attach_method, method_card


def new_setup_intent(ctx: Ctx, *, customer: str | None, description: str | None, metadata: JSON) -> JSON:
    """A stored SetupIntent waiting for a payment method (`setup_intent.created`)."""
    intent_id = ctx.fresh_id("seti_", 24)
    intent: JSON = {
        "id": intent_id,
        "object": "setup_intent",
        "application": None,
        "automatic_payment_methods": None,
        "cancellation_reason": None,
        "client_secret": f"{intent_id}_secret_{ctx.fresh_id('', 25)}",
        "created": int(time.time()),
        "customer": customer,
        "customer_account": None,
        "description": description,
        "excluded_payment_method_types": None,
        "flow_directions": None,
        "last_setup_error": None,
        "latest_attempt": None,
        "livemode": ctx.livemode,
        "mandate": None,
        "metadata": dict(metadata),
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": None,
        "payment_method_configuration_details": None,
        "payment_method_options": {
            "card": {"mandate_options": None, "network": None, "request_three_d_secure": "automatic"}
        },
        "payment_method_types": ["card"],
        "single_use_mandate": None,
        "status": "requires_payment_method",
        "usage": "off_session",
    }
    ctx.put("setup_intent", intent)
    emit(ctx, "setup_intent.created", "setup_intent", intent)
    return intent


def confirm_setup(ctx: Ctx, intent: JSON, method: JSON) -> JSON | None:
    """Set `method` up for later payments: Stripe's card_error body when the card's check declines
    (`setup_intent.setup_failed`), else None: `succeeded`, or `requires_action` for a card asking for
    3-D Secure (3155, 3184, 3220), completed by `/_emulator/setup_intents/{id}/authenticate`."""
    card = method_card(ctx, method)
    intent["payment_method"] = method["id"]
    intent["last_setup_error"] = None
    if not card.attachable:
        error = decline(card.decline_code)
        error["payment_method"] = render(ctx, "payment_method", method, [])
        intent.update(status="requires_payment_method", payment_method=None, last_setup_error=error)
        emit(ctx, "setup_intent.setup_failed", "setup_intent", intent)
        return {**error, "setup_intent": render(ctx, "setup_intent", intent, [])}
    if card.authentication != "none":
        intent["status"] = "requires_action"
        intent["next_action"] = {
            "type": "use_stripe_sdk",
            "use_stripe_sdk": {
                "stripe_js": f"http://{ctx.host or '127.0.0.1'}/_emulator/setup_intents/{intent['id']}"
                "/authenticate",
                "type": "three_d_secure_redirect",
            },
        }
        emit(ctx, "setup_intent.requires_action", "setup_intent", intent)
        return None
    succeed_setup(ctx, intent)
    return None


def succeed_setup(ctx: Ctx, intent: JSON) -> None:
    """The card is set up: authenticated for later off-session payments (a 3155 card then pays them),
    attached to the intent's customer if it has one."""
    method = ctx.need("payment_method", str(intent["payment_method"]))
    ctx.internal(method["id"])["authenticated"] = True
    intent["status"] = "succeeded"
    intent["next_action"] = None
    customer = ctx.get("customer", intent["customer"]) if intent["customer"] else None
    if customer is not None:
        attach_method(ctx, method, customer)
    emit(ctx, "setup_intent.succeeded", "setup_intent", intent)


def fail_setup_authentication(ctx: Ctx, intent: JSON) -> None:
    """The customer failed 3-D Secure: the intent waits for another payment method."""
    method = ctx.need("payment_method", str(intent["payment_method"]))
    intent["status"] = "requires_payment_method"
    intent["next_action"] = None
    intent["payment_method"] = None
    intent["last_setup_error"] = authentication_failure(
        "setup_intent_authentication_failure",
        "The latest attempt to set up the payment method has failed because authentication failed.",
        render(ctx, "payment_method", method, []),
    )
    emit(ctx, "setup_intent.setup_failed", "setup_intent", intent)


register_kind(
    Kind(
        "setup_intent",
        "setup_intents",
        noun="setupintent",
        path="/v1/setup_intents",
        expandable={
            "application": "",
            "customer": "customer",
            "customer_account": "",
            "latest_attempt": "",
            "mandate": "",
            "on_behalf_of": "",
            "payment_method": "payment_method",
            "single_use_mandate": "",
        },
        matches=lambda obj, p: all(obj[k] == p[k] for k in ("customer", "payment_method") if k in p),
    )
)
standard_routes("setup_intent")
PARAM_SPECS["setup_intent.retrieve"] = spec_of(stripe.params.SetupIntentRetrieveParams)
PARAM_SPECS["setup_intent.list"] = spec_of(stripe.params.SetupIntentListParams)
MODELLED_PARAMS["setup_intent.retrieve"] = frozenset({"expand"})
MODELLED_PARAMS["setup_intent.list"] = frozenset(
    {"created", "customer", "ending_before", "expand", "limit", "payment_method", "starting_after"}
)
