"""Opening the two connections every command needs, with errors that name the target, not the secret."""

from __future__ import annotations

import psycopg
import stripe

from reconciler.errors import ConfigError
from reconciler.settings import Settings, scrub
from reconciler.throttle import StripeCalls, Throttle

APPLICATION_NAME = "kuploy-reconciler"
"""Shown in pg_stat_activity, so an operator (and the lock-timeout message) can tell our sessions."""


def connect_postgres(settings: Settings) -> psycopg.Connection:
    """An autocommit connection; writers open explicit transactions."""
    try:
        return psycopg.connect(
            settings.database_url.reveal(),
            autocommit=True,
            connect_timeout=10,
            application_name=APPLICATION_NAME,
        )
    except psycopg.ProgrammingError:
        # libpq's parse errors may quote the whole DSN, password included: say only what is wrong.
        raise ConfigError(
            "cannot connect to DATABASE_URL: it is not a valid PostgreSQL connection string "
            "(postgresql://user:password@host:5432/db)"
        ) from None
    except psycopg.Error as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        reason = scrub(reason, settings.database_url.reveal())
        raise ConfigError(f"cannot connect to DATABASE_URL ({settings.database_label}): {reason}") from None


def stripe_client(settings: Settings) -> StripeCalls:
    """The SDK client, with its own retries off: `throttle.StripeCalls` rate-limits and retries."""
    base = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
    client = stripe.StripeClient(
        settings.stripe_secret_key.reveal(),
        base_addresses=base,  # type: ignore[arg-type]
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=settings.stripe_timeout),
    )
    return StripeCalls(client=client, throttle=Throttle(settings.effective_max_rps))
