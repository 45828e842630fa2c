"""Operator workflows through the command line: saved plans, drift, export/adoption, markdown, secrets."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
import stripe
import yaml

from reconciler.catalog import load_catalog
from reconciler.model import ownership_metadata
from reconciler.sandbox.emulator import RunningEmulator

from conftest import TEST_KEY, kuploy_plan, standard_plans, stripe_writes, write_catalog
from test_cli import ROOT, assert_clean_failure, run


def rows(db: psycopg.Connection) -> list[tuple[Any, ...]]:
    return db.execute('SELECT * FROM cloud_plans ORDER BY "planId"').fetchall()


def applied(cli_env: dict[str, str], catalog: Path) -> None:
    result = run("apply", "--auto-approve", str(catalog), env=cli_env)
    assert result.returncode == 0, result.stdout + result.stderr


def _product_id(db: psycopg.Connection, slug: str) -> str:
    row = db.execute('SELECT "stripeProductId" FROM cloud_plans WHERE "planId" = %s', (slug,)).fetchone()
    assert row is not None, f"no cloud_plans row for {slug}"
    return str(row[0])


# --- saved plans -------------------------------------------------------------------------------------


def test_saved_plan_applies_exactly_once(
    cli_env: dict[str, str], tmp_path: Path, db: psycopg.Connection
) -> None:
    catalog = write_catalog(tmp_path, standard_plans())
    plan_file = tmp_path / "plan.json"
    planned = run("plan", "--out", str(plan_file), str(catalog), env=cli_env)
    assert planned.returncode == 0, planned.stderr
    saved = json.loads(plan_file.read_text())
    assert saved["kind"] == "kuploy-reconciler-plan" and saved["plan"]["summary"]["create"] == 3
    assert TEST_KEY not in plan_file.read_text() and "postgresql://" not in plan_file.read_text()

    result = run("apply", str(plan_file), env=cli_env)  # no --auto-approve needed for a reviewed plan
    assert result.returncode == 0, result.stderr
    assert {r[0] for r in rows(db)} == {"free", "pro", "team"}

    again = run("apply", str(plan_file), env=cli_env)
    assert_clean_failure(again)
    assert "already applied" in again.stderr


def test_saved_plan_made_stale_by_a_row_edit_is_refused(
    cli_env: dict[str, str], tmp_path: Path, db: psycopg.Connection, emulator: RunningEmulator
) -> None:
    catalog = write_catalog(tmp_path, standard_plans())
    applied(cli_env, catalog)
    plans = standard_plans()
    plans[1]["priceCents"] = 2500
    write_catalog(tmp_path, plans)
    plan_file = tmp_path / "plan.json"
    assert run("plan", "--out", str(plan_file), str(catalog), env=cli_env).returncode == 0

    db.execute('UPDATE cloud_plans SET "maxApps" = 99 WHERE "planId" = \'team\'')
    before_rows, before_writes = rows(db), len(stripe_writes(emulator))
    result = run("apply", str(plan_file), env=cli_env)
    assert_clean_failure(result)
    assert "stale" in result.stderr and "run plan again" in result.stderr.lower()
    assert "postgres cloud_plans team.limits.maxApps: 10 → 99" in result.stderr
    assert rows(db) == before_rows
    assert len(stripe_writes(emulator)) == before_writes


def test_saved_plan_made_stale_by_a_product_edit_is_refused(
    cli_env: dict[str, str],
    tmp_path: Path,
    db: psycopg.Connection,
    emulator: RunningEmulator,
    stripe_client: stripe.StripeClient,
) -> None:
    catalog = write_catalog(tmp_path, standard_plans())
    applied(cli_env, catalog)
    plans = standard_plans()
    plans[2]["name"] = "Teams"
    write_catalog(tmp_path, plans)
    plan_file = tmp_path / "plan.json"
    assert run("plan", "--out", str(plan_file), str(catalog), env=cli_env).returncode == 0

    product_id = _product_id(db, "pro")
    stripe_client.v1.products.update(product_id, params={"description": "edited in the Dashboard"})
    before_rows, before_writes = rows(db), len(stripe_writes(emulator))
    result = run("apply", str(plan_file), env=cli_env)
    assert_clean_failure(result)
    assert f"stripe product {product_id}.description" in result.stderr
    assert rows(db) == before_rows and len(stripe_writes(emulator)) == before_writes


def test_a_tampered_plan_file_is_refused(cli_env: dict[str, str], tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path, standard_plans())
    plan_file = tmp_path / "plan.json"
    run("plan", "--out", str(plan_file), str(catalog), env=cli_env)
    document = json.loads(plan_file.read_text())
    document["catalog"]["plans"][1]["priceCents"] = 1
    plan_file.write_text(json.dumps(document))
    result = run("apply", str(plan_file), env=cli_env)
    assert_clean_failure(result)
    assert "modified" in result.stderr


# --- drift -------------------------------------------------------------------------------------------


def test_drift_after_hand_edits_and_healed_by_apply(
    cli_env: dict[str, str], tmp_path: Path, db: psycopg.Connection, stripe_client: stripe.StripeClient
) -> None:
    catalog = write_catalog(tmp_path, standard_plans())
    applied(cli_env, catalog)
    clean = run("drift", env=cli_env)  # no argument: the last applied catalog
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "No drift" in clean.stdout

    product_id = _product_id(db, "pro")
    stripe_client.v1.products.update(product_id, params={"name": "Pro (renamed by hand)"})
    db.execute('UPDATE cloud_plans SET "maxApps" = 42 WHERE "planId" = \'team\'')

    found = run("drift", env=cli_env)
    assert found.returncode == 2, found.stdout + found.stderr
    assert "plan.pro" in found.stdout and "plan.team" in found.stdout
    assert 'stripe   product.name: expected "Pro", actual "Pro (renamed by hand)"' in found.stdout
    assert "postgres cloud_plans.limits.maxApps: expected 10, actual 42" in found.stdout

    as_json = run("drift", "-o", "json", str(catalog), env=cli_env)
    assert as_json.returncode == 2
    document = json.loads(as_json.stdout)
    jsonschema.validate(document, json.loads((ROOT / "schemas" / "drift.schema.json").read_text()))
    assert document["plans"] == ["pro", "team"]
    assert {(i["plan"], i["where"]) for i in document["items"]} == {("pro", "stripe"), ("team", "postgres")}

    applied(cli_env, catalog)
    assert run("drift", env=cli_env).returncode == 0


def test_drift_sees_extra_price_and_archived_product(
    cli_env: dict[str, str], tmp_path: Path, db: psycopg.Connection, stripe_client: stripe.StripeClient
) -> None:
    catalog = write_catalog(tmp_path, standard_plans())
    applied(cli_env, catalog)
    product_id = _product_id(db, "team")
    extra = stripe_client.v1.prices.create(
        params={
            "product": product_id,
            "unit_amount": 100,
            "currency": "usd",
            "recurring": {"interval": "month"},
            "metadata": ownership_metadata("team"),
        }
    )
    stripe_client.v1.products.update(product_id, params={"active": False})
    document = json.loads(run("drift", "-o", "json", env=cli_env).stdout)
    fields = {(i["field"], i["expected"], i["actual"]) for i in document["items"]}
    assert (f"price {extra.id}", "archived", "active") in fields
    assert (f"product {product_id}.active", True, False) in fields
    applied(cli_env, catalog)
    assert run("drift", env=cli_env).returncode == 0
    assert not stripe_client.v1.prices.retrieve(extra.id).active


def test_drift_before_any_apply_needs_a_catalog(cli_env: dict[str, str]) -> None:
    result = run("drift", env=cli_env)
    assert_clean_failure(result)
    assert "no catalog has been applied yet" in result.stderr


# --- export and adoption ------------------------------------------------------------------------------


def test_export_round_trips_the_examples(cli_env: dict[str, str], tmp_path: Path) -> None:
    applied(cli_env, ROOT / "examples")
    out = tmp_path / "exported.yaml"
    result = run("export", "--out", str(out), env=cli_env)
    assert result.returncode == 0, result.stderr
    assert load_catalog(out).by_slug().keys() == load_catalog(ROOT / "examples").by_slug().keys()
    again = run("plan", "--detailed-exitcode", str(out), env=cli_env)
    assert again.returncode == 0, again.stdout


def test_export_round_trips_200_plans(cli_env: dict[str, str], tmp_path: Path) -> None:
    plans = [kuploy_plan("free", None)] + [
        kuploy_plan(
            f"plan-{i:03d}",
            100 + i,
            currency=("usd", "eur", "cad")[i % 3],
            billingCycle=("monthly", "annual")[i % 2],
            isActive=i % 17 != 0,
        )
        for i in range(199)
    ]
    plans[5]["limits"]["maxStorageBytes"] = 5 * 1024**4 + 1  # not a whole unit: stays bytes
    plans[6]["limits"]["maxApps"] = "unlimited"
    catalog = write_catalog(tmp_path, plans)
    applied(cli_env, catalog)
    exported = run("export", env=cli_env)
    assert exported.returncode == 0, exported.stderr
    assert "unlimited" in exported.stdout
    (tmp_path / "exported").mkdir()
    (tmp_path / "exported" / "catalog.yaml").write_text(exported.stdout)
    result = run("plan", "--detailed-exitcode", str(tmp_path / "exported"), env=cli_env)
    assert result.returncode == 0, result.stdout[-2000:]
    assert len(yaml.safe_load(exported.stdout)["plans"]) == 200


def test_adopt_takes_over_unowned_objects_instead_of_duplicating(
    cli_env: dict[str, str],
    tmp_path: Path,
    db: psycopg.Connection,
    stripe_client: stripe.StripeClient,
    emulator: RunningEmulator,
) -> None:
    """An instance whose Products were made by hand (or by kuploy-cloud) without ownership metadata."""
    product = stripe_client.v1.products.create(params={"name": "Pro"})
    price = stripe_client.v1.prices.create(
        params={
            "product": product.id,
            "unit_amount": 2000,
            "currency": "cad",
            "recurring": {"interval": "month"},
        }
    )
    stripe_client.v1.products.update(product.id, params={"default_price": price.id})
    catalog = write_catalog(tmp_path, standard_plans())

    shown = run("plan", "--adopt", str(catalog), env=cli_env)
    assert f"adopt Stripe Product {product.id} 'Pro'" in shown.stdout
    applied_adopt = run("apply", "--adopt", "--auto-approve", str(catalog), env=cli_env)
    assert applied_adopt.returncode == 0, applied_adopt.stderr
    pro = db.execute(
        'SELECT "stripeProductId", "stripePriceId" FROM cloud_plans WHERE "planId" = \'pro\''
    ).fetchone()
    assert pro == (product.id, price.id)
    products = [
        p for p in stripe_client.v1.products.list(params={"limit": 100}).auto_paging_iter() if p.name == "Pro"
    ]
    assert len(products) == 1
    assert stripe_client.v1.products.retrieve(product.id).metadata.to_dict() == ownership_metadata("pro")
    writes = len(stripe_writes(emulator))
    assert run("apply", "--auto-approve", str(catalog), env=cli_env).returncode == 0
    assert len(stripe_writes(emulator)) == writes


def test_without_adopt_unowned_objects_are_left_alone(
    cli_env: dict[str, str], tmp_path: Path, stripe_client: stripe.StripeClient
) -> None:
    product = stripe_client.v1.products.create(params={"name": "Pro"})
    applied(cli_env, write_catalog(tmp_path, standard_plans()))
    untouched = stripe_client.v1.products.retrieve(product.id)
    assert untouched.metadata.to_dict() == {} and untouched.active


# --- pull-request output and secrets -------------------------------------------------------------------


def test_markdown_of_a_thousand_plans_fits_a_github_comment(cli_env: dict[str, str], tmp_path: Path) -> None:
    plans = [kuploy_plan("free", None)] + [kuploy_plan(f"p{i:04d}", 100 + i) for i in range(1000)]
    result = run("plan", "-o", "markdown", str(write_catalog(tmp_path, plans)), env=cli_env)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) < 65_536
    assert result.stdout.count("<details>") == result.stdout.count("</details>")
    assert "more changes not shown" in result.stdout


def test_no_secret_in_anything_a_run_produces(cli_env: dict[str, str], tmp_path: Path) -> None:
    """With a DSN that carries a password (the server trusts this test's connections, so any
    password works): neither it nor a key appears anywhere."""
    password = "PgPassw0rdNeverShown"
    with_password = psycopg.conninfo.make_conninfo(cli_env["DATABASE_URL"], password=password)
    cli_env = {**cli_env, "DATABASE_URL": with_password}
    catalog = write_catalog(tmp_path, standard_plans())
    plan_file = tmp_path / "plan.json"
    outputs = [
        run("plan", "--out", str(plan_file), str(catalog), env=cli_env),
        run("apply", str(plan_file), env=cli_env),
        run("drift", "-o", "json", env=cli_env),
        run("export", env=cli_env),
        run("doctor", "-o", "json", env=cli_env),
        run("plan", str(catalog), env={**cli_env, "STRIPE_SECRET_KEY": "sk_test_RevokedKey0000000000000000"}),
        run("--debug", "plan", str(catalog), env=cli_env),
    ]
    produced = "".join(r.stdout + r.stderr for r in outputs) + plan_file.read_text()
    assert outputs[0].returncode == 0, outputs[0].stderr  # the password did reach the database
    for secret in (TEST_KEY, "sk_test_RevokedKey0000000000000000", password):
        assert secret not in produced
    assert re.search(r"password=(?!\*\*\*)", produced) is None  # shown masked, if at all


def test_drift_reports_out_of_band_events_the_listener_recorded(
    cli_env: dict[str, str], tmp_path: Path, db: psycopg.Connection
) -> None:
    """A Product edited and edited back by hand leaves no state difference, but the listener saw it."""
    catalog = write_catalog(tmp_path, standard_plans())
    applied(cli_env, catalog)
    assert run("drift", env=cli_env).returncode == 0
    db.execute(
        'INSERT INTO cloud_stripe_events (id, type, "objectId", created, "receivedAt", outcome, detail) '
        "VALUES ('evt_hand', 'product.updated', 'prod_x', now() + interval '1 second', now(), 'drift', "
        "'plan pro: product.updated outside the tool')"
    )
    result = run("drift", "-o", "json", env=cli_env)
    assert result.returncode == 2, result.stderr
    (item,) = json.loads(result.stdout)["items"]
    assert (item["plan"], item["where"], item["field"]) == (
        "pro",
        "stripe",
        "event product.updated on prod_x",
    )
    assert item["actual"].startswith("evt_hand at ")


def test_plan_says_how_many_active_subscriptions_stay_on_the_old_price_in_every_format(
    cli_env: dict[str, str], tmp_path: Path, db: psycopg.Connection, stripe_client: stripe.StripeClient
) -> None:
    """Real subscriptions made through the SDK: 3 active on pro's price (a fourth canceled), 1 on
    team's. Re-pricing pro and removing team: every format says who stays on the archived Prices."""
    applied(cli_env, write_catalog(tmp_path, standard_plans()))
    price: dict[str, str] = dict(db.execute('SELECT "planId", "stripePriceId" FROM cloud_plans').fetchall())

    def subscribe(plan: str) -> str:
        customer = stripe_client.v1.customers.create(
            params={
                "email": f"billing@{plan}.example.com",
                "payment_method": "pm_card_visa",  # paid, so active (without a card: incomplete)
                "invoice_settings": {"default_payment_method": "pm_card_visa"},
            }
        ).id
        return stripe_client.v1.subscriptions.create(
            params={"customer": customer, "items": [{"price": price[plan]}]}
        ).id

    for _ in range(3):
        subscribe("pro")
    stripe_client.v1.subscriptions.cancel(subscribe("pro"))
    subscribe("team")
    changed = write_catalog(tmp_path, [kuploy_plan("free", None), kuploy_plan("pro", 2500)], "changed.json")

    text = run("plan", str(changed), env=cli_env)
    assert text.returncode == 0, text.stderr
    pro, team = text.stdout.split("\n\n")[:2]
    assert pro.startswith("± plan.pro") and team.startswith("- plan.team"), text.stdout
    assert pro.endswith(
        "    ⚠ 3 active subscriptions stay on the old price; only new checkouts use the new one."
    )
    assert team.endswith(
        "    ⚠ 1 active subscription stays on the archived price, still billed; no new checkout can use it."
    )

    document = json.loads(run("plan", "-o", "json", str(changed), env=cli_env).stdout)
    jsonschema.validate(document, json.loads((ROOT / "schemas" / "plan.schema.json").read_text()))
    staying = {c["plan"]: c.get("subscriptions_staying", "absent") for c in document["changes"]}
    assert staying == {"pro": 3, "team": 1}

    markdown = run("plan", "-o", "markdown", str(changed), env=cli_env).stdout
    assert "⚠ 3 active subscriptions stay on the old price" in markdown
    assert "⚠ 1 active subscription stays on the archived price" in markdown
