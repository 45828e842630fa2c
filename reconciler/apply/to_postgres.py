"""Where Postgres is written: the `cloud_plans` rows of one apply and its record in
`cloud_reconciler_applies`, in one transaction (`record_catalog`: the record alone)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from reconciler import tool_version
from reconciler.model import CLOUD_PLANS_COLUMNS, Catalog, PlanSpec, fingerprint
from reconciler.plan import WriteRow

_UPSERT = sql.SQL(
    "INSERT INTO cloud_plans ({cols}) VALUES ({vals}) ON CONFLICT ({key}) DO UPDATE SET {sets}"
).format(
    cols=sql.SQL(", ").join(map(sql.Identifier, CLOUD_PLANS_COLUMNS)),
    vals=sql.SQL(", ").join(sql.Placeholder() * len(CLOUD_PLANS_COLUMNS)),
    key=sql.Identifier("planId"),
    sets=sql.SQL(", ").join(
        sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
        for c in CLOUD_PLANS_COLUMNS
        if c != "planId"
    ),
)


def row_values(spec: PlanSpec, product_id: str | None, price_id: str | None) -> tuple[Any, ...]:
    values: dict[str, Any] = {
        "planId": spec.slug,
        "name": spec.name,
        "stripeProductId": product_id,
        "stripePriceId": price_id,
        "price": spec.price_cents if spec.price_cents is not None else 0,
        "currency": spec.currency,
        "billingCycle": spec.billing_cycle.value if spec.billing_cycle else None,
        **spec.limits.as_columns(),
        "features": Jsonb(spec.features.as_json()),
        "isDefault": spec.is_default,
        "isActive": spec.is_active,
        "description": spec.description,
    }
    return tuple(values[c] for c in CLOUD_PLANS_COLUMNS)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplyRecord:
    """What `cloud_reconciler_applies` keeps of an apply: the catalog (for `drift`), the saved plan id."""

    catalog: Catalog
    summary: dict[str, int]
    plan_file_id: str | None = None


def write_rows(
    conn: psycopg.Connection, rows: Sequence[tuple[WriteRow, str | None, str | None]], record: ApplyRecord
) -> None:
    """Upsert every row and record the apply, atomically (a default switch is one commit)."""
    with conn.transaction(), conn.cursor() as cur:
        if rows:
            cur.executemany(_UPSERT, [row_values(op.after, product, price) for op, product, price in rows])
        _insert_record(cur, record)


def record_catalog(conn: psycopg.Connection, record: ApplyRecord) -> None:
    """Record a catalog that needed no change (so `drift` compares with it), in its own transaction."""
    with conn.transaction(), conn.cursor() as cur:
        _insert_record(cur, record)


def _insert_record(cur: psycopg.Cursor[Any], record: ApplyRecord) -> None:
    catalog = record.catalog.as_dict()
    cur.execute(
        "INSERT INTO cloud_reconciler_applies "
        '(catalog, "catalogFingerprint", summary, "planFileId", "toolVersion") VALUES (%s, %s, %s, %s, %s) '
        'ON CONFLICT ("planFileId") DO NOTHING',
        (Jsonb(catalog), fingerprint(catalog), Jsonb(record.summary), record.plan_file_id, tool_version()),
    )
