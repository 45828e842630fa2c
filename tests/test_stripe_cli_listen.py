"""`stripe listen` (the official CLI, pinned in tools/package.json) against the emulator: a session from
`POST /v1/stripecli/sessions`, the events pushed over its websocket, forwarded by the CLI to a local
URL with a `Stripe-Signature` made with the account's CLI secret (docs/stripe-emulator.md, "stripe
listen").

Each test starts the CLI in the background and waits for its "Ready!" line (generously: the machine
may be loaded); the CLI's process group is killed however the test ends. Checks that something was NOT
forwarded wait a little after what was; the CLI forwards each message from its own goroutine, so no
order between forwards is assumed."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
import stripe
from psycopg.rows import dict_row

from reconciler import api, migrations
from reconciler.catalog import load_catalog
from reconciler.sandbox.emulator import USER_AGENT, RunningEmulator
from reconciler.settings import Secret, Settings

import stripe_cli
from conftest import TEST_KEY, kuploy_plan, write_catalog
from test_stripe_cli import (
    WAIT,
    cloud_plans,
    free_port,
    sandbox_serve,
    started,
    subscription_checkout_trigger,
)

CLI = stripe_cli.find_cli()
pytestmark = pytest.mark.skipif(CLI is None, reason=stripe_cli.INSTALL_HINT)
QUIET = 1.0  # how long to wait for what must not come, after what must has come


@pytest.fixture
def cli() -> str:
    assert CLI is not None  # the module is skipped otherwise
    return CLI


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        return cast(dict[str, Any], json.loads(self.body))


@dataclass
class Receiver:
    """A local webhook receiver: every POST is kept and answered 200."""

    url: str
    deliveries: list[Delivery] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, listening: stripe_cli.Listening) -> list[Delivery]:
        """The deliveries once there are `count` (or the test fails, with what the CLI said)."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.deliveries) >= count, timeout=WAIT):
                pytest.fail(f"{len(self.deliveries)} of {count} events forwarded\n{listening.output()}")
            return list(self.deliveries)

    def after_quiet(self) -> list[Delivery]:
        time.sleep(QUIET)
        with self.arrived:
            return list(self.deliveries)


@contextmanager
def receiver() -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with got.arrived:
                got.deliveries.append(Delivery(dict(self.headers.items()), body))
                got.arrived.notify_all()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    got = Receiver(f"http://127.0.0.1:{server.server_address[1]}/webhooks/stripe")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield got
    finally:
        server.shutdown()
        server.server_close()


def print_secret(cli: str, api_base: str) -> str:
    result = stripe_cli.run(cli, ["listen", "--print-secret"], api_base=api_base, api_key=TEST_KEY)
    assert result.returncode == 0, result.describe()
    return result.stdout.strip()


def test_print_secret_prints_the_accounts_secret_the_same_for_every_session(
    cli: str, emulator: RunningEmulator
) -> None:
    first = print_secret(cli, emulator.url)
    assert re.fullmatch(r"whsec_[0-9a-f]{64}", first), first
    assert print_secret(cli, emulator.url) == first


