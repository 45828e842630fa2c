"""Paying a Checkout Session on its hosted page. Stripe's page (and the Stripe CLI's
`checkout.session.completed` trigger) uses the private payment-pages API: `GET /v1/payment_pages/{cs}`,
then `POST /v1/payment_pages/{cs}/confirm` with a `payment_method` made by `POST /v1/payment_methods`
and the `expected_amount` the page showed. The admin route `/_emulator/checkout/{cs}/complete` does the
same with a test card number. Both go through `pay_session`; 3-D Secure is completed by the admin
routes `/_emulator/payment_intents/{id}/authenticate` and `/_emulator/setup_intents/{id}/authenticate`.

What paying does, by mode:
- payment: a PaymentIntent with the session's amount and `payment_intent_data` (made at the first
  confirmation, since API 2022-08-01, and reused by the next ones): payment_intent.created,
  charge.succeeded, payment_intent.succeeded, then checkout.session.completed (with a
  `setup_future_usage` and a customer, payment_method.attached before it). A declined card answers
  402 card_error (payment_intent.created, charge.failed, payment_intent.payment_failed) and the session
  stays open for another card. `capture_method=manual` completes the session `unpaid` (the funds
  are not available yet, as Stripe defines `unpaid`; no recorded Stripe answer confirms it), the
  PaymentIntent `requires_capture`.
- subscription: the customer, the subscription and its paid first invoice, as described in
  docs/stripe-emulator.md (before and after 2025-03-31.basil).
- setup: the session's SetupIntent is confirmed (setup_intent.succeeded, payment_method.attached when
  the session has a customer), then checkout.session.completed.
"""

from __future__ import annotations

from ..cards import card_arg, card_outcome, decline
from ..context import Ctx
from ..errors import JSON, StripeError, admin_error, param_error
from ..events import emit
from ..params import MODELLED_PARAMS, PARAM_SPECS, Spec
from ..registry import Call, route
from ..rendering import render
from .checkout_completion import (
    CHECKOUT_BASIL,
    checkout_customer,
    checkout_subscription,
    complete_session,
    fulfil_session,
)
from .invoices import build_invoice, finalize_invoice, mark_failed
from .payment_methods import attach_method, check_reusable, method_card, payment_method_for_card
from .payments import (
    AFTER_AUTHENTICATION,
    Payment,
    authenticate_intent,
    charge_invoice,
    confirm_intent,
    new_intent,
    new_payment_intent,
    settle_invoice,
)
from .setup_intents import confirm_setup, fail_setup_authentication, succeed_setup


def pay_session(ctx: Ctx, session: JSON, method: JSON, details: JSON) -> JSON:
    """Pay the open `session` with PaymentMethod `method` (`details`: the email and name typed on the
    page). The answer: `outcome` (succeeded, declined, requires_action), the `error` of a decline
    (Stripe's card_error body), the PaymentIntent to authenticate, what was made."""
    if session["mode"] == "payment":
        return _pay_payment(ctx, session, method, details)
    if session["mode"] == "setup":
        return _set_up(ctx, session, method, details)
    card = method_card(ctx, method).number
    if str(ctx.internal(session["id"])["api_version"]) >= CHECKOUT_BASIL:
        return _subscribe(ctx, session, method, card, details)
    return _subscribe_legacy(ctx, session, method, card, details)


def _subscribe(ctx: Ctx, session: JSON, method: JSON, card: str, details: JSON) -> JSON:
    """Subscription mode since 2025-03-31.basil: the customer and the subscription are made once the
    payment went through."""
    outcome, decline_code = card_outcome(card)
    if outcome == "succeeded":
        return fulfil_session(ctx, session, card, method["id"], details)
    if outcome == "declined":
        # Checkout shows the decline on its page; nothing is created and the session stays open.
        return {"outcome": "declined", "error": decline(decline_code)}
    intent = new_payment_intent(
        ctx, card, session["amount_total"], session["currency"], session=session["id"], invoice=None
    )
    ctx.internal(intent["id"])["args"] = details
    return {"outcome": "requires_action", "payment_intent": intent["id"]}


