"""Crash consistency: SIGKILL `apply` right after its k-th Stripe write, or inside its Postgres
transaction, re-run, check the exact state.

The change mixes every kind of operation over 60+ plans: new plans, price changes, renames,
removals, a re-added plan and a default switch. After the kill and one more `apply`, every plan must
be exactly as the catalog says, object by object, and Stripe must hold exactly the Products and
Prices the two catalogs call for, archived ones included: a re-run that made a duplicate and
archived it fails too.

By default a spread of kill points runs (the first writes, the last, and every 9th between);
KUPLOY_FULL_KILL_SWEEP=1 kills after every single write.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import stripe
from psycopg.rows import dict_row

from reconciler import api
from reconciler.catalog import load_catalog
from reconciler.model import lookup_key
from reconciler.sandbox.emulator import RunningEmulator
from reconciler.settings import Settings

from conftest import kuploy_plan, write_catalog


def before_plans() -> list[dict[str, Any]]:
    plans = [kuploy_plan("free", None)]
    plans += [kuploy_plan(f"keep-{i:02d}", 1000 + i) for i in range(30)]
    plans += [
        kuploy_plan(f"reprice-{i:02d}", 2000 + i, currency="usd", billingCycle="annual") for i in range(10)
    ]
    plans += [kuploy_plan(f"rename-{i:02d}", 3000 + i) for i in range(8)]
    plans += [kuploy_plan(f"remove-{i:02d}", 4000 + i) for i in range(8)]
    plans += [kuploy_plan("readd", 5000, isActive=False), kuploy_plan("next-default", 6000)]
    return plans


def after_plans() -> list[dict[str, Any]]:
    plans = [kuploy_plan("free", 700, isDefault=False)]  # the old default becomes a paid plan
    plans += [kuploy_plan(f"keep-{i:02d}", 1000 + i) for i in range(30)]
    plans += [
        kuploy_plan(f"reprice-{i:02d}", 2500 + i, currency="usd", billingCycle="annual") for i in range(10)
    ]
    plans += [kuploy_plan(f"rename-{i:02d}", 3000 + i, name=f"Renamed {i}") for i in range(8)]
    plans += [kuploy_plan("readd", 5000), kuploy_plan("next-default", None)]
    plans += [kuploy_plan(f"new-{i:02d}", 7000 + i, currency="eur") for i in range(8)]
    return plans


class KillAfterWrites(list[dict[str, Any]]):
    """The emulator's request log, killing the apply process once it has made `k` writes.

    The kill lands after Stripe performed the write and before the answer reached the client:
    the worst moment, when the client cannot know whether its write happened."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.writes = 0
        self.pid: int | None = None
        self.killed = False

    def append(self, entry: dict[str, Any]) -> None:
        super().append(entry)
        if entry["method"] == "POST" and entry["status"] == 200:
            self.writes += 1
            if self.writes == self.k and not self.killed:
                self.killed = self.strike()

    def strike(self) -> bool:
        """What happens right after the k-th write; True once it has happened."""
        if self.pid is None:
            return False
        os.kill(self.pid, signal.SIGKILL)
        return True


def assert_exact_state(
    settings: Settings,
    catalog: Path,
    db: psycopg.Connection,
    client: stripe.StripeClient,
    *,
    history: tuple[list[dict[str, Any]], ...] | None = None,
) -> None:
    """`catalog` is applied exactly, and Stripe holds exactly the objects that the catalogs applied
    on this (fresh) emulator call for, archived ones included: `history`, the plans of each catalog
    applied in turn, or this catalog alone."""
    desired = load_catalog(catalog)
    assert not api.plan(settings, desired).changes
    with db.cursor(row_factory=dict_row) as cur:
        rows = {r["planId"]: r for r in cur.execute("SELECT * FROM cloud_plans")}
    products = list(client.v1.products.list(params={"limit": 100}).auto_paging_iter())
    prices = list(client.v1.prices.list(params={"limit": 100}).auto_paging_iter())
    by_slug: dict[str, list[Any]] = {}
    for product in products:
        by_slug.setdefault(product.metadata.to_dict().get("kuploy_plan", ""), []).append(product)
    for spec in desired.plans:
        row = rows[spec.slug]
        assert (row["isActive"], row["isDefault"], row["name"]) == (
            spec.is_active,
            spec.is_default,
            spec.name,
        )
        owned = by_slug.get(spec.slug, [])
        assert len(owned) <= 1, f"duplicate Products for {spec.slug}: {[p.id for p in owned]}"
        if spec.is_paid:
            (product,) = owned
            active = [p for p in prices if p.product == product.id and p.active]
            assert len(active) == 1, f"{spec.slug}: {len(active)} active Prices"
            (price,) = active
            assert (price.unit_amount, price.lookup_key) == (spec.price_cents, lookup_key(spec.slug))
            assert product.active and product.default_price == price.id and product.name == spec.name
            assert (row["stripeProductId"], row["stripePriceId"]) == (product.id, price.id)
        else:
            assert all(not p.active for p in owned)
            assert not [
                p for p in prices if p.active and p.metadata.to_dict().get("kuploy_plan") == spec.slug
            ]
    for slug in {r for r in rows} - {p.slug for p in desired.plans}:
        assert rows[slug]["isActive"] is False
    terms: dict[str, set[tuple[Any, ...]]] = {}
    if history is None:
        for spec in (s for s in desired.plans if s.is_paid):
            cycle = spec.billing_cycle.value if spec.billing_cycle else None
            terms.setdefault(spec.slug, set()).add((spec.price_cents, spec.currency, cycle))
    for plan in (p for plans in history or () for p in plans):
        if plan["isActive"] and not plan["isDefault"]:
            terms.setdefault(plan["slug"], set()).add(
                (plan["priceCents"], plan["currency"], plan["billingCycle"])
            )
    assert_every_object_counted(products, prices, terms)


