"""The emulator's payments, driven through the real `stripe` SDK over HTTP: PaymentIntents and their
Charges with Stripe's test PaymentMethods and tokens, 402 card errors as Stripe sends them, 3-D Secure,
PaymentMethods attached to customers, customers' default payment method, and deleting a customer.

What the expectations rest on:
- docs.stripe.com/testing: the `pm_card_*` test PaymentMethods and `tok_*` tokens, the cards behind them;
  4000 0000 0000 0341 "attaching this card to a Customer object succeeds, but attempts to charge the
  customer fail" (the Stripe CLI's invoice.payment_failed fixture attaches pm_card_chargeCustomerFail
  for that reason, not pm_card_chargeDeclined); 3155 needs authentication until set up, 3220 always.
- A real decline recorded by a public project from test mode (Stripe-Version 2024-06-20, card 0002,
  `POST /v1/payment_intents` with confirm=true): HTTP 402, `error` = charge, code card_declined,
  decline_code generic_decline, doc_url, message "Your card was declined.", payment_intent (status
  requires_payment_method, payment_method null, latest_charge, last_payment_error), payment_method,
  request_log_url, type card_error.
- A real `payment_intent.created` event of `stripe trigger payment_intent.succeeded` (confirm=true with
  pm_card_visa in one request): its object is requires_payment_method with payment_method null, then
  charge.succeeded and payment_intent.succeeded follow.
- "Sending credit card numbers directly to the Stripe API is generally unsafe. ..." is quoted from real
  answers by many public projects; Stripe refuses raw numbers unless raw card data APIs are enabled.
"""

from __future__ import annotations

import http.client
import json
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
import stripe

from reconciler.sandbox.emulator import RunningEmulator


