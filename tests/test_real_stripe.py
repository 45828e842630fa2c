"""The end-to-end scenarios, once per Stripe backend: the emulator (always), and real Stripe.

"stripe" runs against real test-mode Stripe with KUPLOY_TEST_STRIPE_KEY=sk_test_… (recording
cassettes with --record), replays `tests/cassettes/<test>.yaml` without a key, and is skipped with
a one-line reason when there is neither. Every plan slug carries the run id (`pro-<runid>`) and all
calls go through `realstripe.RunGuard`, so a run sees, touches and archives only its own objects.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import stripe
from psycopg.rows import dict_row

from reconciler import api
from reconciler.catalog import load_catalog
from reconciler.model import lookup_key, ownership_metadata
from reconciler.plan import Action
from reconciler.results import ApplyOutcome
from reconciler.sandbox.emulator import start_in_thread
from reconciler.settings import Secret, Settings

from conftest import kuploy_plan, write_catalog
from realstripe import (
    EMULATOR_KEY,
    Backend,
    LiveKeyRefused,
    RunGuard,
    guard_client,
    stripe_backend_for,
    stripe_test_key,
)

stripe_test_key()  # a live key fails the collection of this module, before anything runs


@pytest.fixture(params=["emulator", "stripe"])
def stripe_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    with stripe_backend_for(request, request.param) as backend:
        yield backend


@pytest.fixture
def backend_settings(stripe_backend: Backend, database_url: str) -> Settings:
    return Settings(
        database_url=Secret(database_url),
        stripe_secret_key=Secret(stripe_backend.key),
        stripe_api_base=stripe_backend.api_base,
        lock_timeout=5,
        # Real Stripe: its test-mode limit (25/s). Emulator and replays: no wait.
        max_rps=None
        if stripe_backend.name == "stripe (live)" or "recording" in stripe_backend.name
        else 1000,
        concurrency=1,  # one request order, so a recording replays request by request
    )


@pytest.fixture
def client(stripe_backend: Backend) -> stripe.StripeClient:
    return guard_client(stripe_backend.guard, stripe_backend.key)


def catalog(run_id: str, **changes: dict[str, Any] | None) -> list[dict[str, Any]]:
    """free (default), pro and team, every slug tagged with the run id; `changes` per plain slug,
    a None value removes the plan."""
    plans = {
        "free": kuploy_plan(f"free-{run_id}", None),
        "pro": kuploy_plan(f"pro-{run_id}", 2000),
        "team": kuploy_plan(f"team-{run_id}", 19900, currency="usd", billingCycle="annual"),
    }
    for slug, update in changes.items():
        if update is None:
            del plans[slug]
        else:
            plans[slug].update(update)
    return list(plans.values())


def apply(settings: Settings, path: Path) -> ApplyOutcome:
    return api.apply(settings, load_catalog(path), confirm=lambda plan: True)


def rows(db: psycopg.Connection) -> dict[str, dict[str, Any]]:
    with db.cursor(row_factory=dict_row) as cur:
        return {str(r["planId"]).rsplit("-", 1)[0]: r for r in cur.execute("SELECT * FROM cloud_plans")}


def assert_converged(settings: Settings, path: Path, backend: Backend) -> None:
    """A second apply writes nothing anywhere and a plan after it is empty."""
    before = backend.guard.writes
    outcome = apply(settings, path)
    assert outcome.operations == 0
    assert not outcome.plan.has_changes, outcome.plan
    assert backend.guard.writes == before
    assert not api.plan(settings, load_catalog(path)).has_changes


def assert_paid_plan(
    row: dict[str, Any], client: stripe.StripeClient, amount: int, currency: str, interval: str
) -> None:
    product = client.v1.products.retrieve(row["stripeProductId"])
    price = client.v1.prices.retrieve(row["stripePriceId"])
    assert product.active and product.name == row["name"]
    assert product.default_price == price.id
    assert product.metadata.to_dict() == ownership_metadata(row["planId"])
    assert price.active and price.product == product.id
    assert price.recurring is not None
    assert (price.unit_amount, price.currency, price.recurring.interval) == (amount, currency, interval)
    assert price.lookup_key == lookup_key(row["planId"])
    active = [
        p.id for p in client.v1.prices.list(params={"product": product.id, "limit": 100}).data if p.active
    ]
    assert active == [price.id]


def test_create(
    stripe_backend: Backend,
    backend_settings: Settings,
    client: stripe.StripeClient,
    db: psycopg.Connection,
    tmp_path: Path,
) -> None:
    path = write_catalog(tmp_path, catalog(stripe_backend.run_id))
    planned = api.plan(backend_settings, load_catalog(path))
    assert [c.action for c in planned.changes] == [Action.CREATE] * 3
    apply(backend_settings, path)

    state = rows(db)
    assert state["free"]["stripeProductId"] is None and state["free"]["isDefault"]
    assert_paid_plan(state["pro"], client, 2000, "cad", "month")
    assert_paid_plan(state["team"], client, 19900, "usd", "year")
    assert len(client.v1.products.list(params={"limit": 100}).data) == 2  # the free plan has none
    assert_converged(backend_settings, path, stripe_backend)


def test_price_change(
    stripe_backend: Backend,
    backend_settings: Settings,
    client: stripe.StripeClient,
    db: psycopg.Connection,
    tmp_path: Path,
) -> None:
    path = write_catalog(tmp_path, catalog(stripe_backend.run_id))
    apply(backend_settings, path)
    old = rows(db)["pro"]

    write_catalog(tmp_path, catalog(stripe_backend.run_id, pro={"priceCents": 2500}))
    planned = api.plan(backend_settings, load_catalog(path))
    assert [c.action for c in planned.changes] == [Action.REPLACE_PRICE]
    apply(backend_settings, path)

    new = rows(db)["pro"]
    assert new["stripeProductId"] == old["stripeProductId"]
    assert new["stripePriceId"] != old["stripePriceId"]
    assert_paid_plan(new, client, 2500, "cad", "month")
    old_price = client.v1.prices.retrieve(old["stripePriceId"])
    assert not old_price.active and old_price.lookup_key is None and old_price.unit_amount == 2000
    assert_converged(backend_settings, path, stripe_backend)


def test_rename(
    stripe_backend: Backend,
    backend_settings: Settings,
    client: stripe.StripeClient,
    db: psycopg.Connection,
    tmp_path: Path,
) -> None:
    path = write_catalog(tmp_path, catalog(stripe_backend.run_id))
    apply(backend_settings, path)
    old = rows(db)["pro"]

    renamed = {"name": "Professional", "description": "For growing teams"}
    write_catalog(tmp_path, catalog(stripe_backend.run_id, pro=renamed))
    (change,) = api.plan(backend_settings, load_catalog(path)).changes
    assert change.action is Action.UPDATE
    apply(backend_settings, path)

    new = rows(db)["pro"]
    assert new["stripePriceId"] == old["stripePriceId"]
    product = client.v1.products.retrieve(new["stripeProductId"])
    assert (product.name, product.description) == ("Professional", "For growing teams")
    assert_paid_plan(new, client, 2000, "cad", "month")
    assert_converged(backend_settings, path, stripe_backend)


def test_removal_then_readd(
    stripe_backend: Backend,
    backend_settings: Settings,
    client: stripe.StripeClient,
    db: psycopg.Connection,
    tmp_path: Path,
) -> None:
    path = write_catalog(tmp_path, catalog(stripe_backend.run_id))
    apply(backend_settings, path)
    before = rows(db)["team"]

    write_catalog(tmp_path, catalog(stripe_backend.run_id, team=None))
    planned = api.plan(backend_settings, load_catalog(path))
    assert [c.action for c in planned.changes] == [Action.ARCHIVE]
    apply(backend_settings, path)
    assert rows(db)["team"]["isActive"] is False
    assert not client.v1.products.retrieve(before["stripeProductId"]).active
    assert not client.v1.prices.retrieve(before["stripePriceId"]).active
    assert_converged(backend_settings, path, stripe_backend)

    write_catalog(tmp_path, catalog(stripe_backend.run_id))
    planned = api.plan(backend_settings, load_catalog(path))
    assert [c.action for c in planned.changes] == [Action.REACTIVATE]
    apply(backend_settings, path)
    back = rows(db)["team"]
    assert (back["stripeProductId"], back["stripePriceId"]) == (
        before["stripeProductId"],
        before["stripePriceId"],
    )
    assert_paid_plan(back, client, 19900, "usd", "year")
    assert_converged(backend_settings, path, stripe_backend)


# --- the guard and the key rules (no backend needed beyond the emulator) ------------------------------


def test_others_objects_are_neither_seen_nor_touched(database_url: str, tmp_path: Path) -> None:
    """A shared account holds another run's (or a maintainer's own) owned Product: the reconciler
    would archive it as a plan missing from its catalog. Behind the guard it never sees it."""
    with start_in_thread() as emulator:
        direct = stripe.StripeClient(EMULATOR_KEY, base_addresses={"api": emulator.url})
        theirs = direct.v1.products.create(params={"name": "Pro", "metadata": ownership_metadata("pro")})
        guard = RunGuard(emulator.url)
        try:
            settings = Settings(
                database_url=Secret(database_url),
                stripe_secret_key=Secret(EMULATOR_KEY),
                stripe_api_base=guard.url,
                lock_timeout=5,
                max_rps=1000,
            )
            apply(settings, write_catalog(tmp_path, catalog("guard1")))
            client = guard_client(guard, EMULATOR_KEY)
            assert theirs.id not in {p.id for p in client.v1.products.list(params={"limit": 100}).data}
            with pytest.raises(stripe.PermissionError, match="was not created by this test run"):
                client.v1.products.update(theirs.id, params={"active": False})
            assert guard.violations and theirs.id in guard.violations[0]
        finally:
            guard.stop()
        assert direct.v1.products.retrieve(theirs.id).active
        assert len(direct.v1.products.list(params={"limit": 100}).data) == 3


@pytest.mark.parametrize("key", ["sk_live_abc123456789", "rk_live_abc123456789", "pk_test_abc123456789"])
def test_only_test_mode_secret_keys_are_accepted(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv("KUPLOY_TEST_STRIPE_KEY", key)
    with pytest.raises(LiveKeyRefused):
        stripe_test_key()
    monkeypatch.setenv("KUPLOY_TEST_STRIPE_KEY", "sk_test_abc123456789")
    assert stripe_test_key() == "sk_test_abc123456789"
