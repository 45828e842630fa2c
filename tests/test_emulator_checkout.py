"""The emulator's checkout flow: sessions, test cards, invoices, events and signed webhook deliveries.

Driven through the real `stripe` SDK over HTTP; webhooks land on a small HTTP receiver in a thread and are
verified with `stripe.Webhook.construct_event`. Waiting is done with `wait_for_deliveries` (a bounded wait
for the delivery queue to drain), never with sleeps or timing assertions.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
import stripe

from reconciler.sandbox.emulator import (
    USER_AGENT,
    DeliverySettings,
    Emulator,
    FaultSettings,
    RunningEmulator,
    sign,
    start_in_thread,
)

from conftest import PAID_SUBSCRIPTION_CHECKOUT

KEY = "sk_test_checkout"
OK_CARD = "4242 4242 4242 4242"
DECLINED_CARD = "4000 0000 0000 0002"
THREE_DS_CARD = "4000 0000 0000 3220"
LEGACY_VERSION = "2025-02-24.acacia"  # before 2025-03-31.basil: Checkout's incomplete-subscription flow
WAIT = 30.0  # an upper bound for the delivery queue to drain, never a timing assertion

# What Stripe sends for a paid subscription Checkout (see the emulator's module notes for the sources).
PAID_CHECKOUT = PAID_SUBSCRIPTION_CHECKOUT


# --- a webhook receiver ----------------------------------------------------------------------------


class Receiver:
    """Collects POSTed webhooks; answers with the queued statuses first, then 200."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.received: list[tuple[dict[str, str], bytes, int]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.received.append((dict(self.headers.items()), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/webhooks/stripe"

    def events(self, secret: str) -> list[stripe.Event]:
        """Every delivery answered 200, verified with the endpoint's secret, in arrival order."""
        with self.lock:
            delivered = [(h, b) for h, b, status in self.received if status == 200]
        return [
            stripe.Webhook.construct_event(b.decode(), h["Stripe-Signature"], secret) for h, b in delivered
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def running() -> Iterator[RunningEmulator]:
    with start_in_thread(deliveries=DeliverySettings(retry_delays=(0.05, 0.1, 0.2))) as run:
        yield run


@pytest.fixture
def client(running: RunningEmulator) -> stripe.StripeClient:
    return stripe.StripeClient(KEY, base_addresses={"api": running.url}, max_network_retries=0)


# --- helpers ---------------------------------------------------------------------------------------


def admin(url: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=WAIT + 10)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def complete(running: RunningEmulator, session_id: str, card: str, **extra: Any) -> dict[str, Any]:
    status, body = admin(
        running.url, "POST", f"/_emulator/checkout/{session_id}/complete", {"card": card, **extra}
    )
    assert status == 200, body
    return cast(dict[str, Any], body)


def authenticate(running: RunningEmulator, intent: str, outcome: str = "succeeded") -> dict[str, Any]:
    status, body = admin(
        running.url, "POST", f"/_emulator/payment_intents/{intent}/authenticate", {"outcome": outcome}
    )
    assert status == 200, body
    return cast(dict[str, Any], body)


def monthly_price(client: stripe.StripeClient, amount: int = 2000) -> stripe.Price:
    product = client.v1.products.create(params={"name": "Pro", "metadata": {"kuploy_plan": "pro"}})
    return client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": "month"},
        }
    )


def endpoint(
    client: stripe.StripeClient, url: str, events: list[str] | None = None
) -> stripe.WebhookEndpoint:
    return client.v1.webhook_endpoints.create(
        params={"url": url, "enabled_events": cast(Any, events or ["*"])}
    )


def new_session(
    client: stripe.StripeClient, price: str, *, version: str | None = None, **params: Any
) -> stripe.checkout.Session:
    base: dict[str, Any] = {
        "mode": "subscription",
        "line_items": [{"price": price, "quantity": 1}],
        "client_reference_id": "org_42",
        "success_url": "https://kuploy.example/billing/success?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://kuploy.example/billing",
        "customer_email": "owner@kuploy.example",
        "metadata": {"organizationId": "org_42"},
        "subscription_data": {"metadata": {"organizationId": "org_42"}},
    }
    base.update(params)
    options: dict[str, Any] = {"stripe_version": version} if version else {}
    return client.v1.checkout.sessions.create(params=cast(Any, base), options=cast(Any, options))


def event_types(client: stripe.StripeClient, after: int = 0) -> list[str]:
    """Types of all events, oldest first, skipping the first `after`."""
    events = list(client.v1.events.list(params={"limit": 100}).auto_paging_iter())
    return [str(e.type) for e in reversed(events)][after:]


def events_so_far(client: stripe.StripeClient) -> int:
    return len(list(client.v1.events.list(params={"limit": 100}).auto_paging_iter()))


