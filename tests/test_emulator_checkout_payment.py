"""Checkout in `payment` and `setup` mode, a session's line items, and the payment-page steps Stripe's
hosted page and the Stripe CLI complete a session with, driven through the real `stripe` SDK.

The payment-page calls are the ones the CLI's `checkout.session.completed` fixture sends (stripe-cli
pkg/fixtures/triggers/checkout.session.completed.json): `GET /v1/payment_pages/{cs}`, `POST
/v1/payment_methods` with `card[token]`, `POST /v1/payment_pages/{cs}/confirm` with `payment_method`
and `expected_amount`. The events expected of a paid payment-mode session are those of a real `stripe
trigger checkout.session.completed` log: payment_intent.created, charge.succeeded,
payment_intent.succeeded, checkout.session.completed (no customer.created: `customer_creation`
defaults to `if_required` since API 2022-08-01, docs.stripe.com/changelog/2022-08-01); the
PaymentIntent is made at confirmation, not with the session (same changelog, "deferred PaymentIntent
creation"). Test tokens and cards: docs.stripe.com/testing.
"""

from __future__ import annotations

import http.client
import json
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
import stripe

from reconciler.sandbox.emulator import RunningEmulator

from conftest import PAID_SUBSCRIPTION_CHECKOUT

SHIPPING = {
    "name": "Jenny Rosen",
    "address": {"line1": "510 Townsend St", "city": "San Francisco", "postal_code": "94103", "country": "US"},
}
PAID = [
    "payment_intent.created",
    "charge.succeeded",
    "payment_intent.succeeded",
    "checkout.session.completed",
]


def one_time_price(client: stripe.StripeClient, amount: int = 1500) -> stripe.Price:
    product = client.v1.products.create(params={"name": "myproduct"})
    return client.v1.prices.create(params={"product": product.id, "unit_amount": amount, "currency": "usd"})


def payment_session(client: stripe.StripeClient, price: str, quantity: int = 2, **params: Any) -> Any:
    base: dict[str, Any] = {
        "mode": "payment",
        "success_url": "https://kuploy.example/ok",
        "cancel_url": "https://kuploy.example/cancel",
        "line_items": [{"price": price, "quantity": quantity}],
        "payment_intent_data": {
            "description": "Order 42",
            "metadata": {"order": "42"},
            "shipping": SHIPPING,
        },
    }
    base.update(params)
    return client.v1.checkout.sessions.create(params=cast(Any, base))


def card(client: stripe.StripeClient, token: str = "tok_visa") -> stripe.PaymentMethod:
    return client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"token": token},
            "billing_details": {"email": "stripe@example.com", "name": "Jenny Rosen"},
        }
    )


def confirm(client: stripe.StripeClient, session_id: str, method: str, expected: int) -> dict[str, Any]:
    answer = client.raw_request(
        "post", f"/v1/payment_pages/{session_id}/confirm", payment_method=method, expected_amount=expected
    )
    return cast(dict[str, Any], json.loads(answer.body))


def event_types(client: stripe.StripeClient) -> list[str]:
    events = list(client.v1.events.list(params={"limit": 100}).auto_paging_iter())
    return [str(e.type) for e in reversed(events)]


def new_types(client: stripe.StripeClient, before: list[str]) -> list[str]:
    return event_types(client)[len(before) :]


