"""Postgres as `model` values; writes nothing. `cloud_plans` as `PlanRow`s (`read_rows`: does the
table exist, then its rows), the apply records in `cloud_reconciler_applies` (`read_last_applied`,
`read_plan_file_applied`), and the listener's drift events in `cloud_stripe_events`
(`read_drift_events`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from reconciler.model import (
    FEATURE_KEYS,
    LIMIT_COLUMNS,
    BillingCycle,
    Catalog,
    Features,
    Limits,
    PlanRow,
    PlanSpec,
)
from reconciler.state.subscriptions import PLAN_IN_DETAIL


def read_rows(conn: psycopg.Connection) -> dict[str, PlanRow]:
    exists = conn.execute("SELECT to_regclass('cloud_plans') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute('SELECT * FROM cloud_plans ORDER BY "planId"')
        return {row["planId"]: row_to_plan(row) for row in cur}


def row_to_plan(row: dict[str, Any]) -> PlanRow:
    cycle = row["billingCycle"]
    raw_features = row["features"] if isinstance(row["features"], dict) else {}
    spec = PlanSpec(
        slug=row["planId"],
        name=row["name"] or "",
        description=row["description"] or "",
        price_cents=row["price"],
        currency=row["currency"],
        billing_cycle=BillingCycle(cycle) if cycle in BillingCycle.__members__.values() else None,
        limits=Limits(**{attr: int(row[column] or 0) for attr, column in LIMIT_COLUMNS.items()}),
        features=Features(**{attr: bool(raw_features.get(key, False)) for attr, key in FEATURE_KEYS.items()}),
        is_default=bool(row["isDefault"]),
        is_active=bool(row["isActive"]),
    )
    return PlanRow(spec=spec, stripe_product_id=row["stripeProductId"], stripe_price_id=row["stripePriceId"])


def _has_column(conn: psycopg.Connection, table: str, column: str) -> bool:
    return column in _columns(conn, table)


def _columns(conn: psycopg.Connection, table: str) -> set[str]:
    """The columns of `table` (none when it does not exist)."""
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s",
        (table,),
    ).fetchall()
    return {row[0] for row in rows}


def read_last_applied(conn: psycopg.Connection) -> tuple[Catalog, str | None] | None:
    """The catalog of the newest apply record and its fingerprint, or None before the first apply."""
    if not _has_column(conn, "cloud_reconciler_applies", "catalogFingerprint"):
        return None
    row = conn.execute(
        'SELECT catalog, "catalogFingerprint" FROM cloud_reconciler_applies ORDER BY id DESC LIMIT 1'
    ).fetchone()
    if row is None:
        return None
    return Catalog.from_dict(row[0]), row[1]


def read_plan_file_applied(conn: psycopg.Connection, plan_file_id: str) -> datetime | None:
    """When a saved plan file was applied, or None if it never was."""
    if not _has_column(conn, "cloud_reconciler_applies", "planFileId"):
        return None
    row = conn.execute(
        'SELECT "appliedAt" FROM cloud_reconciler_applies WHERE "planFileId" = %s', (plan_file_id,)
    ).fetchone()
    return row[0] if row else None


@dataclass(frozen=True, slots=True, kw_only=True)
class DriftEventRow:
    """One `cloud_stripe_events` row the listener marked as a change made outside the tool."""

    event_id: str
    type: str
    object_id: str | None
    created: datetime
    plan: str | None
    """The plan the event is about, None if no row says."""


_DRIFT_EVENTS = sql.SQL(
    'SELECT id, type, "objectId", created, COALESCE({plan}, substring(detail from %s)) '
    "FROM cloud_stripe_events "
    "WHERE outcome = 'drift' AND (%s::timestamptz IS NULL OR created > %s) ORDER BY created, id"
)
"""The plan from its column, else from the detail (rows recorded before migration 0008 added it, or by
an older listener since)."""


def read_drift_events(conn: psycopg.Connection) -> list[DriftEventRow]:
    """Product/Price events the listener recorded as made outside the tool, since the last apply.
    Empty when the listener never ran."""
    columns = _columns(conn, "cloud_stripe_events")
    if "outcome" not in columns:
        return []
    since = None
    if _has_column(conn, "cloud_reconciler_applies", "appliedAt"):
        row = conn.execute('SELECT max("appliedAt") FROM cloud_reconciler_applies').fetchone()
        since = row[0] if row else None
    plan = sql.Identifier("plan") if "plan" in columns else sql.NULL  # NULL: migration 0008 pending
    rows = conn.execute(_DRIFT_EVENTS.format(plan=plan), (PLAN_IN_DETAIL, since, since)).fetchall()
    return [DriftEventRow(event_id=r[0], type=r[1], object_id=r[2], created=r[3], plan=r[4]) for r in rows]
