"""The emulator driven by the official Stripe CLI (`@stripe/cli`, pinned in tools/package.json).

`stripe trigger EVENT` runs Stripe's own fixture for EVENT (the exact requests are in
stripe-cli's pkg/fixtures/triggers/EVENT.json); a faithful emulator answers every step, and records the
events real Stripe emits for that flow with the objects in the state Stripe leaves them. The expected
event sets come from public `stripe listen` logs of real test-mode accounts and Stripe's docs:

- subscription flows (customer.subscription.created|updated|deleted): a real `stripe trigger
  customer.subscription.deleted` log (API 2025-07-30.basil) shows payment_method.attached,
  customer.created, product.created, plan.created, price.created, charge.succeeded, customer.updated,
  customer.subscription.created, payment_intent.succeeded, payment_intent.created, invoice.created,
  invoice.finalized, invoice.paid, invoice.payment_succeeded, customer.subscription.deleted, then
  invoice_payment.paid about 20 s later;
- checkout.session.completed (mode=payment, a one-time Price): product.created, price.created,
  charge.succeeded, payment_intent.succeeded, payment_intent.created, checkout.session.completed, then
  charge.updated seconds later; no customer.created (`customer_creation` is `if_required`);
- payment_intent.succeeded and charge.succeeded: payment_intent.created, charge.succeeded,
  payment_intent.succeeded; payment_intent.payment_failed: payment_intent.created, charge.failed,
  payment_intent.payment_failed;
- invoice flows: the same building blocks (payment_method.attached on attach, invoiceitem.created,
  invoice.created, invoice.finalized inside /pay, then the payment's events and invoice.paid +
  invoice.payment_succeeded, or invoice.payment_failed for card 4000 0000 0000 0341).

Stripe does not guarantee event order, so the sets are compared without order. Events Stripe sends
later and asynchronously (invoice_payment.paid, charge.updated) and ones whose presence no log
confirms (invoice.updated) may appear but are not required. The legacy `plan.*` events a recurring
Price brings are checked on their own (test_a_recurring_price_also_emits_plan_created).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import stripe
from psycopg.rows import dict_row

from reconciler import api, migrations
from reconciler.catalog import load_catalog
from reconciler.model import lookup_key, ownership_metadata
from reconciler.plan import Action
from reconciler.sandbox.emulator import RunningEmulator
from reconciler.settings import Secret, Settings

import stripe_cli
from conftest import TEST_KEY, kuploy_plan, write_catalog

CLI = stripe_cli.find_cli()
pytestmark = pytest.mark.skipif(CLI is None, reason=stripe_cli.INSTALL_HINT)
FIXTURES = Path(__file__).parent / "fixtures" / "stripe-cli"
CLI_DESCRIPTION = "(created by Stripe CLI)"
WAIT = 60.0  # an upper bound for a started server to answer or a delivery to land, never a timing assertion


@pytest.fixture
def cli() -> str:
    assert CLI is not None  # the module is skipped otherwise
    return CLI


def events(client: stripe.StripeClient) -> list[stripe.Event]:
    return list(client.v1.events.list(params={"limit": 100}).auto_paging_iter())


def of_type(found: list[stripe.Event], event_type: str) -> stripe.Event:
    """The one event of `event_type` (a flow of the CLI emits each type it needs once)."""
    matching = [e for e in found if e.type == event_type]
    assert len(matching) == 1, f"{len(matching)} {event_type} events in {sorted(e.type for e in found)}"
    return matching[0]


def obj(event: stripe.Event) -> dict[str, Any]:
    return event.data.object.to_dict()


# --- what Stripe emits per trigger, and the state it leaves ------------------------------------------

# Sent later and asynchronously by Stripe, or not confirmed by any public log: allowed, not required.
MAY_ALSO = {"invoice_payment.paid", "charge.updated", "invoice.updated", "plan.created", "plan.updated"}

PAID_SUBSCRIPTION = [
    "customer.created",
    "payment_method.attached",
    "product.created",
    "price.created",
    "customer.updated",
    "customer.subscription.created",
    "invoice.created",
    "invoice.finalized",
    "payment_intent.created",
    "charge.succeeded",
    "payment_intent.succeeded",
    "invoice.paid",
    "invoice.payment_succeeded",
]
PAID_INVOICE = [
    "customer.created",
    "payment_method.attached",
    "invoiceitem.created",
    "invoice.created",
    "invoice.finalized",
    "payment_intent.created",
    "charge.succeeded",
    "payment_intent.succeeded",
    "invoice.paid",
    "invoice.payment_succeeded",
]
PAYMENT = ["payment_intent.created", "charge.succeeded", "payment_intent.succeeded"]


def check_customer(client: stripe.StripeClient, found: list[stripe.Event]) -> None:
    customer = client.v1.customers.retrieve(obj(of_type(found, "customer.created"))["id"])
    assert customer.description == CLI_DESCRIPTION


def check_product(client: stripe.StripeClient, found: list[stripe.Event]) -> None:
    product = client.v1.products.retrieve(obj(of_type(found, "product.created"))["id"])
    assert (product.name, product.description, product.active) == ("myproduct", CLI_DESCRIPTION, True)


def check_product_updated(client: stripe.StripeClient, found: list[stripe.Event]) -> None:
    updated = obj(of_type(found, "product.updated"))
    assert updated["metadata"] == {"foo": "bar"}
    assert client.v1.products.retrieve(updated["id"]).metadata.to_dict() == {"foo": "bar"}


def check_price(client: stripe.StripeClient, found: list[stripe.Event]) -> None:
    product_id = obj(of_type(found, "product.created"))["id"]
    price = client.v1.prices.retrieve(obj(of_type(found, "price.created"))["id"])
    assert (price.product, price.unit_amount, price.currency, price.type) == (
        product_id,
        1500,
        "usd",
        "recurring",
    )
    assert price.recurring is not None and price.recurring.interval == "month"


def check_price_updated(client: stripe.StripeClient, found: list[stripe.Event]) -> None:
    updated = obj(of_type(found, "price.updated"))
    assert client.v1.prices.retrieve(updated["id"]).metadata.to_dict() == {"foo": "bar"}


def paid_subscription(client: stripe.StripeClient, found: list[stripe.Event]) -> stripe.Subscription:
    """The trigger's subscription: created active, its first invoice paid with the customer's card."""
    created = obj(of_type(found, "customer.subscription.created"))
    assert created["status"] == "active"
    subscription = client.v1.subscriptions.retrieve(created["id"], params={"expand": ["latest_invoice"]})
    invoice = subscription.latest_invoice
    assert isinstance(invoice, stripe.Invoice)
    assert (invoice.status, invoice.amount_paid, invoice.currency) == ("paid", 1500, "usd")
    customer = client.v1.customers.retrieve(str(subscription.customer))
    assert customer.invoice_settings is not None
    default_pm = customer.invoice_settings.default_payment_method
    assert isinstance(default_pm, str) and default_pm.startswith("pm_") and default_pm != "pm_card_visa"
    return subscription


def check_subscription_created(client: stripe.StripeClient, found: list[stripe.Event]) -> None:
    assert paid_subscription(client, found).status == "active"


def check_subscription_updated(client: stripe.StripeClient, found: list[stripe.Event]) -> None:
    subscription = paid_subscription(client, found)
    assert (subscription.status, subscription.metadata.to_dict()) == ("active", {"foo": "bar"})


def check_subscription_deleted(client: stripe.StripeClient, found: list[stripe.Event]) -> None:
    subscription = paid_subscription(client, found)
    assert subscription.status == "canceled" and subscription.ended_at is not None


def check_invoice_paid(client: stripe.StripeClient, found: list[stripe.Event]) -> None:
    invoice = client.v1.invoices.retrieve(str(obj(of_type(found, "invoice.paid"))["id"]))
    assert (invoice.status, invoice.amount_paid, invoice.currency) == ("paid", 2000, "usd")


def check_invoice_payment_failed(client: stripe.StripeClient, found: list[stripe.Event]) -> None:
    invoice = client.v1.invoices.retrieve(str(obj(of_type(found, "invoice.payment_failed"))["id"]))
    assert (invoice.status, invoice.amount_due, invoice.amount_paid, invoice.attempt_count) == (
        "open",
        2000,
        0,
        1,
    )


def check_checkout(client: stripe.StripeClient, found: list[stripe.Event]) -> None:
    session = client.v1.checkout.sessions.retrieve(obj(of_type(found, "checkout.session.completed"))["id"])
    assert (session.mode, session.status, session.payment_status) == ("payment", "complete", "paid")
    assert (session.amount_total, session.currency) == (3000, "usd")


def check_payment(amount: int) -> Callable[[stripe.StripeClient, list[stripe.Event]], None]:
    def check(client: stripe.StripeClient, found: list[stripe.Event]) -> None:
        intent = client.v1.payment_intents.retrieve(obj(of_type(found, "payment_intent.succeeded"))["id"])
        assert (intent.status, intent.amount, intent.amount_received) == ("succeeded", amount, amount)
        charge = obj(of_type(found, "charge.succeeded"))
        assert (charge["paid"], charge["status"], charge["payment_intent"]) == (True, "succeeded", intent.id)

    return check


def check_payment_failed(client: stripe.StripeClient, found: list[stripe.Event]) -> None:
    intent = client.v1.payment_intents.retrieve(obj(of_type(found, "payment_intent.payment_failed"))["id"])
    assert intent.status == "requires_payment_method"
    assert intent.last_payment_error is not None and intent.last_payment_error.code == "card_declined"
    assert obj(of_type(found, "charge.failed"))["status"] == "failed"


def not_modelled(what: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"issue 13: the emulator does not model {what} yet")


TRIGGERS: list[Any] = [
    pytest.param("customer.created", ["customer.created"], check_customer, id="customer.created"),
    pytest.param("product.created", ["product.created"], check_product, id="product.created"),
    pytest.param(
        "product.updated", ["product.created", "product.updated"], check_product_updated, id="product.updated"
    ),
    pytest.param("price.created", ["product.created", "price.created"], check_price, id="price.created"),
    pytest.param(
        "price.updated",
        ["product.created", "price.created", "price.updated"],
        check_price_updated,
        id="price.updated",
    ),
    pytest.param(
        "customer.subscription.created",
        PAID_SUBSCRIPTION,
        check_subscription_created,
        id="customer.subscription.created",
    ),
    pytest.param(
        "customer.subscription.updated",
        [*PAID_SUBSCRIPTION, "customer.subscription.updated"],
        check_subscription_updated,
        id="customer.subscription.updated",
    ),
    pytest.param(
        "customer.subscription.deleted",
        [*PAID_SUBSCRIPTION, "customer.subscription.deleted"],
        check_subscription_deleted,
        id="customer.subscription.deleted",
    ),
    pytest.param("invoice.paid", PAID_INVOICE, check_invoice_paid, id="invoice.paid"),
    pytest.param(
        "invoice.payment_succeeded",
        PAID_INVOICE,
        check_invoice_paid,
        id="invoice.payment_succeeded",
    ),
    pytest.param(
        "invoice.payment_failed",
        [
            "customer.created",
            "payment_method.attached",
            "invoiceitem.created",
            "invoice.created",
            "invoice.finalized",
            "payment_intent.created",
            "charge.failed",
            "payment_intent.payment_failed",
            "invoice.payment_failed",
        ],
        check_invoice_payment_failed,
        id="invoice.payment_failed",
    ),
    pytest.param(
        "checkout.session.completed",
        ["product.created", "price.created", *PAYMENT, "checkout.session.completed"],
        check_checkout,
        id="checkout.session.completed",
    ),
    pytest.param(
        "payment_intent.succeeded",
        PAYMENT,
        check_payment(2000),
        id="payment_intent.succeeded",
    ),
    pytest.param(
        "payment_intent.payment_failed",
        ["payment_intent.created", "charge.failed", "payment_intent.payment_failed"],
        check_payment_failed,
        id="payment_intent.payment_failed",
    ),
    pytest.param(
        "charge.succeeded",
        PAYMENT,
        check_payment(100),
        id="charge.succeeded",
    ),
]


def assert_emitted(found: list[stripe.Event], expected: list[str]) -> None:
    emitted: Counter[str] = Counter(e.type for e in found)
    missing = Counter(expected) - emitted
    unexpected = {t for t in emitted if t not in expected and t not in MAY_ALSO}
    assert not missing and not unexpected, (
        f"missing {dict(missing)}, unexpected {unexpected}, got {dict(emitted)}"
    )


@pytest.mark.parametrize(("event", "expected", "check"), TRIGGERS)
def test_stripe_trigger(
    cli: str,
    emulator: RunningEmulator,
    stripe_client: stripe.StripeClient,
    event: str,
    expected: list[str],
    check: Callable[[stripe.StripeClient, list[stripe.Event]], None],
) -> None:
    result = stripe_cli.trigger(cli, event, api_base=emulator.url, api_key=TEST_KEY)
    assert result.returncode == 0 and "Trigger succeeded" in result.stdout, result.describe()
    found = events(stripe_client)
    assert_emitted(found, expected)
    check(stripe_client, found)


def test_a_recurring_price_also_emits_plan_created(
    cli: str, emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    """Real `stripe trigger customer.subscription.deleted` logs show plan.created right before
    price.created for the CLI's `recurring[interval]=month` Price (same id as the Price)."""
    result = stripe_cli.trigger(cli, "price.created", api_base=emulator.url, api_key=TEST_KEY)
    assert result.returncode == 0, result.describe()
    found = events(stripe_client)
    assert obj(of_type(found, "plan.created"))["id"] == obj(of_type(found, "price.created"))["id"]