def admin(url: str, path: str, body: Any) -> tuple[int, Any]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.request(
            "POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def error_of(exc: stripe.StripeError) -> dict[str, Any]:
    assert isinstance(exc.json_body, dict)
    return cast(dict[str, Any], exc.json_body["error"])


# --- payment mode: the session and its line items ---------------------------------------------------


def test_a_payment_session_has_no_payment_intent_until_confirmed(stripe_client: stripe.StripeClient) -> None:
    price = one_time_price(stripe_client)
    session = payment_session(stripe_client, price.id)
    assert (session.mode, session.status, session.payment_status) == ("payment", "open", "unpaid")
    assert (session.amount_subtotal, session.amount_total, session.currency) == (3000, 3000, "usd")
    assert session.payment_intent is None and session.customer is None
    assert session.customer_creation == "if_required"
    assert stripe_client.v1.payment_intents.list().data == []
    assert event_types(stripe_client) == ["product.created", "price.created"]


def test_line_items_list_in_stripes_shape_and_pages(stripe_client: stripe.StripeClient) -> None:
    prices = [one_time_price(stripe_client, amount) for amount in (1500, 250, 99)]
    session = stripe_client.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "success_url": "https://kuploy.example/ok",
            "line_items": [{"price": p.id, "quantity": q} for p, q in zip(prices, (2, 1, 3), strict=True)],
        }
    )
    assert session.amount_total == 3000 + 250 + 297
    items = stripe_client.v1.checkout.sessions.line_items.list(session.id)
    assert items["object"] == "list" and items["url"] == f"/v1/checkout/sessions/{session.id}/line_items"
    assert [(i.price and i.price.id, i.quantity, i.amount_subtotal, i.amount_total) for i in items.data] == [
        (prices[0].id, 2, 3000, 3000),
        (prices[1].id, 1, 250, 250),
        (prices[2].id, 3, 297, 297),
    ]
    first = items.data[0]
    assert (first.object, first.currency, first.description, first.amount_discount, first.amount_tax) == (
        "item",
        "usd",
        "myproduct",
        0,
        0,
    )
    assert isinstance(first.price, stripe.Price) and first.price.unit_amount == 1500

    page = stripe_client.v1.checkout.sessions.line_items.list(session.id, params={"limit": 2})
    assert page.has_more and len(page.data) == 2
    rest = stripe_client.v1.checkout.sessions.line_items.list(
        session.id, params={"starting_after": page.data[-1].id}
    )
    assert [i.id for i in rest.data] == [items.data[2].id] and not rest.has_more
    expanded = stripe_client.v1.checkout.sessions.line_items.list(
        session.id, params={"expand": ["data.price.product"]}
    )
    price = expanded.data[0].price
    assert price is not None
    product = price.product
    assert isinstance(product, stripe.Product) and product.name == "myproduct"
    with pytest.raises(stripe.InvalidRequestError) as info:
        stripe_client.v1.checkout.sessions.line_items.list("cs_test_missing")
    assert info.value.http_status == 404


@pytest.mark.parametrize(
    ("change", "param", "fragment"),
    [
        (
            {"payment_intent_data": {"application_fee_amount": 10}},
            "payment_intent_data[application_fee_amount]",
            "does not model",
        ),
        ({"line_items": []}, "line_items", "required in `payment` mode"),
        ({"currency": "usd"}, "currency", "does not model"),
    ],
)
def test_payment_session_refusals(
    stripe_client: stripe.StripeClient, change: dict[str, Any], param: str, fragment: str
) -> None:
    price = one_time_price(stripe_client)
    with pytest.raises(stripe.InvalidRequestError) as info:
        payment_session(stripe_client, price.id, **change)
    err = error_of(info.value)
    assert err["param"] == param and fragment in err["message"], err


def test_too_small_a_payment_is_refused(stripe_client: stripe.StripeClient) -> None:
    price = one_time_price(stripe_client, 20)
    with pytest.raises(stripe.InvalidRequestError) as info:
        payment_session(stripe_client, price.id, quantity=1)
    assert "at least $0.50 usd" in error_of(info.value)["message"]


# --- the payment page ---------------------------------------------------------------------------------