def _subscribe_legacy(ctx: Ctx, session: JSON, method: JSON, card: str, details: JSON) -> JSON:
    """Subscription mode before 2025-03-31.basil: Checkout made an incomplete subscription with an open
    first invoice, then attempted the payment; a declined card left them for the next attempt."""
    sub_id = ctx.internal(session["id"])["pending_subscription"]
    if sub_id is None:
        sub, invoice = _incomplete_subscription(ctx, session, method, card, details)
    else:
        sub = ctx.acct.subscriptions[sub_id]
        invoice = ctx.acct.invoices[sub["latest_invoice"]]
    answer = charge_invoice(ctx, invoice, card)
    if answer["outcome"] == "requires_action":
        ctx.internal(answer["payment_intent"])["checkout_session"] = session["id"]
    if answer["outcome"] == "succeeded":
        complete_session(ctx, session, sub=sub, invoice=invoice)
    return answer


def _incomplete_subscription(
    ctx: Ctx, session: JSON, method: JSON, card: str, details: JSON
) -> tuple[JSON, JSON]:
    """The legacy flow's first attempt: the customer, an `incomplete` subscription and its finalized
    first invoice, with their events."""
    customer = checkout_customer(ctx, session, details)
    sub = checkout_subscription(ctx, session, customer, card, method["id"])
    now = int(sub["created"])
    invoice = build_invoice(ctx, sub, "subscription_create", now, now)
    sub["status"] = "incomplete"
    ctx.put("subscription", sub)
    ctx.internal(session["id"])["pending_subscription"] = sub["id"]
    emit(ctx, "customer.subscription.created", "subscription", sub)
    emit(ctx, "invoice.created", "invoice", invoice)
    finalize_invoice(ctx, invoice)
    return sub, invoice


def _pay_payment(ctx: Ctx, session: JSON, method: JSON, details: JSON) -> JSON:
    info = ctx.internal(session["id"])
    data = info["payment_intent_data"] or {}
    if session["customer"] is None and session["customer_creation"] == "always":
        checkout_customer(ctx, session, details)
    intent = ctx.get("payment_intent", session["payment_intent"] or "")
    if intent is None:
        fields: JSON = {
            "amount": session["amount_total"],
            "currency": session["currency"],
            "customer": session["customer"],
            "description": data.get("description"),
            "metadata": data.get("metadata") or {},
            "payment_method_types": ["card"],
        }
        fields.update({k: data[k] for k in ("capture_method", "shipping") if k in data})
        intent = new_intent(ctx, fields)
        intent["setup_future_usage"] = data.get("setup_future_usage")
        ctx.internal(intent["id"])["checkout_session"] = session["id"]
        session["payment_intent"] = intent["id"]
        emit(ctx, "payment_intent.created", "payment_intent", intent)
    payment = confirm_intent(ctx, intent, method, off_session=False)
    if intent["status"] == "requires_action":
        return {"outcome": "requires_action", "payment_intent": intent["id"]}
    if payment.error is not None:
        return {"outcome": "declined", "error": payment.error, "payment_intent": intent["id"]}
    paid(ctx, session, intent, method)
    return {"outcome": "succeeded", "payment_intent": intent["id"]}


def paid(ctx: Ctx, session: JSON, intent: JSON, method: JSON) -> None:
    """A payment-mode session's PaymentIntent went through: the card is saved for the customer if
    asked (`setup_future_usage`), and the session completes."""
    customer = ctx.get("customer", session["customer"]) if session["customer"] else None
    if intent["setup_future_usage"] and customer is not None:
        # Saved for the customer by this very payment, so not used up (Stripe's one-use rule is for a
        # PaymentMethod used without a customer).
        ctx.internal(method["id"]).pop("used", None)
        attach_method(ctx, method, customer)
    captured = intent["status"] == "succeeded"
    complete_session(
        ctx, session, billing=method["billing_details"], payment_status="paid" if captured else "unpaid"
    )