def test_a_metadata_change_reports_only_the_changed_keys_as_previous(
    cli: str, emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    """Stripe's previous_attributes for adding metadata[foo] is {"metadata": {"foo": null}}: the keys
    that changed with their old values, null for an added key (docs.stripe.com/api/events/object), and
    the old `updated` time when the update moved it to a later second."""
    result = stripe_cli.trigger(cli, "product.updated", api_base=emulator.url, api_key=TEST_KEY)
    assert result.returncode == 0, result.describe()
    updated = of_type(events(stripe_client), "product.updated")
    previous = updated.data.to_dict()["previous_attributes"]
    assert previous["metadata"] == {"foo": None}
    assert set(previous) <= {"metadata", "updated"}


# --- `sandbox serve` as a user starts it --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_answering(proc: subprocess.Popen[str], url: str) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except urllib.error.HTTPError:
            return  # it answers (401 without a key): it is up
        except OSError:
            assert proc.poll() is None, f"{proc.args!r} exited: {proc.communicate()}"
            assert time.monotonic() < deadline, f"{proc.args!r} did not start"
            time.sleep(0.05)


@contextmanager
def started(
    command: list[str], url: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_answering(proc, url)
        yield proc
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@contextmanager
def sandbox_serve() -> Iterator[str]:
    """`kuploy-reconciler sandbox serve` in its own process; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "reconciler", "sandbox", "serve", "--port", str(port)]
    with started(command, f"{url}/v1/products"):
        yield url


def test_stripe_trigger_against_sandbox_serve(cli: str) -> None:
    with sandbox_serve() as url:
        client = stripe.StripeClient(TEST_KEY, base_addresses={"api": url})
        result = stripe_cli.trigger(cli, "price.updated", api_base=url, api_key=TEST_KEY)
        assert result.returncode == 0 and "Trigger succeeded" in result.stdout, result.describe()
        found = events(client)
        assert_emitted(found, ["product.created", "price.created", "price.updated"])
        check_price_updated(client, found)


def test_payment_triggers_against_sandbox_serve_with_a_state_file(cli: str, tmp_path: Path) -> None:
    """A declined payment answers the CLI's expected 402 card_error, and what it made (the intent, the
    failed charge, the events) is kept in the state file like any write."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    state = tmp_path / "stripe.json"
    command = [sys.executable, "-m", "reconciler", "sandbox", "serve", "--port", str(port)]
    with started([*command, "--state-file", str(state)], f"{url}/v1/products"):
        client = stripe.StripeClient(TEST_KEY, base_addresses={"api": url})
        for event in ("payment_intent.succeeded", "payment_intent.payment_failed"):
            result = stripe_cli.trigger(cli, event, api_base=url, api_key=TEST_KEY)
            assert result.returncode == 0 and "Trigger succeeded" in result.stdout, result.describe()
        found = events(client)
        assert sorted(e.type for e in found) == sorted(
            [*PAYMENT, "payment_intent.created", "charge.failed", "payment_intent.payment_failed"]
        )
        check_payment_failed(client, found)
    saved = json.loads(state.read_text())["accounts"]["test"]
    assert len(saved["payment_intents"]) == 2 and len(saved["charges"]) == 2


# --- fixture files of ours: the catalog as the reconciler writes and reads it ------------------------


def cloud_plans(db: psycopg.Connection) -> dict[str, dict[str, Any]]:
    with db.cursor(row_factory=dict_row) as cur:
        return {r["planId"]: r for r in cur.execute("SELECT * FROM cloud_plans")}


def test_a_plan_made_with_the_stripe_cli_is_adopted_by_apply(
    cli: str,
    emulator: RunningEmulator,
    stripe_client: stripe.StripeClient,
    settings: Settings,
    db: psycopg.Connection,
    tmp_path: Path,
) -> None:
    """owned-plan.json makes what an interrupted apply leaves behind (an owned Product, its Price with
    the plan's lookup key as default): apply must take those over, not create a second Product."""
    result = stripe_cli.fixtures(cli, FIXTURES / "owned-plan.json", api_base=emulator.url, api_key=TEST_KEY)
    assert result.returncode == 0, result.describe()
    (price,) = stripe_client.v1.prices.list(params={"lookup_keys": [lookup_key("pro")]}).data
    assert price.metadata.to_dict() == ownership_metadata("pro")
    product = stripe_client.v1.products.retrieve(str(price.product))
    assert product.default_price == price.id

    path = write_catalog(tmp_path, [kuploy_plan("free", None), kuploy_plan("pro", 2000)])
    outcome = api.apply(settings, load_catalog(path), confirm=lambda plan: True)
    row = cloud_plans(db)["pro"]
    assert (row["stripeProductId"], row["stripePriceId"]) == (product.id, price.id)
    assert not any(p.name == "Pro" and p.id != product.id for p in stripe_client.v1.products.list().data)
    assert outcome.operations > 0  # the rows were written
    assert not api.plan(settings, load_catalog(path)).has_changes


def test_a_price_change_made_with_the_stripe_cli_is_seen_as_drift(
    cli: str,
    emulator: RunningEmulator,
    stripe_client: stripe.StripeClient,
    settings: Settings,
    db: psycopg.Connection,
    tmp_path: Path,
) -> None:
    """price-change.json does by hand what the reconciler does for a new price (a new Price taking
    the lookup key, set as default, the old one archived): the next plan must see Stripe at 2500
    against a catalog at 2000, and want the catalog's price back."""
    path = write_catalog(tmp_path, [kuploy_plan("free", None), kuploy_plan("pro", 2000)])
    api.apply(settings, load_catalog(path), confirm=lambda plan: True)
    before = cloud_plans(db)["pro"]
    env = {"KUPLOY_PRODUCT": before["stripeProductId"], "KUPLOY_OLD_PRICE": before["stripePriceId"]}

    result = stripe_cli.fixtures(
        cli, FIXTURES / "price-change.json", api_base=emulator.url, api_key=TEST_KEY, env=env
    )
    assert result.returncode == 0, result.describe()
    (moved,) = stripe_client.v1.prices.list(params={"lookup_keys": [lookup_key("pro")]}).data
    assert (moved.unit_amount, moved.active) == (2500, True)
    assert not stripe_client.v1.prices.retrieve(before["stripePriceId"]).active
    assert stripe_client.v1.products.retrieve(before["stripeProductId"]).default_price == moved.id

    planned = api.plan(settings, load_catalog(path))
    (change,) = planned.changes
    assert (change.slug, change.action) == ("pro", Action.UPDATE)
    assert moved.id in planned.archived_price_ids()


# --- end to end: Checkout paid with the CLI lands in cloud_subscriptions -----------------------------


def subscription_checkout_trigger(price_id: str, organization: str, amount: int = 2000) -> list[str]:
    """`stripe trigger checkout.session.completed` turned into a subscription Checkout of `price_id`
    for `organization` (`--override`, `--add`, `--remove` are the CLI's own flags for this)."""
    return [
        "trigger",
        "checkout.session.completed",
        "--override",
        "checkout_session:mode=subscription",
        # The CLI's `path.to.param` form replaces the fixture's line item; the bracketed
        # form would add a second `line_items[0][price]` beside it, in random order.
        "--override",
        f"checkout_session:line_items.0.price={price_id}",
        "--override",
        "checkout_session:line_items.0.quantity=1",
        "--remove",
        "checkout_session:payment_intent_data",
        "--add",
        f"checkout_session:client_reference_id={organization}",
        "--override",
        f"payment_page_confirm:expected_amount={amount}",
    ]


def test_checkout_completed_with_the_cli_lands_in_cloud_subscriptions(
    cli: str, database_url: str, db: psycopg.Connection, tmp_path: Path
) -> None:
    """`sandbox serve` + `listen`, a webhook endpoint on the emulator for the listener, and `stripe
    trigger checkout.session.completed` turned into a subscription Checkout of the catalog's plan."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrations.migrate(conn)
    with sandbox_serve() as stripe_url:
        client = stripe.StripeClient(TEST_KEY, base_addresses={"api": stripe_url})
        settings = Settings(
            database_url=Secret(database_url), stripe_secret_key=Secret(TEST_KEY), stripe_api_base=stripe_url
        )
        api.apply(
            settings,
            load_catalog(write_catalog(tmp_path, [kuploy_plan("free", None), kuploy_plan("pro", 2000)])),
            confirm=lambda p: True,
        )
        price_id = cloud_plans(db)["pro"]["stripePriceId"]

        port = free_port()
        endpoint = client.v1.webhook_endpoints.create(
            params={"url": f"http://127.0.0.1:{port}/api/webhooks/stripe", "enabled_events": ["*"]}
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "KUPLOY_"))},
            "DATABASE_URL": database_url,
            "STRIPE_SECRET_KEY": TEST_KEY,
            "STRIPE_API_BASE": stripe_url,
            "STRIPE_WEBHOOK_SECRET": str(endpoint.secret),
        }
        listen = [sys.executable, "-m", "reconciler", "listen", "--port", str(port)]
        with started(listen, f"http://127.0.0.1:{port}/readyz", env):
            result = stripe_cli.run(
                cli, subscription_checkout_trigger(price_id, "org_cli"), api_base=stripe_url, api_key=TEST_KEY
            )
            assert result.returncode == 0 and "Trigger succeeded" in result.stdout, result.describe()
            flush = urllib.request.Request(
                f"{stripe_url}/_emulator/deliveries/flush",
                data=json.dumps({"timeout": WAIT}).encode(),
                method="POST",
            )
            with urllib.request.urlopen(flush, timeout=WAIT + 10) as reply:
                assert json.load(reply) is not None
        (session,) = client.v1.checkout.sessions.list().data
        with db.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                'SELECT * FROM cloud_subscriptions WHERE "stripeSubscriptionId" = %s', (session.subscription,)
            ).fetchone()
        assert row is not None
        assert (row["organizationId"], row["planId"], row["status"]) == ("org_cli", "pro", "active")
