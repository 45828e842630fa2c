"""The plan as one JSON document; schema in `schemas/plan.schema.json` (format_version "1").

A change that archives a Price carries `subscriptions_staying`: the active subscriptions left on it
(null when Stripe would not say). Added within format_version 1, as the schema allows optional fields."""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from typing import Any

from reconciler.model import PlanRow
from reconciler.plan import ArchivePrice, Created, Op, Plan, PlanChange, WebhookEndpointChange

FORMAT_VERSION = "1"


def plan_document(plan: Plan) -> dict[str, Any]:
    summary = plan.summary()
    return {
        "format_version": FORMAT_VERSION,
        "changes": _webhook(plan.webhook_endpoint) + [_change(plan, change) for change in plan.changes],
        "pending_migrations": list(plan.pending_migrations),
        "summary": {**{k.replace("-", "_"): v for k, v in summary.items()}, "total": plan.resource_count},
    }


def render_json(plan: Plan) -> str:
    return json.dumps(plan_document(plan), indent=2, ensure_ascii=False) + "\n"


def _webhook(change: WebhookEndpointChange | None) -> list[dict[str, Any]]:
    """The webhook endpoint as a change like a plan's: address `webhook_endpoint`, `plan` null."""
    if change is None:
        return []
    return [
        {
            "address": change.address,
            "plan": None,
            "action": change.action.value,
            "before": change.before,
            "after": change.after,
            "fields": [{"path": f.path, "before": f.before, "after": f.after} for f in change.fields],
            "operations": [_op(op) for op in change.ops],
        }
    ]


def _change(plan: Plan, change: PlanChange) -> dict[str, Any]:
    document: dict[str, Any] = {
        "address": change.address,
        "plan": change.slug,
        "action": change.action.value,
        "before": change.before,
        "after": change.after,
        "fields": [{"path": f.path, "before": f.before, "after": f.after} for f in change.fields],
        "operations": [_op(op) for op in change.ops],
    }
    if any(isinstance(op, ArchivePrice) for op in change.ops):
        document["subscriptions_staying"] = plan.subscriptions_staying(change)
    return document


def _op(op: Op) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type(op).__name__, "phase": op.phase.name.lower()}
    for f in fields(op):
        if f.name == "slug":
            continue
        body[f.name] = _plain(getattr(op, f.name))
    return body


def _plain(value: Any) -> Any:
    if isinstance(value, Created):
        return str(value)
    if isinstance(value, PlanRow):
        return {
            "stripeProductId": value.stripe_product_id,
            "stripePriceId": value.stripe_price_id,
            **value.spec.as_dict(),
        }
    if isinstance(value, tuple):
        return (
            {k: v for k, v in value}
            if all(isinstance(i, tuple) and len(i) == 2 for i in value)
            else list(value)
        )
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    return value