def test_confirm_pays_the_session_with_stripes_events(stripe_client: stripe.StripeClient) -> None:
    session = payment_session(stripe_client, one_time_price(stripe_client).id)
    page = stripe_client.raw_request("get", f"/v1/payment_pages/{session.id}")
    assert json.loads(page.body)["id"] == session.id
    method = card(stripe_client)
    before = event_types(stripe_client)

    answer = confirm(stripe_client, session.id, method.id, 3000)
    assert (answer["id"], answer["status"], answer["payment_status"]) == (session.id, "complete", "paid")
    assert new_types(stripe_client, before) == PAID

    done = stripe_client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["payment_intent"]})
    intent = done.payment_intent
    assert isinstance(intent, stripe.PaymentIntent)
    assert (intent.status, intent.amount, intent.amount_received, intent.currency) == (
        "succeeded",
        3000,
        3000,
        "usd",
    )
    assert (intent.description, intent.metadata.to_dict()) == ("Order 42", {"order": "42"})
    assert intent.shipping is not None and intent.shipping.name == "Jenny Rosen"
    assert intent.payment_method == method.id and intent.customer is None
    charge = stripe_client.v1.charges.retrieve(str(intent.latest_charge))
    assert (charge.status, charge.amount, charge.paid) == ("succeeded", 3000, True)
    assert done.customer is None  # customer_creation=if_required: none is needed to pay
    assert done.customer_details is not None
    assert (done.customer_details.email, done.customer_details.name) == ("stripe@example.com", "Jenny Rosen")
    completed = stripe_client.v1.events.list(params={"type": "checkout.session.completed"}).data[0]
    assert completed.data.object["payment_intent"] == intent.id

    with pytest.raises(stripe.InvalidRequestError) as info:  # a complete session takes no second payment
        confirm(stripe_client, session.id, card(stripe_client).id, 3000)
    assert "no longer active" in error_of(info.value)["message"]


def test_a_wrong_expected_amount_is_refused_and_nothing_is_made(stripe_client: stripe.StripeClient) -> None:
    session = payment_session(stripe_client, one_time_price(stripe_client).id)
    method = card(stripe_client)
    before = event_types(stripe_client)
    with pytest.raises(stripe.InvalidRequestError) as info:
        confirm(stripe_client, session.id, method.id, 1500)
    assert error_of(info.value)["param"] == "expected_amount"
    assert new_types(stripe_client, before) == []
    assert stripe_client.v1.checkout.sessions.retrieve(session.id).status == "open"
    assert stripe_client.v1.payment_intents.list().data == []
    with pytest.raises(stripe.InvalidRequestError) as info:
        stripe_client.raw_request("post", f"/v1/payment_pages/{session.id}/confirm", payment_method=method.id)
    assert error_of(info.value)["code"] == "parameter_missing"


def test_a_declined_card_is_a_402_and_another_card_pays_the_same_payment_intent(
    stripe_client: stripe.StripeClient,
) -> None:
    session = payment_session(stripe_client, one_time_price(stripe_client).id)
    before = event_types(stripe_client)
    declined = card(stripe_client, "tok_chargeDeclined")
    with pytest.raises(stripe.CardError) as info:
        confirm(stripe_client, session.id, declined.id, 3000)
    assert info.value.http_status == 402
    err = error_of(info.value)
    assert (err["type"], err["code"], err["decline_code"]) == (
        "card_error",
        "card_declined",
        "generic_decline",
    )
    assert new_types(stripe_client, before) == [
        "payment_intent.created",
        "charge.failed",
        "payment_intent.payment_failed",
    ]
    still_open = stripe_client.v1.checkout.sessions.retrieve(session.id)
    assert still_open.status == "open" and still_open.payment_intent == err["payment_intent"]["id"]
    with pytest.raises(stripe.InvalidRequestError) as reused:  # used once without a customer: spent
        confirm(stripe_client, session.id, declined.id, 3000)
    assert "may not be used again" in error_of(reused.value)["message"]

    before = event_types(stripe_client)
    confirm(stripe_client, session.id, card(stripe_client).id, 3000)
    assert new_types(stripe_client, before) == [
        "charge.succeeded",
        "payment_intent.succeeded",
        "checkout.session.completed",
    ]
    done = stripe_client.v1.checkout.sessions.retrieve(session.id)
    assert done.status == "complete" and done.payment_intent == still_open.payment_intent
    assert stripe_client.v1.payment_intents.retrieve(str(done.payment_intent)).status == "succeeded"


