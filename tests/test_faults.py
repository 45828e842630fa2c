"""Concurrent runs and Stripe faults: the final state is exact and nothing is duplicated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import stripe

from reconciler.sandbox.emulator import RunningEmulator
from reconciler.settings import Settings

from conftest import kuploy_plan, standard_plans, write_catalog
from test_crash import assert_exact_state


def start_apply(catalog: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply", "--auto-approve", *extra, str(catalog)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_three_concurrent_applies_never_interleave(
    settings: Settings,
    cli_env: dict[str, str],
    tmp_path: Path,
    db: psycopg.Connection,
    emulator: RunningEmulator,
    stripe_client: stripe.StripeClient,
) -> None:
    emulator.emulator.set_faults(latency_ms=20)
    plans = [kuploy_plan("free", None)] + [kuploy_plan(f"p{i:02d}", 100 + i) for i in range(30)]
    catalog = write_catalog(tmp_path, plans)
    processes = [start_apply(catalog, cli_env, "--lock-timeout", "120") for _ in range(3)]
    results = [p.communicate(timeout=180) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], [err for _, err in results]
    outputs = [out for out, _ in results]
    assert sum("Apply complete" in out for out in outputs) == 1
    assert sum("No changes" in out for out in outputs) == 2
    emulator.emulator.set_faults(latency_ms=0)
    assert_exact_state(settings, catalog, db, stripe_client)


def test_migrate_and_apply_at_once(
    settings: Settings,
    cli_env: dict[str, str],
    tmp_path: Path,
    db: psycopg.Connection,
    stripe_client: stripe.StripeClient,
) -> None:
    catalog = write_catalog(tmp_path, standard_plans())
    migrate = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "migrate"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    apply = start_apply(catalog, cli_env)
    _, apply_err = apply.communicate(timeout=120)
    _, migrate_err = migrate.communicate(timeout=120)
    assert (apply.returncode, migrate.returncode) == (0, 0), apply_err + migrate_err
    assert_exact_state(settings, catalog, db, stripe_client)
    versions = db.execute(
        "SELECT count(*), count(DISTINCT version) FROM cloud_reconciler_migrations"
    ).fetchone()
    assert versions is not None and versions[0] == versions[1]


def test_apply_under_rate_limit_and_server_errors_is_exact(
    settings: Settings,
    cli_env: dict[str, str],
    tmp_path: Path,
    db: psycopg.Connection,
    emulator: RunningEmulator,
    stripe_client: stripe.StripeClient,
) -> None:
    """200 plans with Stripe at 25 requests/s and 5% of requests failing with a 500, half of them
    after the write was made (and replayed under the same key)."""
    plans = [kuploy_plan("free", None)] + [kuploy_plan(f"p{i:03d}", 100 + i) for i in range(199)]
    catalog = write_catalog(tmp_path, plans)
    emulator.emulator.set_faults(rate_limit=25, error_rate=0.05, seed=7)
    result = subprocess.run(
        [sys.executable, "-m", "reconciler", "apply", "--auto-approve", str(catalog)],
        env={**cli_env, "KUPLOY_STRIPE_MAX_RPS": "25"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stats = emulator.emulator.stats()
    assert stats["by_fault"].get("error_after_write", 0) > 0, stats  # the scenario did what it says
    assert "retried" in result.stderr
    emulator.emulator.set_faults(rate_limit=None, error_rate=0.0)
    assert_exact_state(settings, catalog, db, stripe_client)
