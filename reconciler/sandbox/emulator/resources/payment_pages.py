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
- subscription, since 2025-03-31.basil: a PaymentIntent for the first invoice's amount first (made and
  reused as in payment mode, `setup_future_usage=off_session`); once it went through, the customer,
  the card saved for it (payment_method.attached), the subscription and its first invoice, paid by
  that intent, then checkout.session.completed. A decline leaves only the intent and its failed
  Charge. Before basil: an incomplete subscription and its open first invoice, which Billing charges
  (`invoicing.collect`) at each attempt. docs/stripe-emulator.md lists the sequences.
- setup: the session's SetupIntent is confirmed (setup_intent.succeeded, payment_method.attached when
  the session has a customer), then checkout.session.completed.
"""

from __future__ import annotations

from ..cards import card_arg
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
    save_card,
)
from .invoices import build_invoice, finalize_invoice
from .invoicing import collect
from .payment_methods import attach_method, check_reusable, payment_method_for_card
from .payments import AFTER_AUTHENTICATION, Payment, authenticate_intent, confirm_intent, new_intent
from .renewals import payment_answer, subscription_of
from .setup_intents import confirm_setup, fail_setup_authentication, succeed_setup
from .subscriptions import set_status


def pay_session(ctx: Ctx, session: JSON, method: JSON, details: JSON) -> JSON:
    """Pay the open `session` with PaymentMethod `method` (`details`: the email and name typed on the
    page). The answer: `outcome` (succeeded, declined, requires_action), the `error` of a decline
    (Stripe's card_error body), the PaymentIntent to authenticate, what was made."""
    if session["mode"] == "payment":
        return _pay_payment(ctx, session, method, details)
    if session["mode"] == "setup":
        return _set_up(ctx, session, method, details)
    if str(ctx.internal(session["id"])["api_version"]) >= CHECKOUT_BASIL:
        return _subscribe(ctx, session, method, details)
    return _subscribe_legacy(ctx, session, method, details)


def _session_intent(ctx: Ctx, session: JSON, fields: JSON) -> JSON:
    """The session's PaymentIntent: made with `fields` at the first confirmation (since API
    2022-08-01), `payment_intent.created`, and reused by the next attempts."""
    info = ctx.internal(session["id"])
    intent = ctx.get("payment_intent", info.get("payment_intent") or "")
    if intent is None:
        intent = new_intent(ctx, fields)
        ctx.internal(intent["id"])["checkout_session"] = session["id"]
        info["payment_intent"] = intent["id"]
        emit(ctx, "payment_intent.created", "payment_intent", intent)
    return intent


def _not_paid(payment: Payment) -> JSON:
    """The answer of an attempt that did not go through: declined (Stripe's card_error), or waiting
    for 3-D Secure on its PaymentIntent."""
    answer: JSON = {"outcome": payment.outcome, "payment_intent": payment.intent["id"]}
    if payment.outcome == "declined":
        answer["error"] = payment.error
    return answer


def _subscribe(ctx: Ctx, session: JSON, method: JSON, details: JSON) -> JSON:
    """Subscription mode since 2025-03-31.basil: the payment first, by a PaymentIntent for the first
    invoice's amount (a decline leaves only it and its failed Charge, and the session open for another
    card); the customer and the subscription are made once it went through (`fulfil_session`)."""
    if not session["amount_total"]:
        return fulfil_session(ctx, session, method, details, None)
    fields: JSON = {
        "amount": session["amount_total"],
        "currency": session["currency"],
        "customer": session["customer"],
        "payment_method_types": ["card"],
        "setup_future_usage": "off_session",  # the card is saved for the renewals
    }
    intent = _session_intent(ctx, session, fields)
    ctx.internal(intent["id"])["details"] = details
    payment = confirm_intent(ctx, intent, method, off_session=False)
    if payment.outcome == "succeeded":
        return fulfil_session(ctx, session, method, details, payment)
    return _not_paid(payment)


def _subscribe_legacy(ctx: Ctx, session: JSON, method: JSON, details: JSON) -> JSON:
    """Subscription mode before 2025-03-31.basil: Checkout made an incomplete subscription with an open
    first invoice, then Billing charged the invoice; a declined card left them for the next attempt."""
    sub_id = ctx.internal(session["id"])["pending_subscription"]
    if sub_id is None:
        sub, invoice = _incomplete_subscription(ctx, session, method, details)
    else:
        sub = ctx.acct.subscriptions[sub_id]
        invoice = ctx.acct.invoices[sub["latest_invoice"]]
        sub["default_payment_method"] = method["id"]  # the card tried now
    answer: JSON = {"outcome": "succeeded", "invoice": invoice["id"], "subscription": sub["id"]}
    if invoice["status"] == "open":  # else nothing was due
        payment = collect(ctx, invoice, method["id"])
        ctx.internal(payment.intent["id"])["checkout_session"] = session["id"]
        answer = payment_answer(invoice, payment)
    if answer["outcome"] == "succeeded":
        _complete_legacy(ctx, session, sub, invoice, method)
    return answer


def _complete_legacy(ctx: Ctx, session: JSON, sub: JSON, invoice: JSON, method: JSON) -> None:
    """The legacy flow's first invoice is paid: the subscription is active, the card saved for the
    customer, the session complete."""
    set_status(ctx, sub, "active")
    save_card(ctx, method, ctx.acct.customers[sub["customer"]])
    complete_session(ctx, session, sub=sub, invoice=invoice)


def _incomplete_subscription(ctx: Ctx, session: JSON, method: JSON, details: JSON) -> tuple[JSON, JSON]:
    """The legacy flow's first attempt: the customer, an `incomplete` subscription and its finalized
    first invoice, with their events."""
    customer = checkout_customer(ctx, session, details)
    sub = checkout_subscription(ctx, session, customer, method["id"])
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
    data = ctx.internal(session["id"])["payment_intent_data"] or {}
    if session["customer"] is None and session["customer_creation"] == "always":
        checkout_customer(ctx, session, details)
    fields: JSON = {
        "amount": session["amount_total"],
        "currency": session["currency"],
        "customer": session["customer"],
        "description": data.get("description"),
        "metadata": data.get("metadata") or {},
        "payment_method_types": ["card"],
    }
    fields.update({k: data[k] for k in ("capture_method", "shipping", "setup_future_usage") if k in data})
    intent = _session_intent(ctx, session, fields)
    session["payment_intent"] = intent["id"]
    payment = confirm_intent(ctx, intent, method, off_session=False)
    if payment.outcome != "succeeded":
        return _not_paid(payment)
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
    """A session's PaymentIntent passed 3-D Secure and went through: a payment-mode session is paid; a
    subscription-mode one completes (since basil its subscription is made now; before, the intent paid
    its first invoice, which `invoicing.settle` followed first: this module imports `invoicing`, so
    its hook is registered before this one)."""
    intent = payment.intent
    info = ctx.internal(intent["id"])
    session = ctx.get("checkout_session", info.get("checkout_session") or "")
    if session is None or session["status"] != "open" or payment.outcome != "succeeded":
        return
    method = ctx.need("payment_method", str(intent["payment_method"]))
    if session["mode"] == "payment":
        paid(ctx, session, intent, method)
        return
    invoice = ctx.get("invoice", info.get("invoice") or "")
    if invoice is None:
        fulfil_session(ctx, session, method, info.get("details") or {}, payment)
    elif invoice["status"] == "paid":
        sub = ctx.acct.subscriptions[invoice["parent"]["subscription_details"]["subscription"]]
        _complete_legacy(ctx, session, sub, invoice, method)


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
    """3-D Secure of `intent` ends; what it pays follows (`AFTER_AUTHENTICATION`). The answer names the
    invoice and subscription it paid, and its Checkout Session."""
    result = _authentication_outcome(intent, "PaymentIntent", args)
    payment = authenticate_intent(ctx, intent, result == "succeeded")
    info = ctx.internal(intent["id"])
    answer: JSON = {"payment_intent": render(ctx, "payment_intent", payment.intent, []), "outcome": result}
    invoice = ctx.get("invoice", info.get("invoice") or "")
    if invoice is not None:
        answer.update(invoice=invoice["id"], subscription=subscription_of(invoice))
    return _with_session(ctx, answer, ctx.get("checkout_session", info.get("checkout_session") or ""))


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


# Begins as payment_intents' `_capture` does (need, check status), by design: a different object and answer.
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