def error_of(exc: stripe.StripeError) -> dict[str, Any]:
    body = exc.json_body
    assert isinstance(body, dict)
    return cast(dict[str, Any], body["error"])


# --- checkout sessions -----------------------------------------------------------------------------


def test_session_create_retrieve_list_and_expand(
    running: RunningEmulator, client: stripe.StripeClient
) -> None:
    price = monthly_price(client)
    session = new_session(client, price.id)
    assert session.id.startswith("cs_test_")
    assert session.status == "open" and session.payment_status == "unpaid" and session.mode == "subscription"
    assert session.url == f"{running.url}/_emulator/checkout/{session.id}"
    assert session.client_reference_id == "org_42" and session.customer_email == "owner@kuploy.example"
    assert session.amount_total == 2000 and session.currency == "usd"
    assert session.subscription is None and session.customer is None
    assert session.expires_at - session.created == 24 * 3600
    assert "line_items" not in session

    got = client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["line_items"]})
    items = got["line_items"]["data"]
    assert [(i["price"]["id"], i["quantity"], i["amount_total"]) for i in items] == [(price.id, 1, 2000)]

    page = client.v1.checkout.sessions.list(params={"status": "open", "limit": 5})
    assert [s.id for s in page.data] == [session.id]
    assert client.v1.checkout.sessions.list(params={"status": "complete"}).data == []

    # The URL it gives is served by the emulator: a stand-in for Stripe's hosted page.
    status, page_body = admin(running.url, "GET", f"/_emulator/checkout/{session.id}")
    assert status == 200 and page_body["checkout_session"]["id"] == session.id
    assert page_body["test_cards"]["4000000000003220"] == "requires_action"


@pytest.mark.parametrize(
    ("params", "param", "fragment"),
    [
        ({"mode": None}, "mode", "Missing required param"),
        ({"success_url": None}, "success_url", "Missing required param"),
        ({"mode": "payment"}, "line_items[0][price]", "passed a recurring price"),
        ({"mode": "payment", "subscription_data": {"description": "x"}}, "subscription_data", "in `payment`"),
        ({"payment_intent_data": {"description": "x"}}, "payment_intent_data", "in `subscription` mode"),
        ({"customer_creation": "always"}, "customer_creation", "only be used in `payment` and `setup`"),
        ({"customer": "cus_missing", "customer_email": None}, "customer", "No such customer"),
        ({"customer": "cus_x"}, "customer_email", "only specify one of"),
        ({"line_items": [{"price": "PRICE"}]}, "line_items[0][quantity]", "Missing required param"),
        ({"line_items": []}, "line_items", "required in `subscription` mode"),
        ({"success_url": "not a url"}, "success_url", "Not a valid URL"),
        ({"customer_email": "nope"}, "customer_email", "Invalid email"),
        ({"allow_promotion_codes": True}, "allow_promotion_codes", "does not model"),
        (
            {"subscription_data": {"trial_period_days": 7}},
            "subscription_data[trial_period_days]",
            "does not model",
        ),
        (
            {"line_items": [{"price": "PRICE", "quantity": 1, "adjustable_quantity": {"enabled": True}}]},
            "line_items[0][adjustable_quantity]",
            "does not model",
        ),
    ],
)
def test_session_create_errors(
    client: stripe.StripeClient, params: dict[str, Any], param: str, fragment: str
) -> None:
    price = monthly_price(client)
    fixed = json.loads(json.dumps(params).replace("PRICE", price.id))
    base: dict[str, Any] = {
        "mode": "subscription",
        "line_items": [{"price": price.id, "quantity": 1}],
        "customer_email": "a@kuploy.example",
        "success_url": "https://kuploy.example/ok",
    }
    base.update(fixed)
    base = {k: v for k, v in base.items() if v is not None}
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.checkout.sessions.create(params=cast(Any, base))
    err = error_of(info.value)
    assert err["param"] == param and fragment in err["message"], err


def test_one_time_price_and_unknown_parameter_are_refused(client: stripe.StripeClient) -> None:
    product = client.v1.products.create(params={"name": "Setup fee"})
    one_time = client.v1.prices.create(params={"product": product.id, "currency": "usd", "unit_amount": 500})
    with pytest.raises(stripe.InvalidRequestError) as info:
        new_session(client, one_time.id)
    assert "type=recurring" in error_of(info.value)["message"]
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.raw_request("post", "/v1/checkout/sessions", mode="subscription", coupon="X")
    assert error_of(info.value)["code"] == "parameter_unknown"


def test_expire_and_completing_an_expired_session(
    running: RunningEmulator, client: stripe.StripeClient
) -> None:
    session = new_session(client, monthly_price(client).id)
    expired = client.v1.checkout.sessions.expire(session.id)
    assert expired.status == "expired"
    assert event_types(client)[-1] == "checkout.session.expired"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.expire(session.id)
    status, body = admin(running.url, "POST", f"/_emulator/checkout/{session.id}/complete", {"card": OK_CARD})
    assert status == 400 and "expired" in body["error"]["message"]


