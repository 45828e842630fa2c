"""API versions: an answer comes in the version the request pins with `Stripe-Version` (else the
account's default, the SDK's pinned version), and a webhook endpoint created with `api_version` gets
its events in that version. The shapes are checked against Stripe's own contract for 2023-08-16 (the
OpenAPI spec's required fields) and the SDK's typed classes for the current version; the changes
between them are Stripe's changelog entries for 2024-04-10 and 2025-03-31.basil."""

from __future__ import annotations

from typing import Any, Final

import pytest
import stripe

from reconciler.sandbox.emulator import RunningEmulator

from conftest import TEST_KEY
from test_emulator_checkout import (
    OK_CARD,
    WAIT,
    Receiver,
    complete,
    monthly_price,
    new_session,
)

OLD: Final = "2023-08-16"


def pinned(emulator: RunningEmulator, version: str) -> stripe.StripeClient:
    return stripe.StripeClient(
        TEST_KEY, base_addresses={"api": emulator.url}, stripe_version=version, max_network_retries=0
    )


def paid_subscription(client: stripe.StripeClient, emulator: RunningEmulator) -> str:
    price = monthly_price(client)
    session = new_session(client, price.id)
    complete(emulator, session.id, OK_CARD)
    done = client.v1.checkout.sessions.retrieve(session.id)
    assert done.subscription is not None
    return str(done.subscription if isinstance(done.subscription, str) else done.subscription.id)


def _json(client: stripe.StripeClient, path: str, params: dict[str, Any]) -> dict[str, Any]:
    """The answer as plain JSON, so a removed field is seen as absent."""
    response = client.raw_request("get", path, **params)
    return client.deserialize(response, api_mode="V1").to_dict()


def test_old_version_gets_old_subscription_and_invoice_shapes(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    sub_id = paid_subscription(stripe_client, emulator)
    old = pinned(emulator, OLD)
    sub = _json(old, f"/v1/subscriptions/{sub_id}", {"expand": ["latest_invoice"]})
    item = sub["items"]["data"][0]
    # 2023-08-16: the billing period is on the subscription, not on its items.
    assert isinstance(sub["current_period_start"], int) and isinstance(sub["current_period_end"], int)
    assert sub["current_period_end"] > sub["current_period_start"]
    assert "current_period_end" not in item
    invoice = sub["latest_invoice"]
    assert invoice["subscription"] == sub_id
    assert invoice["paid"] is True and invoice["status"] == "paid"
    assert "payment_intent" in invoice and "charge" in invoice
    assert "parent" not in invoice and "confirmation_secret" not in invoice
    line = invoice["lines"]["data"][0]
    assert line["type"] == "subscription" and line["subscription"] == sub_id
    assert line["price"]["object"] == "price" and line["plan"]["object"] == "plan"
    assert "pricing" not in line and "parent" not in line


def test_current_version_gets_the_new_shapes(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    sub_id = paid_subscription(stripe_client, emulator)
    sub = _json(stripe_client, f"/v1/subscriptions/{sub_id}", {"expand": ["latest_invoice"]})
    assert "current_period_end" not in sub
    assert isinstance(sub["items"]["data"][0]["current_period_end"], int)
    invoice = sub["latest_invoice"]
    assert invoice["parent"]["subscription_details"]["subscription"] == sub_id
    for gone in ("subscription", "paid", "payment_intent", "charge"):
        assert gone not in invoice


def test_product_features_before_2024_04_10(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    product = stripe_client.v1.products.create(params={"name": "P", "marketing_features": [{"name": "Fast"}]})
    old = _json(pinned(emulator, OLD), f"/v1/products/{product.id}", {})
    assert old["features"] == [{"name": "Fast"}] and "marketing_features" not in old
    new = _json(stripe_client, f"/v1/products/{product.id}", {})
    assert new["marketing_features"] == [{"name": "Fast"}] and "features" not in new


def test_the_answer_names_its_version(emulator: RunningEmulator) -> None:
    old = pinned(emulator, OLD)
    product = old.v1.products.create(params={"name": "P"})
    assert product.last_response is not None
    assert product.last_response.headers["Stripe-Version"] == OLD


def test_a_newer_sdks_pin_gets_the_newest_shape(emulator: RunningEmulator) -> None:
    """stripe-node 23.2.0 pins 2026-11-18.endive, after the Python SDK's 2026-10-28.endive."""
    newer = pinned(emulator, "2026-11-18.endive")
    product = newer.v1.products.create(params={"name": "P", "marketing_features": [{"name": "Fast"}]})
    assert product.marketing_features[0].name == "Fast"


@pytest.mark.parametrize("version", ["2023-13-45", "yesterday", "2999-01-01", "2019-12-03"])
def test_unknown_or_unmodelled_versions_are_refused(emulator: RunningEmulator, version: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        pinned(emulator, version).v1.products.list()
    assert caught.value.http_status == 400
    assert version in str(caught.value.user_message)


def test_an_endpoint_pinned_to_an_old_version_gets_old_shapes(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    receiver = Receiver()
    try:
        old_hook = stripe_client.v1.webhook_endpoints.create(
            params={"url": receiver.url, "enabled_events": ["*"], "api_version": OLD}
        )
        assert old_hook.api_version == OLD
        sub_id = paid_subscription(stripe_client, emulator)
        assert emulator.emulator.wait_for_deliveries(WAIT)
        delivered = receiver.events(str(old_hook.secret))
    finally:
        receiver.close()
    assert delivered and all(e.api_version == OLD for e in delivered)
    created = next(e for e in delivered if e.type == "customer.subscription.created").data.object
    assert created["current_period_end"] and "current_period_end" not in created["items"]["data"][0]
    paid = next(e for e in delivered if e.type == "invoice.paid").data.object
    assert paid["subscription"] == sub_id and paid["paid"] is True
    # The same events read through the API keep the account's default version.
    listed = stripe_client.v1.events.list(params={"type": "invoice.paid"}).data[0]
    assert listed.api_version == stripe.api_version
    assert "subscription" not in listed.data.object.to_dict()