def test_listen_forwards_each_event_once_signed_with_the_accounts_secret(
    cli: str, emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    secret = print_secret(cli, emulator.url)
    with receiver() as got:
        args = ["--all-snapshot", "--forward-to", got.url]
        with stripe_cli.listening(cli, args, api_base=emulator.url, api_key=TEST_KEY) as listening:
            assert listening.secret == secret
            product = stripe_client.v1.products.create(params={"name": "Listened"})
            stripe_client.v1.products.update(product.id, params={"name": "Listened again"})
            got.wait_for(2, listening)
            deliveries = got.after_quiet()
    assert len(deliveries) == 2, [d.event["type"] for d in deliveries]  # not once per API version
    by_type = {d.event["type"]: d for d in deliveries}
    assert set(by_type) == {"product.created", "product.updated"}
    created = by_type["product.created"]
    event = stripe.Webhook.construct_event(created.body.decode(), created.headers["Stripe-Signature"], secret)
    assert event.data.object.id == product.id and event.data.object.name == "Listened"
    assert event.api_version == stripe.api_version  # the account's default (no --latest)
    assert stripe_client.v1.events.retrieve(event.id).type == "product.created"
    assert created.headers["User-Agent"] == USER_AGENT
    assert created.headers["Content-Type"].startswith("application/json")


def test_listen_forwards_only_the_events_asked_for(
    cli: str, emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    with receiver() as got:
        args = ["--forward-to", got.url, "--events", "product.created"]
        with stripe_cli.listening(cli, args, api_base=emulator.url, api_key=TEST_KEY) as listening:
            stripe_client.v1.customers.create(params={"email": "filtered@example.com"})
            first = stripe_client.v1.products.create(params={"name": "One"})
            stripe_client.v1.products.update(first.id, params={"name": "One again"})
            stripe_client.v1.products.create(params={"name": "Two"})
            got.wait_for(2, listening)
            deliveries = got.after_quiet()
    assert [d.event["type"] for d in deliveries] == ["product.created", "product.created"]


def test_listen_latest_gets_the_events_in_the_latest_version(
    cli: str, emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    with receiver() as got:
        args = ["--all-snapshot", "--forward-to", got.url, "--latest"]
        with stripe_cli.listening(cli, args, api_base=emulator.url, api_key=TEST_KEY) as listening:
            assert f"You are using Stripe API Version [{stripe.api_version}]" in listening.output()
            stripe_client.v1.products.create(params={"name": "Latest"})
            (delivery,) = got.wait_for(1, listening)
    assert delivery.event["type"] == "product.created"
    assert delivery.event["api_version"] == stripe.api_version


def test_listen_forwards_a_checkout_to_the_listener_and_it_lands_in_cloud_subscriptions(
    cli: str, database_url: str, db: psycopg.Connection, tmp_path: Path
) -> None:
    """As an operator runs it: `sandbox serve`, `kuploy-reconciler listen` with the CLI's secret as its
    webhook secret, `stripe listen --forward-to` it, then a Checkout paid with `stripe trigger`. No
    webhook endpoint exists on the emulator: the events reach the listener only through the CLI."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrations.migrate(conn)
    with sandbox_serve() as stripe_url:
        settings = Settings(
            database_url=Secret(database_url), stripe_secret_key=Secret(TEST_KEY), stripe_api_base=stripe_url
        )
        catalog = write_catalog(tmp_path, [kuploy_plan("free", None), kuploy_plan("pro", 2000)])
        api.apply(settings, load_catalog(catalog), confirm=lambda p: True)
        price_id = cloud_plans(db)["pro"]["stripePriceId"]

        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "KUPLOY_"))},
            "DATABASE_URL": database_url,
            "STRIPE_SECRET_KEY": TEST_KEY,
            "STRIPE_API_BASE": stripe_url,
            "STRIPE_WEBHOOK_SECRET": print_secret(cli, stripe_url),
        }
        listen = [sys.executable, "-m", "reconciler", "listen", "--port", str(port)]
        forward = ["--all-snapshot", "--forward-to", f"http://127.0.0.1:{port}/api/webhooks/stripe"]
        with (
            started(listen, f"http://127.0.0.1:{port}/readyz", env),
            stripe_cli.listening(cli, forward, api_base=stripe_url, api_key=TEST_KEY) as listening,
        ):
            result = stripe_cli.run(
                cli,
                subscription_checkout_trigger(price_id, "org_listen"),
                api_base=stripe_url,
                api_key=TEST_KEY,
            )
            assert result.returncode == 0 and "Trigger succeeded" in result.stdout, result.describe()
            client = stripe.StripeClient(TEST_KEY, base_addresses={"api": stripe_url})
            (session,) = client.v1.checkout.sessions.list().data
            row = wait_for_subscription(db, str(session.subscription), listening)
    assert (row["organizationId"], row["planId"], row["status"]) == ("org_listen", "pro", "active")


def wait_for_subscription(
    db: psycopg.Connection, subscription_id: str, listening: stripe_cli.Listening
) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while True:
        with db.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                'SELECT * FROM cloud_subscriptions WHERE "stripeSubscriptionId" = %s', (subscription_id,)
            ).fetchone()
        # The CLI forwards the Checkout's events concurrently, in any order: the row is complete once
        # `customer.subscription.*` made it active and `checkout.session.completed` gave it its
        # organization, whichever came first.
        if row is not None and row["status"] == "active" and row["organizationId"] is not None:
            return row
        if time.monotonic() > deadline:
            pytest.fail(
                f"{subscription_id} not in cloud_subscriptions as active with its organization: {row}\n"
                f"{listening.output()}"
            )
        time.sleep(0.2)
