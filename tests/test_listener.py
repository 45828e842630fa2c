"""The webhook listener over real HTTP (uvicorn in a thread), a real Postgres and the Stripe emulator.

Events are signed exactly as Stripe signs them: `Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256 of
"<ts>.<body>">`. Subscriptions are created in the emulator first, so the listener's re-fetch finds
them. No timed assertions: waits only poll for readiness.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import hmac
import http.client
import itertools
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import stripe
import uvicorn
from psycopg import sql
from starlette.applications import Starlette

from reconciler import migrations
from reconciler.listener import LOCK_SPACE, ConnectionPool, Event, create_app, process_event
from reconciler.listener.pool import DOWN_WAIT
from reconciler.listener.verification import Unavailable
from reconciler.model import WEBHOOK_PATH, ownership_metadata
from reconciler.sandbox.emulator import RunningEmulator
from reconciler.settings import Secret, Settings
from reconciler.state.from_postgres import read_drift_events

SECRET = "whsec_kuployListenerTests0000000000"
OLD_SECRET = "whsec_kuployListenerOldSecret00000"


# --- helpers -------------------------------------------------------------------------------------


def sign(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> str:
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def make_event(
    event_type: str, obj: Any, *, event_id: str | None = None, created: int | None = None, **extra: Any
) -> bytes:
    payload = {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": stripe.api_version,
        "created": int(time.time()) if created is None else created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        **extra,
    }
    return json.dumps(payload, default=str).encode()


@dataclass
class Reply:
    status: int
    body: dict[str, Any]


def request(
    url: str,
    method: str,
    path: str,
    body: bytes | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        conn.request(
            method, path, body=body, headers=headers or {}, encode_chunked=not isinstance(body, bytes | None)
        )
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    return Reply(response.status, json.loads(raw) if raw else {})


@dataclass
class Listener:
    url: str

    def post(self, body: bytes, *, signature: str | None = None, secret: str = SECRET) -> Reply:
        headers = {"Content-Type": "application/json"}
        headers["Stripe-Signature"] = sign(body, secret) if signature is None else signature
        if signature == "":
            del headers["Stripe-Signature"]
        return request(self.url, "POST", WEBHOOK_PATH, body, headers)

    def get(self, path: str) -> Reply:
        return request(self.url, "GET", path)


@contextmanager
def serve(app: Starlette) -> Iterator[Listener]:
    """The app on a free port, served by uvicorn from a background thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", ws="none")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield Listener(f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def customer_with_card(client: stripe.StripeClient, email: str) -> str:
    """A customer with Stripe's test card as its default payment method, so its subscriptions are
    paid and active (Stripe leaves them incomplete otherwise)."""
    return client.v1.customers.create(
        params={
            "email": email,
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    ).id


def count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    assert row is not None
    return int(row[0])


def subscription_row(conn: psycopg.Connection, sub_id: str) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute(
        'SELECT * FROM cloud_subscriptions WHERE "stripeSubscriptionId" = %s', (sub_id,)
    ).fetchone()


def event_row(conn: psycopg.Connection, event_id: str) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute("SELECT * FROM cloud_stripe_events WHERE id = %s", (event_id,)).fetchone()


def event_id_of(body: bytes) -> str:
    return str(json.loads(body)["id"])


def subscription_reads(emulator: RunningEmulator, sub_id: str) -> int:
    path = f"/v1/subscriptions/{sub_id}"
    return sum(1 for r in emulator.emulator.requests if r["method"] == "GET" and r["path"] == path)


# --- fixtures ------------------------------------------------------------------------------------


@dataclass
class Catalog:
    """One owned plan "pro" in Stripe and cloud_plans, plus an archived-style older owned price."""

    price: str
    old_price: str
    foreign_price: str
    customer: str


@pytest.fixture
def migrated(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrations.migrate(conn)
    return database_url


@pytest.fixture
def catalog(migrated: str, db: psycopg.Connection, stripe_client: stripe.StripeClient) -> Catalog:
    product = stripe_client.v1.products.create(params={"name": "Pro", "metadata": ownership_metadata("pro")})

    def price(amount: int, metadata: dict[str, str]) -> str:
        return stripe_client.v1.prices.create(
            params={
                "product": product.id,
                "unit_amount": amount,
                "currency": "cad",
                "recurring": {"interval": "month"},
                "metadata": metadata,
            }
        ).id

    current, old = price(2000, ownership_metadata("pro")), price(1500, ownership_metadata("pro"))
    foreign_product = stripe_client.v1.products.create(params={"name": "Hand-made"})
    foreign = stripe_client.v1.prices.create(
        params={
            "product": foreign_product.id,
            "unit_amount": 999,
            "currency": "cad",
            "recurring": {"interval": "month"},
        }
    ).id
    db.execute(
        'INSERT INTO cloud_plans ("planId", name, "stripeProductId", "stripePriceId", price, currency, '
        '"billingCycle") VALUES (%s, %s, %s, %s, %s, %s, %s)',
        ("pro", "Pro", product.id, current, 2000, "cad", "monthly"),
    )
    customer = customer_with_card(stripe_client, "owner@example.com")
    return Catalog(price=current, old_price=old, foreign_price=foreign, customer=customer)


@pytest.fixture
def listener(settings: Settings, catalog: Catalog) -> Iterator[Listener]:
    with serve(create_app(settings, webhook_secret=Secret(SECRET))) as running:
        yield running


def new_subscription(
    client: stripe.StripeClient, catalog: Catalog, *, price: str | None = None, org: str | None = "org_1"
) -> dict[str, Any]:
    params: dict[str, Any] = {"customer": catalog.customer, "items": [{"price": price or catalog.price}]}
    if org is not None:
        params["metadata"] = {"organizationId": org}
    return client.v1.subscriptions.create(params=params).to_dict()  # type: ignore[arg-type]


def invoice(sub_id: str, invoice_id: str, created: int, status: str) -> dict[str, Any]:
    return {
        "id": invoice_id,
        "object": "invoice",
        "created": created,
        "status": status,
        "parent": {"type": "subscription_details", "subscription_details": {"subscription": sub_id}},
    }


# --- health --------------------------------------------------------------------------------------


def test_healthz_and_readyz_follow_the_database_and_migrations(settings: Settings, database_url: str) -> None:
    with serve(create_app(settings, webhook_secret=Secret(SECRET))) as running:
        assert running.get("/healthz") == Reply(200, {"status": "ok"})
        not_ready = running.get("/readyz")
        assert not_ready.status == 503 and "migrations pending: 0001_cloud_plans" in not_ready.body["reason"]
        with psycopg.connect(database_url, autocommit=True) as conn:
            migrations.migrate(conn)
        assert running.get("/readyz") == Reply(200, {"status": "ready", "reason": "ready"})
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    nowhere = dataclasses.replace(
        settings, database_url=Secret(f"postgresql://kuploy:hunter2@127.0.0.1:{dead_port}/nowhere")
    )
    with serve(create_app(nowhere, webhook_secret=Secret(SECRET))) as running:
        assert running.get("/healthz").status == 200
        reply = running.get("/readyz")
        assert reply == Reply(503, {"status": "not ready", "reason": "database unreachable"})


# --- the six events ------------------------------------------------------------------------------


def test_subscription_created_records_the_row(
    listener: Listener, db: psycopg.Connection, stripe_client: stripe.StripeClient, catalog: Catalog
) -> None:
    sub = new_subscription(stripe_client, catalog)
    body = make_event("customer.subscription.created", sub)
    assert listener.post(body) == Reply(200, {"received": True, "outcome": "processed"})
    row = subscription_row(db, sub["id"])
    assert row is not None
    assert row["organizationId"] == "org_1" and row["stripeCustomerId"] == catalog.customer
    assert row["stripePriceId"] == catalog.price and row["planId"] == "pro" and not row["priceUnknown"]
    assert row["status"] == "active" and row["cancelAtPeriodEnd"] is False
    period_end = sub["items"]["data"][0]["current_period_end"]
    assert row["currentPeriodEnd"].timestamp() == period_end
    event = event_row(db, event_id_of(body))
    assert event is not None
    assert event["type"] == "customer.subscription.created" and event["outcome"] == "processed"
    assert event["objectId"] == sub["id"] and event["processedAt"] >= event["receivedAt"]


def test_checkout_session_completed_takes_the_organization_from_client_reference_id(
    listener: Listener, db: psycopg.Connection, stripe_client: stripe.StripeClient, catalog: Catalog
) -> None:
    sub = new_subscription(stripe_client, catalog, org=None)
    session = {
        "id": "cs_test_1",
        "object": "checkout.session",
        "mode": "subscription",
        "client_reference_id": "org_42",
        "customer": catalog.customer,
        "subscription": sub["id"],
        "status": "complete",
    }
    assert listener.post(make_event("checkout.session.completed", session)).status == 200
    row = subscription_row(db, sub["id"])
    assert row is not None and row["organizationId"] == "org_42" and row["planId"] == "pro"
    # A later subscription event without organizationId metadata keeps it.
    stripe_client.v1.subscriptions.update(sub["id"], params={"cancel_at_period_end": True})
    assert listener.post(make_event("customer.subscription.updated", sub)).status == 200
    row = subscription_row(db, sub["id"])
    assert row is not None and row["organizationId"] == "org_42" and row["cancelAtPeriodEnd"] is True
    # A payment-mode session has no subscription: acknowledged, recorded as ignored.
    body = make_event("checkout.session.completed", {**session, "mode": "payment", "subscription": None})
    assert listener.post(body) == Reply(200, {"received": True, "outcome": "ignored"})


def test_subscription_events_store_the_newest_state_and_ask_stripe_on_a_tie(
    listener: Listener,
    db: psycopg.Connection,
    stripe_client: stripe.StripeClient,
    catalog: Catalog,
    emulator: RunningEmulator,
) -> None:
    sub = new_subscription(stripe_client, catalog)
    now = int(time.time())
    assert listener.post(make_event("customer.subscription.created", sub, created=now - 10)).status == 200
    updated = stripe_client.v1.subscriptions.update(
        sub["id"], params={"cancel_at_period_end": True}
    ).to_dict()
    # From a later second, the payload is newer than what is stored: stored as it is, no re-read.
    assert listener.post(make_event("customer.subscription.updated", updated, created=now - 5)).status == 200
    row = subscription_row(db, sub["id"])
    assert row is not None and row["cancelAtPeriodEnd"] is True and row["status"] == "active"
    assert subscription_reads(emulator, sub["id"]) == 0
    # An older event arriving late changes nothing.
    late = listener.post(make_event("customer.subscription.updated", sub, created=now - 8))
    assert late.body["outcome"] == "stale"
    assert subscription_row(db, sub["id"])["cancelAtPeriodEnd"] is True  # type: ignore[index]
    # The same second as the stored state is ambiguous: Stripe is asked and its answer wins.
    tie = listener.post(make_event("customer.subscription.updated", sub, created=now - 5))
    assert tie.body["outcome"] == "processed" and subscription_reads(emulator, sub["id"]) == 1
    assert subscription_row(db, sub["id"])["cancelAtPeriodEnd"] is True  # type: ignore[index]
    stripe_client.v1.subscriptions.cancel(sub["id"])
    assert listener.post(make_event("customer.subscription.deleted", sub)).status == 200
    row = subscription_row(db, sub["id"])
    assert row is not None and row["status"] == "canceled"


def test_an_event_a_second_before_a_read_state_asks_stripe_again(
    listener: Listener,
    db: psycopg.Connection,
    stripe_client: stripe.StripeClient,
    catalog: Catalog,
    emulator: RunningEmulator,
) -> None:
    # A read is dated by Stripe's `Date` header, which can fall a second after the read itself: a
    # change from that earlier second may be missing from what was read. Simulated here by a change
    # made after the read whose event says it was created the second before the read's date.
    sub = new_subscription(stripe_client, catalog)
    now = int(time.time())
    listener.post(make_event("customer.subscription.created", sub, created=now))
    listener.post(make_event("customer.subscription.updated", sub, created=now))  # a tie: read
    row = subscription_row(db, sub["id"])
    assert row is not None and row["stateRead"] is True and subscription_reads(emulator, sub["id"]) == 1
    read_as_of = row["stateAsOf"]
    updated = stripe_client.v1.subscriptions.update(
        sub["id"], params={"cancel_at_period_end": True}
    ).to_dict()
    reply = listener.post(make_event("customer.subscription.updated", updated, created=read_as_of - 1))
    assert reply.body["outcome"] == "processed" and subscription_reads(emulator, sub["id"]) == 2
    assert subscription_row(db, sub["id"])["cancelAtPeriodEnd"] is True  # type: ignore[index]
    # Two seconds before the read's date is older than what was read: stale, Stripe is not asked.
    older = listener.post(make_event("customer.subscription.updated", sub, created=read_as_of - 2))
    assert older.body["outcome"] == "stale" and subscription_reads(emulator, sub["id"]) == 2


def test_subscription_gone_from_stripe_is_stored_canceled(
    listener: Listener, db: psycopg.Connection, catalog: Catalog
) -> None:
    ghost: dict[str, Any] = {
        "id": "sub_doesnotexist000000000",
        "object": "subscription",
        "customer": catalog.customer,
        "status": "active",
        "metadata": {"organizationId": "org_9"},
        "items": {"object": "list", "data": [{"price": {"id": catalog.price}, "current_period_end": 1}]},
    }
    assert listener.post(make_event("customer.subscription.deleted", ghost)).status == 200
    row = subscription_row(db, ghost["id"])
    assert row is not None and row["status"] == "canceled" and row["organizationId"] == "org_9"


@pytest.mark.parametrize("key_mode", ["test", "live"])
def test_an_event_of_the_other_mode_than_the_key_is_refused_with_nothing_written(
    key_mode: str,
    settings: Settings,
    db: psycopg.Connection,
    stripe_client: stripe.StripeClient,
    catalog: Catalog,
    emulator: RunningEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A live endpoint's secret paired with a test key (or the reverse): the signature is good, but
    the event is of the other mode. Refused (400) before any write or Stripe read, and logged."""
    caplog.set_level(logging.INFO, logger="reconciler.listener")
    if key_mode == "live":
        settings = dataclasses.replace(
            settings, stripe_secret_key=Secret("sk_live_kuployTests0000000000"), live=True
        )
    sub = new_subscription(stripe_client, catalog)
    reads_before = subscription_reads(emulator, sub["id"])
    session = {"id": "cs_test_1", "object": "checkout.session", "subscription": sub["id"],
               "client_reference_id": "org_1", "customer": sub["customer"]}  # fmt: skip
    bodies = [
        make_event(event_type, obj, livemode=key_mode == "test")
        for event_type, obj in (
            ("customer.subscription.created", sub),
            ("checkout.session.completed", session),
        )
    ]
    with serve(create_app(settings, webhook_secret=Secret(SECRET))) as running:
        replies = [running.post(body) for body in bodies]
    other = "live" if key_mode == "test" else "test"
    for body, reply in zip(bodies, replies, strict=True):
        assert reply.status == 400, reply
        assert reply.body["error"] == (
            f"{other}-mode event {event_id_of(body)}, but STRIPE_SECRET_KEY is a {key_mode}-mode key"
        )
    assert count(db, "cloud_stripe_events") == 0 and count(db, "cloud_subscriptions") == 0
    assert subscription_reads(emulator, sub["id"]) == reads_before
    logged = [r.getMessage() for r in caplog.records if r.name == "reconciler.listener"]
    assert len(logged) == 2 and all(f"{other}-mode event" in line for line in logged), logged
    assert "org_1" not in caplog.text and sub["customer"] not in caplog.text  # no payload in the log


@pytest.mark.parametrize("event_type", ["checkout.session.completed", "invoice.paid"])
def test_a_subscription_stripe_does_not_know_is_retried_never_stored_canceled(
    event_type: str, listener: Listener, db: psycopg.Connection, catalog: Catalog, emulator: RunningEmulator
) -> None:
    """The first event of a subscription re-reads it; a 404 means the key cannot see it (another
    account or mode; Stripe keeps canceled subscriptions readable). It was stored as `canceled` and
    answered 200: a paying customer recorded as canceled. Now 503 (Stripe retries), nothing written."""
    ghost = "sub_NotVisibleToThisKey0001"
    if event_type == "checkout.session.completed":
        obj = {"id": "cs_test_ghost", "object": "checkout.session", "subscription": ghost,
               "client_reference_id": "org_9", "customer": catalog.customer}  # fmt: skip
    else:
        obj = invoice(ghost, "in_ghost0001", int(time.time()), "paid")
    body = make_event(event_type, obj)
    reply = listener.post(body)
    assert reply.status == 503, reply
    assert f"Stripe has no subscription {ghost} for this listener's key (404)" in reply.body["error"]
    assert subscription_reads(emulator, ghost) == 1
    assert subscription_row(db, ghost) is None and event_row(db, event_id_of(body)) is None


@pytest.mark.parametrize("first, second", [("paid", "payment_failed"), ("payment_failed", "paid")])
def test_invoice_events_set_the_latest_invoice_status_and_never_go_backwards(
    listener: Listener,
    db: psycopg.Connection,
    stripe_client: stripe.StripeClient,
    catalog: Catalog,
    first: str,
    second: str,
) -> None:
    sub = new_subscription(stripe_client, catalog)
    now = int(time.time())
    opening = sub["latest_invoice"]  # Stripe makes a subscription's first invoice with it

    def send(invoice_id: str, created: int, status: str) -> Reply:
        return listener.post(make_event(f"invoice.{status}", invoice(sub["id"], invoice_id, created, status)))

    # The row does not exist yet: the invoice event creates it from the re-read subscription, whose
    # latest invoice it is.
    assert send(opening, now - 100, "payment_failed").status == 200
    row = subscription_row(db, sub["id"])
    assert row is not None and row["latestInvoiceStatus"] == "payment_failed" and row["planId"] == "pro"
    # The same invoice, retried and paid, in either arrival order (same second): paid is final.
    send("in_2", now, first)
    send("in_2", now, second)
    row = subscription_row(db, sub["id"])
    assert row is not None and (row["latestInvoiceId"], row["latestInvoiceStatus"]) == ("in_2", "paid")
    # An older invoice arriving late changes nothing.
    late = listener.post(make_event("invoice.payment_failed", invoice(sub["id"], opening, now - 100, "open")))
    assert late == Reply(200, {"received": True, "outcome": "stale"})
    row = subscription_row(db, sub["id"])
    assert row is not None and (row["latestInvoiceId"], row["latestInvoiceStatus"]) == ("in_2", "paid")
    # A newer invoice that fails moves it on.
    send("in_3", now + 1, "payment_failed")
    row = subscription_row(db, sub["id"])
    assert row is not None and (row["latestInvoiceId"], row["latestInvoiceStatus"]) == (
        "in_3",
        "payment_failed",
    )


def test_checkout_and_invoice_events_of_a_known_subscription_ask_stripe_only_on_a_tie(
    listener: Listener,
    db: psycopg.Connection,
    stripe_client: stripe.StripeClient,
    catalog: Catalog,
    emulator: RunningEmulator,
) -> None:
    sub = new_subscription(stripe_client, catalog, org=None)
    now = int(time.time())
    assert listener.post(make_event("customer.subscription.created", sub, created=now)).status == 200
    session = {"id": "cs_test_9", "object": "checkout.session", "subscription": sub["id"]}
    reply = listener.post(make_event("checkout.session.completed", {**session, "client_reference_id": "o9"}))
    assert reply == Reply(200, {"received": True, "outcome": "processed"})
    assert (
        listener.post(make_event("invoice.payment_failed", invoice(sub["id"], "in_1", now, "open"))).status
        == 200
    )
    row = subscription_row(db, sub["id"])
    assert row is not None and row["organizationId"] == "o9" and row["status"] == sub["status"]
    assert (row["latestInvoiceId"], row["latestInvoiceStatus"]) == ("in_1", "payment_failed")
    assert subscription_reads(emulator, sub["id"]) == 0  # the row exists: the events' own state decides
    # A second invoice of the same second is a tie: Stripe is asked which is the latest (the
    # subscription's own first invoice here).
    latest = sub["latest_invoice"]
    assert listener.post(make_event("invoice.paid", invoice(sub["id"], latest, now, "paid"))).status == 200
    assert subscription_reads(emulator, sub["id"]) == 1
    row = subscription_row(db, sub["id"])
    assert row is not None and (row["latestInvoiceId"], row["latestInvoiceStatus"]) == (latest, "paid")


@pytest.mark.parametrize("order", list(itertools.permutations(["other", "latest"])))
def test_two_invoices_in_the_same_second_converge_whatever_the_order(
    listener: Listener,
    db: psycopg.Connection,
    stripe_client: stripe.StripeClient,
    catalog: Catalog,
    order: tuple[str, ...],
) -> None:
    sub = new_subscription(stripe_client, catalog)
    now = int(time.time())
    # "latest" is the invoice Stripe names as the subscription's latest_invoice; "other" sorts after
    # it by id, so the (created, id) order alone would pick the wrong one.
    ids = {"other": "in_zzzzzzzzzzzzzzzzzzzzzzzz", "latest": sub["latest_invoice"]}
    statuses = {"other": "paid", "latest": "payment_failed"}
    for name in order:
        status = statuses[name]
        listener.post(make_event(f"invoice.{status}", invoice(sub["id"], ids[name], now, status)))
    row = subscription_row(db, sub["id"])
    assert row is not None and row["latestInvoiceId"] == sub["latest_invoice"]  # Stripe's answer wins


def test_invoice_without_a_subscription_is_ignored(listener: Listener, db: psycopg.Connection) -> None:
    body = make_event("invoice.paid", {"id": "in_oneoff", "object": "invoice", "created": 1, "parent": None})
    assert listener.post(body) == Reply(200, {"received": True, "outcome": "ignored"})
    assert count(db, "cloud_subscriptions") == 0


# --- exactly once --------------------------------------------------------------------------------


def test_ten_concurrent_copies_have_one_effect(
    listener: Listener,
    db: psycopg.Connection,
    stripe_client: stripe.StripeClient,
    catalog: Catalog,
    emulator: RunningEmulator,
) -> None:
    sub = new_subscription(stripe_client, catalog)
    body = make_event("customer.subscription.created", sub)
    barrier = threading.Barrier(10)

    def send(_: int) -> Reply:
        barrier.wait()
        return listener.post(body)

    with ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(send, range(10)))
    assert all(r.status == 200 for r in replies)
    assert sum(r.body.get("outcome") == "processed" for r in replies) == 1
    assert sum(r.body.get("duplicate") is True for r in replies) == 9
    assert count(db, "cloud_stripe_events") == 1 and count(db, "cloud_subscriptions") == 1
    assert subscription_reads(emulator, sub["id"]) == 0  # a first snapshot needs no re-read
    # A replay later is a duplicate too.
    assert listener.post(body) == Reply(200, {"received": True, "duplicate": True})
    assert subscription_reads(emulator, sub["id"]) == 0


# --- never backwards -----------------------------------------------------------------------------


@pytest.mark.parametrize("same_second", [True, False], ids=["same-second", "spread"])
@pytest.mark.parametrize("order", list(itertools.permutations(["created", "updated", "deleted"])))
def test_every_arrival_order_ends_in_stripes_final_state(
    listener: Listener,
    db: psycopg.Connection,
    stripe_client: stripe.StripeClient,
    catalog: Catalog,
    order: tuple[str, ...],
    same_second: bool,
) -> None:
    sub = new_subscription(stripe_client, catalog)
    updated = stripe_client.v1.subscriptions.update(
        sub["id"], params={"cancel_at_period_end": True}
    ).to_dict()
    deleted = stripe_client.v1.subscriptions.cancel(sub["id"]).to_dict()
    now = int(time.time())
    snapshots = {"created": (sub, now - 2), "updated": (updated, now - 1), "deleted": (deleted, now)}
    for name in order:
        obj, created = snapshots[name]
        reply = listener.post(
            make_event(f"customer.subscription.{name}", obj, created=now if same_second else created)
        )
        assert reply.status == 200
    final = stripe_client.v1.subscriptions.retrieve(sub["id"])
    row = subscription_row(db, sub["id"])
    assert row is not None
    assert (
        (row["status"], row["cancelAtPeriodEnd"])
        == (final.status, final.cancel_at_period_end)
        == ("canceled", True)
    )
    assert count(db, "cloud_stripe_events") == 3


def test_concurrent_events_for_one_subscription_end_in_the_latest_state(
    listener: Listener, db: psycopg.Connection, stripe_client: stripe.StripeClient, catalog: Catalog
) -> None:
    sub = new_subscription(stripe_client, catalog)
    stripe_client.v1.subscriptions.update(sub["id"], params={"cancel_at_period_end": True})
    stripe_client.v1.subscriptions.cancel(sub["id"])
    now = int(time.time())
    bodies = [
        make_event(f"customer.subscription.{kind}", sub, created=now)
        for kind in ("created", "updated", "deleted")
    ]
    paid = invoice(sub["id"], sub["latest_invoice"], now, "paid")  # its first invoice, as Stripe makes it
    bodies.append(make_event("invoice.paid", paid, created=now))
    with ThreadPoolExecutor(len(bodies)) as pool:
        replies = list(pool.map(listener.post, bodies))
    assert [r.status for r in replies] == [200] * len(bodies)
    row = subscription_row(db, sub["id"])
    assert row is not None and row["status"] == "canceled" and row["latestInvoiceStatus"] == "paid"


def test_the_row_read_with_the_events_insert_is_what_the_locks_last_holder_committed(migrated: str) -> None:
    """The stored row is read in the same round trip as the INSERT that takes the subscription's lock
    (a pipeline). It must still be read after the lock is granted: here a peer holds the lock while
    making the stored state newer than the event, and commits only once the event waits for the lock.
    Read before the wait, the event would store its older snapshot over the peer's state."""
    now = int(time.time())
    no_stripe: Any = None  # no tie: Stripe is never asked

    def event(n: int, created: int, status: str) -> Event:
        subscription = {"id": "sub_race", "status": status}
        return Event(
            id=f"evt_race_{n}",
            type="customer.subscription.updated",
            created=created,
            livemode=False,
            object=subscription,
            idempotency_key=None,
        )

    async def waiting_for_the_lock(admin: psycopg.AsyncConnection) -> bool:
        cur = await admin.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = %s",
            (LOCK_SPACE,),
        )
        row = await cur.fetchone()
        return row is not None and row[0] > 0

    async def scenario() -> tuple[Any, Any]:
        pool = ConnectionPool(Secret(migrated), size=1)
        await pool.open()
        async with pool.connection() as conn:
            await process_event(conn, no_stripe, event(1, now - 10, "active"), datetime.now(UTC))
        async with (
            await psycopg.AsyncConnection.connect(migrated, autocommit=True) as holder,
            await psycopg.AsyncConnection.connect(migrated, autocommit=True) as admin,
        ):
            async with holder.transaction():
                await holder.execute("SELECT pg_advisory_xact_lock(%s, hashtext('sub_race'))", (LOCK_SPACE,))
                await holder.execute(
                    "UPDATE cloud_subscriptions SET status = 'canceled', \"stateAsOf\" = %s "
                    "WHERE \"stripeSubscriptionId\" = 'sub_race'",
                    (now,),
                )

                async def late() -> Any:
                    async with pool.connection() as conn:
                        return await process_event(
                            conn, no_stripe, event(2, now - 5, "past_due"), datetime.now(UTC)
                        )

                task = asyncio.ensure_future(late())
                while not await waiting_for_the_lock(admin):
                    assert not task.done(), task
                    await asyncio.sleep(0.01)
            outcome = await task
            cur = await admin.execute(
                'SELECT status FROM cloud_subscriptions WHERE "stripeSubscriptionId" = %s', ("sub_race",)
            )
            row = await cur.fetchone()
        await pool.close()
        return outcome, row

    outcome, row = asyncio.run(scenario())
    assert outcome.kind == "stale", outcome
    assert row == ("canceled",)


# --- rejected before any write -------------------------------------------------------------------


def _signed_with_other_secret(body: bytes) -> str:
    return sign(body, "whsec_notTheRightOne000000000000")


@pytest.mark.parametrize(
    "case",
    [
        "missing signature",
        "bad signature",
        "stale timestamp",
        "garbled header",
        "not json",
        "too large",
        "chunked too large",
        "not an event",
    ],
)
def test_rejected_requests_answer_400_and_write_nothing(
    listener: Listener,
    db: psycopg.Connection,
    stripe_client: stripe.StripeClient,
    catalog: Catalog,
    emulator: RunningEmulator,
    case: str,
) -> None:
    sub = new_subscription(stripe_client, catalog)
    body = make_event("customer.subscription.created", sub)
    reads_before = subscription_reads(emulator, sub["id"])
    if case == "missing signature":
        reply = listener.post(body, signature="")
    elif case == "bad signature":
        reply = listener.post(body, signature=_signed_with_other_secret(body))
    elif case == "stale timestamp":
        reply = listener.post(body, signature=sign(body, timestamp=int(time.time()) - 301))
    elif case == "garbled header":
        reply = listener.post(body, signature="v1=abc,t=notanumber")
    elif case == "not json":
        reply = listener.post(b"{not json")
    elif case == "not an event":
        reply = listener.post(b'{"id": "evt_1", "type": "invoice.paid"}')
    elif case == "too large":
        big = body[:-1] + b', "padding": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        reply = listener.post(big)
    else:
        big = body[:-1] + b', "padding": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        chunks = (big[i : i + 65536] for i in range(0, len(big), 65536))
        headers = {"Stripe-Signature": sign(big), "Content-Type": "application/json"}
        reply = request(listener.url, "POST", WEBHOOK_PATH, chunks, headers)
    assert reply.status == 400 and reply.body["error"]
    assert len(reply.body["error"]) < 120 and SECRET not in reply.body["error"]
    assert count(db, "cloud_stripe_events") == 0 and count(db, "cloud_subscriptions") == 0
    assert subscription_reads(emulator, sub["id"]) == reads_before


@pytest.mark.parametrize(
    "case",
    [
        "created 10^20",
        "created 2^63",
        "created negative",
        "invoice created 10^20",
        "period end 2^63",
        "NUL in event id",
        "NUL in subscription id",
        "NUL in organization",
        "lone surrogate in event type",
    ],
)
def test_signed_events_postgres_cannot_store_answer_400_not_500(
    listener: Listener,
    db: psycopg.Connection,
    stripe_client: stripe.StripeClient,
    catalog: Catalog,
    case: str,
) -> None:
    """Stripe retries a 500 for days; an event whose values Postgres cannot store never succeeds."""
    sub = new_subscription(stripe_client, catalog)
    if case.startswith("created"):
        created = {"created 10^20": 10**20, "created 2^63": 2**63, "created negative": -1}[case]
        body = make_event("customer.subscription.created", sub, created=created)
    elif case == "invoice created 10^20":
        body = make_event("invoice.paid", invoice(sub["id"], "in_far", 10**20, "paid"))
    elif case == "period end 2^63":
        body = make_event("customer.subscription.created", {**sub, "current_period_end": 2**63})
    elif case == "NUL in event id":
        body = make_event("customer.subscription.created", sub, event_id="evt_\x00nul")
    elif case == "NUL in subscription id":
        body = make_event("customer.subscription.created", {**sub, "id": "sub_\x00nul"})
    elif case == "NUL in organization":
        body = make_event("customer.subscription.created", {**sub, "metadata": {"organizationId": "o\x00"}})
    else:
        body = make_event("customer.subscription.\ud800", sub)
    reply = listener.post(body)
    assert reply.status == 400, reply
    assert count(db, "cloud_stripe_events") == 0 and count(db, "cloud_subscriptions") == 0


def test_log_lines_escape_control_characters_from_the_event(
    listener: Listener, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reconciler.listener")
    forged = "invoice.paid\nstripe_event id=evt_forged type=invoice.paid outcome=processed"
    body = make_event(forged, {"id": "in_1", "object": "invoice"}, event_id="evt_x\u202e\x9b1m")
    assert listener.post(body).status == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "reconciler.listener"]
    assert len(lines) == 1
    assert "\n" not in lines[0] and "\u202e" not in lines[0] and "\x9b" not in lines[0]
    assert "type=invoice.paid\\nstripe_event" in lines[0] and "id=evt_x\\u202e\\u009b1m" in lines[0]


def test_a_rotated_secret_header_with_one_valid_v1_is_accepted(
    listener: Listener, db: psycopg.Connection, stripe_client: stripe.StripeClient, catalog: Catalog
) -> None:
    sub = new_subscription(stripe_client, catalog)
    body = make_event("customer.subscription.created", sub)
    ts = int(time.time())
    old = sign(body, OLD_SECRET, ts).split(",")[1]
    new = sign(body, SECRET, ts).split(",")[1]
    assert listener.post(body, signature=f"t={ts},{old},{new}").status == 200
    other = make_event("customer.subscription.updated", sub)
    wrong = sign(other, "whsec_another000000000000000000", ts).split(",")[1]
    both_bad = f"t={ts},{sign(other, OLD_SECRET, ts).split(',')[1]},{wrong}"
    assert listener.post(other, signature=both_bad).status == 400
    assert count(db, "cloud_stripe_events") == 1


# --- plans and prices ----------------------------------------------------------------------------


def test_an_unknown_price_keeps_the_row_flagged_and_an_owned_old_price_maps_to_its_plan(
    listener: Listener, db: psycopg.Connection, stripe_client: stripe.StripeClient, catalog: Catalog
) -> None:
    unknown = new_subscription(stripe_client, catalog, price=catalog.foreign_price)
    listener.post(make_event("customer.subscription.created", unknown))
    row = subscription_row(db, unknown["id"])
    assert row is not None and row["planId"] is None and row["priceUnknown"] is True
    assert row["stripePriceId"] == catalog.foreign_price and row["status"] == "active"
    # A subscription left on an older Price of "pro" (after a price change) is still on plan pro.
    kept = customer_with_card(stripe_client, "second@example.com")
    old = stripe_client.v1.subscriptions.create(
        params={"customer": kept, "items": [{"price": catalog.old_price}]}
    ).to_dict()
    listener.post(make_event("customer.subscription.created", old))
    row = subscription_row(db, old["id"])
    assert row is not None and row["planId"] == "pro" and row["priceUnknown"] is False


def test_other_events_are_acknowledged_and_owned_catalog_changes_recorded_as_drift(
    listener: Listener, db: psycopg.Connection, stripe_client: stripe.StripeClient, catalog: Catalog
) -> None:
    ignored = make_event("payment_intent.succeeded", {"id": "pi_1", "object": "payment_intent"})
    assert listener.post(ignored) == Reply(200, {"received": True, "outcome": "ignored"})
    price = stripe_client.v1.prices.retrieve(catalog.price).to_dict()
    # An apply a moment ago does not make a hand edit look like the apply's: only its key does.
    db.execute(
        'INSERT INTO cloud_reconciler_applies (catalog, summary, "toolVersion") '
        "VALUES ('{\"plans\": []}', '{}', 'test')"
    )
    by_hand = make_event("price.updated", {**price, "nickname": "edited in the Dashboard"})
    assert listener.post(by_hand) == Reply(200, {"received": True, "outcome": "drift"})
    by_apply = make_event(
        "price.created", price, request={"id": "req_1", "idempotency_key": "kuploy-reconciler-0123abcd"}
    )
    assert listener.post(by_apply) == Reply(200, {"received": True, "outcome": "apply"})
    foreign = stripe_client.v1.prices.retrieve(catalog.foreign_price).to_dict()
    assert listener.post(make_event("price.updated", foreign)).body["outcome"] == "ignored"
    rows = db.execute("SELECT outcome, count(*) FROM cloud_stripe_events GROUP BY outcome").fetchall()
    assert dict(rows) == {"ignored": 2, "drift": 1, "apply": 1}
    detail = event_row(db, event_id_of(by_hand))
    assert detail is not None and detail["objectId"] == catalog.price
    assert (detail["plan"], detail["detail"]) == ("pro", "plan pro: price.updated outside the tool")
    made = event_row(db, event_id_of(by_apply))
    assert made is not None and (made["plan"], made["detail"]) == ("pro", "plan pro: made by an apply")
    unowned = event_row(db, event_id_of(ignored))
    assert unowned is not None and unowned["plan"] is None


def test_the_plan_column_comes_without_a_rewrite_and_older_rows_keep_their_plan(
    settings: Settings, migrated: str, db: psycopg.Connection
) -> None:
    """Migration 0008 on a table filled before it: a catalog-only ADD COLUMN (the table keeps its file,
    nothing is rewritten), and `drift` still names the plan of rows recorded without the column."""
    db.execute("ALTER TABLE cloud_stripe_events DROP COLUMN plan")
    db.execute("DELETE FROM cloud_reconciler_migrations WHERE version = 8")  # as before 0008
    db.execute(
        'INSERT INTO cloud_stripe_events (id, type, "objectId", created, "receivedAt", outcome, detail) '
        "VALUES ('evt_old', 'price.updated', 'price_x', now(), now(), 'drift', "
        "'plan pro: price.updated outside the tool')"
    )
    assert [e.plan for e in read_drift_events(db)] == ["pro"]  # drift before `migrate`
    with serve(create_app(settings, webhook_secret=Secret(SECRET))) as running:
        reply = running.post(make_event("invoice.paid", {"id": "in_1", "object": "invoice"}))
    assert reply.status == 503 and "migrate" in reply.body["error"]  # the listener needs the column

    def table_file() -> int:
        row = db.execute("SELECT pg_relation_filenode('cloud_stripe_events')").fetchone()
        assert row is not None
        return int(row[0])

    before = table_file()
    assert migrations.migrate(db) == ("0008_stripe_event_plan",)
    assert table_file() == before
    old = event_row(db, "evt_old")
    assert old is not None and old["plan"] is None
    db.execute(
        'INSERT INTO cloud_stripe_events (id, type, "objectId", created, "receivedAt", outcome, detail, '
        "plan) VALUES ('evt_new', 'product.updated', 'prod_x', now(), now(), 'drift', 'by hand', 'team')"
    )
    assert sorted(e.plan or "" for e in read_drift_events(db)) == ["pro", "team"]  # the column first


# --- what an event costs in SQL ------------------------------------------------------------------


def _verb(query: Any) -> str:
    """The first word of a statement (`BEGIN`, `INSERT`, `WITH`…), or `(empty)` for a ping."""
    text = query.decode() if isinstance(query, bytes) else str(query)
    return text.split(None, 1)[0].upper() if text.strip() else "(empty)"


@contextmanager
def counting_statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter[str]]:
    """Every statement the listener's async connections send, by first word, while the block runs:
    `AsyncCursor.execute` (which `AsyncConnection.execute` goes through) and `_exec_command` (BEGIN,
    COMMIT, ROLLBACK of `conn.transaction()`), wrapped to count and call the original."""
    counter: collections.Counter[str] = collections.Counter()
    execute, exec_command = psycopg.AsyncCursor.execute, psycopg.AsyncConnection._exec_command

    async def counted_execute(self: psycopg.AsyncCursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        counter[_verb(query)] += 1
        return await execute(self, query, *args, **kwargs)

    def counted_command(self: psycopg.AsyncConnection[Any], command: Any, *args: Any, **kwargs: Any) -> Any:
        counter[_verb(command)] += 1
        return exec_command(self, command, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(psycopg.AsyncCursor, "execute", counted_execute)
        patch.setattr(psycopg.AsyncConnection, "_exec_command", counted_command)
        yield counter


def test_an_event_costs_its_own_statements_and_the_pool_none(
    listener: Listener,
    stripe_client: stripe.StripeClient,
    catalog: Catalog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Exact SQL per event, whatever the pool does: no ping or reset on checkout or return. A new
    connection's `SET lock_timeout` is the only other statement (at most one per pooled connection)."""
    with counting_statements(monkeypatch) as counter:

        def cost(bodies: list[bytes], threads: int = 1) -> dict[str, int]:
            before = collections.Counter(counter)
            with ThreadPoolExecutor(threads) as pool:
                assert {r.status for r in pool.map(listener.post, bodies)} == {200}
            spent = counter - before
            del spent["SET"]
            return dict(spent)

        ignored = [
            make_event("payment_intent.succeeded", {"id": f"pi_{n}", "object": "payment_intent"})
            for n in range(12)
        ]
        assert cost(ignored, threads=4) == {"INSERT": 12}  # recorded in one statement each
        assert cost(ignored[:1]) == {"INSERT": 1}  # a duplicate: the same INSERT, no row
        created = make_event("customer.subscription.created", new_subscription(stripe_client, catalog))
        # BEGIN, the event row and the lock, the stored row, the snapshot, the outcome, COMMIT: pipelined,
        # the first three in one round trip, the last three in another.
        snapshot = {"BEGIN": 1, "INSERT": 1, "SELECT": 1, "WITH": 1, "UPDATE": 1, "COMMIT": 1}
        assert cost([created]) == snapshot
        # A duplicate takes no lock; the read sent with its INSERT is answered, and its answer unused.
        assert cost([created]) == {"BEGIN": 1, "INSERT": 1, "SELECT": 1, "COMMIT": 1}
        assert counter["SET"] <= 8  # once per connection of the pool (8 at most), never per checkout


# --- failures answer 5xx, nothing half-written, and the retry converges ---------------------------


def test_database_down_mid_stream_answers_503_then_the_retry_converges(
    settings: Settings,
    catalog: Catalog,
    admin_dsn: str,
    database_url: str,
    stripe_client: stripe.StripeClient,
) -> None:
    name = str(psycopg.conninfo.conninfo_to_dict(database_url)["dbname"])
    first = new_subscription(stripe_client, catalog)
    second = new_subscription(stripe_client, catalog)
    body_a = make_event("customer.subscription.created", first)
    body_b = make_event("customer.subscription.created", second)
    with serve(create_app(settings, webhook_secret=Secret(SECRET))) as running:
        assert running.post(body_a).status == 200
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            try:
                down = running.post(body_b)
                assert down.status == 503 and "retry" in down.body["error"]
                assert running.get("/readyz").status == 503
            finally:
                admin.execute(
                    sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(name))
                )
        retried = running.post(body_b)
        assert retried == Reply(200, {"received": True, "outcome": "processed"})
        assert running.post(body_a) == Reply(200, {"received": True, "duplicate": True})
        assert running.get("/readyz").status == 200
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert count(conn, "cloud_stripe_events") == 2
        assert count(conn, "cloud_subscriptions") == 2


def test_stripe_unreachable_answers_503_with_nothing_written_then_the_retry_converges(
    settings: Settings, catalog: Catalog, db: psycopg.Connection, stripe_client: stripe.StripeClient
) -> None:
    sub = new_subscription(stripe_client, catalog)
    session = {
        "id": "cs_test_1",
        "object": "checkout.session",
        "subscription": sub["id"],
        "client_reference_id": "o1",
    }
    body = make_event("checkout.session.completed", session)  # checkout events always re-read
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    broken = dataclasses.replace(settings, stripe_api_base=dead, stripe_timeout=2.0)
    with serve(create_app(broken, webhook_secret=Secret(SECRET))) as running:
        reply = running.post(body)
        assert reply.status == 503 and "retry" in reply.body["error"]
    # The event row was inserted before the failed re-read, and rolled back with it.
    assert count(db, "cloud_stripe_events") == 0 and count(db, "cloud_subscriptions") == 0
    with serve(create_app(settings, webhook_secret=Secret(SECRET))) as running:
        assert running.post(body) == Reply(200, {"received": True, "outcome": "processed"})
    assert count(db, "cloud_stripe_events") == 1 and count(db, "cloud_subscriptions") == 1


def test_a_write_the_server_refuses_late_in_the_pipeline_rolls_back_the_whole_event(migrated: str) -> None:
    """The writes and COMMIT are sent together: when the server refuses one of them (here a period end
    Postgres cannot store, which verification would have refused), the COMMIT is skipped, the
    transaction rolled back with the event's row, and the connection is left idle for the next event."""
    no_stripe: Any = None  # a first snapshot: Stripe is never asked

    def event(event_id: str, period_end: int) -> Event:
        subscription = {"id": "sub_late", "status": "active", "current_period_end": period_end}
        return Event(
            id=event_id,
            type="customer.subscription.created",
            created=int(time.time()),
            livemode=False,
            object=subscription,
            idempotency_key=None,
        )

    async def scenario() -> tuple[Any, Any]:
        pool = ConnectionPool(Secret(migrated), size=1)
        await pool.open()
        async with pool.connection() as conn:
            with pytest.raises(psycopg.DataError):
                await process_event(conn, no_stripe, event("evt_late", 10**15), datetime.now(UTC))
            status = conn.info.transaction_status
        async with pool.connection() as conn:  # the same connection, usable
            outcome = await process_event(
                conn, no_stripe, event("evt_late", 1_800_000_000), datetime.now(UTC)
            )
        await pool.close()
        return status, outcome

    status, outcome = asyncio.run(scenario())
    assert status == psycopg.pq.TransactionStatus.IDLE
    assert outcome is not None and outcome.kind == "processed"  # the retry is not a duplicate
    with psycopg.connect(migrated, autocommit=True) as db:
        assert count(db, "cloud_stripe_events") == 1 and count(db, "cloud_subscriptions") == 1


def test_a_lock_timeout_fails_the_event_but_keeps_the_pools_connections(migrated: str) -> None:
    event = Event(
        id="evt_hot",
        type="customer.subscription.updated",
        created=int(time.time()),
        livemode=False,
        object={"id": "sub_hot", "status": "active"},
        idempotency_key=None,
    )

    async def backends(pool: ConnectionPool) -> set[int]:
        async with pool.connection() as a, pool.connection() as b:
            return {a.info.backend_pid, b.info.backend_pid}

    async def scenario() -> tuple[set[int], set[int]]:
        pool = ConnectionPool(Secret(migrated), size=2)
        await pool.open()
        before = await backends(pool)
        with psycopg.connect(migrated, autocommit=True) as holder, holder.transaction():
            holder.execute("SELECT pg_advisory_xact_lock(%s, hashtext('sub_hot'))", (LOCK_SPACE,))
            with pytest.raises(psycopg.errors.LockNotAvailable):
                async with pool.connection() as conn:
                    await conn.execute("SET lock_timeout = '200ms'")
                    await process_event(conn, None, event, datetime.now(UTC))  # type: ignore[arg-type]
        after = await backends(pool)
        await pool.close()
        return before, after

    before, after = asyncio.run(scenario())
    assert after == before  # the same two server sessions: nothing was dropped and reopened
    with psycopg.connect(migrated, autocommit=True) as db:
        assert count(db, "cloud_stripe_events") == 0  # rolled back with the failed wait


def test_a_database_the_pool_cannot_reach_answers_503_at_once_an_exhausted_pool_after_its_wait(
    settings: Settings, migrated: str
) -> None:
    """Down (every attempt to connect fails): 503 within `DOWN_WAIT`, well before the event deadline.
    Up but every connection busy: the full `wait`, then 503."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"postgresql://postgres@127.0.0.1:{probe.getsockname()[1]}/postgres"

    async def refusal(pool: ConnectionPool) -> tuple[str, float]:
        """Why a checkout from `pool` is refused, and how long it waited."""
        started = time.monotonic()
        with pytest.raises(Unavailable) as refused:
            async with pool.connection():
                pass
        return str(refused.value), time.monotonic() - started

    async def down() -> tuple[str, float]:
        pool = ConnectionPool(Secret(dead), size=2)
        await pool.open()
        while not pool._reconnecting_fails():  # the first attempts, refused
            await asyncio.sleep(0.01)
        refused = await refusal(pool)
        await pool.close()
        return refused

    async def exhausted() -> tuple[str, float]:
        pool = ConnectionPool(Secret(migrated), size=1, wait=1.5)
        await pool.open()
        async with pool.connection():  # the only one
            refused = await refusal(pool)
        await pool.close()
        return refused

    reason, seconds = asyncio.run(down())
    assert reason == "database unavailable" and seconds < 4 * DOWN_WAIT
    reason, seconds = asyncio.run(exhausted())
    assert reason == "no database connection free" and seconds >= 1.5
    # Over HTTP: the event is answered 503 long before its 8 s deadline.
    with serve(
        create_app(dataclasses.replace(settings, database_url=Secret(dead)), webhook_secret=Secret(SECRET))
    ) as running:
        started = time.monotonic()
        reply = running.post(
            make_event("customer.subscription.created", {"id": "sub_down", "object": "subscription"})
        )
        assert reply == Reply(503, {"error": "database unavailable; retry later"})
        assert time.monotonic() - started < 4.0


def test_a_stalled_database_answers_503_by_the_event_deadline_then_the_retry_converges(
    settings: Settings,
    catalog: Catalog,
    db: psycopg.Connection,
    migrated: str,
    stripe_client: stripe.StripeClient,
) -> None:
    """A database that stalls (here: a lock the event needs, held elsewhere; the lock timeout is 30 s)
    must not hold Stripe's request past the listener's deadline: 503 then, nothing kept."""
    sub = new_subscription(stripe_client, catalog)
    body = make_event("customer.subscription.created", sub)
    with serve(create_app(settings, webhook_secret=Secret(SECRET), event_deadline=1.0)) as running:
        with psycopg.connect(migrated, autocommit=True) as holder, holder.transaction():
            holder.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_SPACE, sub["id"]))
            stalled = running.post(body)
            assert stalled.status == 503, stalled
            assert stalled.body["error"] == (
                "not processed within 1 s (database or Stripe too slow); retry later"
            )
        # The abandoned attempt was cancelled in the server and rolled back: the retry does the work.
        assert running.post(body) == Reply(200, {"received": True, "outcome": "processed"})
    assert count(db, "cloud_stripe_events") == 1 and count(db, "cloud_subscriptions") == 1


def test_missing_tables_answer_503(settings: Settings, db: psycopg.Connection) -> None:
    with serve(create_app(settings, webhook_secret=Secret(SECRET))) as running:
        reply = running.post(make_event("invoice.paid", {"id": "in_1", "object": "invoice"}))
    assert reply.status == 503 and "migrate" in reply.body["error"]


# --- logging and the command line ----------------------------------------------------------------


def test_one_log_line_per_event_without_secrets_or_payloads(
    listener: Listener, stripe_client: stripe.StripeClient, catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reconciler.listener")
    sub = new_subscription(stripe_client, catalog)
    body = make_event("customer.subscription.created", sub)
    listener.post(body)
    listener.post(body)
    listener.post(body, signature=_signed_with_other_secret(body))
    lines = [r.getMessage() for r in caplog.records if r.name == "reconciler.listener"]
    eid = event_id_of(body)
    assert [line.split(" ms=")[0] for line in lines] == [
        f"stripe_event id={eid} type=customer.subscription.created outcome=processed",
        f"stripe_event id={eid} type=customer.subscription.created outcome=duplicate",
        "stripe_webhook rejected reason='bad signature: "
        "No signatures found matching the expected signature for payload'",
    ]
    assert SECRET not in caplog.text and sub["customer"] not in caplog.text and "org_1" not in caplog.text


def test_listen_needs_the_webhook_secret(cli_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "reconciler", "listen"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "STRIPE_WEBHOOK_SECRET" in result.stderr and "Traceback" not in result.stderr


def first_answer(proc: subprocess.Popen[Any], url: str, path: str, timeout: float = 60.0) -> Reply:
    """GET `path` from a `listen` started as `proc`, as soon as it accepts connections."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return request(url, "GET", path)
        except OSError:
            assert proc.poll() is None, f"listen exited: {proc.communicate()}"
            assert time.monotonic() < deadline, "listen did not start"
            time.sleep(0.05)


def child_pids(pid: int) -> set[int]:
    """The live child processes of `pid` (Linux /proc)."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                children.add(int(stat.parent.name))
    return children


@pytest.mark.parametrize("workers", [1, 2])
def test_listen_serves_until_stopped(cli_env: dict[str, str], migrated: str, workers: int) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**cli_env, "STRIPE_WEBHOOK_SECRET": SECRET}
    command = [sys.executable, "-m", "reconciler", "listen", "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        assert first_answer(proc, url, "/readyz").status == 200
        if workers > 1:  # the worker processes, besides multiprocessing's resource tracker
            assert len(child_pids(proc.pid)) >= workers
        bodies = [
            make_event("payment_intent.succeeded", {"id": f"pi_{n}", "object": "payment_intent"})
            for n in range(20)
        ]
        with ThreadPoolExecutor(4) as pool:
            replies = list(
                pool.map(
                    lambda b: request(url, "POST", WEBHOOK_PATH, b, {"Stripe-Signature": sign(b)}), bodies
                )
            )
        assert [r.status for r in replies] == [200] * len(bodies)
        assert request(url, "POST", WEBHOOK_PATH, bodies[0], {"Stripe-Signature": sign(bodies[0])}).body == {
            "received": True,
            "duplicate": True,
        }
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, -signal.SIGTERM) and "Traceback" not in err, err
    assert SECRET not in out + err and cli_env["DATABASE_URL"] not in out + err
    assert err.count("outcome=ignored") == len(bodies) and err.count("outcome=duplicate") == 1
    with psycopg.connect(migrated, autocommit=True) as db:
        assert count(db, "cloud_stripe_events") == len(bodies)