def _after_authentication(ctx: Ctx, payment: Payment) -> None:
    """A payment-mode session's PaymentIntent passed 3-D Secure and went through: the session is paid."""
    intent = payment.intent
    session = ctx.get("checkout_session", ctx.internal(intent["id"]).get("checkout_session") or "")
    if session is None or session["mode"] != "payment" or session["status"] != "open":
        return
    if payment.error is None and intent["status"] in ("succeeded", "requires_capture"):
        paid(ctx, session, intent, ctx.need("payment_method", str(intent["payment_method"])))


AFTER_AUTHENTICATION.append(_after_authentication)


def _set_up(ctx: Ctx, session: JSON, method: JSON, details: JSON) -> JSON:
    if session["customer"] is None and session["customer_creation"] == "always":
        customer = checkout_customer(ctx, session, details)
        ctx.need("setup_intent", str(session["setup_intent"]))["customer"] = customer["id"]
    intent = ctx.need("setup_intent", str(session["setup_intent"]))
    error = confirm_setup(ctx, intent, method)
    if error is not None:
        return {"outcome": "declined", "error": error, "setup_intent": intent["id"]}
    if intent["status"] == "requires_action":
        return {"outcome": "requires_action", "setup_intent": intent["id"]}
    complete_session(ctx, session, billing=method["billing_details"], payment_status="no_payment_required")
    return {"outcome": "succeeded", "setup_intent": intent["id"]}


# ----------------------------------------------------------------- the admin stand-ins


def complete_checkout(ctx: Ctx, session: JSON, args: JSON) -> JSON:
    card = card_arg(args)
    if session["status"] != "open":
        raise admin_error(f"The Checkout Session {session['id']} is {session['status']}, not open.")
    method = ctx.need("payment_method", payment_method_for_card(ctx, card))
    details: JSON = {k: args[k] for k in ("email", "name") if k in args}
    answer = pay_session(ctx, session, method, details)
    answer["checkout_session"] = render(ctx, "checkout_session", session, [])
    return answer


def authenticate_payment(ctx: Ctx, intent: JSON, args: JSON) -> JSON:
    result = _authentication_outcome(intent, "PaymentIntent", args)
    info = ctx.internal(intent["id"])
    session = ctx.acct.checkout_sessions.get(info.get("checkout_session") or "")
    if "card" not in info:  # a PaymentIntent of the API or of a payment-mode session: its payment goes on
        payment = authenticate_intent(ctx, intent, result == "succeeded")
        answer: JSON = {
            "payment_intent": render(ctx, "payment_intent", payment.intent, []),
            "outcome": result,
        }
        return _with_session(ctx, answer, session)
    intent["status"] = "succeeded" if result == "succeeded" else "requires_payment_method"
    intent["next_action"] = None
    answer = {"payment_intent": intent["id"], "outcome": result}
    if info["invoice"] is None:  # a Checkout payment (basil): nothing exists before it succeeds
        assert session is not None
        if result == "succeeded":
            if session["status"] != "open":
                raise admin_error(f"The Checkout Session {session['id']} is {session['status']}.")
            method = str(intent["payment_method"])
            answer.update(fulfil_session(ctx, session, info["card"], method, info.get("args", {})))
    else:
        answer.update(_invoice_authenticated(ctx, info, session, result))
    return _with_session(ctx, answer, session)


def _invoice_authenticated(ctx: Ctx, info: JSON, session: JSON | None, result: str) -> JSON:
    """3-D Secure of an invoice's payment with a test card ended: the invoice is paid (and the
    legacy Checkout Session waiting for it completes), or the payment failed."""
    invoice = ctx.acct.invoices[info["invoice"]]
    sub = ctx.acct.subscriptions[invoice["parent"]["subscription_details"]["subscription"]]
    if result == "succeeded" and invoice["status"] == "open":
        settle_invoice(ctx, invoice, sub, info["card"])
        if session is not None and session["status"] == "open":
            complete_session(ctx, session, sub=sub, invoice=invoice)
    elif result == "failed":
        mark_failed(ctx, invoice, action_required=False)
    return {"invoice": invoice["id"], "subscription": sub["id"]}