# --- the three test cards (API 2025-03-31.basil and later: the SDK's pinned version) ----------------


def test_4242_creates_the_objects_and_sends_stripes_sequence(
    running: RunningEmulator, client: stripe.StripeClient, receiver: Receiver
) -> None:
    price = monthly_price(client)
    hook = endpoint(client, receiver.url)
    assert hook.secret is not None and hook.secret.startswith("whsec_")
    assert "secret" not in client.v1.webhook_endpoints.retrieve(hook.id).to_dict()  # shown once, like Stripe
    session = new_session(client, price.id)
    before = events_so_far(client)

    answer = complete(running, session.id, OK_CARD, name="Org 42")
    assert answer["outcome"] == "succeeded"
    assert event_types(client, before) == PAID_CHECKOUT

    done = client.v1.checkout.sessions.retrieve(session.id)
    assert done.status == "complete" and done.payment_status == "paid"
    assert done.customer_details is not None and done.customer_details.email == "owner@kuploy.example"
    sub = client.v1.subscriptions.retrieve(str(done.subscription), params={"expand": ["latest_invoice"]})
    assert sub.status == "active" and sub.customer == done.customer
    assert sub.metadata.to_dict() == {"organizationId": "org_42"}
    assert sub["items"].data[0].price.id == price.id
    invoice = cast(stripe.Invoice, sub.latest_invoice)
    assert invoice.id == done.invoice
    assert invoice.status == "paid" and invoice.amount_paid == 2000 and invoice.amount_remaining == 0
    assert invoice.billing_reason == "subscription_create" and invoice.number is not None
    assert invoice.parent is not None and invoice.parent.subscription_details is not None
    assert invoice.parent.subscription_details.subscription == sub.id
    customer = client.v1.customers.retrieve(str(done.customer))
    assert customer.email == "owner@kuploy.example" and customer.name == "Org 42"

    # Delivered, signed, in creation order, with Stripe's headers.
    assert running.emulator.wait_for_deliveries(WAIT)
    delivered = receiver.events(str(hook.secret))
    types = [e.type for e in delivered]
    assert types[-len(PAID_CHECKOUT) :] == PAID_CHECKOUT
    completed = delivered[-1]
    assert completed.data.object["client_reference_id"] == "org_42"
    assert completed.data.object["subscription"] == sub.id
    headers = receiver.received[-1][0]
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers["User-Agent"] == USER_AGENT
    # Every delivery succeeded, so no webhook is pending any more.
    assert client.v1.events.retrieve(completed.id).pending_webhooks == 0
    # The snapshots are of their moment: the subscription was created active, the invoice created draft.
    by_type = {e.type: e for e in delivered}
    assert by_type["invoice.created"].data.object["status"] == "draft"
    assert by_type["invoice.finalized"].data.object["status"] == "open"
    assert by_type["invoice.paid"].data.object["status"] == "paid"
    assert by_type["customer.subscription.created"].data.object["status"] == "active"
    assert all(e.request and e.request.id is None for e in delivered[-len(PAID_CHECKOUT) :])  # automatic


def test_0002_is_declined_in_checkout_and_nothing_is_created(
    running: RunningEmulator, client: stripe.StripeClient
) -> None:
    session = new_session(client, monthly_price(client).id)
    before = events_so_far(client)
    answer = complete(running, session.id, DECLINED_CARD)
    assert answer["outcome"] == "declined"
    assert answer["error"]["code"] == "card_declined" and answer["error"]["decline_code"] == "generic_decline"
    assert answer["checkout_session"]["status"] == "open"
    # Only the attempt stands: its PaymentIntent and failed Charge.
    assert event_types(client, before) == [
        "payment_intent.created",
        "charge.failed",
        "payment_intent.payment_failed",
    ]
    assert client.v1.customers.list().data == [] and client.v1.subscriptions.list().data == []
    assert client.v1.invoices.list().data == []
    [intent] = client.v1.payment_intents.list().data
    assert intent.id == answer["payment_intent"] and intent.status == "requires_payment_method"
    # The customer tries another card on the same page: the same PaymentIntent goes through.
    paid = complete(running, session.id, OK_CARD)
    assert paid["outcome"] == "succeeded" and paid["payment_intent"] == intent.id
    assert event_types(client, before) == [
        "payment_intent.created",
        "charge.failed",
        "payment_intent.payment_failed",
        *PAID_CHECKOUT[1:],
    ]


