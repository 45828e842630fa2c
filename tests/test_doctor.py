"""`doctor`: healthy exits 0; each broken thing fails its own check, with the fix, and exits 1."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import stripe

from reconciler.model import WEBHOOK_EVENTS

from conftest import standard_plans, write_catalog
from test_cli import run

WEBHOOK_SECRET = "whsec_" + "d0ct0rTestSecret00000000000000"


@pytest.fixture
def healthy_env(
    cli_env: dict[str, str], tmp_path: Path, stripe_client: stripe.StripeClient
) -> dict[str, str]:
    env = {
        **cli_env,
        "STRIPE_PUBLISHABLE_KEY": "pk_test_" + "d0ct0r0000000000000000",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    result = run("apply", "--auto-approve", str(write_catalog(tmp_path, standard_plans())), env=env)
    assert result.returncode == 0, result.stderr
    stripe_client.v1.webhook_endpoints.create(
        params={
            "url": "https://kuploy.example.com/api/webhooks/stripe",
            "enabled_events": sorted(WEBHOOK_EVENTS),  # type: ignore[arg-type]  # stripe types them as Literals
        }
    )
    return env


def checks(env: dict[str, str]) -> tuple[int, dict[str, dict[str, Any]]]:
    result = run("doctor", "-o", "json", env=env)
    assert "Traceback" not in result.stderr
    document = json.loads(result.stdout)
    assert document["healthy"] == (result.returncode == 0)
    return result.returncode, {c["name"]: c for c in document["checks"]}


def test_healthy_setup_passes_every_check(healthy_env: dict[str, str]) -> None:
    code, found = checks(healthy_env)
    assert code == 0, [c for c in found.values() if not c["ok"]]
    assert set(found) == {
        "configuration",
        "stripe secret key",
        "test/live mode",
        "webhook endpoint",
        "database",
        "migrations",
        "cloud_plans shape",
        "plans",
        "stripe prices",
        "webhook secret",
    }
    text = run("doctor", env=healthy_env)
    assert text.returncode == 0 and "FAIL" not in text.stdout


def break_sql(
    statement: str,
) -> Callable[[dict[str, str], psycopg.Connection, stripe.StripeClient], dict[str, str]]:
    def breaker(env: dict[str, str], db: psycopg.Connection, client: stripe.StripeClient) -> dict[str, str]:
        db.execute(statement)
        return env

    return breaker


def drop_key(
    name: str,
) -> Callable[[dict[str, str], psycopg.Connection, stripe.StripeClient], dict[str, str]]:
    return lambda env, db, client: {k: v for k, v in env.items() if k != name}


def set_key(
    name: str, value: str
) -> Callable[[dict[str, str], psycopg.Connection, stripe.StripeClient], dict[str, str]]:
    return lambda env, db, client: {**env, name: value}


def narrow_webhook(
    env: dict[str, str], db: psycopg.Connection, client: stripe.StripeClient
) -> dict[str, str]:
    for endpoint in client.v1.webhook_endpoints.list().data:
        client.v1.webhook_endpoints.update(endpoint.id, params={"enabled_events": ["invoice.paid"]})
    return env


BROKEN = {
    "configuration": (drop_key("STRIPE_SECRET_KEY"), "set both DATABASE_URL and STRIPE_SECRET_KEY"),
    "stripe secret key": (set_key("STRIPE_SECRET_KEY", "sk_test_" + "revoked-key-000!"), "API keys"),
    "test/live mode": (set_key("STRIPE_PUBLISHABLE_KEY", "pk_live_" + "M1xedUp000000000000000"), "one mode"),
    "migrations": (break_sql("DELETE FROM cloud_reconciler_migrations WHERE version = 4"), "migrate"),
    "cloud_plans shape": (break_sql('ALTER TABLE cloud_plans DROP COLUMN "maxApps"'), "by hand"),
    "plans": (break_sql('UPDATE cloud_plans SET "isDefault" = false'), "seed"),
    "stripe prices": (
        break_sql("UPDATE cloud_plans SET \"stripePriceId\" = 'price_gone' WHERE \"planId\" = 'pro'"),
        "apply",
    ),
    "webhook endpoint": (narrow_webhook, "/api/webhooks/stripe"),
    "webhook secret": (drop_key("STRIPE_WEBHOOK_SECRET"), "Signing secret"),
}


@pytest.mark.parametrize("check", sorted(BROKEN))
def test_each_broken_thing_fails_its_check_with_the_fix(
    check: str, healthy_env: dict[str, str], db: psycopg.Connection, stripe_client: stripe.StripeClient
) -> None:
    breaker, fix = BROKEN[check]
    env = breaker(healthy_env, db, stripe_client)
    code, found = checks(env)
    assert code == 1
    assert found[check]["ok"] is False, found
    assert fix in found[check]["fix"]
    if check == "stripe prices":
        assert "pro" in found[check]["detail"]