@pytest.mark.parametrize(
    "token", ["tok_threeDSecure2Required", "tok_authenticationRequiredSetupForOffSession"]
)
def test_a_3d_secure_card_waits_for_authentication(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient, token: str
) -> None:
    session = payment_session(stripe_client, one_time_price(stripe_client).id)
    answer = confirm(stripe_client, session.id, card(stripe_client, token).id, 3000)
    assert answer["status"] == "open"
    intent = stripe_client.v1.payment_intents.retrieve(answer["payment_intent"])
    assert intent.status == "requires_action" and intent.next_action is not None
    assert "checkout.session.completed" not in event_types(stripe_client)

    status, done = admin(emulator.url, f"/_emulator/payment_intents/{intent.id}/authenticate", {})
    assert status == 200 and done["checkout_session"]["status"] == "complete", done
    assert stripe_client.v1.payment_intents.retrieve(intent.id).status == "succeeded"
    assert event_types(stripe_client)[-3:] == [
        "charge.succeeded",
        "payment_intent.succeeded",
        "checkout.session.completed",
    ]


def test_setup_future_usage_saves_the_card_and_manual_capture_leaves_it_unpaid(
    stripe_client: stripe.StripeClient,
) -> None:
    customer = stripe_client.v1.customers.create(params={"email": "buyer@kuploy.example"})
    session = payment_session(
        stripe_client,
        one_time_price(stripe_client).id,
        customer=customer.id,
        payment_intent_data={"setup_future_usage": "off_session", "capture_method": "manual"},
    )
    method = card(stripe_client)
    before = event_types(stripe_client)
    answer = confirm(stripe_client, session.id, method.id, 3000)
    assert (answer["status"], answer["payment_status"]) == ("complete", "unpaid")
    intent = stripe_client.v1.payment_intents.retrieve(str(answer["payment_intent"]))
    assert (intent.status, intent.amount_capturable, intent.customer) == (
        "requires_capture",
        3000,
        customer.id,
    )
    assert intent.setup_future_usage == "off_session"
    assert stripe_client.v1.payment_methods.retrieve(method.id).customer == customer.id
    assert new_types(stripe_client, before) == [
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.amount_capturable_updated",
        "payment_method.attached",
        "checkout.session.completed",
    ]
    assert answer["customer_details"]["email"] == "buyer@kuploy.example"


def test_customer_creation_always_makes_a_customer(stripe_client: stripe.StripeClient) -> None:
    session = payment_session(stripe_client, one_time_price(stripe_client).id, customer_creation="always")
    before = event_types(stripe_client)
    answer = confirm(stripe_client, session.id, card(stripe_client).id, 3000)
    assert new_types(stripe_client, before) == ["customer.created", *PAID]
    customer = stripe_client.v1.customers.retrieve(str(answer["customer"]))
    assert (customer.email, customer.name) == ("stripe@example.com", "Jenny Rosen")
    assert stripe_client.v1.payment_intents.retrieve(answer["payment_intent"]).customer == customer.id


def test_the_admin_page_pays_a_payment_session_too(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    session = payment_session(stripe_client, one_time_price(stripe_client).id)
    before = event_types(stripe_client)
    status, answer = admin(
        emulator.url, f"/_emulator/checkout/{session.id}/complete", {"card": "4000000000009995"}
    )
    assert status == 200 and answer["outcome"] == "declined"
    assert answer["error"]["decline_code"] == "insufficient_funds"
    status, answer = admin(
        emulator.url, f"/_emulator/checkout/{session.id}/complete", {"card": "4242424242424242"}
    )
    assert status == 200 and answer["outcome"] == "succeeded"
    assert answer["checkout_session"]["status"] == "complete"
    assert new_types(stripe_client, before)[-3:] == PAID[1:]


# --- subscription mode through the payment page -----------------------------------------------------


def test_confirm_pays_a_subscription_session(stripe_client: stripe.StripeClient) -> None:
    product = stripe_client.v1.products.create(params={"name": "Pro"})
    price = stripe_client.v1.prices.create(
        params={
            "product": product.id,
            "unit_amount": 2000,
            "currency": "usd",
            "recurring": {"interval": "month"},
        }
    )
    session = stripe_client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "success_url": "https://kuploy.example/ok",
            "line_items": [{"price": price.id, "quantity": 1}],
            "client_reference_id": "org_7",
        }
    )
    method = card(stripe_client)
    before = event_types(stripe_client)
    with pytest.raises(stripe.InvalidRequestError):
        confirm(stripe_client, session.id, method.id, 1999)
    answer = confirm(stripe_client, session.id, method.id, 2000)
    assert (answer["status"], answer["payment_status"]) == ("complete", "paid")
    assert new_types(stripe_client, before) == PAID_SUBSCRIPTION_CHECKOUT
    sub = stripe_client.v1.subscriptions.retrieve(str(answer["subscription"]))
    assert sub.status == "active" and sub.default_payment_method == method.id
    assert stripe_client.v1.invoices.retrieve(str(answer["invoice"])).status == "paid"
    assert stripe_client.v1.customers.retrieve(str(sub.customer)).email == "stripe@example.com"

    declined = stripe_client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "success_url": "https://kuploy.example/ok",
            "line_items": [{"price": price.id, "quantity": 1}],
        }
    )
    with pytest.raises(stripe.CardError) as info:
        confirm(stripe_client, declined.id, card(stripe_client, "tok_chargeDeclined").id, 2000)
    assert error_of(info.value)["decline_code"] == "generic_decline"
    assert stripe_client.v1.checkout.sessions.retrieve(declined.id).status == "open"


