"""The operations the command line (and later the listener) offers.

Each opens its connections, holds the advisory lock where it writes, and hands pure values to
`diff` and `apply`. Nothing here parses argv or prints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import psycopg

from reconciler import migrations
from reconciler.apply import OnOp, apply_plan
from reconciler.apply.to_postgres import ApplyRecord, record_catalog, tool_version
from reconciler.catalog import load_catalog
from reconciler.connections import connect_postgres, stripe_client
from reconciler.diff import diff
from reconciler.drift import DriftReport, OutOfBandEvent, drift_report
from reconciler.errors import ApplyError, KuployError
from reconciler.lock import advisory_lock
from reconciler.model import Catalog, CurrentState, fingerprint
from reconciler.plan import Plan
from reconciler.savedplan import check_fresh, read_saved_plan, write_saved_plan
from reconciler.settings import Settings
from reconciler.state.from_postgres import (
    read_drift_events,
    read_last_applied,
    read_plan_file_applied,
    read_rows,
)
from reconciler.state.from_stripe import count_active_subscriptions, read_stripe
from reconciler.throttle import CallStats, StripeCalls

log = logging.getLogger(__name__)

ROUNDS = 5
"""An apply that stops on a transient Stripe failure re-reads the state and goes on, this often."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplyOutcome:
    plan: Plan
    confirmed: bool
    operations: int = 0
    migrations: tuple[str, ...] = ()
    rounds: int = 0
    stats: CallStats | None = None


@contextmanager
def _connections(settings: Settings) -> Iterator[tuple[psycopg.Connection, StripeCalls]]:
    conn = connect_postgres(settings)
    try:
        yield conn, stripe_client(settings)
    finally:
        conn.close()


def read_current(conn: psycopg.Connection, calls: StripeCalls) -> CurrentState:
    migrations.check_cloud_plans(conn)
    pending = tuple(m.label for m in migrations.pending(conn))
    return CurrentState(rows=read_rows(conn), stripe=read_stripe(calls), pending_migrations=pending)


def _plan(calls: StripeCalls, catalog: Catalog, current: CurrentState, *, adopt: bool) -> Plan:
    planned = diff(catalog, current, adopt=adopt)
    if not planned.archived_price_ids():
        return planned
    return replace(planned, subscriptions=count_active_subscriptions(calls, planned.archived_price_ids()))


def plan(settings: Settings, catalog: Catalog, *, adopt: bool = False, out: Path | None = None) -> Plan:
    """What `apply` would do now. Reads only; with `out`, also saves the plan file there."""
    with _connections(settings) as (conn, calls):
        current = read_current(conn, calls)
        planned = _plan(calls, catalog, current, adopt=adopt)
    if out is not None:
        write_saved_plan(out, planned, catalog, current, adopt=adopt, tool_version=tool_version())
    return planned


def apply(
    settings: Settings,
    catalog: Catalog,
    *,
    confirm: Callable[[Plan], bool],
    on_op: OnOp = lambda op: None,
    adopt: bool = False,
) -> ApplyOutcome:
    """Lock, read, plan, ask, migrate, execute. The plan is recomputed under the lock."""
    with _connections(settings) as (conn, calls), advisory_lock(conn, timeout=settings.lock_timeout):
        current = read_current(conn, calls)
        planned = _plan(calls, catalog, current, adopt=adopt)
        if not planned.has_changes:
            _remember_catalog(conn, catalog)
            return ApplyOutcome(plan=planned, confirmed=True)
        if not confirm(planned):
            return ApplyOutcome(plan=planned, confirmed=False)
        record = ApplyRecord(catalog=catalog, summary=planned.summary())
        return _execute(conn, calls, planned, record, on_op, settings=settings, adopt=adopt)


def apply_saved(
    settings: Settings, path: Path, *, confirm: Callable[[Plan], bool], on_op: OnOp = lambda op: None
) -> ApplyOutcome:
    """Apply exactly the saved plan in `path`, or refuse (exit 1, nothing written) if it is stale."""
    saved = read_saved_plan(path)
    with _connections(settings) as (conn, calls), advisory_lock(conn, timeout=settings.lock_timeout):
        if (when := read_plan_file_applied(conn, saved.id)) is not None:
            raise KuployError(
                f"{path}: this plan was already applied at {when:%Y-%m-%d %H:%M:%S %Z}; run plan again"
            )
        current = read_current(conn, calls)
        replanned = _plan(calls, saved.catalog, current, adopt=saved.adopt)
        check_fresh(saved, current, replanned)
        if not replanned.has_changes:
            return ApplyOutcome(plan=replanned, confirmed=True)
        if not confirm(replanned):
            return ApplyOutcome(plan=replanned, confirmed=False)
        record = ApplyRecord(catalog=saved.catalog, summary=replanned.summary(), plan_file_id=saved.id)
        return _execute(conn, calls, replanned, record, on_op, settings=settings, adopt=saved.adopt)


