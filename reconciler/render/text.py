"""The plan for people: one block per billing plan, `before → after` per field, a summary line.

Text from the catalog, `cloud_plans` and Stripe (names, slugs, descriptions) goes through
`model.printable`: a control character (ESC, the one-byte CSI U+009B), a bidirectional override
or a line separator is shown as its escape, never sent raw to the terminal."""

from __future__ import annotations

import json
from typing import Any

from reconciler.model import flatten, printable
from reconciler.plan import Action, ArchivePrice, Plan, PlanChange, WebhookEndpointChange

MARKERS = {
    Action.CREATE: ("+", "green"),
    Action.REACTIVATE: ("+", "green"),
    Action.UPDATE: ("~", "yellow"),
    Action.REPLACE_PRICE: ("±", "magenta"),
    Action.ARCHIVE: ("-", "red"),
}
_COLORS = {"green": "32", "yellow": "33", "magenta": "35", "red": "31", "bold": "1", "dim": "2"}


def render_text(plan: Plan, *, color: bool = False) -> str:
    def paint(text: str, style: str) -> str:
        return f"\033[{_COLORS[style]}m{text}\033[0m" if color else text

    lines: list[str] = []
    if plan.pending_migrations:
        lines.append(
            paint("Pending migrations", "bold")
            + f" (apply runs them first): {', '.join(plan.pending_migrations)}"
        )
        lines.append("")
    if not plan.has_resource_changes:
        lines.append("No changes. cloud_plans and Stripe match the catalog.")
        return "\n".join(lines) + "\n"

    if (endpoint := plan.webhook_endpoint) is not None:
        marker, style = MARKERS[endpoint.action]
        lines.append(
            paint(f"{marker} {printable(endpoint.address)}", style)
            + f"  {paint(endpoint.action.value, 'bold')}"
        )
        lines.extend(f"    {line}" for line in _webhook_body(endpoint))
        lines.extend(paint(f"    · {printable(op.describe())}", "dim") for op in endpoint.ops)
        lines.append("")

    for change in plan.changes:
        marker, style = MARKERS[change.action]
        lines.append(
            paint(f"{marker} {printable(change.address)}", style) + f"  {paint(change.action.value, 'bold')}"
        )
        lines.extend(f"    {line}" for line in _body(change))
        lines.extend(paint(f"    · {printable(op.describe())}", "dim") for op in change.ops)
        if note := subscriptions_note(plan, change):
            lines.append(f"    {note}")
        lines.append("")
    lines.append(summary_line(plan))
    return "\n".join(lines) + "\n"


def summary_line(plan: Plan) -> str:
    counts = plan.summary()
    parts = [f"{n} to {action.replace('-', ' ')}" for action, n in counts.items() if n]
    return "Plan: " + ", ".join(parts) + "."


def subscriptions_note(plan: Plan, change: PlanChange) -> str:
    """Who stays on the Prices `change` archives (they keep paying the old amount); "" when it
    archives none. The same words in every format."""
    if not any(isinstance(op, ArchivePrice) for op in change.ops):
        return ""
    staying = plan.subscriptions_staying(change)
    if staying is None:
        return "Active subscriptions on the archived price: not known."
    if staying == 0:
        return "No active subscriptions on the archived price."
    who = f"{staying} active subscriptions stay" if staying != 1 else "1 active subscription stays"
    if change.action is Action.REPLACE_PRICE:
        return f"⚠ {who} on the old price; only new checkouts use the new one."
    return f"⚠ {who} on the archived price, still billed; no new checkout can use it."


def _webhook_body(change: WebhookEndpointChange) -> list[str]:
    if change.before is None:
        return [f"{key}: {_show(value)}" for key, value in change.after.items()]
    return [f"{f.path}: {_show(f.before)} → {_show(f.after)}" for f in change.fields]


def _body(change: PlanChange) -> list[str]:
    if change.before is None and change.after is not None:
        return [f"{path}: {_show(value)}" for path, value in flatten(change.after)]
    if change.fields:
        return [f"{f.path}: {_show(f.before)} → {_show(f.after)}" for f in change.fields]
    return []


def _show(value: Any) -> str:
    return printable(json.dumps(value, ensure_ascii=False))