def assert_every_object_counted(
    products: list[Any], prices: list[Any], terms: dict[str, set[tuple[Any, ...]]]
) -> None:
    """Every Product and Price in the emulator, active or archived, is one the catalogs call for:
    one Product per plan ever paid, one Price per distinct (amount, currency, cycle) it was paid at."""
    want_products = Counter(dict.fromkeys(terms, 1))
    want_prices = Counter({slug: len(t) for slug, t in terms.items()})

    def per_plan(objects: list[Any]) -> Counter[str]:
        return Counter(o.metadata.to_dict().get("kuploy_plan", "<unowned>") for o in objects)

    assert per_plan(products) == want_products, per_plan(products) - want_products
    assert per_plan(prices) == want_prices, per_plan(prices) - want_prices


def kill_points(total: int) -> list[int]:
    if os.environ.get("KUPLOY_FULL_KILL_SWEEP"):
        return list(range(1, total + 1))
    return sorted({1, 2, 3, total - 1, total, *range(5, total, 9)})


CHANGE = (before_plans(), after_plans())
"""The catalogs every test here applies in turn (`_setup`, then the change)."""

CHANGE_WRITES = 76
"""Stripe writes of the before → after change (asserted in test_kill_points_cover_the_change)."""


def _setup(settings: Settings, tmp_path: Path) -> Path:
    catalog = write_catalog(tmp_path, before_plans())
    api.apply(settings, load_catalog(catalog), confirm=lambda plan: True)
    write_catalog(tmp_path, after_plans())
    return catalog


def test_kill_points_cover_the_change(settings: Settings, tmp_path: Path, emulator: RunningEmulator) -> None:
    catalog = _setup(settings, tmp_path)
    emulator.emulator.requests.clear()
    api.apply(settings, load_catalog(catalog), confirm=lambda plan: True)
    writes = [r for r in emulator.emulator.requests if r["method"] == "POST"]
    assert len(writes) == CHANGE_WRITES


@pytest.mark.parametrize("k", kill_points(CHANGE_WRITES))
def test_sigkill_after_the_kth_write_then_rerun_converges(
    k: int,
    settings: Settings,
    cli_env: dict[str, str],
    tmp_path: Path,
    db: psycopg.Connection,
    emulator: RunningEmulator,
    stripe_client: stripe.StripeClient,
) -> None:
    catalog = _setup(settings, tmp_path)
    log = KillAfterWrites(k)
    emulator.emulator.requests = log
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply", "--auto-approve", str(catalog)],
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log.pid = process.pid
    _, stderr = process.communicate(timeout=120)
    assert log.killed and process.returncode == -signal.SIGKILL, stderr

    rerun = subprocess.run(
        [sys.executable, "-m", "reconciler", "apply", "--auto-approve", str(catalog)],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert_exact_state(settings, catalog, db, stripe_client, history=CHANGE)


class DropPostgresAfterWrites(KillAfterWrites):
    """Instead of killing the process, cut its Postgres session after the k-th Stripe write, as a
    Postgres restart would: the apply loses its connection (and its lock) in the middle."""

    def __init__(self, k: int, admin: str) -> None:
        super().__init__(k)
        self.admin = admin

    def strike(self) -> bool:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'kuploy-reconciler' AND datname = current_database()"
            )
        return True