def _execute(
    conn: psycopg.Connection,
    calls: StripeCalls,
    planned: Plan,
    record: ApplyRecord,
    on_op: OnOp,
    *,
    settings: Settings,
    adopt: bool = False,
) -> ApplyOutcome:
    """Migrate, then apply; a round stopped by a transient Stripe failure (rate limit, outage, lost
    answer) is followed by another that re-reads the state first, so what was done is adopted."""
    ran = migrations.migrate(conn)
    if not planned.changes:
        _remember_catalog(conn, record.catalog)
        return ApplyOutcome(plan=planned, confirmed=True, migrations=ran, stats=calls.stats)
    count, todo = 0, planned
    for round in range(ROUNDS):
        try:
            count += apply_plan(
                todo,
                record,
                calls=calls,
                conn=conn,
                on_op=on_op,
                concurrency=settings.concurrency,
                round=round,
            )
            return ApplyOutcome(
                plan=planned,
                confirmed=True,
                operations=count,
                migrations=ran,
                rounds=round + 1,
                stats=calls.stats,
            )
        except ApplyError as e:
            if not e.transient or round == ROUNDS - 1:
                raise
            log.warning(
                "apply round %d stopped on a transient error; re-reading state to finish: %s", round + 1, e
            )
        todo = _plan(calls, record.catalog, read_current(conn, calls), adopt=adopt)
        if not todo.changes:
            break
    return ApplyOutcome(
        plan=planned, confirmed=True, operations=count, migrations=ran, rounds=round + 1, stats=calls.stats
    )


def _remember_catalog(conn: psycopg.Connection, catalog: Catalog) -> None:
    """Record a catalog that needed no change if it is not the last one recorded (for `drift`).
    The same catalog applied twice writes nothing the second time."""
    if migrations.pending(conn):
        return
    last = read_last_applied(conn)
    if last is None or last[1] != fingerprint(catalog.as_dict()):
        record_catalog(conn, ApplyRecord(catalog=catalog, summary={}))


def drift(settings: Settings, catalog: Catalog | None = None) -> DriftReport:
    """Out-of-band changes against `catalog`, or against the last catalog successfully applied."""
    with _connections(settings) as (conn, calls):
        current = read_current(conn, calls)
        if catalog is not None:
            baseline = "the catalog given"
        else:
            last = read_last_applied(conn)
            if last is None:
                raise KuployError("no catalog has been applied yet: run drift with a CATALOG argument")
            catalog, baseline = last[0], "the last applied catalog"
        events = tuple(
            OutOfBandEvent(
                plan=(detail or "").removeprefix("plan ").split(":")[0] or "?",
                event_id=event_id,
                type=event_type,
                object_id=object_id,
                created=f"{created:%Y-%m-%d %H:%M:%S %Z}",
            )
            for event_id, event_type, object_id, created, detail in read_drift_events(conn)
        )
    planned = diff(catalog, replace(current, pending_migrations=()))
    return drift_report(planned, baseline=baseline, events=events)


def export(settings: Settings) -> Catalog:
    """The current `cloud_plans` as a catalog (every plan, inactive ones marked so)."""
    with _connections(settings) as (conn, _client):
        migrations.check_cloud_plans(conn)
        rows = read_rows(conn)
    if not rows:
        raise KuployError("cloud_plans is empty or missing: nothing to export (run seed or apply first)")
    ordered = sorted(rows.values(), key=lambda r: (not r.spec.is_default, not r.spec.is_active, r.spec.slug))
    return Catalog(plans=tuple(r.spec for r in ordered), sources=("cloud_plans",))


def migrate(settings: Settings) -> tuple[str, ...]:
    with _connections(settings) as (conn, _client), advisory_lock(conn, timeout=settings.lock_timeout):
        return migrations.migrate(conn)


def bootstrap_catalog() -> Catalog:
    with resources.as_file(resources.files("reconciler.bootstrap") / "plans.yaml") as path:
        return load_catalog(Path(path))


def seed(settings: Settings, *, on_op: OnOp = lambda op: None) -> ApplyOutcome:
    """Write the shipped bootstrap plans, only into an empty `cloud_plans`."""
    catalog = bootstrap_catalog()
    with _connections(settings) as (conn, calls), advisory_lock(conn, timeout=settings.lock_timeout):
        current = read_current(conn, calls)
        if current.rows:
            raise KuployError(
                f"cloud_plans already has {len(current.rows)} plan(s); seed only writes into an empty table "
                "(use apply to change existing plans)"
            )
        planned = diff(catalog, current)
        record = ApplyRecord(catalog=catalog, summary=planned.summary())
        return _execute(conn, calls, planned, record, on_op, settings=settings)
