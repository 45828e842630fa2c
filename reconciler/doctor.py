"""`doctor`: the billing guide's troubleshooting list as checks, each with the fix. Reads only."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import psycopg
import stripe

from reconciler import migrations
from reconciler.connections import connect_postgres, stripe_client
from reconciler.errors import KuployError
from reconciler.model import WEBHOOK_EVENTS, WEBHOOK_PATH, StripePrice, owned_slug
from reconciler.results import Check
from reconciler.settings import Settings, check_key_pair, key_mode
from reconciler.state.from_postgres import read_rows
from reconciler.state.from_stripe import check_key, read_prices, read_webhook_endpoints
from reconciler.throttle import StripeCalls

WEBHOOK_EVENT_SET = frozenset(WEBHOOK_EVENTS)


def run_checks(
    settings: Settings | None, env: Mapping[str, str], config_error: str | None = None
) -> list[Check]:
    """Every check, in the guide's order; later checks say so when an earlier one blocks them."""
    checks = [_configuration(config_error)]
    if settings is None:
        return checks
    calls = stripe_client(settings)
    checks.extend(_stripe_checks(settings, calls, env))
    checks.extend(_database_checks(settings, calls))
    checks.append(_webhook_secret(settings, env))
    return checks


def _configuration(error: str | None) -> Check:
    if error is None:
        return Check(
            name="configuration", ok=True, detail="DATABASE_URL and STRIPE_SECRET_KEY are consistent"
        )
    return Check(
        name="configuration",
        ok=False,
        detail=error,
        fix="set both DATABASE_URL and STRIPE_SECRET_KEY (or neither, for the local sandbox); "
        "use a live key only with --live",
    )


def _stripe_checks(settings: Settings, calls: StripeCalls, env: Mapping[str, str]) -> Iterator[Check]:
    secret = settings.stripe_secret_key.reveal()
    try:
        check_key(calls)
        yield Check(name="stripe secret key", ok=True, detail=f"accepted by Stripe ({key_mode(secret)} mode)")
        key_ok = True
    except stripe.AuthenticationError:
        key_ok = False
        yield Check(
            name="stripe secret key",
            ok=False,
            detail="Stripe rejected STRIPE_SECRET_KEY",
            fix="copy the secret key from the Stripe Dashboard → Developers → API keys (sk_test_… for test)",
        )
    except stripe.StripeError as e:
        key_ok = False
        yield Check(
            name="stripe secret key",
            ok=False,
            detail=f"Stripe could not be reached: {type(e).__name__}",
            fix="check network access to Stripe (or STRIPE_API_BASE)",
        )

    publishable = env.get("STRIPE_PUBLISHABLE_KEY", "")
    if settings.sandbox:
        yield Check(name="test/live mode", ok=True, detail="sandbox: test mode, no publishable key needed")
    elif not publishable:
        yield Check(
            name="test/live mode",
            ok=False,
            detail="STRIPE_PUBLISHABLE_KEY is not set (checkout needs it)",
            fix=f"set STRIPE_PUBLISHABLE_KEY to the pk_{key_mode(secret)}_… key of the same Stripe account",
        )
    else:
        try:
            check_key_pair(secret, publishable)
            yield Check(
                name="test/live mode",
                ok=True,
                detail=f"secret and publishable keys are both {key_mode(secret)}",
            )
        except KuployError as e:
            yield _user_error(
                "test/live mode",
                e,
                fix="use the secret and publishable keys of one mode (Dashboard → Developers → API keys)",
            )

    if key_ok:
        yield _webhook_endpoint(calls)
    else:
        yield Check(
            name="webhook endpoint",
            ok=False,
            detail="not checked: the secret key does not work",
            fix="fix the secret key first",
        )


def _user_error(name: str, error: KuployError, *, fix: str) -> Check:
    """The check `name` failed on a user error: its one line is the detail."""
    return Check(name=name, ok=False, detail=str(error), fix=fix)


