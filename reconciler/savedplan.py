"""Saved plan files: `plan --out FILE` writes one, `apply FILE` applies exactly it, or refuses.

A saved plan holds the resolved catalog, a snapshot of the state it was computed from (the
`cloud_plans` rows and the owned Stripe objects, with fingerprints) and the rendered changes. It
holds no secret: no key, no DSN. At apply time the state is read again under the lock; if its
fingerprint differs, the plan is stale and nothing is written. Otherwise the plan is recomputed
from the same inputs and must equal the saved changes exactly.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deepdiff import DeepDiff

from reconciler.errors import KuployError, StalePlanError
from reconciler.files import write_atomically
from reconciler.model import Catalog, CurrentState, fingerprint
from reconciler.plan import Plan
from reconciler.render.json import plan_document

KIND = "kuploy-reconciler-plan"
FORMAT_VERSION = "1"


# Declared as every value is (STYLE §5), like drift.DriftItem and fetch.Fetched: only the form is shared.
@dataclass(frozen=True, slots=True, kw_only=True)
class SavedPlan:
    id: str
    catalog: Catalog
    adopt: bool
    state: dict[str, Any]
    document: dict[str, Any]

    @property
    def state_fingerprint(self) -> str:
        return fingerprint(self.state)


def is_saved_plan(path: Path) -> bool:
    """A saved plan is a JSON file whose `kind` says so (kuploy.app catalogs have only `plans`)."""
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        with path.open("rb") as f:
            head = f.read(4096)
        return b'"kind"' in head and KIND.encode() in head
    except OSError:
        return False


def write_saved_plan(
    path: Path, plan: Plan, catalog: Catalog, current: CurrentState, *, adopt: bool, tool_version: str
) -> str:
    """Write the plan file atomically; returns its id."""
    state = current.snapshot()
    plan_id = str(uuid.uuid4())
    document = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "id": plan_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "tool_version": tool_version,
        "adopt": adopt,
        "fingerprints": {"state": fingerprint(state), "catalog": fingerprint(catalog.as_dict())},
        "catalog": catalog.as_dict(),
        "state": state,
        "plan": plan_document(plan),
    }
    write_atomically(path, json.dumps(document, indent=2, ensure_ascii=False) + "\n", what="the plan")
    return plan_id


def read_saved_plan(path: Path) -> SavedPlan:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("kind") != KIND:
            raise KuployError(f"{path}: not a kuploy-reconciler plan file")
        if document.get("format_version") != FORMAT_VERSION:
            raise KuployError(
                f"{path}: plan file format {document.get('format_version')!r} is not supported "
                f"(this tool reads {FORMAT_VERSION!r}); run plan again"
            )
        saved = SavedPlan(
            id=str(document["id"]),
            catalog=Catalog.from_dict(document["catalog"]),
            adopt=bool(document.get("adopt", False)),
            state=document["state"],
            document=document["plan"],
        )
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise KuployError(f"{path}: cannot read plan file: {type(e).__name__}: {e}") from e
    if fingerprint(saved.catalog.as_dict()) != document.get("fingerprints", {}).get("catalog") or (
        saved.state_fingerprint != document.get("fingerprints", {}).get("state")
    ):
        raise KuployError(f"{path}: plan file was modified after it was written (fingerprint mismatch)")
    return saved


def check_fresh(saved: SavedPlan, current: CurrentState, replanned: Plan) -> None:
    """Refuse a plan whose state moved on, or whose recomputation differs from what was saved."""
    now = current.snapshot()
    if fingerprint(now) != saved.state_fingerprint:
        changes = describe_state_changes(saved.state, now)
        raise StalePlanError(
            "saved plan is stale: the state changed since it was made, nothing was written. Run plan again.\n"
            + "\n".join(f"  changed: {line}" for line in changes[:20])
            + (f"\n  … and {len(changes) - 20} more" if len(changes) > 20 else "")
        )
    if plan_document(replanned)["changes"] != saved.document["changes"]:
        raise StalePlanError(
            "saved plan no longer matches what this version of the tool computes from the same state; "
            "nothing was written. Run plan again."
        )


_WHERE = {
    "cloud_plans": "postgres cloud_plans",
    "stripe_products": "stripe product",
    "stripe_prices": "stripe price",
    "pending_migrations": "postgres migrations",
}


def describe_state_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """One line per changed field: `postgres cloud_plans pro.limits.maxApps: 10 → 12`."""
    result = DeepDiff(before, after, view="tree", verbose_level=2)
    lines = []
    for report in sorted(result):
        for item in result[report]:
            parts = [str(p) for p in item.path(output_format="list")]
            where = _WHERE.get(parts[0], parts[0]) if parts else "state"
            field = ".".join(parts[1:]) or "(all)"
            old = "(none)" if report.endswith("_added") else json.dumps(item.t1, default=str)
            new = "(none)" if report.endswith("_removed") else json.dumps(item.t2, default=str)
            lines.append(f"{where} {field}: {old} → {new}")
    return sorted(lines)