def test_3220_waits_for_3d_secure_then_completes(
    running: RunningEmulator, client: stripe.StripeClient
) -> None:
    session = new_session(client, monthly_price(client).id)
    before = events_so_far(client)
    answer = complete(running, session.id, THREE_DS_CARD)
    assert answer["outcome"] == "requires_action" and answer["payment_intent"].startswith("pi_")
    assert answer["checkout_session"]["status"] == "open"
    # Nothing but the PaymentIntent exists until the payment succeeds.
    assert event_types(client, before) == ["payment_intent.created", "payment_intent.requires_action"]
    assert client.v1.subscriptions.list(params={"status": "all"}).data == []

    done = authenticate(running, answer["payment_intent"])
    assert done["outcome"] == "succeeded" and done["checkout_session"]["status"] == "complete"
    assert event_types(client, before) == [
        "payment_intent.created",
        "payment_intent.requires_action",
        *PAID_CHECKOUT[1:],
    ]
    assert client.v1.subscriptions.retrieve(done["subscription"]).status == "active"
    status, body = admin(
        running.url, "POST", f"/_emulator/payment_intents/{answer['payment_intent']}/authenticate", {}
    )
    assert status == 400 and "not requires_action" in body["error"]["message"]


def test_3220_failed_authentication_leaves_the_session_open(
    running: RunningEmulator, client: stripe.StripeClient
) -> None:
    session = new_session(client, monthly_price(client).id)
    before = events_so_far(client)
    intent = complete(running, session.id, THREE_DS_CARD)["payment_intent"]
    failed = authenticate(running, intent, "failed")
    assert failed["outcome"] == "failed" and failed["checkout_session"]["status"] == "open"
    assert event_types(client, before) == [
        "payment_intent.created",
        "payment_intent.requires_action",
        "payment_intent.payment_failed",
    ]
    assert client.v1.subscriptions.list(params={"status": "all"}).data == []


# --- before 2025-03-31.basil: incomplete subscriptions with an open first invoice ------------------


def test_legacy_3220_is_incomplete_until_authenticated(
    running: RunningEmulator, client: stripe.StripeClient
) -> None:
    session = new_session(client, monthly_price(client).id, version=LEGACY_VERSION)
    before = events_so_far(client)
    answer = complete(running, session.id, THREE_DS_CARD)
    assert answer["outcome"] == "requires_action"
    assert event_types(client, before) == [
        "customer.created",
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "payment_intent.created",
        "payment_intent.requires_action",
        "invoice.payment_action_required",
    ]
    sub = client.v1.subscriptions.retrieve(answer["subscription"])
    assert sub.status == "incomplete"
    assert client.v1.invoices.retrieve(str(sub.latest_invoice)).status == "open"
    assert answer["checkout_session"]["status"] == "open"

    after_auth = events_so_far(client)
    done = authenticate(running, answer["payment_intent"])
    assert done["checkout_session"]["status"] == "complete"
    assert event_types(client, after_auth) == [
        "charge.succeeded",
        "payment_intent.succeeded",
        "invoice.paid",
        "invoice.payment_succeeded",
        "customer.subscription.updated",
        "payment_method.attached",  # the card that paid is saved for the renewals
        "checkout.session.completed",
    ]
    updated = client.v1.events.list(params={"type": "customer.subscription.updated", "limit": 1}).data[0]
    assert updated.data.object["status"] == "active"
    assert updated.data.to_dict()["previous_attributes"] == {"status": "incomplete"}
    assert client.v1.invoices.retrieve(str(sub.latest_invoice)).status == "paid"


def test_legacy_0002_fails_the_first_invoice_then_another_card_pays_it(
    running: RunningEmulator, client: stripe.StripeClient
) -> None:
    session = new_session(client, monthly_price(client).id, version=LEGACY_VERSION)
    before = events_so_far(client)
    declined = complete(running, session.id, DECLINED_CARD)
    assert declined["outcome"] == "declined"
    assert event_types(client, before)[-1] == "invoice.payment_failed"
    sub = client.v1.subscriptions.retrieve(declined["subscription"])
    assert sub.status == "incomplete"
    invoice = client.v1.invoices.retrieve(str(sub.latest_invoice))
    assert invoice.status == "open" and invoice.attempt_count == 1 and invoice.attempted is True

    paid = complete(running, session.id, OK_CARD)
    assert paid["subscription"] == sub.id and paid["invoice"] == invoice.id  # the same ones, now paid
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    assert event_types(client, before)[-8:] == [
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
        "invoice.paid",
        "invoice.payment_succeeded",
        "customer.subscription.updated",
        "payment_method.attached",
        "checkout.session.completed",
    ]


# --- delivery --------------------------------------------------------------------------------------


def test_signature_is_stripes_scheme(
    running: RunningEmulator, client: stripe.StripeClient, receiver: Receiver
) -> None:
    hook = endpoint(client, receiver.url, ["product.created"])
    client.v1.products.create(params={"name": "Signed"})
    assert running.emulator.wait_for_deliveries(WAIT)
    headers, body, _status = receiver.received[0]
    header = headers["Stripe-Signature"]
    timestamp = int(header.split(",")[0].removeprefix("t="))
    assert header == sign(body, str(hook.secret), timestamp)
    event = stripe.Webhook.construct_event(body.decode(), header, str(hook.secret))
    assert event.type == "product.created" and event.data.object["name"] == "Signed"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body.decode().replace("Signed", "Forged"), header, str(hook.secret))
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body.decode(), header, "whsec_wrong")


