"""End to end through `api`: a real PostgreSQL, the emulator over HTTP, the real SDK.

Each scenario checks the resulting state object by object, in SQL and through the SDK, and that a
second apply makes zero Stripe writes and leaves `plan` empty: the property that matters most.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
import stripe
from psycopg.rows import dict_row

from reconciler import api
from reconciler.catalog import load_catalog
from reconciler.errors import SchemaError
from reconciler.model import lookup_key, ownership_metadata
from reconciler.plan import Action
from reconciler.results import ApplyOutcome
from reconciler.sandbox.emulator import RunningEmulator
from reconciler.settings import Settings

from conftest import kuploy_plan, standard_plans, stripe_writes, write_catalog


def apply(settings: Settings, path: Path) -> ApplyOutcome:
    return api.apply(settings, load_catalog(path), confirm=lambda plan: True)


def rows(db: psycopg.Connection) -> dict[str, dict[str, Any]]:
    with db.cursor(row_factory=dict_row) as cur:
        return {r["planId"]: r for r in cur.execute("SELECT * FROM cloud_plans")}


def owned_products(client: stripe.StripeClient, slug: str) -> list[Any]:
    return [
        p
        for p in client.v1.products.list(params={"limit": 100}).auto_paging_iter()
        if p.metadata and p.metadata.to_dict().get("kuploy_plan") == slug
    ]


def prices_of(client: stripe.StripeClient, product_id: str) -> list[Any]:
    return list(client.v1.prices.list(params={"product": product_id, "limit": 100}).auto_paging_iter())


def assert_converged(settings: Settings, path: Path, emulator: RunningEmulator) -> None:
    """A second apply writes nothing anywhere and a plan after it is empty."""
    before = len(stripe_writes(emulator))
    outcome = apply(settings, path)
    assert outcome.operations == 0
    assert not outcome.plan.has_changes, outcome.plan
    assert len(stripe_writes(emulator)) == before
    assert not api.plan(settings, load_catalog(path)).has_changes


def assert_paid_plan(
    db_row: dict[str, Any], client: stripe.StripeClient, amount: int, currency: str, interval: str
) -> None:
    product = client.v1.products.retrieve(db_row["stripeProductId"])
    price = client.v1.prices.retrieve(db_row["stripePriceId"])
    assert product.active and product.name == db_row["name"]
    assert product.default_price == price.id
    assert product.metadata["kuploy_plan"] == db_row["planId"]
    assert price.active and price.product == product.id
    assert price.recurring is not None
    assert (price.unit_amount, price.currency, price.recurring.interval) == (amount, currency, interval)
    assert price.lookup_key == lookup_key(db_row["planId"])
    assert price.type == "recurring"
    active_prices = [p for p in prices_of(client, product.id) if p.active]
    assert [p.id for p in active_prices] == [price.id]


def test_create_then_idempotent(
    settings: Settings,
    tmp_path: Path,
    db: psycopg.Connection,
    stripe_client: stripe.StripeClient,
    emulator: RunningEmulator,
) -> None:
    path = write_catalog(tmp_path, standard_plans())
    planned = api.plan(settings, load_catalog(path))
    assert [c.action for c in planned.changes] == [Action.CREATE] * 3
    assert planned.pending_migrations  # fresh database: the plan says migrations will run

    outcome = apply(settings, path)
    assert outcome.migrations and outcome.operations > 0

    state = rows(db)
    assert set(state) == {"free", "pro", "team"}
    free = state["free"]
    assert free["isDefault"] and free["isActive"]
    assert free["stripeProductId"] is None and free["stripePriceId"] is None and free["price"] == 0
    assert owned_products(stripe_client, "free") == []
    assert_paid_plan(state["pro"], stripe_client, 2000, "cad", "month")
    assert_paid_plan(state["team"], stripe_client, 19900, "usd", "year")
    assert state["team"]["billingCycle"] == "annual"
    assert state["pro"]["maxStorageBytes"] == 10 * 1024**3  # above 2 GiB: the column is bigint
    assert state["pro"]["features"]["customDomains"] is True

    assert_converged(settings, path, emulator)


def test_price_change_replaces_price_and_keeps_product(
    settings: Settings,
    tmp_path: Path,
    db: psycopg.Connection,
    stripe_client: stripe.StripeClient,
    emulator: RunningEmulator,
) -> None:
    path = write_catalog(tmp_path, standard_plans())
    apply(settings, path)
    old = rows(db)["pro"]

    plans = standard_plans()
    plans[1]["priceCents"] = 2500
    write_catalog(tmp_path, plans)
    planned = api.plan(settings, load_catalog(path))
    assert [(c.slug, c.action) for c in planned.changes] == [("pro", Action.REPLACE_PRICE)]
    apply(settings, path)

    new = rows(db)["pro"]
    assert new["stripeProductId"] == old["stripeProductId"]
    assert new["stripePriceId"] != old["stripePriceId"] and new["price"] == 2500
    assert_paid_plan(new, stripe_client, 2500, "cad", "month")
    old_price = stripe_client.v1.prices.retrieve(old["stripePriceId"])
    assert not old_price.active and old_price.lookup_key is None and old_price.unit_amount == 2000
    assert_converged(settings, path, emulator)


def test_rename_and_limits_update_row_and_product_never_price(
    settings: Settings,
    tmp_path: Path,
    db: psycopg.Connection,
    stripe_client: stripe.StripeClient,
    emulator: RunningEmulator,
) -> None:
    path = write_catalog(tmp_path, standard_plans())
    apply(settings, path)
    old = rows(db)["pro"]
    emulator.emulator.requests.clear()

    plans = standard_plans()
    plans[1].update(name="Professional", description="For growing teams")
    plans[1]["limits"]["maxApps"] = 25
    plans[1]["features"]["aiAssistant"] = True
    write_catalog(tmp_path, plans)
    planned = api.plan(settings, load_catalog(path))
    (change,) = planned.changes
    assert change.action is Action.UPDATE
    assert {f.path for f in change.fields} >= {
        "name",
        "description",
        "limits.maxApps",
        "features.aiAssistant",
    }
    apply(settings, path)

    new = rows(db)["pro"]
    assert (new["name"], new["maxApps"], new["features"]["aiAssistant"]) == ("Professional", 25, True)
    assert new["stripePriceId"] == old["stripePriceId"]
    product = stripe_client.v1.products.retrieve(new["stripeProductId"])
    assert (product.name, product.description) == ("Professional", "For growing teams")
    assert not [r for r in stripe_writes(emulator) if r["path"].startswith("/v1/prices")]
    assert_converged(settings, path, emulator)


def test_removal_archives_and_readding_reactivates_same_objects(
    settings: Settings,
    tmp_path: Path,
    db: psycopg.Connection,
    stripe_client: stripe.StripeClient,
    emulator: RunningEmulator,
) -> None:
    path = write_catalog(tmp_path, standard_plans())
    apply(settings, path)
    before = rows(db)["team"]

    write_catalog(tmp_path, standard_plans()[:2])  # team removed
    planned = api.plan(settings, load_catalog(path))
    assert [(c.slug, c.action) for c in planned.changes] == [("team", Action.ARCHIVE)]
    apply(settings, path)

    archived = rows(db)["team"]
    assert archived["isActive"] is False and archived["isDefault"] is False
    product = stripe_client.v1.products.retrieve(before["stripeProductId"])
    price = stripe_client.v1.prices.retrieve(before["stripePriceId"])
    assert not product.active and not price.active
    assert_converged(settings, path, emulator)

    write_catalog(tmp_path, standard_plans())  # team back
    planned = api.plan(settings, load_catalog(path))
    assert [(c.slug, c.action) for c in planned.changes] == [("team", Action.REACTIVATE)]
    apply(settings, path)
    back = rows(db)["team"]
    assert back["isActive"] is True
    assert (back["stripeProductId"], back["stripePriceId"]) == (
        before["stripeProductId"],
        before["stripePriceId"],
    )
    assert_paid_plan(back, stripe_client, 19900, "usd", "year")
    assert len(owned_products(stripe_client, "team")) == 1
    assert_converged(settings, path, emulator)


def test_is_active_false_is_a_soft_delete(
    settings: Settings,
    tmp_path: Path,
    db: psycopg.Connection,
    stripe_client: stripe.StripeClient,
    emulator: RunningEmulator,
) -> None:
    path = write_catalog(tmp_path, standard_plans())
    apply(settings, path)
    plans = standard_plans()
    plans[1]["isActive"] = False
    write_catalog(tmp_path, plans)
    apply(settings, path)
    pro = rows(db)["pro"]
    assert pro["isActive"] is False
    assert not stripe_client.v1.products.retrieve(pro["stripeProductId"]).active
    assert not stripe_client.v1.prices.retrieve(pro["stripePriceId"]).active
    assert_converged(settings, path, emulator)


def test_default_switch_is_one_atomic_change(
    settings: Settings,
    tmp_path: Path,
    db: psycopg.Connection,
    stripe_client: stripe.StripeClient,
    emulator: RunningEmulator,
) -> None:
    path = write_catalog(tmp_path, standard_plans())
    apply(settings, path)
    pro_before = rows(db)["pro"]

    # free becomes a paid plan, pro becomes the default (so it loses its Price).
    plans = [
        kuploy_plan("free", 500, isDefault=False),
        kuploy_plan("pro", None, name="Pro"),
        standard_plans()[2],
    ]
    write_catalog(tmp_path, plans)
    apply(settings, path)

    state = rows(db)
    assert [slug for slug, r in state.items() if r["isDefault"]] == ["pro"]
    assert state["pro"]["stripePriceId"] is None and state["pro"]["price"] == 0
    assert not stripe_client.v1.products.retrieve(pro_before["stripeProductId"]).active
    assert not stripe_client.v1.prices.retrieve(pro_before["stripePriceId"]).active
    assert_paid_plan(state["free"], stripe_client, 500, "cad", "month")
    assert_converged(settings, path, emulator)


def test_crashed_run_is_adopted_without_duplicates(
    settings: Settings,
    tmp_path: Path,
    db: psycopg.Connection,
    stripe_client: stripe.StripeClient,
    emulator: RunningEmulator,
) -> None:
    """A run that created the Product and Price but died before writing Postgres."""
    product = stripe_client.v1.products.create(params={"name": "Pro", "metadata": ownership_metadata("pro")})
    stripe_client.v1.prices.create(
        params={
            "product": product.id,
            "unit_amount": 2000,
            "currency": "cad",
            "recurring": {"interval": "month"},
            "lookup_key": lookup_key("pro"),
            "metadata": ownership_metadata("pro"),
        }
    )
    path = write_catalog(tmp_path, standard_plans())
    apply(settings, path)
    pro = rows(db)["pro"]
    assert pro["stripeProductId"] == product.id
    assert len(owned_products(stripe_client, "pro")) == 1
    assert len(prices_of(stripe_client, product.id)) == 1
    assert_paid_plan(pro, stripe_client, 2000, "cad", "month")
    assert_converged(settings, path, emulator)


def test_objects_the_tool_does_not_own_are_never_touched(
    settings: Settings, tmp_path: Path, stripe_client: stripe.StripeClient, emulator: RunningEmulator
) -> None:
    foreign = stripe_client.v1.products.create(params={"name": "Pro", "metadata": {"kuploy_plan": "pro"}})
    foreign_price = stripe_client.v1.prices.create(
        params={
            "product": foreign.id,
            "unit_amount": 2000,
            "currency": "cad",
            "recurring": {"interval": "month"},
        }
    )
    emulator.emulator.requests.clear()
    apply(settings, write_catalog(tmp_path, standard_plans()))
    touched = {r["path"] for r in stripe_writes(emulator)}
    assert f"/v1/products/{foreign.id}" not in touched
    assert f"/v1/prices/{foreign_price.id}" not in touched
    assert stripe_client.v1.products.retrieve(foreign.id).active


def test_hand_edits_in_stripe_are_healed(
    settings: Settings,
    tmp_path: Path,
    db: psycopg.Connection,
    stripe_client: stripe.StripeClient,
    emulator: RunningEmulator,
) -> None:
    path = write_catalog(tmp_path, standard_plans())
    apply(settings, path)
    pro = rows(db)["pro"]
    stripe_client.v1.products.update(pro["stripeProductId"], params={"name": "Renamed by hand"})
    planned = api.plan(settings, load_catalog(path))
    (change,) = planned.changes
    assert [(f.path, f.before, f.after) for f in change.fields] == [
        ("stripe.product.name", "Renamed by hand", "Pro")
    ]
    apply(settings, path)
    assert stripe_client.v1.products.retrieve(pro["stripeProductId"]).name == "Pro"
    assert_converged(settings, path, emulator)


def test_kuploy_core_tables_are_untouched(settings: Settings, tmp_path: Path, db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL)")
    db.execute("CREATE TABLE projects (id serial PRIMARY KEY, name text, owner int REFERENCES users(id))")
    db.execute("INSERT INTO users (email) VALUES ('a@example.com'), ('b@example.com')")
    db.execute("INSERT INTO projects (name, owner) VALUES ('site', 1)")

    def snapshot() -> Any:
        schema = db.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name NOT LIKE 'cloud\\_%' ORDER BY 1, 2"
        ).fetchall()
        data = (
            db.execute("SELECT * FROM users ORDER BY id").fetchall(),
            db.execute("SELECT * FROM projects").fetchall(),
        )
        return schema, data

    before = snapshot()
    api.migrate(settings)
    apply(settings, write_catalog(tmp_path, standard_plans()))
    assert snapshot() == before
    tables = {t for (t,) in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {t for t in tables if not t.startswith("cloud_")} == {"users", "projects"}


def test_guide_shaped_cloud_plans_is_widened_to_bigint(
    settings: Settings, tmp_path: Path, db: psycopg.Connection
) -> None:
    """kuploy-cloud may have created cloud_plans from the guide (integer storage): it is adopted."""
    db.execute(
        'CREATE TABLE cloud_plans ("planId" text PRIMARY KEY, name text, "stripeProductId" text, '
        '"stripePriceId" text, price integer, currency text, "billingCycle" text, "maxProjects" integer, '
        '"maxApps" integer, "maxDatabases" integer, "maxTeamMembers" integer, "maxDomains" integer, '
        '"maxCustomDomains" integer, "maxFreeSubdomains" integer, "maxPurchasableDomains" integer, '
        '"maxInstances" integer, "maxStorageBytes" integer, "buildMinutesPerMonth" integer, features jsonb, '
        '"isDefault" boolean, "isActive" boolean, description text)'
    )
    apply(settings, write_catalog(tmp_path, standard_plans()))
    dtype = db.execute(
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'cloud_plans' "
        "AND column_name = 'maxStorageBytes'"
    ).fetchone()
    assert dtype == ("bigint",)
    assert rows(db)["pro"]["maxStorageBytes"] == 10 * 1024**3


def test_incompatible_cloud_plans_stops_before_any_write(
    settings: Settings, tmp_path: Path, db: psycopg.Connection, emulator: RunningEmulator
) -> None:
    db.execute('CREATE TABLE cloud_plans ("planId" integer PRIMARY KEY, name text)')
    with pytest.raises(SchemaError, match=r'"planId" is integer.*"maxApps" is missing'):
        apply(settings, write_catalog(tmp_path, standard_plans()))
    assert stripe_writes(emulator) == []
    assert db.execute("SELECT count(*) FROM cloud_plans").fetchone() == (0,)
    assert db.execute("SELECT to_regclass('cloud_reconciler_migrations')").fetchone() == (None,)


def test_seed_only_into_an_empty_table(settings: Settings, tmp_path: Path, db: psycopg.Connection) -> None:
    api.seed(settings)
    assert [(r["planId"], r["isDefault"]) for r in rows(db).values()] == [("free", True)]
    with pytest.raises(Exception, match="seed only writes into an empty table"):
        api.seed(settings)


def test_every_write_of_an_apply_is_marked_as_the_apply_s_in_stripe_events(
    settings: Settings, tmp_path: Path, stripe_client: stripe.StripeClient
) -> None:
    """The listener tells an apply's changes from hand edits by the idempotency key on the event."""
    path = write_catalog(tmp_path, standard_plans())
    apply(settings, path)
    plans = standard_plans()
    plans[1].update(name="Pro+", priceCents=2100)
    write_catalog(tmp_path, plans[:2])  # rename + price change + a removal
    apply(settings, path)
    events = [
        e
        for e in stripe_client.v1.events.list(params={"limit": 100}).auto_paging_iter()
        if e.type.startswith(("product.", "price."))
    ]
    assert events
    keys = {e.type: e.request.idempotency_key if e.request else None for e in events}
    assert all(key and key.startswith("kuploy-reconciler-") for key in keys.values()), keys


