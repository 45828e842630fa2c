"""Where a catalog problem is and how it reads: one line, `file:line: plans[2] (pro).limits.maxApps: message`.

`Doc` is one parsed source (its data, the line of each path, the problems found in it so far); every
stage reports through it, and the text is built last, once the slugs that name plans are known.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reconciler import model

JsonPath = tuple[str | int, ...]


@dataclass(slots=True)
class Doc:
    """One parsed file: its data and where each path starts (1-based lines)."""

    file: str
    number: int = 0
    data: Any = None
    key_lines: dict[JsonPath, int] = field(default_factory=dict)
    value_lines: dict[JsonPath, int] = field(default_factory=dict)
    found: list[Found] = field(default_factory=list)
    disputed: set[JsonPath] = field(default_factory=set)
    """Paths of YAML values refused for reading differently in YAML 1.1 and 1.2 (reported once)."""
    find_lines: Callable[[], object] | None = None
    """JSON: the walk that learns the lines, run when a line is first wanted. Only a problem
    wants one, so a valid catalog is never walked twice (a quarter of loading 10,000 plans)."""

    def report(self, path: JsonPath, message: str, line: int | None = None) -> None:
        """Record a problem at `path`; the text is built later, once slugs are known."""
        self.found.append(Found(doc=self, path=path, message=message, line=line or self.line(path) or 0))

    def line(self, path: JsonPath) -> int | None:
        """Line of the key naming `path` (or its value), else of the nearest ancestor."""
        if self.find_lines is not None:
            find, self.find_lines = self.find_lines, None
            find()
        while True:
            found = self.key_lines.get(path) or self.value_lines.get(path)
            if found or not path:
                return found
            path = path[:-1]

    def slug_at(self, index: int) -> str | None:
        plans = self.data.get("plans") if isinstance(self.data, dict) else None
        if isinstance(plans, list) and 0 <= index < len(plans) and isinstance(plans[index], dict):
            slug = plans[index].get("slug")
            if isinstance(slug, str) and slug:
                return slug
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Found:
    """A parse or schema problem, sortable by file and line."""

    doc: Doc
    path: JsonPath
    message: str
    line: int

    @property
    def key(self) -> tuple[int, int]:
        return (self.doc.number, self.line)

    @property
    def text(self) -> str:
        return problem(self.doc, self.path, self.message, self.line or None)


printable = model.printable
"""A problem is one line, whatever a key, a slug or a file name holds."""


def _key(part: str) -> str:
    """A mapping key in a path: as written, or quoted when it is empty, odd or not printable."""
    if part and part.isprintable() and not any(c in part for c in ".[] "):
        return part
    return f"[{json.dumps(part)}]"


def _where(doc: Doc, path: JsonPath) -> str:
    """`plans[2] (pro).limits.maxApps` for a path."""
    out = ""
    for i, part in enumerate(path):
        if isinstance(part, int):
            out += f"[{part}]"
            if i == 1 and path[0] == "plans" and (slug := doc.slug_at(part)):
                out += f" ({printable(slug)})"
        else:
            key = _key(part)
            out += f".{key}" if out and not key.startswith("[") else key
    return out


def problem(doc: Doc, path: JsonPath, message: str, line: int | None = None) -> str:
    """The one line that reports `message` at `path` of `doc`."""
    line = line if line is not None else doc.line(path)
    where = _where(doc, path)
    head = f"{doc.file}:{line}" if line else doc.file
    return f"{head}: {where}: {message}" if where else f"{head}: {message}"


def show(value: Any) -> str:
    """A value as it appears in a message: its kind and a short repr."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    kinds = {int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}
    kind = kinds.get(type(value))
    text = json.dumps(value, ensure_ascii=False, default=str) if kind else str(value)
    kind = kind or type(value).__name__
    text = printable(text)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{kind} {text}"


def one_line(text: str) -> str:
    return " ".join(text.split())