# --- setup mode -------------------------------------------------------------------------------------


def test_setup_mode_saves_a_card_for_the_customer(stripe_client: stripe.StripeClient) -> None:
    customer = stripe_client.v1.customers.create(params={"email": "saver@kuploy.example"})
    session = stripe_client.v1.checkout.sessions.create(
        params={
            "mode": "setup",
            "currency": "usd",
            "customer": customer.id,
            "success_url": "https://kuploy.example/ok",
            "setup_intent_data": {"description": "Card on file", "metadata": {"k": "v"}},
        }
    )
    assert (session.mode, session.payment_status, session.amount_total) == (
        "setup",
        "no_payment_required",
        None,
    )
    intent = stripe_client.v1.setup_intents.retrieve(str(session.setup_intent))
    assert (intent.status, intent.customer, intent.description, intent.usage) == (
        "requires_payment_method",
        customer.id,
        "Card on file",
        "off_session",
    )
    method = card(stripe_client)
    before = event_types(stripe_client)
    answer = confirm(stripe_client, session.id, method.id, 0)
    assert answer["status"] == "complete"
    assert new_types(stripe_client, before) == [
        "payment_method.attached",
        "setup_intent.succeeded",
        "checkout.session.completed",
    ]
    done = stripe_client.v1.setup_intents.retrieve(intent.id)
    assert (done.status, done.payment_method) == ("succeeded", method.id)
    assert stripe_client.v1.payment_methods.retrieve(method.id).customer == customer.id
    assert [i.id for i in stripe_client.v1.setup_intents.list(params={"customer": customer.id}).data] == [
        intent.id
    ]


def test_setup_mode_3d_secure_and_refusals(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    base: dict[str, Any] = {"mode": "setup", "success_url": "https://kuploy.example/ok"}
    with pytest.raises(stripe.InvalidRequestError) as info:
        stripe_client.v1.checkout.sessions.create(params=cast(Any, base))
    assert error_of(info.value)["param"] == "currency"
    session = stripe_client.v1.checkout.sessions.create(params=cast(Any, {**base, "currency": "usd"}))
    with pytest.raises(stripe.CardError):
        confirm(stripe_client, session.id, card(stripe_client, "tok_chargeDeclined").id, 0)
    assert (
        stripe_client.v1.setup_intents.retrieve(str(session.setup_intent)).status == "requires_payment_method"
    )
    answer = confirm(
        stripe_client, session.id, card(stripe_client, "tok_authenticationRequiredSetupForOffSession").id, 0
    )
    assert answer["status"] == "open"
    status, done = admin(emulator.url, f"/_emulator/setup_intents/{session.setup_intent}/authenticate", {})
    assert status == 200 and done["checkout_session"]["status"] == "complete", done
    assert done["setup_intent"]["status"] == "succeeded"