def admin(url: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    """POST to an `/_emulator/*` route (what happens outside the API, like completing 3-D Secure)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def event_types(client: stripe.StripeClient, after: int = 0) -> list[str]:
    """Types of all events, oldest first, skipping the first `after`."""
    events = list(client.v1.events.list(params={"limit": 100}).auto_paging_iter())
    return [str(e.type) for e in reversed(events)][after:]


def pay(
    client: stripe.StripeClient, method: str, key: str | None = None, **extra: Any
) -> stripe.PaymentIntent:
    # Confirmed on the server, as Stripe's docs do it: no redirect-based methods, so no return_url.
    params: dict[str, Any] = {
        "amount": 2000,
        "currency": "usd",
        "payment_method": method,
        "confirm": True,
        "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
    }
    options: Any = {"idempotency_key": key} if key else {}
    return client.v1.payment_intents.create(params=cast(Any, {**params, **extra}), options=options)


def declined(
    client: stripe.StripeClient, method: str, key: str | None = None, **extra: Any
) -> stripe.CardError:
    with pytest.raises(stripe.CardError) as caught:
        pay(client, method, key, **extra)
    return caught.value


# --- PaymentIntents and Charges ---------------------------------------------------------------------


def test_pm_card_visa_pays_with_a_new_payment_method_and_a_charge(stripe_client: stripe.StripeClient) -> None:
    intent = pay(stripe_client, "pm_card_visa", description="(created by Stripe CLI)")
    assert intent.status == "succeeded" and intent.amount_received == 2000
    assert intent.payment_method != "pm_card_visa" and str(intent.payment_method).startswith("pm_")
    charge = stripe_client.v1.charges.retrieve(str(intent.latest_charge))
    assert charge.status == "succeeded" and charge.paid and charge.captured
    assert charge.payment_intent == intent.id and charge.amount_captured == 2000
    assert charge.payment_method_details is not None
    assert charge.payment_method_details.card is not None
    assert charge.payment_method_details.card.last4 == "4242"
    assert charge.description == "(created by Stripe CLI)" and charge.outcome is not None
    assert charge.outcome.type == "authorized"
    assert event_types(stripe_client) == [
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
    ]
    created = stripe_client.v1.events.list(params={"type": "payment_intent.created"}).data[0]
    assert created.data.object["status"] == "requires_payment_method"
    assert created.data.object["payment_method"] is None
    method = stripe_client.v1.payment_methods.retrieve(str(intent.payment_method))
    assert method.card is not None and method.card.brand == "visa" and method.customer is None
    expanded = stripe_client.v1.payment_intents.retrieve(intent.id, params={"expand": ["latest_charge"]})
    assert isinstance(expanded.latest_charge, stripe.Charge) and expanded.latest_charge.id == charge.id


@pytest.mark.parametrize(
    ("method", "decline_code", "message"),
    [
        ("pm_card_chargeDeclined", "generic_decline", "Your card was declined."),
        ("pm_card_visa_chargeDeclined", "generic_decline", "Your card was declined."),
        (
            "pm_card_chargeDeclinedInsufficientFunds",
            "insufficient_funds",
            "Your card has insufficient funds.",
        ),
        ("pm_card_chargeCustomerFail", "generic_decline", "Your card was declined."),
    ],
)
def test_a_declined_card_answers_stripes_402_and_keeps_the_intent_and_charge(
    stripe_client: stripe.StripeClient, method: str, decline_code: str, message: str
) -> None:
    error = declined(stripe_client, method)
    assert error.http_status == 402
    body = cast(dict[str, Any], error.json_body)["error"]
    assert sorted(body) == [
        "charge",
        "code",
        "decline_code",
        "doc_url",
        "message",
        "payment_intent",
        "payment_method",
        "request_log_url",
        "type",
    ]
    assert body["type"] == "card_error" and body["code"] == "card_declined"
    assert body["decline_code"] == decline_code and body["message"] == message
    assert body["doc_url"] == "https://stripe.com/docs/error-codes/card-declined"
    shown = body["payment_intent"]
    assert shown["status"] == "requires_payment_method" and shown["payment_method"] is None
    assert shown["latest_charge"] == body["charge"]
    assert shown["last_payment_error"]["decline_code"] == decline_code
    assert shown["last_payment_error"]["payment_method"]["id"] == body["payment_method"]["id"]
    # What it made exists, as with Stripe: the intent, the failed charge, the events.
    intent = stripe_client.v1.payment_intents.retrieve(shown["id"])
    assert intent.status == "requires_payment_method"
    charge = stripe_client.v1.charges.retrieve(body["charge"])
    assert charge.status == "failed" and not charge.paid and charge.failure_code == "card_declined"
    assert charge.outcome is not None and charge.outcome.reason == decline_code
    assert event_types(stripe_client) == [
        "payment_intent.created",
        "charge.failed",
        "payment_intent.payment_failed",
    ]


def test_a_declined_payment_replays_its_402_without_charging_again(
    stripe_client: stripe.StripeClient,
) -> None:
    first = declined(stripe_client, "pm_card_chargeDeclined", "decline-once")
    again = declined(stripe_client, "pm_card_chargeDeclined", "decline-once")
    assert cast(dict[str, Any], again.json_body) == cast(dict[str, Any], first.json_body)
    assert len(stripe_client.v1.charges.list().data) == 1


def test_3220_needs_3d_secure_then_pays_once_authenticated(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    intent = pay(stripe_client, "pm_card_threeDSecure2Required")
    assert intent.status == "requires_action" and intent.latest_charge is None
    assert intent.next_action is not None and intent.next_action.type == "use_stripe_sdk"
    assert event_types(stripe_client) == ["payment_intent.created", "payment_intent.requires_action"]
    status, answer = admin(emulator.url, f"/_emulator/payment_intents/{intent.id}/authenticate", {})
    assert status == 200 and answer["payment_intent"]["status"] == "succeeded"
    assert event_types(stripe_client, 2) == ["charge.succeeded", "payment_intent.succeeded"]
    done = stripe_client.v1.payment_intents.retrieve(intent.id)
    assert done.next_action is None and stripe_client.v1.charges.retrieve(str(done.latest_charge)).paid


def test_failed_3d_secure_leaves_the_intent_without_a_payment_method(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    intent = pay(stripe_client, "pm_card_threeDSecure2Required")
    status, _ = admin(
        emulator.url, f"/_emulator/payment_intents/{intent.id}/authenticate", {"outcome": "failed"}
    )
    assert status == 200
    failed = stripe_client.v1.payment_intents.retrieve(intent.id)
    assert failed.status == "requires_payment_method" and failed.payment_method is None
    assert failed.last_payment_error is not None
    assert failed.last_payment_error.code == "payment_intent_authentication_failure"
    assert event_types(stripe_client)[-1] == "payment_intent.payment_failed"
    assert stripe_client.v1.charges.list().data == []


def test_off_session_payments_that_need_authentication_are_declined(
    stripe_client: stripe.StripeClient,
) -> None:
    customer = stripe_client.v1.customers.create()
    method = stripe_client.v1.payment_methods.attach(
        "pm_card_threeDSecure2Required", params={"customer": customer.id}
    )
    error = declined(stripe_client, method.id, customer=customer.id, off_session=True)
    body = cast(dict[str, Any], error.json_body)["error"]
    assert body["code"] == "authentication_required" and body["decline_code"] == "authentication_required"
    assert body["payment_intent"]["status"] == "requires_payment_method"


def test_3155_pays_off_session_once_authenticated_on_session(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    customer = stripe_client.v1.customers.create()
    method = stripe_client.v1.payment_methods.attach(
        "pm_card_authenticationRequiredSetupForOffSession", params={"customer": customer.id}
    )
    declined(stripe_client, method.id, customer=customer.id, off_session=True)  # not set up yet
    on_session = pay(stripe_client, method.id, customer=customer.id)
    assert on_session.status == "requires_action"
    admin(emulator.url, f"/_emulator/payment_intents/{on_session.id}/authenticate", {})
    later = pay(stripe_client, method.id, customer=customer.id, off_session=True)
    assert later.status == "succeeded"


def test_an_intent_is_created_updated_confirmed_and_then_refuses_changes(
    stripe_client: stripe.StripeClient,
) -> None:
    intent = stripe_client.v1.payment_intents.create(
        params={"amount": 1500, "currency": "eur", "metadata": {"order": "7"}}
    )
    assert intent.status == "requires_payment_method" and intent.client_secret
    assert str(intent.client_secret).startswith(f"{intent.id}_secret_")
    updated = stripe_client.v1.payment_intents.update(
        intent.id, params={"payment_method": "pm_card_mastercard", "amount": 1800}
    )
    assert updated.status == "requires_confirmation" and updated.amount == 1800
    confirmed = stripe_client.v1.payment_intents.confirm(
        intent.id, params={"return_url": "https://example.com/paid"}
    )
    assert confirmed.status == "succeeded" and confirmed.amount_received == 1800
    assert stripe_client.v1.charges.retrieve(str(confirmed.latest_charge)).currency == "eur"
    with pytest.raises(stripe.InvalidRequestError) as again:
        stripe_client.v1.payment_intents.confirm(intent.id)
    assert again.value.code == "payment_intent_unexpected_state"
    assert "already succeeded" in str(again.value.user_message)
    with pytest.raises(stripe.InvalidRequestError) as amount:
        stripe_client.v1.payment_intents.update(intent.id, params={"amount": 100})
    assert str(amount.value.user_message).startswith(
        "This PaymentIntent's amount could not be updated because it has a status of succeeded."
    )
    with pytest.raises(stripe.InvalidRequestError) as cancel:
        stripe_client.v1.payment_intents.cancel(intent.id)
    assert cancel.value.code == "payment_intent_unexpected_state"
    # Metadata and description stay editable.
    noted = stripe_client.v1.payment_intents.update(intent.id, params={"metadata": {"note": "x"}})
    assert noted.metadata is not None and noted.metadata.to_dict() == {"order": "7", "note": "x"}


def test_cancel_and_manual_capture(stripe_client: stripe.StripeClient) -> None:
    open_intent = stripe_client.v1.payment_intents.create(params={"amount": 900, "currency": "usd"})
    canceled = stripe_client.v1.payment_intents.cancel(
        open_intent.id, params={"cancellation_reason": "abandoned"}
    )
    assert canceled.status == "canceled" and canceled.cancellation_reason == "abandoned"
    assert canceled.canceled_at is not None
    held = pay(stripe_client, "pm_card_visa", capture_method="manual")
    assert held.status == "requires_capture" and held.amount_capturable == 2000
    assert not stripe_client.v1.charges.retrieve(str(held.latest_charge)).captured
    captured = stripe_client.v1.payment_intents.capture(held.id, params={"amount_to_capture": 1500})
    assert captured.status == "succeeded" and captured.amount_received == 1500
    assert stripe_client.v1.charges.retrieve(str(held.latest_charge)).amount_captured == 1500
    assert event_types(stripe_client)[-2:] == ["charge.captured", "payment_intent.succeeded"]
    assert "payment_intent.canceled" in event_types(stripe_client)


def test_create_checks_its_parameters(stripe_client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as small:
        stripe_client.v1.payment_intents.create(params={"amount": 20, "currency": "usd"})
    assert small.value.code == "amount_too_small"
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        pay(stripe_client, "pm_nope")
    assert str(unknown.value.user_message) == "No such PaymentMethod: 'pm_nope'"
    assert unknown.value.param == "payment_method" and unknown.value.http_status == 400
    with pytest.raises(stripe.InvalidRequestError) as customer:
        pay(stripe_client, "pm_card_visa", customer="cus_nope")
    assert customer.value.param == "customer"
    with pytest.raises(stripe.InvalidRequestError) as unmodelled:
        pay(stripe_client, "pm_card_visa", setup_future_usage="off_session")
    assert unmodelled.value.param == "setup_future_usage"
    assert stripe_client.v1.payment_intents.list().data == []  # nothing was made by a refused request


def test_lists_filter_by_customer_and_intent(stripe_client: stripe.StripeClient) -> None:
    customer = stripe_client.v1.customers.create(params={"payment_method": "pm_card_visa"})
    method = stripe_client.v1.payment_methods.list(params={"customer": customer.id}).data[0]
    mine = pay(stripe_client, method.id, customer=customer.id)
    pay(stripe_client, "pm_card_visa")
    listed = stripe_client.v1.payment_intents.list(params={"customer": customer.id}).data
    assert [i.id for i in listed] == [mine.id]
    assert len(stripe_client.v1.payment_intents.list().data) == 2
    charges = stripe_client.v1.charges.list(params={"payment_intent": mine.id}).data
    assert [c.id for c in charges] == [mine.latest_charge]
    assert [c.id for c in stripe_client.v1.charges.list(params={"customer": customer.id}).data] == [
        mine.latest_charge
    ]


# --- PaymentMethods -----------------------------------------------------------------------------------


def test_payment_methods_from_test_tokens(stripe_client: stripe.StripeClient) -> None:
    method = stripe_client.v1.payment_methods.create(
        params={"type": "card", "card": {"token": "tok_visa"}, "billing_details": {"name": "Jenny Rosen"}}
    )
    assert method.id.startswith("pm_") and method.type == "card" and method.customer is None
    assert method.card is not None and (method.card.brand, method.card.last4) == ("visa", "4242")
    assert method.billing_details.name == "Jenny Rosen"
    assert event_types(stripe_client) == []  # Stripe has no payment_method.created
    mastercard = stripe_client.v1.payment_methods.create(
        params={"type": "card", "card": {"token": "tok_mastercard"}}
    )
    assert mastercard.card is not None and mastercard.card.last4 == "4444"
    with pytest.raises(stripe.InvalidRequestError) as raw:
        stripe_client.v1.payment_methods.create(
            params={"type": "card", "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034}}
        )
    assert str(raw.value.user_message).startswith(
        "Sending credit card numbers directly to the Stripe API is generally unsafe."
    )
    with pytest.raises(stripe.InvalidRequestError) as token:
        stripe_client.v1.payment_methods.create(params={"type": "card", "card": {"token": "tok_nope"}})
    assert str(token.value.user_message) == "No such token: 'tok_nope'"
    with pytest.raises(stripe.InvalidRequestError) as cvc:
        stripe_client.v1.payment_methods.create(
            params={"type": "card", "card": {"token": "tok_visa", "cvc": "123"}}
        )
    assert cvc.value.param == "card[cvc]"
    with pytest.raises(stripe.InvalidRequestError) as sepa:
        stripe_client.v1.payment_methods.create(params={"type": "sepa_debit"})
    assert sepa.value.param == "type"


def test_attaching_a_test_payment_method_makes_a_new_one_each_time(
    stripe_client: stripe.StripeClient,
) -> None:
    customer = stripe_client.v1.customers.create()
    first = stripe_client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    second = stripe_client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    assert first.id != second.id and first.id != "pm_card_visa"
    assert first.customer == customer.id == second.customer
    assert event_types(stripe_client, 1) == ["payment_method.attached", "payment_method.attached"]
    failing = stripe_client.v1.payment_methods.attach(
        "pm_card_chargeCustomerFail", params={"customer": customer.id}
    )
    assert failing.card is not None and failing.card.last4 == "0341"  # attaches; charging it fails
    with pytest.raises(stripe.CardError) as refused:
        stripe_client.v1.payment_methods.attach("pm_card_chargeDeclined", params={"customer": customer.id})
    assert refused.value.code == "card_declined" and refused.value.http_status == 402
    listed = stripe_client.v1.payment_methods.list(params={"customer": customer.id, "type": "card"}).data
    assert {m.id for m in listed} == {first.id, second.id, failing.id}
    via_customer = stripe_client.v1.customers.payment_methods.list(customer.id).data
    assert {m.id for m in via_customer} == {first.id, second.id, failing.id}


def test_detach_and_reuse(stripe_client: stripe.StripeClient) -> None:
    customer = stripe_client.v1.customers.create()
    method = stripe_client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    detached = stripe_client.v1.payment_methods.detach(method.id)
    assert detached.customer is None
    event = stripe_client.v1.events.list(params={"type": "payment_method.detached"}).data[0]
    assert event.data.to_dict()["previous_attributes"] == {"customer": customer.id}
    with pytest.raises(stripe.InvalidRequestError) as twice:
        stripe_client.v1.payment_methods.detach(method.id)
    assert "not attached to a customer" in str(twice.value.user_message)
    with pytest.raises(stripe.InvalidRequestError) as reuse:
        pay(stripe_client, method.id)
    assert "may not be used again" in str(reuse.value.user_message)
    loose = stripe_client.v1.payment_methods.create(params={"type": "card", "card": {"token": "tok_visa"}})
    pay(stripe_client, loose.id)  # used once without a customer ...
    with pytest.raises(stripe.InvalidRequestError):
        pay(stripe_client, loose.id)  # ... never again


def test_updating_a_payment_method(stripe_client: stripe.StripeClient) -> None:
    loose = stripe_client.v1.payment_methods.create(params={"type": "card", "card": {"token": "tok_visa"}})
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.payment_methods.update(loose.id, params={"metadata": {"a": "1"}})
    customer = stripe_client.v1.customers.create()
    stripe_client.v1.payment_methods.attach(loose.id, params={"customer": customer.id})
    updated = stripe_client.v1.payment_methods.update(
        loose.id, params={"metadata": {"a": "1"}, "billing_details": {"email": "j@example.com"}}
    )
    assert updated.metadata is not None and updated.metadata.to_dict() == {"a": "1"}
    assert updated.billing_details.email == "j@example.com"
    assert event_types(stripe_client)[-1] == "payment_method.updated"


# --- customers: default payment method, delete -------------------------------------------------------


def test_customer_created_with_pm_card_visa_has_it_attached_and_default(
    stripe_client: stripe.StripeClient,
) -> None:
    customer = stripe_client.v1.customers.create(
        params={
            "description": "(created by Stripe CLI)",
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    assert customer.invoice_settings is not None
    default = str(customer.invoice_settings.default_payment_method)
    assert default.startswith("pm_") and default != "pm_card_visa"
    assert stripe_client.v1.payment_methods.retrieve(default).customer == customer.id
    assert event_types(stripe_client) == ["customer.created", "payment_method.attached"]
    created = stripe_client.v1.events.list(params={"type": "customer.created"}).data[0]
    assert created.data.object["invoice_settings"]["default_payment_method"] == default


def test_default_payment_method_must_be_attached(stripe_client: stripe.StripeClient) -> None:
    customer = stripe_client.v1.customers.create()
    loose = stripe_client.v1.payment_methods.create(params={"type": "card", "card": {"token": "tok_visa"}})
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.customers.update(
            customer.id, params={"invoice_settings": {"default_payment_method": loose.id}}
        )
    assert refused.value.param == "invoice_settings[default_payment_method]"
    with pytest.raises(stripe.InvalidRequestError) as footer:  # not modelled: refused, not ignored
        stripe_client.v1.customers.update(customer.id, params={"invoice_settings": {"footer": "Thanks"}})
    assert footer.value.param == "invoice_settings[footer]"
    with pytest.raises(stripe.CardError):  # a declining card cannot be attached, so nothing is made
        stripe_client.v1.customers.create(params={"payment_method": "pm_card_chargeDeclined"})
    assert [c.id for c in stripe_client.v1.customers.list().data] == [customer.id]


def test_customer_updated_names_the_changed_keys_only(stripe_client: stripe.StripeClient) -> None:
    customer = stripe_client.v1.customers.create(params={"metadata": {"keep": "1"}})
    method = stripe_client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    stripe_client.v1.customers.update(
        customer.id,
        params={"invoice_settings": {"default_payment_method": method.id}, "metadata": {"added": "2"}},
    )
    event = stripe_client.v1.events.list(params={"type": "customer.updated"}).data[0]
    assert event.data.to_dict()["previous_attributes"] == {
        "invoice_settings": {"default_payment_method": None},
        "metadata": {"added": None},
    }
    stripe_client.v1.payment_methods.detach(method.id)  # the default goes with it
    settings = stripe_client.v1.customers.retrieve(customer.id).invoice_settings
    assert settings is not None and settings.default_payment_method is None
    cleared = stripe_client.v1.events.list(params={"type": "customer.updated"}).data[0]
    assert cleared.data.to_dict()["previous_attributes"] == {
        "invoice_settings": {"default_payment_method": method.id}
    }


def test_deleting_a_customer_cancels_its_subscriptions(stripe_client: stripe.StripeClient) -> None:
    product = stripe_client.v1.products.create(params={"name": "Plan"})
    price = stripe_client.v1.prices.create(
        params={
            "product": product.id,
            "unit_amount": 0,
            "currency": "usd",
            "recurring": {"interval": "month"},
        }
    )
    customer = stripe_client.v1.customers.create(params={"payment_method": "pm_card_visa"})
    sub = stripe_client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}]}
    )
    before = len(event_types(stripe_client))
    deleted = stripe_client.v1.customers.delete(customer.id)
    assert deleted.to_dict() == {"id": customer.id, "object": "customer", "deleted": True}
    assert event_types(stripe_client, before) == ["customer.subscription.deleted", "customer.deleted"]
    gone = stripe_client.v1.events.list(params={"type": "customer.deleted"}).data[0]
    assert gone.data.object["id"] == customer.id and gone.data.object["object"] == "customer"
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "canceled"
    assert stripe_client.v1.customers.retrieve(customer.id).to_dict() == deleted.to_dict()
    assert stripe_client.v1.customers.list().data == []
    with pytest.raises(stripe.InvalidRequestError) as again:
        stripe_client.v1.customers.delete(customer.id)
    assert again.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.customers.retrieve("cus_never")


def test_a_client_pinned_before_basil_sees_the_invoice_link(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    """2025-03-31.basil removed `invoice` from PaymentIntents and Charges (docs.stripe.com/changelog/basil):
    a client pinned to 2023-08-16 still gets it (null for a payment of no invoice)."""
    intent = pay(stripe_client, "pm_card_visa")
    assert "invoice" not in intent.to_dict()
    old = stripe.StripeClient(
        "sk_test_emulator", base_addresses={"api": emulator.url}, stripe_version="2023-08-16"
    )
    assert old.v1.payment_intents.retrieve(intent.id).to_dict()["invoice"] is None
    assert old.v1.charges.retrieve(str(intent.latest_charge)).to_dict()["invoice"] is None
    error = declined(old, "pm_card_chargeDeclined")
    assert cast(dict[str, Any], error.json_body)["error"]["payment_intent"]["invoice"] is None
