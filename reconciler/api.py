"""The operations the command line (and later the listener) offers: plan, apply, migrate, seed.

Each opens its connections, holds the advisory lock where it writes, and hands pure values to
`diff` and `apply`. Nothing here parses argv or prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg
import stripe

from reconciler import migrations
from reconciler.apply import OnOp, apply_plan
from reconciler.catalog import load_catalog
from reconciler.connections import connect_postgres, stripe_client
from reconciler.diff import diff
from reconciler.errors import KuployError
from reconciler.lock import advisory_lock
from reconciler.model import Catalog, CurrentState
from reconciler.plan import Plan
from reconciler.settings import Settings
from reconciler.state.from_postgres import read_rows
from reconciler.state.from_stripe import read_stripe


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplyOutcome:
    plan: Plan
    confirmed: bool
    operations: int = 0
    migrations: tuple[str, ...] = ()


@contextmanager
def _connections(settings: Settings) -> Iterator[tuple[psycopg.Connection, stripe.StripeClient]]:
    conn = connect_postgres(settings)
    try:
        yield conn, stripe_client(settings)
    finally:
        conn.close()


def read_current(conn: psycopg.Connection, client: stripe.StripeClient) -> CurrentState:
    migrations.check_cloud_plans(conn)
    pending = tuple(m.label for m in migrations.pending(conn))
    return CurrentState(rows=read_rows(conn), stripe=read_stripe(client), pending_migrations=pending)


def plan(settings: Settings, catalog: Catalog) -> Plan:
    """What `apply` would do now. Reads only."""
    with _connections(settings) as (conn, client):
        return diff(catalog, read_current(conn, client))


def apply(
    settings: Settings,
    catalog: Catalog,
    *,
    confirm: Callable[[Plan], bool],
    on_op: OnOp = lambda op: None,
) -> ApplyOutcome:
    """Lock, read, plan, ask, migrate, execute. The plan is recomputed under the lock."""
    with _connections(settings) as (conn, client), advisory_lock(conn, timeout=settings.lock_timeout):
        current = read_current(conn, client)
        planned = diff(catalog, current)
        if not planned.has_changes:
            return ApplyOutcome(plan=planned, confirmed=True)
        if not confirm(planned):
            return ApplyOutcome(plan=planned, confirmed=False)
        ran = migrations.migrate(conn)
        count = apply_plan(planned, catalog, client=client, conn=conn, on_op=on_op)
        return ApplyOutcome(plan=planned, confirmed=True, operations=count, migrations=ran)


def migrate(settings: Settings) -> tuple[str, ...]:
    with _connections(settings) as (conn, _client), advisory_lock(conn, timeout=settings.lock_timeout):
        return migrations.migrate(conn)


def bootstrap_catalog() -> Catalog:
    with resources.as_file(resources.files("reconciler.bootstrap") / "plans.yaml") as path:
        return load_catalog(Path(path))


def seed(settings: Settings, *, on_op: OnOp = lambda op: None) -> ApplyOutcome:
    """Write the shipped bootstrap plans, only into an empty `cloud_plans`."""
    catalog = bootstrap_catalog()
    with _connections(settings) as (conn, client), advisory_lock(conn, timeout=settings.lock_timeout):
        current = read_current(conn, client)
        if current.rows:
            raise KuployError(
                f"cloud_plans already has {len(current.rows)} plan(s); seed only writes into an empty table "
                "(use apply to change existing plans)"
            )
        planned = diff(catalog, current)
        ran = migrations.migrate(conn)
        count = apply_plan(planned, catalog, client=client, conn=conn, on_op=on_op)
        return ApplyOutcome(plan=planned, confirmed=True, operations=count, migrations=ran)
