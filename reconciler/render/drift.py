"""`DriftReport → str`: text per plan and field, or JSON (schema `schemas/drift.schema.json`).

The text shows what was typed in the Dashboard or in SQL through `model.printable`: no control
character or bidirectional override reaches the terminal raw."""

from __future__ import annotations

import json
from typing import Any

from reconciler.drift import DriftReport
from reconciler.model import printable
from reconciler.plan import WEBHOOK_ADDRESS

FORMAT_VERSION = "1"


def render_drift_text(report: DriftReport) -> str:
    if not report.has_drift:
        return f"No drift: Stripe and cloud_plans match {report.baseline}.\n"
    lines = [f"Drift against {report.baseline}:", ""]
    for plan in report.plans():
        lines.append("~ webhook_endpoint" if plan == WEBHOOK_ADDRESS else f"~ plan.{printable(plan)}")
        for item in (i for i in report.items if i.plan == plan):
            shown = f"expected {_show(item.expected)}, actual {_show(item.actual)}"
            lines.append(f"    {item.where:<8} {item.field}: {shown}")
        lines.append("")
    lines.append(
        f"Drift: {len(report.items)} difference(s) in {len(report.plans())} plan(s). "
        "The next apply of that catalog heals them."
    )
    return "\n".join(lines) + "\n"


def drift_document(report: DriftReport) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "baseline": report.baseline,
        "drift": report.has_drift,
        "items": [
            {"plan": i.plan, "where": i.where, "field": i.field, "expected": i.expected, "actual": i.actual}
            for i in report.items
        ],
        "plans": list(report.plans()),
    }


def render_drift_json(report: DriftReport) -> str:
    return json.dumps(drift_document(report), indent=2, ensure_ascii=False, default=str) + "\n"


def _show(value: Any) -> str:
    return printable(json.dumps(value, ensure_ascii=False, default=str))