def _webhook_endpoint(calls: StripeCalls) -> Check:
    fix = (
        f"Stripe Dashboard → Developers → Webhooks → Add endpoint https://your-domain.com{WEBHOOK_PATH} "
        "with the events " + ", ".join(sorted(WEBHOOK_EVENTS))
    )
    try:
        endpoints = read_webhook_endpoints(calls)
    except stripe.StripeError as e:
        return Check(
            name="webhook endpoint",
            ok=False,
            detail=f"cannot list webhook endpoints: {type(e).__name__}",
            fix=fix,
        )
    ours = [e for e in endpoints if e.url.rstrip("/").endswith(WEBHOOK_PATH)]
    if not ours:
        return Check(
            name="webhook endpoint", ok=False, detail=f"no endpoint at a URL ending {WEBHOOK_PATH}", fix=fix
        )
    for endpoint in ours:
        events = set(endpoint.events)
        if endpoint.enabled and ("*" in events or events >= WEBHOOK_EVENT_SET):
            return Check(
                name="webhook endpoint", ok=True, detail=f"{endpoint.url} receives the six billing events"
            )
    missing = sorted(WEBHOOK_EVENT_SET - set(ours[0].events))
    detail = (
        f"{ours[0].url} is disabled" if not ours[0].enabled else f"{ours[0].url} misses {', '.join(missing)}"
    )
    return Check(name="webhook endpoint", ok=False, detail=detail, fix=fix)


def _database_checks(settings: Settings, calls: StripeCalls) -> Iterator[Check]:
    try:
        conn = connect_postgres(settings)
    except KuployError as e:
        yield _user_error("database", e, fix="check DATABASE_URL: host, port, database, credentials")
        return
    with conn:
        yield Check(name="database", ok=True, detail=f"connected to {settings.database_label}")
        pending = [m.label for m in migrations.pending(conn)]
        yield Check(
            name="migrations",
            ok=not pending,
            detail=f"pending: {', '.join(pending)}" if pending else "all applied",
            fix="run kuploy-reconciler migrate (apply runs them too)" if pending else "",
        )
        try:
            migrations.check_cloud_plans(conn)
        except KuployError as e:
            yield _user_error(
                "cloud_plans shape", e, fix="fix or rename the table by hand; the tool never drops columns"
            )
            return
        yield Check(name="cloud_plans shape", ok=True, detail="compatible")
        yield from _plan_checks(calls, conn)


def _plan_checks(calls: StripeCalls, conn: psycopg.Connection) -> Iterator[Check]:
    rows = read_rows(conn)
    active = [r for r in rows.values() if r.spec.is_active]
    defaults = [r.spec.slug for r in active if r.spec.is_default]
    if not active or len(defaults) != 1:
        detail = (
            "no active plan"
            if not active
            else f"{len(defaults)} default plans ({', '.join(defaults) or 'none'})"
        )
        yield Check(
            name="plans",
            ok=False,
            detail=detail,
            fix="run kuploy-reconciler seed on first boot, or apply your catalog (one plan isDefault)",
        )
    else:
        yield Check(name="plans", ok=True, detail=f"{len(active)} active plan(s), default {defaults[0]!r}")

    paid = [r for r in active if not r.spec.is_default]
    try:
        prices = {p.id: p for p in read_prices(calls)}
    except stripe.StripeError as e:
        yield Check(
            name="stripe prices",
            ok=False,
            detail=f"cannot list prices: {type(e).__name__}",
            fix="fix the secret key first",
        )
        return

    def healthy(price: StripePrice, slug: str, product_id: str | None) -> bool:
        return price.active and price.product == product_id and owned_slug(price.metadata) == slug

    broken = [
        row.spec.slug
        for row in paid
        if (price := prices.get(row.stripe_price_id or "")) is None
        or not healthy(price, row.spec.slug, row.stripe_product_id)
    ]
    yield Check(
        name="stripe prices",
        ok=not broken,
        detail=f"no active Stripe Price for: {', '.join(broken)}"
        if broken
        else f"{len(paid)} paid plan(s) have an active Price",
        fix="run kuploy-reconciler apply with your catalog (it creates or repairs Products and Prices)"
        if broken
        else "",
    )


def _webhook_secret(settings: Settings, env: Mapping[str, str]) -> Check:
    secret = env.get("STRIPE_WEBHOOK_SECRET", "")
    if secret.startswith("whsec_") and len(secret) > len("whsec_"):
        return Check(name="webhook secret", ok=True, detail="STRIPE_WEBHOOK_SECRET is set")
    return Check(
        name="webhook secret",
        ok=False,
        detail="STRIPE_WEBHOOK_SECRET is not set"
        if not secret
        else "STRIPE_WEBHOOK_SECRET is not a whsec_… secret",
        fix="Stripe Dashboard → Developers → Webhooks → your endpoint → Signing secret → Reveal, "
        "and set it as STRIPE_WEBHOOK_SECRET",
    )
