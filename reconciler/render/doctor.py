"""doctor's checks → text (one line each, its fix under a failure) or JSON. No I/O here."""

from __future__ import annotations

import json
from collections.abc import Sequence

from reconciler.results import Check


def render_checks_text(checks: Sequence[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"{'ok  ' if c.ok else 'FAIL'}  {c.name}: {c.detail}\n")
        if not c.ok and c.fix:
            lines.append(f"      fix: {c.fix}\n")
    return "".join(lines)


def render_checks_json(checks: Sequence[Check]) -> str:
    payload = {
        "healthy": all(c.ok for c in checks),
        "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail, "fix": c.fix} for c in checks],
    }
    return json.dumps(payload, indent=2) + "\n"