def test_failed_deliveries_are_retried_until_a_2xx(
    running: RunningEmulator, client: stripe.StripeClient
) -> None:
    flaky = Receiver([500, 500])
    try:
        hook = endpoint(client, flaky.url, ["customer.created"])
        cus = client.v1.customers.create(params={"email": "retry@kuploy.example"})
        assert running.emulator.wait_for_deliveries(WAIT)
        attempts = [a for a in running.emulator.deliveries() if a["endpoint_id"] == hook.id]
        assert [(a["attempt"], a["status"], a["outcome"]) for a in attempts] == [
            (1, 500, "failed"),
            (2, 500, "failed"),
            (3, 200, "succeeded"),
        ]
        assert [a["retry_in"] for a in attempts] == [0.05, 0.1, None]
        # Three copies of one event, each signed afresh and valid.
        assert [status for _h, _b, status in flaky.received] == [500, 500, 200]
        ids = {
            stripe.Webhook.construct_event(b.decode(), h["Stripe-Signature"], str(hook.secret)).id
            for h, b, _s in flaky.received
        }
        assert len(ids) == 1
        event = client.v1.events.retrieve(ids.pop())
        assert event.data.object["id"] == cus.id and event.pending_webhooks == 0
        status, log = admin(running.url, "GET", "/_emulator/deliveries")
        assert status == 200 and log["pending"] == 0 and len(log["attempts"]) == 3
    finally:
        flaky.close()


def test_retries_are_bounded(running: RunningEmulator, client: stripe.StripeClient) -> None:
    down = Receiver([503] * 10)
    try:
        hook = endpoint(client, down.url, ["customer.created"])
        client.v1.customers.create(params={})
        status, flushed = admin(running.url, "POST", "/_emulator/deliveries/flush", {"timeout": WAIT})
        assert status == 200 and flushed == {"idle": True, "pending": 0}
        attempts = [a for a in running.emulator.deliveries() if a["endpoint_id"] == hook.id]
        assert [a["outcome"] for a in attempts] == ["failed", "failed", "failed", "gave_up"]
        event = client.v1.events.list(params={"type": "customer.created"}).data[0]
        assert event.pending_webhooks == 1  # never delivered
    finally:
        down.close()


def test_unreachable_endpoint_is_a_failed_attempt(
    running: RunningEmulator, client: stripe.StripeClient
) -> None:
    dead = Receiver()
    url = dead.url
    dead.close()
    endpoint(client, url, ["customer.created"])
    client.v1.customers.create(params={})
    assert running.emulator.flush_deliveries(WAIT)
    attempts = running.emulator.deliveries()
    assert attempts[0]["status"] is None and attempts[0]["error"]
    assert attempts[-1]["outcome"] == "gave_up"


def test_enabled_events_and_disabled_endpoints_decide_who_gets_what(
    running: RunningEmulator, client: stripe.StripeClient
) -> None:
    only_paid, everything, disabled = Receiver(), Receiver(), Receiver()
    try:
        paid_hook = endpoint(client, only_paid.url, ["invoice.paid"])
        all_hook = endpoint(client, everything.url)
        off = endpoint(client, disabled.url)
        client.v1.webhook_endpoints.update(off.id, params={"disabled": True})
        session = new_session(client, monthly_price(client).id)
        complete(running, session.id, OK_CARD)
        assert running.emulator.wait_for_deliveries(WAIT)
        assert [e.type for e in only_paid.events(str(paid_hook.secret))] == ["invoice.paid"]
        assert [e.type for e in everything.events(str(all_hook.secret))][
            -len(PAID_CHECKOUT) :
        ] == PAID_CHECKOUT
        assert disabled.received == []
        completed = client.v1.events.list(params={"type": "checkout.session.completed"}).data[0]
        assert completed.pending_webhooks == 0
    finally:
        for r in (only_paid, everything, disabled):
            r.close()


def test_shuffled_delivery_sends_every_event_once(client: stripe.StripeClient, receiver: Receiver) -> None:
    with start_in_thread(
        faults=FaultSettings(seed=7), deliveries=DeliverySettings(retry_delays=(0.05,), shuffle=True)
    ) as run:
        c = stripe.StripeClient(KEY, base_addresses={"api": run.url}, max_network_retries=0)
        hook = endpoint(c, receiver.url)
        session = new_session(c, monthly_price(c).id)
        complete(run, session.id, OK_CARD)
        assert run.emulator.wait_for_deliveries(WAIT)
        delivered = receiver.events(str(hook.secret))
        assert sorted(e.type for e in delivered) == sorted(
            ["product.created", "plan.created", "price.created", *PAID_CHECKOUT]
        )
        assert len({e.id for e in delivered}) == len(delivered)


