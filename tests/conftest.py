"""Shared fixtures: a real PostgreSQL (embedded by default, TEST_DATABASE_URL for another) and the
Stripe emulator over HTTP, reached through the real `stripe` SDK. Nothing is mocked."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import hypothesis
import psycopg
import pytest
import stripe
from psycopg import sql

from reconciler.sandbox.emulator import RunningEmulator, start_in_thread
from reconciler.sandbox.postgres import start_embedded_postgres, stop_embedded_postgres
from reconciler.settings import Secret, Settings

TEST_KEY = "sk_test_kuployTests000000000000000000"

# What Stripe sends for a subscription-mode Checkout paid since 2025-03-31.basil, which creates the
# subscription only once the payment went through (docs.stripe.com/changelog/basil/2025-03-31/
# checkout-legacy-subscription-upgrade): the payment, then the customer with the card saved for its
# renewals, the subscription and its first invoice, paid by that payment.
PAID_SUBSCRIPTION_CHECKOUT = [
    "payment_intent.created",
    "charge.succeeded",
    "payment_intent.succeeded",
    "customer.created",
    "payment_method.attached",
    "customer.subscription.created",
    "invoice.created",
    "invoice.finalized",
    "invoice.paid",
    "invoice.payment_succeeded",
    "checkout.session.completed",
]

# Hypothesis profiles (see tests/test_hostile.py). `ci`, the default: the same examples every run, and
# no example database (nothing written into the repository). `explore`: new examples each run, five
# times as many (EXAMPLES_FACTOR), failures printed with a @reproduce_failure blob to replay them.
hypothesis.settings.register_profile("ci", derandomize=True, database=None)
hypothesis.settings.register_profile("explore", derandomize=False, database=None, print_blob=True)
HYPOTHESIS_PROFILE = os.environ.get("KUPLOY_HYPOTHESIS_PROFILE", "ci")
hypothesis.settings.load_profile(HYPOTHESIS_PROFILE)
EXAMPLES_FACTOR = 5 if HYPOTHESIS_PROFILE == "explore" else 1


@pytest.fixture(scope="session")
def admin_dsn() -> Iterator[str]:
    """A superuser DSN on a real server; each test gets its own database on it.

    The embedded server's data lives outside pytest's basetemp: pytest resets that folder's
    permissions to 0700 and prunes old ones, which breaks a server running as another user.
    """
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    data_dir = Path(tempfile.mkdtemp(prefix="kuploy-test-pg-"))
    try:
        yield start_embedded_postgres(data_dir)
    finally:
        stop_embedded_postgres(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


def _with_dbname(dsn: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname)


@pytest.fixture
def database_url(admin_dsn: str) -> Iterator[str]:
    name = f"kuploy_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield _with_dbname(admin_dsn, name)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    """A connection for assertions (autocommit, so it always sees committed state)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def emulator() -> Iterator[RunningEmulator]:
    with start_in_thread() as running:
        yield running


@pytest.fixture
def stripe_client(emulator: RunningEmulator) -> stripe.StripeClient:
    return stripe.StripeClient(TEST_KEY, base_addresses={"api": emulator.url})


def post_admin(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST a JSON body to one of the emulator's `/_emulator/*` admin routes; its answer, which must be
    a 200."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        answer = json.loads(response.read())
        assert response.status == 200, answer
        return cast(dict[str, Any], answer)
    finally:
        conn.close()


def monthly_price(client: stripe.StripeClient, amount: int = 1500) -> stripe.Price:
    """A monthly USD price of a new product "Pro"."""
    return client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Pro"},
        }
    )


@pytest.fixture
def settings(database_url: str, emulator: RunningEmulator) -> Settings:
    return Settings(
        database_url=Secret(database_url),
        stripe_secret_key=Secret(TEST_KEY),
        stripe_api_base=emulator.url,
        lock_timeout=5,
        max_rps=1000,  # the emulator has no rate limit unless a test sets one
    )


@pytest.fixture
def cli_env(database_url: str, emulator: RunningEmulator) -> dict[str, str]:
    """Environment for running the command line against this test's database and emulator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DATABASE_URL", "KUPLOY_"))}
    env.update(
        DATABASE_URL=database_url, STRIPE_SECRET_KEY=TEST_KEY, STRIPE_API_BASE=emulator.url, NO_COLOR="1"
    )
    return env


def stripe_writes(emulator: RunningEmulator) -> list[dict[str, Any]]:
    return [r for r in emulator.emulator.requests if r["method"] in ("POST", "DELETE")]


# --- catalogs ---------------------------------------------------------------------------------------

LIMITS = {
    "maxProjects": 3,
    "maxApps": 10,
    "maxDatabases": 2,
    "maxTeamMembers": 5,
    "maxDomains": 5,
    "maxCustomDomains": 2,
    "maxFreeSubdomains": 3,
    "maxPurchasableDomains": 1,
    "maxInstances": 1,
    "maxStorageBytes": 10 * 1024**3,
    "buildMinutesPerMonth": 500,
}


def kuploy_plan(slug: str, price: int | None = 2000, **overrides: Any) -> dict[str, Any]:
    """One kuploy.app plan template; `price=None` makes the free default plan."""
    plan: dict[str, Any] = {
        "slug": slug,
        "name": slug.replace("-", " ").title(),
        "description": f"The {slug} plan",
        "priceCents": price if price is not None else 0,
        "currency": "cad",
        "billingCycle": "monthly",
        "isDefault": price is None,
        "isActive": True,
        "limits": dict(LIMITS),
        "features": {
            "whiteLabel": False,
            "customDomains": True,
            "domainPurchase": False,
            "aiAssistant": False,
            "multiServer": False,
            "prioritySupport": False,
        },
    }
    plan.update(overrides)
    return plan


def write_catalog(directory: Path, plans: list[dict[str, Any]], name: str = "catalog.json") -> Path:
    path = directory / name
    path.write_text(json.dumps({"plans": plans}, indent=2))
    return path


def standard_plans() -> list[dict[str, Any]]:
    return [
        kuploy_plan("free", None),
        kuploy_plan("pro", 2000),
        kuploy_plan("team", 19900, currency="usd", billingCycle="annual"),
    ]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record",
        action="store_true",
        default=False,
        help="record the real-Stripe tests as vcrpy cassettes in tests/cassettes/ "
        "(needs KUPLOY_TEST_STRIPE_KEY=sk_test_…; see docs/stripe-emulator.md)",
    )