def test_plan_counts_the_active_subscriptions_left_on_a_replaced_price(
    settings: Settings, tmp_path: Path, db: psycopg.Connection, stripe_client: stripe.StripeClient
) -> None:
    """A price change tells how many active subscriptions stay on the old price: read from the list of
    active subscriptions (as JSON), a canceled one and one on another plan's price not counted."""
    apply(
        settings,
        write_catalog(tmp_path, [kuploy_plan("free", None), kuploy_plan("pro"), kuploy_plan("team")]),
    )
    old_pro, team = rows(db)["pro"]["stripePriceId"], rows(db)["team"]["stripePriceId"]
    subscriptions = []
    card = "pm_card_visa"  # paid subscriptions are active, unpaid ones incomplete
    for i, price in enumerate((old_pro, old_pro, old_pro, team)):
        customer = stripe_client.v1.customers.create(
            params={
                "email": f"c{i}@example.com",
                "payment_method": card,
                "invoice_settings": {"default_payment_method": card},
            }
        )
        subscriptions.append(
            stripe_client.v1.subscriptions.create(
                params={"customer": customer.id, "items": [{"price": price}]}
            )
        )
    stripe_client.v1.subscriptions.cancel(subscriptions[0].id)

    changed = write_catalog(
        tmp_path, [kuploy_plan("free", None), kuploy_plan("pro", 2500), kuploy_plan("team")], "changed.json"
    )
    planned = api.plan(settings, load_catalog(changed))
    assert planned.subscriptions == {old_pro: 2}