@pytest.mark.parametrize("k", [1, CHANGE_WRITES // 2])  # both before the record transaction
def test_postgres_connection_lost_mid_apply_then_rerun_converges(
    k: int,
    settings: Settings,
    cli_env: dict[str, str],
    tmp_path: Path,
    db: psycopg.Connection,
    database_url: str,
    emulator: RunningEmulator,
    stripe_client: stripe.StripeClient,
) -> None:
    catalog = _setup(settings, tmp_path)
    log = DropPostgresAfterWrites(k, database_url)
    emulator.emulator.requests = log
    first = subprocess.run(
        [sys.executable, "-m", "reconciler", "apply", "--auto-approve", str(catalog)],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert log.killed
    assert first.returncode == 1, first.stdout + first.stderr
    assert "Traceback" not in first.stderr and "Re-running apply is safe" in first.stderr
    rerun = subprocess.run(
        [sys.executable, "-m", "reconciler", "apply", "--auto-approve", str(catalog)],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert_exact_state(settings, catalog, db, stripe_client, history=CHANGE)


def test_the_exact_state_check_counts_archived_duplicates(
    settings: Settings, tmp_path: Path, db: psycopg.Connection, stripe_client: stripe.StripeClient
) -> None:
    """The check itself: a converged apply passes it; one more owned Price, archived, fails it."""
    catalog = _setup(settings, tmp_path)
    api.apply(settings, load_catalog(catalog), confirm=lambda plan: True)
    assert_exact_state(settings, catalog, db, stripe_client, history=CHANGE)
    row = db.execute("""SELECT "stripeProductId" FROM cloud_plans WHERE "planId" = 'keep-00'""").fetchone()
    assert row is not None
    duplicate = stripe_client.v1.prices.create(
        params={
            "product": row[0],
            "unit_amount": 1000,
            "currency": "cad",
            "recurring": {"interval": "month"},
            "metadata": {"kuploy_managed_by": "kuploy-reconciler", "kuploy_plan": "keep-00"},
        }
    )
    stripe_client.v1.prices.update(duplicate.id, params={"active": False})
    with pytest.raises(AssertionError, match="keep-00"):
        assert_exact_state(settings, catalog, db, stripe_client, history=CHANGE)


# --- kill points inside the Postgres record transaction ---------------------------------------------

RECORD_STOPS: dict[str, Callable[[psycopg.Connection], object]] = {
    # The apply's upsert of this row waits on the lock: rows before it are written, uncommitted.
    "at row free": lambda c: c.execute("""SELECT 1 FROM cloud_plans WHERE "planId" = 'free' FOR UPDATE"""),
    "at row rename-03": lambda c: c.execute(
        """SELECT 1 FROM cloud_plans WHERE "planId" = 'rename-03' FOR UPDATE"""
    ),
    # Every row is written; the apply record (the transaction's last statement) waits.
    "at the apply record": lambda c: c.execute("LOCK TABLE cloud_reconciler_applies IN SHARE MODE"),
}


def apply_backends(db: psycopg.Connection) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT pid, wait_event_type, xact_start IS NOT NULL FROM pg_stat_activity "
        "WHERE application_name = 'kuploy-reconciler' AND datname = current_database()"
    ).fetchall()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll for a state (not a timed assertion: the limit only stops a hung test)."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


@pytest.mark.parametrize("stop", list(RECORD_STOPS))
def test_sigkill_inside_the_record_transaction_then_rerun_converges(
    stop: str,
    settings: Settings,
    cli_env: dict[str, str],
    tmp_path: Path,
    db: psycopg.Connection,
    database_url: str,
    stripe_client: stripe.StripeClient,
) -> None:
    """Every Stripe additive write done, the Postgres transaction part-way: SIGKILL. Postgres keeps
    none of it (the rows are as before), and the re-run converges without a duplicate."""
    catalog = _setup(settings, tmp_path)
    rows_before = db.execute('SELECT * FROM cloud_plans ORDER BY "planId"').fetchall()
    with psycopg.connect(database_url) as holder:  # a transaction, held open until rolled back
        RECORD_STOPS[stop](holder)
        process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "apply", "--auto-approve", str(catalog)],
            env=cli_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(
            lambda: any(wait == "Lock" and in_transaction for _, wait, in_transaction in apply_backends(db)),
            f"the apply waiting inside its transaction {stop}",
        )
        process.kill()
        process.wait(timeout=60)
        holder.rollback()
    # The server ends the dead client's session (and its transaction and advisory lock) on its own.
    wait_until(lambda: not apply_backends(db), "the killed apply's session ended")
    assert db.execute('SELECT * FROM cloud_plans ORDER BY "planId"').fetchall() == rows_before

    rerun = subprocess.run(
        [sys.executable, "-m", "reconciler", "apply", "--auto-approve", str(catalog)],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert_exact_state(settings, catalog, db, stripe_client, history=CHANGE)
