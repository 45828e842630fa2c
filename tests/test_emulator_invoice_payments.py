"""Every invoice the emulator charges is paid the way Stripe's Billing pays one, whoever asked: a
PaymentIntent and its Charge, with their events, linked both ways to the invoice. The API's `/pay` and
subscription create are pinned in test_emulator_billing.py; here the two paths the admin routes and the
hosted page drive: a renewal (`/_emulator/subscriptions/{id}/renew`, the end of a period) and a
subscription-mode Checkout confirmed through the payment page (`/v1/payment_pages/{cs}/confirm`, what
Stripe's hosted page and the Stripe CLI send).

The sequences are those the emulator already answers for subscription create and `/pay` (from real
`stripe listen` logs: invoice.finalized, payment_intent.created, charge.succeeded,
payment_intent.succeeded, invoice.paid, invoice.payment_succeeded; a decline: charge.failed,
payment_intent.payment_failed, invoice.payment_failed), a renewal's preceded by the new period's
customer.subscription.updated and invoice.created. Checkout since 2025-03-31.basil creates the
subscription only once the payment went through (docs.stripe.com/changelog/basil/2025-03-31/
checkout-legacy-subscription-upgrade), so its PaymentIntent's events come first. Test cards:
docs.stripe.com/testing (4000 0000 0000 0341 attaches, then every charge is declined)."""

from __future__ import annotations

from typing import Any, cast

import stripe

from reconciler.sandbox.emulator import RunningEmulator

from conftest import PAID_SUBSCRIPTION_CHECKOUT, monthly_price
from conftest import post_admin as admin

BEFORE_BASIL = "2025-02-24.acacia"  # invoices still name their `payment_intent` and `charge`
NEW_PERIOD = ["customer.subscription.updated", "invoice.created", "invoice.finalized"]
PAID = [
    "payment_intent.created",
    "charge.succeeded",
    "payment_intent.succeeded",
    "invoice.paid",
    "invoice.payment_succeeded",
]


def events_after(client: stripe.StripeClient, mark: str | None) -> list[stripe.Event]:
    """Every event after the event `mark` (all with None), oldest first."""
    events = list(client.v1.events.list(params={"limit": 100}).auto_paging_iter())[::-1]
    ids = [e.id for e in events]
    return events[ids.index(mark) + 1 :] if mark is not None else events


def last_event_id(client: stripe.StripeClient) -> str:
    return client.v1.events.list(params={"limit": 1}).data[0].id


