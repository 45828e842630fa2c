"""Drift: out-of-band changes, read off the plan that would heal them. Pure; no I/O.

The plan from the last applied catalog to the current state lists exactly what someone changed by
hand: a field of a row (Postgres), a Product field, an extra or archived Price, a moved default, a
deleted object (Stripe). Each becomes one `DriftItem` with where it is and expected vs actual.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Any

from reconciler.plan import (
    WEBHOOK_ADDRESS,
    ArchivePrice,
    ArchiveProduct,
    Created,
    CreatePrice,
    CreateProduct,
    FieldChange,
    Op,
    Plan,
    PlanChange,
    ReactivatePrice,
    SetDefaultPrice,
    SetLookupKey,
    UpdateProduct,
    WebhookEndpointChange,
)


class Where(StrEnum):
    """The store a drift item was found in."""

    POSTGRES = "postgres"
    STRIPE = "stripe"


@dataclass(frozen=True, slots=True, kw_only=True)
class DriftItem:
    plan: str
    where: Where
    field: str
    expected: Any
    actual: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class DriftReport:
    items: tuple[DriftItem, ...]
    baseline: str  # what state was compared with: "the catalog given" / "the last applied catalog"

    @property
    def has_drift(self) -> bool:
        return bool(self.items)

    def plans(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(item.plan for item in self.items))


@dataclass(frozen=True, slots=True, kw_only=True)
class OutOfBandEvent:
    """A Product/Price event the listener saw for an owned object, not caused by an apply."""

    plan: str
    event_id: str
    type: str
    object_id: str | None
    created: str


def drift_report(plan: Plan, *, baseline: str, events: tuple[OutOfBandEvent, ...] = ()) -> DriftReport:
    """Drift from the plan that would heal it, plus the listener's out-of-band Product/Price events
    since the last apply (a change made and undone by hand leaves no state difference, but an event)."""
    items: list[DriftItem] = []
    if plan.webhook_endpoint is not None:
        items.extend(_webhook_items(plan.webhook_endpoint))
    for change in plan.changes:
        items.extend(_items(change))
    items.extend(
        DriftItem(
            plan=e.plan,
            where=Where.STRIPE,
            field=f"event {e.type} on {e.object_id or '?'}",
            expected="changes only through the catalog",
            actual=f"{e.event_id} at {e.created}",
        )
        for e in events
    )
    return DriftReport(items=tuple(items), baseline=baseline)


def _webhook_items(change: WebhookEndpointChange) -> list[DriftItem]:
    """The endpoint deleted, or its URL, events or status changed by hand (reported under the
    address `webhook_endpoint`)."""
    if change.before is None:
        return [
            DriftItem(
                plan=WEBHOOK_ADDRESS,
                where=Where.STRIPE,
                field="webhook_endpoint",
                expected=f"endpoint at {change.after['url']}",
                actual="missing (deleted, or never made by kuploy-reconciler)",
            )
        ]
    return [
        _field_item(WEBHOOK_ADDRESS, Where.STRIPE, f"webhook_endpoint.{f.path}", f) for f in change.fields
    ]


def _items(change: PlanChange) -> list[DriftItem]:
    slug = change.slug
    items = []
    if change.before is None and change.after is not None:
        items.append(
            DriftItem(
                plan=slug, where=Where.POSTGRES, field="cloud_plans row", expected="present", actual="missing"
            )
        )
    for f in change.fields:
        if f.path.startswith("stripe."):
            items.append(_field_item(slug, Where.STRIPE, f.path.removeprefix("stripe."), f))
        else:
            items.append(_field_item(slug, Where.POSTGRES, f"cloud_plans.{f.path}", f))
    has_field = {f.path for f in change.fields}
    for op in change.ops:
        item = _op_item(op, has_field)
        if item is not None:
            items.append(item)
    return items


def _field_item(plan: str, where: Where, field: str, change: FieldChange) -> DriftItem:
    """A field changed by hand: expected is what the plan would set it back to."""
    return DriftItem(plan=plan, where=where, field=field, expected=change.after, actual=change.before)


def _op_item(op: Op, has_field: set[str]) -> DriftItem | None:
    """Stripe drift that shows up only as an operation (objects missing, extra, archived)."""
    item = partial(DriftItem, plan=op.slug, where=Where.STRIPE)
    if isinstance(op, CreateProduct):
        return item(field="product", expected="active Product", actual="missing")
    if isinstance(op, CreatePrice):
        expected = f"active Price {op.unit_amount} {op.currency}/{op.interval}"
        return item(field="price", expected=expected, actual="missing")
    if isinstance(op, ReactivatePrice):
        return item(
            field=f"price {op.price_id}",
            expected="active with the plan's lookup key",
            actual="archived or lookup key moved",
        )
    if isinstance(op, SetLookupKey) and not isinstance(op.price, Created):
        return item(field=f"price {op.price}.lookup_key", expected=op.lookup_key, actual="moved or unset")
    if isinstance(op, UpdateProduct) and dict(op.before).get("active") is False:
        return item(field=f"product {op.product_id}.active", expected=True, actual=False)
    if isinstance(op, SetDefaultPrice) and "stripe.product.default_price" not in has_field:
        return item(field="product.default_price", expected=str(op.after), actual=op.before)
    if isinstance(op, ArchivePrice):
        return item(field=f"price {op.price_id}", expected="archived", actual="active")
    if isinstance(op, ArchiveProduct):
        return item(field=f"product {op.product_id}", expected="archived", actual="active")
    return None  # row writes, product updates and adoptions are covered by the field changes