def authenticate_setup(ctx: Ctx, intent: JSON, args: JSON) -> JSON:
    result = _authentication_outcome(intent, "SetupIntent", args)
    session = next(
        (s for s in ctx.acct.checkout_sessions.values() if s["setup_intent"] == intent["id"]), None
    )
    if result == "succeeded":
        method = ctx.need("payment_method", str(intent["payment_method"]))
        succeed_setup(ctx, intent)
        if session is not None and session["status"] == "open":
            complete_session(
                ctx, session, billing=method["billing_details"], payment_status="no_payment_required"
            )
    else:
        fail_setup_authentication(ctx, intent)
    answer: JSON = {"setup_intent": render(ctx, "setup_intent", intent, []), "outcome": result}
    return _with_session(ctx, answer, session)


def _authentication_outcome(intent: JSON, noun: str, args: JSON) -> str:
    """How 3-D Secure ends for `intent` (a `noun`, waiting for it): `outcome`, "succeeded" (the
    default) or "failed"."""
    if intent["status"] != "requires_action":
        raise admin_error(f"The {noun} {intent['id']} is {intent['status']}, not requires_action.")
    result = args.get("outcome", "succeeded")
    if result not in ("succeeded", "failed"):
        raise admin_error('"outcome" must be "succeeded" or "failed".')
    return str(result)


def _with_session(ctx: Ctx, answer: JSON, session: JSON | None) -> JSON:
    """An admin answer, with the Checkout Session the intent belongs to, if any."""
    if session is not None:
        answer["checkout_session"] = render(ctx, "checkout_session", session, [])
    return answer


# ----------------------------------------------------------------- the payment-pages API


# Private API (no SDK params): what the Stripe CLI sends; anything else is refused as unknown.
PARAM_SPECS["payment_page.retrieve"] = Spec("object", fields={"expand": Spec("list", item=Spec("str"))})
PARAM_SPECS["payment_page.confirm"] = Spec(
    "object",
    fields={
        "expand": Spec("list", item=Spec("str")),
        "expected_amount": Spec("int"),
        "payment_method": Spec("str"),
    },
    required=frozenset({"payment_method", "expected_amount"}),
)
MODELLED_PARAMS["payment_page.confirm"] = frozenset({"expand", "expected_amount", "payment_method"})


def _page(ctx: Ctx, session: JSON, expand: list[str]) -> JSON:
    """The payment page: here, the Checkout Session it shows, with its line items."""
    return render(ctx, "checkout_session", session, ["line_items", *expand])


@route("GET", "/v1/payment_pages/{id}", "payment_page.retrieve")
def _retrieve(ctx: Ctx, call: Call) -> JSON:
    return _page(ctx, ctx.need("checkout_session", call.ids[0]), call.expand)


@route("POST", "/v1/payment_pages/{id}/confirm", "payment_page.confirm")
def _confirm(ctx: Ctx, call: Call) -> JSON:
    session = ctx.need("checkout_session", call.ids[0])
    p = call.params
    if session["status"] != "open":
        raise StripeError(
            400,
            f"This Checkout Session is no longer active: its status is `{session['status']}`.",
        )
    method = ctx.need("payment_method", p["payment_method"], "payment_method", status=400)
    check_reusable(ctx, method)
    expected = session["amount_total"] or 0
    if p["expected_amount"] != expected:
        raise param_error(
            f"The expected_amount ({p['expected_amount']}) does not match the amount due for this Checkout "
            f"Session ({expected}). Reload the page to see the current amount.",
            "expected_amount",
        )
    typed = method["billing_details"]
    answer = pay_session(ctx, session, method, {k: typed[k] for k in ("email", "name") if typed.get(k)})
    error = answer.get("error")
    if answer["outcome"] == "declined" and error is not None:
        extra = {k: v for k, v in error.items() if k not in ("code", "doc_url", "message", "type", "param")}
        raise StripeError(
            402, str(error["message"]), type_="card_error", code=str(error["code"]), kept=True, extra=extra
        )
    return _page(ctx, session, call.expand)