# --- events ----------------------------------------------------------------------------------------


def test_events_list_filters_and_retrieve(client: stripe.StripeClient) -> None:
    created = [client.v1.products.create(params={"name": f"P{i}"}) for i in range(12)]
    events = list(client.v1.events.list(params={"type": "product.created", "limit": 5}).auto_paging_iter())
    # Newest first, and same-second events keep their creation order.
    assert [e.data.object["id"] for e in events] == [p.id for p in reversed(created)]
    first = events[-1]
    assert first.object == "event" and first.id.startswith("evt_")
    assert first.api_version == stripe.api_version and first.livemode is False
    assert first.request is not None and str(first.request.id).startswith("req_")
    assert client.v1.events.retrieve(first.id).data.object["name"] == "P0"

    client.v1.products.update(created[0].id, params={"name": "Renamed"})
    assert [e.type for e in client.v1.events.list(params={"type": "product.*"}).data][:1] == [
        "product.updated"
    ]
    both = client.v1.events.list(params={"types": ["product.updated", "price.created"]}).data
    assert [e.type for e in both] == ["product.updated"]
    assert client.v1.events.list(params={"created": {"gt": first.created + 10**6}}).data == []
    assert len(client.v1.events.list(params={"created": {"gte": first.created}, "limit": 100}).data) == 13

    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.events.retrieve("evt_missing")
    assert info.value.http_status == 404 and error_of(info.value)["code"] == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.events.list(params={"type": "product.created", "types": ["price.created"]})
    assert error_of(info.value)["code"] == "parameters_exclusive"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.events.list(params={"delivery_success": True})


def test_catalog_changes_emit_product_and_price_events(client: stripe.StripeClient) -> None:
    product = client.v1.products.create(
        params={"name": "Team", "default_price_data": {"currency": "usd", "unit_amount": 4900}},
        options={"idempotency_key": "kuploy-reconciler-create-team"},
    )
    created = client.v1.events.list(params={"limit": 2}).data
    assert [e.type for e in reversed(created)] == ["product.created", "price.created"]
    assert created[1].request is not None
    assert created[1].request.idempotency_key == "kuploy-reconciler-create-team"

    old = client.v1.prices.create(
        params={"product": product.id, "currency": "usd", "unit_amount": 100, "lookup_key": "team_monthly"}
    )
    client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": 200,
            "lookup_key": "team_monthly",
            "transfer_lookup_key": True,
        }
    )
    moved = client.v1.events.list(params={"type": "price.updated"}).data[0]
    assert moved.data.object["id"] == old.id and moved.data.object["lookup_key"] is None
    assert moved.data.to_dict()["previous_attributes"] == {"lookup_key": "team_monthly"}

    client.v1.products.update(product.id, params={"metadata": {"kuploy_plan": "team"}})
    updated = client.v1.events.list(params={"type": "product.updated"}).data[0]
    # Stripe sends only the changed keys of a hash, null for an added one, and the old `updated` time
    # when the update moved it (a real event: {"metadata": {"order_id": null}, "updated": 1714547546}).
    previous = updated.data.to_dict()["previous_attributes"]
    assert previous["metadata"] == {"kuploy_plan": None}
    assert set(previous) <= {"metadata", "updated"}
    assert previous.get("updated", product.updated) == product.updated
    client.v1.products.update(product.id, params={"metadata": {"kuploy_plan": "team"}})  # no change
    assert len(client.v1.events.list(params={"type": "product.updated"}).data) == 1

    doomed = client.v1.products.create(params={"name": "Doomed"})
    client.v1.products.delete(doomed.id)
    deleted = client.v1.events.list(params={"type": "product.deleted"}).data[0]
    assert deleted.data.object["id"] == doomed.id and deleted.data.object["name"] == "Doomed"

    # A request that fails leaves no event behind.
    count = events_so_far(client)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.prices.create(params={"product": product.id, "currency": "xyz", "unit_amount": 1})
    assert events_so_far(client) == count


# --- subscriptions through the API -----------------------------------------------------------------


