"""JSON text (the kuploy.app catalog) → plain data, by `json`; the lines of keys and values, and
duplicate keys, come from `json_lines`, walked only when a problem wants a line (or a key is given
twice). `NaN` and `Infinity` are refused: they are not JSON.
"""

from __future__ import annotations

import json
from typing import Any

from reconciler import errors
from reconciler.catalog.json_lines import JsonLines
from reconciler.catalog.problems import Doc
from reconciler.catalog.sources import MAX_PLANS, plan_count, too_many_plans


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(doc: Doc, text: str) -> None:
    if not text.strip():
        raise errors.CatalogError([f"{doc.file}: empty file: expected an object with a 'plans' list"])
    duplicates = False

    def mapping(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal duplicates
        found = dict(pairs)  # the last of duplicate keys, as json.loads keeps it
        duplicates = duplicates or len(found) != len(pairs)
        return found

    try:
        doc.data = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=mapping)
    except json.JSONDecodeError as e:
        raise errors.CatalogError([f"{doc.file}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})"]) from e
    except ValueError as e:
        raise errors.CatalogError([f"{doc.file}: invalid JSON: {e}"]) from e
    if (count := plan_count(doc)) > MAX_PLANS:
        raise too_many_plans(f"{doc.file}: plans", f"{count} plans")
    doc.find_lines = lambda: JsonLines(doc, text).value(0, ())
    if duplicates:  # reported by the walk, which runs now
        doc.line(())
