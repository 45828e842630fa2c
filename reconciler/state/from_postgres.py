"""Read `cloud_plans` into `PlanRow`s. One query; writes nothing."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from reconciler.model import FEATURE_KEYS, LIMIT_COLUMNS, BillingCycle, Features, Limits, PlanRow, PlanSpec


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