def test_subscription_api_calls_emit_subscription_events(client: stripe.StripeClient) -> None:
    price = monthly_price(client)
    cus = client.v1.customers.create(
        params={
            "email": "api@kuploy.example",
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    before = events_so_far(client)
    sub = client.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": price.id}], "metadata": {"organizationId": "org_7"}}
    )
    assert sub.status == "active"
    assert event_types(client, before)[:3] == [
        "customer.updated",  # its currency, set by its first subscription
        "customer.subscription.created",
        "invoice.created",
    ]
    client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    updated = client.v1.events.list(params={"type": "customer.subscription.updated"}).data[0]
    assert updated.data.object["cancel_at_period_end"] is True
    assert updated.data.previous_attributes is not None
    assert updated.data.previous_attributes["cancel_at_period_end"] is False
    client.v1.subscriptions.cancel(sub.id)
    deleted = client.v1.events.list(params={"type": "customer.subscription.deleted"}).data[0]
    assert deleted.data.object["status"] == "canceled"


def test_default_incomplete_subscription_waits_for_its_first_invoice(
    running: RunningEmulator, client: stripe.StripeClient
) -> None:
    price = monthly_price(client)
    cus = client.v1.customers.create(params={"email": "api@kuploy.example"})
    before = events_so_far(client)
    sub = client.v1.subscriptions.create(
        params={
            "customer": cus.id,
            "items": [{"price": price.id}],
            "metadata": {"organizationId": "org_8"},
            "payment_behavior": "default_incomplete",
        }
    )
    assert sub.status == "incomplete" and sub.latest_invoice is not None
    assert event_types(client, before) == [
        "customer.updated",  # its currency, set by its first subscription
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "payment_intent.created",  # waiting for a payment method: nothing is attempted
    ]
    invoice = client.v1.invoices.retrieve(str(sub.latest_invoice))
    assert invoice.status == "open" and invoice.amount_due == 2000

    status, paid = admin(running.url, "POST", f"/_emulator/invoices/{invoice.id}/pay", {"card": OK_CARD})
    assert status == 200 and paid["outcome"] == "succeeded"
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    assert event_types(client, before)[5:] == [
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
        "invoice.paid",
        "invoice.payment_succeeded",
        "customer.subscription.updated",
    ]

    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.subscriptions.create(
            params={
                "customer": cus.id,
                "items": [{"price": price.id}],
                "payment_behavior": "pending_if_incomplete",
            }
        )
    assert error_of(info.value)["param"] == "payment_behavior"


# --- renewals and cancellation ---------------------------------------------------------------------


def _paid_checkout(running: RunningEmulator, client: stripe.StripeClient) -> stripe.Subscription:
    session = new_session(client, monthly_price(client).id)
    answer = complete(running, session.id, OK_CARD)
    return client.v1.subscriptions.retrieve(answer["subscription"])


def test_renewal_paid_then_failed_then_recovered(
    running: RunningEmulator, client: stripe.StripeClient
) -> None:
    sub = _paid_checkout(running, client)
    period_end = sub["items"].data[0].current_period_end
    before = events_so_far(client)

    status, paid = admin(running.url, "POST", f"/_emulator/subscriptions/{sub.id}/renew", {"outcome": "paid"})
    assert status == 200 and paid["outcome"] == "succeeded"
    assert event_types(client, before) == [
        "customer.subscription.updated",
        "invoice.created",
        "invoice.finalized",
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
        "invoice.paid",
        "invoice.payment_succeeded",
    ]
    renewed = client.v1.subscriptions.retrieve(sub.id)
    assert renewed["items"].data[0].current_period_start == period_end
    assert renewed.latest_invoice == paid["invoice"] and renewed.status == "active"
    cycle = client.v1.invoices.retrieve(paid["invoice"])
    assert cycle.billing_reason == "subscription_cycle" and cycle.status == "paid"

    before = events_so_far(client)
    status, failed = admin(
        running.url, "POST", f"/_emulator/subscriptions/{sub.id}/renew", {"outcome": "failed"}
    )
    assert status == 200 and failed["outcome"] == "declined"
    assert event_types(client, before) == [
        "customer.subscription.updated",
        "invoice.created",
        "invoice.finalized",
        "payment_intent.created",
        "charge.failed",
        "payment_intent.payment_failed",
        "invoice.payment_failed",
        "customer.subscription.updated",
    ]
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"
    unpaid = client.v1.invoices.retrieve(failed["invoice"])
    assert unpaid.status == "open" and unpaid.next_payment_attempt is not None

    # Invoices list filters.
    assert {i.id for i in client.v1.invoices.list(params={"subscription": sub.id}).data} == {
        sub.latest_invoice,
        paid["invoice"],
        failed["invoice"],
    }
    assert [i.id for i in client.v1.invoices.list(params={"status": "open"}).data] == [failed["invoice"]]
    assert len(client.v1.invoices.list(params={"customer": str(sub.customer), "status": "paid"}).data) == 2

    # The customer fixes the card: the open invoice is paid and the subscription is active again.
    status, fixed = admin(
        running.url, "POST", f"/_emulator/invoices/{failed['invoice']}/pay", {"card": OK_CARD}
    )
    assert status == 200 and fixed["outcome"] == "succeeded"
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"


def test_renewal_with_a_3ds_card_needs_action(running: RunningEmulator, client: stripe.StripeClient) -> None:
    sub = _paid_checkout(running, client)
    status, answer = admin(
        running.url, "POST", f"/_emulator/subscriptions/{sub.id}/renew", {"card": THREE_DS_CARD}
    )
    assert status == 200 and answer["outcome"] == "requires_action"
    assert event_types(client)[-3:] == [
        "payment_intent.requires_action",
        "invoice.payment_action_required",
        "customer.subscription.updated",
    ]
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"
    authenticate(running, answer["payment_intent"])
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    assert client.v1.invoices.retrieve(answer["invoice"]).status == "paid"


def test_cancellation_triggers(running: RunningEmulator, client: stripe.StripeClient) -> None:
    sub = _paid_checkout(running, client)
    status, answer = admin(running.url, "POST", f"/_emulator/subscriptions/{sub.id}/cancel", {})
    assert status == 200 and answer["subscription"]["status"] == "canceled"
    assert event_types(client)[-1] == "customer.subscription.deleted"
    status, _again = admin(running.url, "POST", f"/_emulator/subscriptions/{sub.id}/cancel", {})
    assert status == 400
    status, _ = admin(running.url, "POST", f"/_emulator/subscriptions/{sub.id}/renew", {})
    assert status == 400

    # cancel_at_period_end: an update now, the deletion when the period ends.
    other = _paid_checkout(running, client)
    client.v1.subscriptions.update(other.id, params={"cancel_at_period_end": True})
    assert event_types(client)[-1] == "customer.subscription.updated"
    status, ended = admin(running.url, "POST", f"/_emulator/subscriptions/{other.id}/renew", {})
    assert status == 200 and ended["outcome"] == "canceled"
    assert event_types(client)[-1] == "customer.subscription.deleted"
    assert client.v1.subscriptions.retrieve(other.id).status == "canceled"


def test_admin_errors(running: RunningEmulator, client: stripe.StripeClient) -> None:
    session = new_session(client, monthly_price(client).id)
    path = f"/_emulator/checkout/{session.id}/complete"
    assert admin(running.url, "POST", path, {"card": "4111111111111111"})[0] == 400
    assert admin(running.url, "POST", path, {})[0] == 400
    assert admin(running.url, "POST", path, ["not", "an", "object"])[0] == 400
    assert (
        admin(running.url, "POST", "/_emulator/checkout/cs_test_missing/complete", {"card": OK_CARD})[0]
        == 404
    )
    assert admin(running.url, "POST", "/_emulator/deliveries/flush", {"timeout": -1})[0] == 400


# --- the emulator's rules --------------------------------------------------------------------------


def test_admin_routes_are_exempt_from_faults(running: RunningEmulator, client: stripe.StripeClient) -> None:
    session = new_session(client, monthly_price(client).id)
    running.emulator.set_faults(error_rate=1.0, after_write_share=0.0, seed=1)
    try:
        assert complete(running, session.id, OK_CARD)["outcome"] == "succeeded"
    finally:
        running.emulator.set_faults(error_rate=0.0)
    assert client.v1.checkout.sessions.retrieve(session.id).status == "complete"


def test_idempotent_replay_makes_no_new_events(client: stripe.StripeClient) -> None:
    client.v1.customers.create(params={"email": "x@kuploy.example"}, options={"idempotency_key": "k1"})
    client.v1.customers.create(params={"email": "x@kuploy.example"}, options={"idempotency_key": "k1"})
    assert event_types(client) == ["customer.created"]


def test_state_file_keeps_sessions_invoices_and_events(tmp_path: Path) -> None:
    state = tmp_path / "stripe.json"
    with start_in_thread(state_file=state) as run:
        c = stripe.StripeClient(KEY, base_addresses={"api": run.url}, max_network_retries=0)
        session = new_session(c, monthly_price(c).id)
        complete(run, session.id, OK_CARD)
        count = events_so_far(c)
    reloaded = Emulator(state_file=state)
    try:
        acct = reloaded._accounts["test"]
        assert acct.checkout_sessions[session.id]["status"] == "complete"
        assert len(acct.invoices) == 1 and len(acct.events) == count
    finally:
        reloaded.close()


def test_open_sessions_expire_at_expires_at(running: RunningEmulator, client: stripe.StripeClient) -> None:
    session = new_session(client, monthly_price(client).id)
    with pytest.raises(stripe.InvalidRequestError) as info:
        new_session(client, monthly_price(client).id, expires_at=session.created + 60)
    assert error_of(info.value)["param"] == "expires_at"
    # Stand in for the passing of a day: the stored session's deadline is moved into the past.
    running.emulator._accounts["test"].checkout_sessions[session.id]["expires_at"] = session.created - 1
    assert client.v1.checkout.sessions.retrieve(session.id).status == "expired"
    expired = client.v1.events.list(params={"type": "checkout.session.expired"}).data
    assert [e.data.object["id"] for e in expired] == [session.id]
    assert expired[0].request is not None and expired[0].request.id is None