def subscribed(client: stripe.StripeClient, card: str = "pm_card_visa") -> stripe.Subscription:
    """An active subscription, paid by the customer's default payment method (`card`)."""
    customer = client.v1.customers.create(
        params={
            "email": "renewals@example.com",
            "payment_method": card,
            "invoice_settings": {"default_payment_method": card},
        }
    )
    price = monthly_price(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    assert sub.status == "active"
    return sub


def paid_by(client: stripe.StripeClient, invoice_id: str) -> tuple[stripe.PaymentIntent, stripe.Charge]:
    """The PaymentIntent of the invoice's default payment, and its Charge, checked to be linked to the
    invoice both ways, in the newest API version and before 2025-03-31.basil."""
    invoice = client.v1.invoices.retrieve(invoice_id, params={"expand": ["payments"]})
    assert invoice.payments is not None
    [payment] = [p for p in invoice.payments.data if p.is_default]
    assert payment.payment.type == "payment_intent" and payment.invoice == invoice.id
    intent = client.v1.payment_intents.retrieve(str(payment.payment.payment_intent))
    assert (intent.amount, intent.currency, intent.customer) == (
        invoice.amount_due,
        invoice.currency,
        invoice.customer,
    )
    assert intent.latest_charge is not None
    charge = client.v1.charges.retrieve(str(intent.latest_charge))
    assert (charge.payment_intent, charge.customer, charge.amount) == (
        intent.id,
        invoice.customer,
        intent.amount,
    )
    assert charge.payment_method == intent.payment_method or intent.payment_method is None
    assert [c.id for c in client.v1.charges.list(params={"payment_intent": intent.id}).data] == [charge.id]
    assert intent.id in [
        i.id for i in client.v1.payment_intents.list(params={"customer": str(intent.customer)}).data
    ]
    old = {"stripe_version": BEFORE_BASIL}
    legacy = client.v1.invoices.retrieve(invoice_id, options=cast(Any, old))
    assert (legacy["payment_intent"], legacy["charge"]) == (intent.id, charge.id)
    assert client.v1.payment_intents.retrieve(intent.id, options=cast(Any, old))["invoice"] == invoice_id
    assert client.v1.charges.retrieve(charge.id, options=cast(Any, old))["invoice"] == invoice_id
    return intent, charge


def objects(events: list[stripe.Event], event_type: str) -> list[dict[str, Any]]:
    return [e.data.object.to_dict() for e in events if e.type == event_type]


# --- renewals ----------------------------------------------------------------------------------------


def test_a_renewal_charges_the_card_on_file_with_a_payment_intent_and_a_charge(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    sub = subscribed(stripe_client)
    settings = stripe_client.v1.customers.retrieve(str(sub.customer)).invoice_settings
    assert settings is not None
    on_file = settings.default_payment_method
    mark = last_event_id(stripe_client)

    answer = admin(emulator.url, f"/_emulator/subscriptions/{sub.id}/renew", {})
    assert answer["outcome"] == "succeeded"
    events = events_after(stripe_client, mark)
    assert [e.type for e in events] == NEW_PERIOD + PAID

    invoice = stripe_client.v1.invoices.retrieve(answer["invoice"])
    assert (invoice.billing_reason, invoice.status, invoice.amount_paid) == (
        "subscription_cycle",
        "paid",
        1500,
    )
    intent, charge = paid_by(stripe_client, invoice.id)
    assert (answer["payment_intent"], answer["charge"]) == (intent.id, charge.id)
    assert (intent.status, intent.amount_received, intent.payment_method) == ("succeeded", 1500, on_file)
    assert (charge.status, charge.paid, charge.captured) == ("succeeded", True, True)
    # The events carry these very objects, in their state of the moment.
    [created] = objects(events, "payment_intent.created")
    assert (created["id"], created["status"]) == (intent.id, "requires_payment_method")
    assert objects(events, "charge.succeeded")[0]["id"] == charge.id
    assert objects(events, "payment_intent.succeeded")[0]["latest_charge"] == charge.id
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "active"


def test_a_renewal_declined_after_attach_fails_the_invoice_and_makes_the_subscription_past_due(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    """4000 0000 0000 0341 attaches (so it can be the card on file), then every charge is declined."""
    sub = subscribed(stripe_client)
    failing = stripe_client.v1.payment_methods.attach(
        "pm_card_chargeCustomerFail", params={"customer": str(sub.customer)}
    )
    stripe_client.v1.subscriptions.update(sub.id, params={"default_payment_method": failing.id})
    mark = last_event_id(stripe_client)

    answer = admin(emulator.url, f"/_emulator/subscriptions/{sub.id}/renew", {})
    assert answer["outcome"] == "declined"
    assert (answer["error"]["code"], answer["error"]["decline_code"]) == ("card_declined", "generic_decline")
    events = events_after(stripe_client, mark)
    assert [e.type for e in events] == [
        *NEW_PERIOD,
        "payment_intent.created",
        "charge.failed",
        "payment_intent.payment_failed",
        "invoice.payment_failed",
        "customer.subscription.updated",
    ]
    assert objects(events, "customer.subscription.updated")[-1]["status"] == "past_due"
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "past_due"

    invoice = stripe_client.v1.invoices.retrieve(answer["invoice"])
    assert (invoice.status, invoice.attempt_count, invoice.amount_paid) == ("open", 1, 0)
    assert invoice.next_payment_attempt is not None
    intent, charge = paid_by(stripe_client, invoice.id)
    assert (intent.status, intent.amount_received) == ("requires_payment_method", 0)
    assert (
        intent.last_payment_error is not None and intent.last_payment_error.decline_code == "generic_decline"
    )
    assert (charge.status, charge.paid, charge.failure_code) == ("failed", False, "card_declined")
    assert charge.payment_method == failing.id
    assert objects(events, "charge.failed")[0]["id"] == charge.id

    # The customer's card works again: paying the open invoice brings the subscription back.
    fixed = admin(emulator.url, f"/_emulator/invoices/{invoice.id}/pay", {"card": "4242424242424242"})
    assert fixed["outcome"] == "succeeded"
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "active"
    intent, charge = paid_by(stripe_client, invoice.id)
    assert (intent.id, charge.status) == (fixed["payment_intent"], "succeeded")


def test_a_renewal_needing_3d_secure_waits_on_its_payment_intent(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    """Billing asks the customer to authenticate an off-session renewal (4000 0000 0000 3220); a failed
    authentication fails the invoice as a decline does."""
    sub = subscribed(stripe_client)
    answer = admin(emulator.url, f"/_emulator/subscriptions/{sub.id}/renew", {"outcome": "requires_action"})
    assert answer["outcome"] == "requires_action" and answer["charge"] is None
    intent = stripe_client.v1.payment_intents.retrieve(answer["payment_intent"])
    assert intent.status == "requires_action" and intent.next_action is not None
    mark = last_event_id(stripe_client)
    failed = admin(
        emulator.url, f"/_emulator/payment_intents/{intent.id}/authenticate", {"outcome": "failed"}
    )
    assert (failed["outcome"], failed["invoice"], failed["subscription"]) == (
        "failed",
        answer["invoice"],
        sub.id,
    )
    assert [e.type for e in events_after(stripe_client, mark)] == [
        "payment_intent.payment_failed",
        "invoice.payment_failed",
    ]
    assert stripe_client.v1.invoices.retrieve(answer["invoice"]).status == "open"
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "past_due"


# --- subscription-mode Checkout through the payment page ------------------------------------------


def test_a_subscription_checkout_pays_its_first_invoice_with_a_payment_intent_and_saves_the_card(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    price = monthly_price(stripe_client)
    session = stripe_client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "success_url": "https://kuploy.example/ok",
            "line_items": [{"price": price.id, "quantity": 1}],
            "customer_email": "checkout@example.com",
        }
    )
    stripe_client.raw_request("get", f"/v1/payment_pages/{session.id}")
    method = stripe_client.v1.payment_methods.create(params={"type": "card", "card": {"token": "tok_visa"}})
    mark = last_event_id(stripe_client)
    stripe_client.raw_request(
        "post", f"/v1/payment_pages/{session.id}/confirm", payment_method=method.id, expected_amount=1500
    )
    events = events_after(stripe_client, mark)
    assert [e.type for e in events] == PAID_SUBSCRIPTION_CHECKOUT
    done = stripe_client.v1.checkout.sessions.retrieve(session.id)
    assert (done.status, done.payment_status, done.payment_intent) == ("complete", "paid", None)
    sub = stripe_client.v1.subscriptions.retrieve(str(done.subscription))
    assert (sub.status, sub.default_payment_method, sub.latest_invoice) == ("active", method.id, done.invoice)
    intent, charge = paid_by(stripe_client, str(done.invoice))
    assert (intent.status, intent.payment_method, intent.customer) == ("succeeded", method.id, done.customer)
    assert intent.setup_future_usage == "off_session"  # the card is kept for the renewals
    assert (charge.status, charge.payment_method) == ("succeeded", method.id)
    assert objects(events, "payment_intent.succeeded")[0]["id"] == intent.id
    assert stripe_client.v1.payment_methods.retrieve(method.id).customer == done.customer

    # The saved card pays the next period, off-session.
    renewal = admin(emulator.url, f"/_emulator/subscriptions/{sub.id}/renew", {})
    assert renewal["outcome"] == "succeeded"
    intent, charge = paid_by(stripe_client, renewal["invoice"])
    assert (intent.payment_method, charge.payment_method) == (method.id, method.id)
