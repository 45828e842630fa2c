"""`POST /v1/events/{id}/retry` (what `stripe events resend` calls) through the SDK: the same event sent
again to one webhook endpoint, in its API version and signed anew with its secret, or to the `stripe
listen` sessions; and Stripe's errors for what cannot be resent. The real CLI drives the same route in
tests/test_stripe_cli_listen.py."""

from __future__ import annotations

import json
import time
from typing import Any, cast

import pytest
import stripe

from reconciler.sandbox.emulator import RunningEmulator

from test_emulator_checkout import KEY, WAIT, Receiver, client, receiver, running
from test_emulator_listen_sessions import next_event, session_of, websocket

__all__ = ["client", "receiver", "running"]  # the fixtures of the checkout tests: a fast-retrying emulator
OLD_VERSION = "2025-02-24.acacia"


def retry(client: stripe.StripeClient, event_id: str, **params: Any) -> stripe.StripeObject:
    answer = client.raw_request("post", f"/v1/events/{event_id}/retry", **params)
    return client.deserialize(answer, api_mode="V1")


def refused(client: stripe.StripeClient, event_id: str, **params: Any) -> stripe.StripeError:
    with pytest.raises(stripe.StripeError) as caught:
        retry(client, event_id, **params)
    return caught.value


def endpoint(client: stripe.StripeClient, url: str, api_version: str | None = None) -> stripe.WebhookEndpoint:
    params: stripe.params.WebhookEndpointCreateParams = {"url": url, "enabled_events": ["product.created"]}
    if api_version is not None:
        params["api_version"] = cast(Any, api_version)
    return client.v1.webhook_endpoints.create(params=params)


def test_retry_sends_the_same_event_again_in_the_endpoints_version_signed_anew(
    running: RunningEmulator, client: stripe.StripeClient, receiver: Receiver
) -> None:
    hook = endpoint(client, receiver.url, api_version=OLD_VERSION)
    product = client.v1.products.create(params={"name": "Resent"})
    assert running.emulator.wait_for_deliveries(WAIT)
    (event,) = client.v1.events.list().data
    time.sleep(1.1)  # a later second: the new signature's timestamp differs

    answer = retry(client, event.id, webhook_endpoint=hook.id)

    assert (answer["object"], answer["id"], answer["type"]) == ("event", event.id, "product.created")
    assert running.emulator.wait_for_deliveries(WAIT)
    first, again = receiver.events(str(hook.secret))
    assert again.id == first.id == event.id
    assert again.api_version == OLD_VERSION and again.data.object.id == product.id
    sent, resent = (json.loads(body) for _, body, _ in receiver.received)
    assert (sent.pop("pending_webhooks"), resent.pop("pending_webhooks")) == (1, 0)  # counted now
    assert resent == sent  # the same event, payload and all
    signatures = [headers["Stripe-Signature"] for headers, _, _ in receiver.received]
    assert signatures[0] != signatures[1]


def test_retry_to_the_cli_pushes_the_event_to_the_listen_sessions(
    running: RunningEmulator, client: stripe.StripeClient
) -> None:
    product = client.v1.products.create(params={"name": "Missed"})  # no session was listening
    (event,) = client.v1.events.list().data
    session = session_of(running.url, KEY)
    with websocket(session) as ws:
        assert retry(client, event.id, for_stripecli="true")["id"] == event.id
        message = next_event(ws)
    pushed = stripe.Webhook.construct_event(
        message["event_payload"], message["http_headers"]["Stripe-Signature"], session["secret"]
    )
    assert (pushed.id, pushed.data.object.id) == (event.id, product.id)


def test_what_cannot_be_resent_is_refused(
    running: RunningEmulator, client: stripe.StripeClient, receiver: Receiver
) -> None:
    hook = endpoint(client, receiver.url)
    client.v1.customers.create(params={"email": "not-subscribed@example.com"})
    (event,) = client.v1.events.list().data

    unknown = refused(client, "evt_unknown", webhook_endpoint=hook.id)
    assert unknown.http_status == 404 and unknown.code == "resource_missing"
    assert unknown.user_message == "No such notification: 'evt_unknown'"  # Stripe's words
    assert unknown.error is not None and unknown.error.param == "id"

    no_endpoint = refused(client, event.id, webhook_endpoint="we_unknown")
    assert no_endpoint.http_status == 404 and no_endpoint.code == "resource_missing"
    assert no_endpoint.user_message == "No such webhook endpoint: 'we_unknown'"
    assert no_endpoint.error is not None and no_endpoint.error.param == "webhook_endpoint"

    not_subscribed = refused(client, event.id, webhook_endpoint=hook.id)
    assert not_subscribed.http_status == 400 and "customer.created" in str(not_subscribed.user_message)

    client.v1.webhook_endpoints.update(hook.id, params={"disabled": True, "enabled_events": ["*"]})
    disabled = refused(client, event.id, webhook_endpoint=hook.id)
    assert disabled.http_status == 400 and "disabled" in str(disabled.user_message)

    for params in ({}, {"webhook_endpoint": hook.id, "for_stripecli": "true"}, {"account": "acct_1"}):
        assert refused(client, event.id, **params).http_status == 400, params
    assert running.emulator.wait_for_deliveries(WAIT)
    assert receiver.received == []
