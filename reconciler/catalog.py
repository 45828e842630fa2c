"""Load a plan catalog: YAML / kuploy.app JSON → schema check → presets, copy_from → `Catalog`.

No network, no database. Every problem with the input is collected and raised at once as a
`CatalogError`, one line each: `file:line: plans[2] (pro).priceCents: message` (the line is left out
where it is not known). Schema problems come first (sorted by file and line), then invariants.

Formats (the JSON Schema `schemas/catalog.schema.json` documents every key):

- `*.yaml` / `*.yml`: the Git-authored catalog, `{version: 1, plans: [...]}`; plans may use
  `preset: small|medium|large` or `copy_from: <slug>`, resolved here.
- `*.json`: the kuploy.app catalog as synced at license sync, `{"plans": [...]}`, same plan keys.

A folder loads every such file directly in it, sorted by name; plans merge into one catalog.
"""

from __future__ import annotations

import difflib
import errno
import json
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, cast

import yaml

from reconciler import errors, model

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_PLANS",
    "PRESETS",
    "STRIPE_CURRENCIES",
    "dump_catalog",
    "format_size",
    "load_catalog",
    "load_catalog_text",
    "parse_size",
    "webhook_endpoint_from_flag",
]

MAX_FILE_BYTES = 10 * 1024 * 1024
"""Files larger than this are refused before parsing."""

MAX_PLANS = 10_000
"""Most plans a catalog (a file, or all the files of a folder) may hold. More is refused as soon as
it is seen, while parsing and before the schema check: validating 100,000 plans took two minutes and
a gigabyte, and no billing catalog has that many."""

CATALOG_SUFFIXES = (".yaml", ".yml", ".json")

MAX_PRICE_CENTS = 99_999_999
"""Stripe's largest `unit_amount`."""

_CURRENCY_CODES = """
    usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl bsd bwp byn bzd
    cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp gbp gel gip gmd gnf gtq gyd
    hkd hnl htg huf idr ils inr isk jmd jod jpy kes kgs khr kmf krw kwd kyd kzt lak lbp lkr lrd lsl mad
    mdl mga mkd mmk mnt mop mur mvr mwk mxn myr mzn nad ngn nio nok npr nzd omr pab pen pgk php pkr
    pln pyg qar ron rsd rub rwf sar sbd scr sek sgd shp sle sos srd std szl thb tjs tnd top try
    ttd twd tzs uah ugx uyu uzs vnd vuv wst xaf xcd xcg xof xpf yer zar zmw
"""
STRIPE_CURRENCIES: frozenset[str] = frozenset(_CURRENCY_CODES.split())
"""Presentment currencies Stripe accepts for Prices (lowercase ISO 4217), from Stripe's
"Supported currencies" page and its "Invalid currency" error. Not accepted: HRK (Croatia uses EUR
since 2023) and the replaced MRO, SLL and SVC. The emulator accepts the same set (plus USDC)."""

LIMIT_KEYS: tuple[str, ...] = tuple(model.LIMIT_COLUMNS.values())
FEATURE_KEYS: tuple[str, ...] = tuple(model.FEATURE_KEYS.values())
_LIMIT_ATTRS = {column: attr for attr, column in model.LIMIT_COLUMNS.items()}
_FEATURE_ATTRS = {key: attr for attr, key in model.FEATURE_KEYS.items()}

_GIB = 1024**3


@dataclass(frozen=True, slots=True, kw_only=True)
class Preset:
    limits: Mapping[str, int]
    features: Mapping[str, bool]


def _preset(limits: tuple[int, ...], features: tuple[str, ...]) -> Preset:
    assert len(limits) == len(LIMIT_KEYS)
    return Preset(
        limits=dict(zip(LIMIT_KEYS, limits, strict=True)),
        features={key: key in features for key in FEATURE_KEYS},
    )


# Limit order: maxProjects, maxApps, maxDatabases, maxTeamMembers, maxDomains, maxCustomDomains,
# maxFreeSubdomains, maxPurchasableDomains, maxInstances, maxStorageBytes, buildMinutesPerMonth.
# Keep the schema's `preset` description in step with these values.
PRESETS: Mapping[str, Preset] = {
    "small": _preset((3, 10, 3, 3, 5, 2, 3, 1, 1, 10 * _GIB, 500), ("customDomains",)),
    "medium": _preset(
        (10, 50, 10, 10, 25, 10, 10, 5, 3, 50 * _GIB, 2000),
        ("customDomains", "domainPurchase", "aiAssistant"),
    ),
    "large": _preset((50, 250, 50, 50, 100, 50, 50, 25, 10, 250 * _GIB, 10000), FEATURE_KEYS),
}

_INHERITED = ("description", "priceCents", "currency", "billingCycle")
"""Scalar keys copy_from takes from its source (besides limits and features)."""

_MAX_COUNT = 2**31 - 1
_MAX_BYTES = 2**63 - 1
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(?:([KMGT])(I)?)?B?\s*$", re.IGNORECASE)
_POWERS = {"K": 1, "M": 2, "G": 3, "T": 4}

JsonPath = tuple[str | int, ...]


# --- problems -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Doc:
    """One parsed file: its data and where each path starts (1-based lines)."""

    file: str
    number: int = 0
    data: Any = None
    key_lines: dict[JsonPath, int] = field(default_factory=dict)
    value_lines: dict[JsonPath, int] = field(default_factory=dict)
    found: list[_Found] = field(default_factory=list)
    disputed: set[JsonPath] = field(default_factory=set)
    """Paths of YAML values refused for reading differently in YAML 1.1 and 1.2 (reported once)."""
    find_lines: Callable[[], object] | None = None
    """JSON: the walk that learns the lines, run when a line is first wanted. Only a problem
    wants one, so a valid catalog is never walked twice (a quarter of loading 10,000 plans)."""

    def report(self, path: JsonPath, message: str, line: int | None = None) -> None:
        """Record a problem at `path`; the text is built later, once slugs are known."""
        self.found.append(_Found(doc=self, path=path, message=message, line=line or self.line(path) or 0))

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
class _Found:
    """A parse or schema problem, sortable by file and line."""

    doc: _Doc
    path: JsonPath
    message: str
    line: int

    @property
    def key(self) -> tuple[int, int]:
        return (self.doc.number, self.line)

    @property
    def text(self) -> str:
        return _problem(self.doc, self.path, self.message, self.line or None)


_printable = model.printable
"""A problem is one line, whatever a key, a slug or a file name holds."""


def _key(part: str) -> str:
    """A mapping key in a path: as written, or quoted when it is empty, odd or not printable."""
    if part and part.isprintable() and not any(c in part for c in ".[] "):
        return part
    return f"[{json.dumps(part)}]"


def _where(doc: _Doc, path: JsonPath) -> str:
    """`plans[2] (pro).limits.maxApps` for a path."""
    out = ""
    for i, part in enumerate(path):
        if isinstance(part, int):
            out += f"[{part}]"
            if i == 1 and path[0] == "plans" and (slug := doc.slug_at(part)):
                out += f" ({_printable(slug)})"
        else:
            key = _key(part)
            out += f".{key}" if out and not key.startswith("[") else key
    return out


def _problem(doc: _Doc, path: JsonPath, message: str, line: int | None = None) -> str:
    line = line if line is not None else doc.line(path)
    where = _where(doc, path)
    head = f"{doc.file}:{line}" if line else doc.file
    return f"{head}: {where}: {message}" if where else f"{head}: {message}"


def _show(value: Any) -> str:
    """A value as it appears in a message: its kind and a short repr."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    kinds = {int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}
    kind = kinds.get(type(value))
    text = json.dumps(value, ensure_ascii=False, default=str) if kind else str(value)
    kind = kind or type(value).__name__
    text = _printable(text)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{kind} {text}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- reading --------------------------------------------------------------------------------------


def _not_a_file(path: Path) -> str:
    """Why `path` (not a regular file, not a folder) cannot be read, without opening it: opening a
    FIFO blocks, and a device such as /dev/zero never ends."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "cannot read: a symlink loop (too many levels of symbolic links)"
        if e.errno == errno.ENOENT:
            return "cannot read: a broken symlink (its target does not exist)"
        return f"cannot read: {e.strerror or e}"
    if stat.S_ISFIFO(mode):
        kind = "a FIFO"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    else:
        kind = "not a file"
    return f"not a regular file ({kind}); refusing to read it as a catalog"


def _catalog_files(path: Path) -> list[Path]:
    shown = _printable(str(path))
    if path.is_dir():
        files: list[Path] = []
        problems: list[str] = []
        for p in sorted(path.iterdir(), key=lambda p: p.name):
            if p.suffix.lower() not in CATALOG_SUFFIXES or p.is_dir():
                continue  # only files directly in the folder; a folder named x.yaml is not one
            if p.is_file():
                files.append(p)
            else:  # never skipped silently: its plans would be missing, so apply would archive them
                problems.append(f"{_printable(str(p))}: {_not_a_file(p)}")
        if problems:
            raise errors.CatalogError(problems)
        if not files:
            raise errors.CatalogError(
                [f"{shown}: no catalog files (*.yaml, *.yml, *.json) directly in this folder"]
            )
        return files
    if not path.exists() and not path.is_symlink():
        raise errors.CatalogError([f"{shown}: no such file or folder"])
    if not path.is_file():
        raise errors.CatalogError([f"{shown}: {_not_a_file(path)}"])
    if path.suffix.lower() not in CATALOG_SUFFIXES:
        raise errors.CatalogError([f"{shown}: not a catalog file: expected a .yaml, .yml or .json file"])
    return [path]


def _read_text(path: Path, file: str) -> str:
    """The file as text, or CatalogError for something that cannot be a catalog."""
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise errors.CatalogError([f"{file}: cannot read: {e.strerror or e}"]) from e
    if len(data) > MAX_FILE_BYTES:
        raise errors.CatalogError([f"{file}: larger than 10 MiB; refusing to parse it as a catalog"])
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise errors.CatalogError(
            [f"{file}:{line}: binary content (a NUL byte), not a YAML or JSON catalog in UTF-8"]
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise errors.CatalogError(
            [f"{file}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})"]
        ) from e
    return text.removeprefix("\ufeff")


# --- YAML -----------------------------------------------------------------------------------------


# Plain (unquoted) scalars are resolved by YAML 1.2's core schema where it agrees with YAML 1.1,
# and refused where the two disagree: PyYAML reads YAML 1.1, where `0700` is octal 448, `1:30` is
# 90 (base 60), `1_000` is 1000 and `yes`/`on` are true, while YAML 1.2 tools (editors, the schema's
# language server, other loaders) read 700, "1:30", "1_000" and "yes". A price must not depend on
# which one reads the file, so only the forms both read alike are numbers or booleans.
_AGREED = (
    ("tag:yaml.org,2002:int", re.compile(r"[-+]?(?:0|[1-9][0-9]*)")),
    ("tag:yaml.org,2002:float", re.compile(r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+][0-9]+)?")),
    ("tag:yaml.org,2002:float", re.compile(r"[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)")),
    ("tag:yaml.org,2002:bool", re.compile(r"true|True|TRUE|false|False|FALSE")),
    ("tag:yaml.org,2002:null", re.compile(r"~|null|Null|NULL|")),
)
_DISPUTED = re.compile(
    r"""[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?  # 1.1 base 60: 1:30
      | [-+]?0[bB][01_]+ | [-+]?0[oO]?[0-7_]+ | [-+]?0[xX][0-9a-fA-F_]+  # 1.1 or 1.2 only: 0b, 0700, 0o7, 0x
      | [-+]?[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?  # 1_000, 1.5_0, 1e3 (a 1.2 float only)
      | [-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
      | y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF  # 1.1 booleans
    """,
    re.VERBOSE,
)
_DISPUTED_TAG = "tag:kuploy-reconciler:yaml-disputed"
_STR_TAG = "tag:yaml.org,2002:str"


def _plain_scalar_tag(value: str) -> str:
    """The tag of a plain scalar: an agreed number, boolean or null, the disputed tag, or a string."""
    if value == "<<":
        return _MERGE_TAG  # refused with its own message
    for tag, form in _AGREED:
        if form.fullmatch(value):
            return tag
    return _DISPUTED_TAG if _DISPUTED.fullmatch(value) else _STR_TAG


def _disputed(text: str) -> str:
    """Why a plain scalar is refused: what YAML 1.1 and 1.2 each make of it, and what to write."""
    try:
        old = yaml.safe_load(text)  # PyYAML is YAML 1.1: `text` alone is the same plain scalar
    except (yaml.YAMLError, ValueError):  # PyYAML cannot even convert some of them (`._`)
        old = text
    new = _yaml12_reading(text)
    advice = "write integers in plain decimal, booleans as true or false, and quote text"
    if type(old) is not type(new) or old != new:
        return f"{text} is read as {_shown(old)} by YAML 1.1 but as {_shown(new)} by YAML 1.2: {advice}"
    if base := _BASES.get(text.lstrip("+-")[:2].lower()):
        return f"{text} is {_shown(new)} written in base {base}: {advice}"
    return f"{text} is not read the same way by every YAML reader: {advice}"


_BASES = {"0x": 16, "0o": 8, "0b": 2}


def _yaml12_reading(text: str) -> Any:
    """What a YAML 1.2 (core schema) reader makes of a disputed plain scalar."""
    sign, digits = (-1, text[1:]) if text.startswith("-") else (1, text.lstrip("+"))
    if re.fullmatch(r"[0-9]+", digits):
        return sign * int(digits)
    if re.fullmatch(r"0o[0-7]+|0x[0-9a-fA-F]+", text):
        return int(text[2:], _BASES[text[:2]])
    if re.fullmatch(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?", text):
        return float(text)
    return text


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"the text {value!r}" if isinstance(value, str) else f"{value:g}"


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes every string `_Loader` would not read back as that string."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            return _plain_scalar_tag(value)
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call,unused-ignore]


class _TooManyPlans(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def _too_many_plans(where: str, what: str) -> errors.CatalogError:
    return errors.CatalogError(
        [f"{where}: {what}; a catalog holds at most {MAX_PLANS} plans (refused before checking them)"]
    )


class _Loader(yaml.SafeLoader):  # type: ignore[misc,unused-ignore]
    """SafeLoader that refuses aliases (no alias bombs, no hidden sharing between plans), resolves
    plain scalars only where YAML 1.1 and 1.2 agree (`_plain_scalar_tag`), and stops at plan
    `MAX_PLANS + 1`, before composing the rest."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._keys: list[Any] = []  # the keys and indexes of the node being composed, root first

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            return _plain_scalar_tag(value)
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call,unused-ignore]

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call,unused-ignore]
            raise yaml.composer.ComposerError(
                None,
                None,
                f"YAML aliases (*{event.anchor}) are not supported: write the values out, or use copy_from",
                event.start_mark,
            )
        if isinstance(index, int) and index >= MAX_PLANS and self._keys == [None, "plans"]:
            raise _TooManyPlans(self.peek_event().start_mark.line + 1)  # type: ignore[no-untyped-call,unused-ignore]
        self._keys.append(index.value if isinstance(index, yaml.ScalarNode) else index)
        try:
            return super().compose_node(parent, index)
        finally:
            self._keys.pop()


_MERGE_TAG = "tag:yaml.org,2002:merge"
_COLLECTION_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


def _parse_yaml(doc: _Doc, text: str) -> None:
    loader: Any = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            raise errors.CatalogError([f"{doc.file}: empty file: expected a mapping with a 'plans' list"])
        doc.data = _from_node(loader, doc, node, ())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        message = _one_line(" ".join(p for p in (e.context, e.problem) if p))
        head = f"{doc.file}:{mark.line + 1}" if mark else doc.file
        column = f" (column {mark.column + 1})" if mark else ""
        raise errors.CatalogError([f"{head}: invalid YAML: {message}{column}"]) from e
    except _TooManyPlans as e:
        raise _too_many_plans(
            f"{doc.file}:{e.line}: plans[{MAX_PLANS}]", f"more than {MAX_PLANS} plans"
        ) from None
    except yaml.reader.ReaderError as e:
        line = text[: e.position].count("\n") + 1
        raise errors.CatalogError(
            [f"{doc.file}:{line}: invalid YAML: unacceptable character #x{e.character:04x}"]
        ) from e
    except yaml.YAMLError as e:
        raise errors.CatalogError([f"{doc.file}: invalid YAML: {_one_line(str(e))}"]) from e
    finally:
        if loader is not None:
            loader.dispose()


def _from_node(loader: Any, doc: _Doc, node: Any, path: JsonPath) -> Any:
    """Plain Python data from a composed node, recording lines and refusing duplicate keys."""
    doc.value_lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode) and node.tag in _COLLECTION_TAGS:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                doc.report(path, "YAML merge keys (<<) are not supported: use copy_from", line)
                continue
            key = None
            if isinstance(key_node, yaml.ScalarNode):
                disputed = key_node.tag == _DISPUTED_TAG  # a key is text: `on:` is the key "on"
                key = key_node.value if disputed else loader.construct_object(key_node)
            if not isinstance(key, str):
                shown = _show(key) if isinstance(key_node, yaml.ScalarNode) else "a list or mapping"
                doc.report(path, f"keys must be strings, not {shown}", line)
                continue
            key_path = (*path, key)
            if key in out:
                first = doc.key_lines[key_path]
                doc.report(key_path, f"duplicate key (first given at line {first})", line)
                continue
            doc.key_lines[key_path] = line
            out[key] = _from_node(loader, doc, value_node, key_path)
        return out
    if not isinstance(node, yaml.ScalarNode) and node.tag not in _COLLECTION_TAGS:
        raise yaml.constructor.ConstructorError(
            None, None, f"could not determine a constructor for the tag {node.tag!r}", node.start_mark
        )
    if isinstance(node, yaml.SequenceNode):
        return [_from_node(loader, doc, item, (*path, i)) for i, item in enumerate(node.value)]
    if node.tag == _DISPUTED_TAG:
        doc.report(path, _disputed(node.value))
        doc.disputed.add(path)
        return node.value
    return loader.construct_object(node)


# --- JSON -----------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_json(doc: _Doc, text: str) -> None:
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
    if (count := _plan_count(doc)) > MAX_PLANS:
        raise _too_many_plans(f"{doc.file}: plans", f"{count} plans")
    doc.find_lines = lambda: _JsonLines(doc, text).value(0, ())
    if duplicates:  # reported by the walk, which runs now
        doc.line(())


def _plan_count(doc: _Doc) -> int:
    plans = doc.data.get("plans") if isinstance(doc.data, dict) else None
    return len(plans) if isinstance(plans, list) else 0


_WS = re.compile(r"[ \t\n\r]*")
_SCALAR = re.compile(r"-?[0-9][0-9.eE+-]*|true|false|null")


class _JsonLines:
    """Walks valid JSON text once more to learn the line of each key and value, and finds duplicate
    keys (`json` silently keeps the last)."""

    def __init__(self, doc: _Doc, text: str) -> None:
        self.doc, self.text = doc, text
        self.line, self.pos = 1, 0

    def _line_at(self, pos: int) -> int:
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line

    def _skip(self, i: int) -> int:
        match = _WS.match(self.text, i)
        assert match is not None
        return match.end()

    def value(self, i: int, path: JsonPath) -> int:
        i = self._skip(i)
        self.doc.value_lines.setdefault(path, self._line_at(i))
        char = self.text[i]
        if char == "{":
            seen: set[str] = set()
            i = self._skip(i + 1)
            if self.text[i] == "}":
                return i + 1
            while True:
                i = self._skip(i)
                line = self._line_at(i)
                key, i = json.decoder.scanstring(self.text, i + 1)  # type: ignore[attr-defined]
                key_path = (*path, key)
                if key in seen:
                    first = self.doc.key_lines[key_path]
                    self.doc.report(key_path, f"duplicate key (first given at line {first})", line)
                else:
                    seen.add(key)
                    self.doc.key_lines[key_path] = line
                i = self._skip(i) + 1  # ':'
                i = self._skip(self.value(i, key_path))
                if self.text[i] == "}":
                    return i + 1
                i += 1  # ','
        if char == "[":
            i = self._skip(i + 1)
            if self.text[i] == "]":
                return i + 1
            index = 0
            while True:
                i = self._skip(self.value(i, (*path, index)))
                index += 1
                if self.text[i] == "]":
                    return i + 1
                i += 1  # ','
        if char == '"':
            return cast(int, json.decoder.scanstring(self.text, i + 1)[1])  # type: ignore[attr-defined]
        match = _SCALAR.match(self.text, i)
        assert match is not None
        return match.end()


# --- schema ---------------------------------------------------------------------------------------


def _is_integer(checker: Any, instance: Any) -> bool:
    """JSON Schema's integer, minus floats such as 2000.0 and minus booleans."""
    return isinstance(instance, int) and not isinstance(instance, bool)


def _schema_text() -> str:
    """The shipped schema, read as package data."""
    try:
        package = resources.files("reconciler")
    except NotADirectoryError:
        # Python 3.11 cannot build the resource reader of a namespace package whose __path__ holds an
        # editable-install hook; the schema sits beside this module either way.
        return Path(__file__).with_name("schemas").joinpath("catalog.schema.json").read_text("utf-8")
    return (package / "schemas" / "catalog.schema.json").read_text(encoding="utf-8")


@cache
def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(_schema_text())
    return schema


@cache
def _validator() -> Any:
    """The full check (jsonschema): every error, each with its path, for the catalog's messages."""
    import jsonschema  # only for a catalog the quick check refused: 70 ms of imports saved otherwise

    schema = _schema()
    base = jsonschema.Draft202012Validator
    base.check_schema(schema)
    strict = jsonschema.validators.extend(
        base, type_checker=base.TYPE_CHECKER.redefine("integer", _is_integer)
    )
    # Local references inlined once: resolving `#/$defs/...` for every plan of a large catalog
    # was most of the time of loading it (0.5 s of 0.7 s at 1,000 plans).
    return strict(_inline_refs(schema, schema.get("$defs", {})))


_DRAFT_04_AS_IS = frozenset(
    [
        "title",
        "description",
        "type",
        "properties",
        "additionalProperties",
        "required",
        "items",
        "minItems",
        "uniqueItems",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "enum",
        "anyOf",
        "not",
    ]
)


def _as_draft_04(node: Any) -> Any:
    """The schema (references inlined) in draft-04 words: `const` as a one-value `enum`,
    `dependentSchemas` as `dependencies`. Draft-04 is the one whose `integer` is exactly ours: an
    int, never a float such as 2000.0 (draft-06 and later accept those), never a boolean."""
    if isinstance(node, list):
        return [_as_draft_04(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "const":
            out["enum"] = [value]
        elif key == "dependentSchemas":
            out["dependencies"] = {name: _as_draft_04(sub) for name, sub in value.items()}
        elif key == "properties":
            out[key] = {name: _as_draft_04(sub) for name, sub in value.items()}
        elif key in _DRAFT_04_AS_IS:
            out[key] = _as_draft_04(value)
        elif key not in ("$schema", "$defs"):
            raise AssertionError(f"catalog schema keyword {key!r} has no draft-04 translation")
    return out


@cache
def _quick_check() -> Callable[[Any], Any]:
    """The same schema compiled to Python code by fastjsonschema: it answers only valid or not
    (it stops at the first error) and takes a few percent of jsonschema's time (10 ms instead of
    0.3 s at 1,000 plans, 0.12 s instead of 2.8 s at 10,000), so a valid catalog, the usual case,
    is checked by it alone. It is never more lenient than the full check (a pattern's `$` matches
    only at the very end, before no newline: stricter; everything else means the same), and
    whatever it refuses goes through the full check, whose errors are the ones reported: the
    messages do not depend on it."""
    import fastjsonschema

    schema = _schema()
    quick = _as_draft_04(_inline_refs(schema, schema.get("$defs", {})))
    quick["$schema"] = "http://json-schema.org/draft-04/schema#"
    check: Callable[[Any], Any] = fastjsonschema.compile(quick, detailed_exceptions=False)
    return check


def _schema_valid(data: Any) -> bool:
    """Whether the quick check accepts `data` (when it does, so does the full check)."""
    import fastjsonschema

    try:
        _quick_check()(data)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


def _inline_refs(node: Any, defs: Mapping[str, Any], seen: tuple[str, ...] = ()) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and ref not in seen:
            target = _inline_refs(defs[ref.removeprefix("#/$defs/")], defs, (*seen, ref))
            rest = {k: _inline_refs(v, defs, seen) for k, v in node.items() if k != "$ref"}
            return {**target, **rest} if rest else target
        return {k: _inline_refs(v, defs, seen) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, defs, seen) for v in node]
    return node


_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _text_problem(text: str, *, multiline: bool = False) -> str | None:
    """Why a parsed string is not storable, showable text.

    JSON `\\u0000` and `\\ud800` escapes (YAML's `"\\0"` too) parse, but Postgres refuses NUL and a
    lone surrogate cannot be encoded as UTF-8. Control characters (C0, DEL, C1: U+009B alone starts a
    terminal escape sequence) and bidirectional embeddings, overrides and isolates (U+202A-U+202E,
    U+2066-U+2069: "Trojan Source") would reach terminals, Stripe and pull-request comments and make
    text look other than it is. Only a `description` (`multiline`) may hold tabs and line breaks."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which PostgreSQL cannot store"
    if match := _SURROGATE.search(text):
        shown = json.dumps(match.group())[1:-1]
        return f"contains a lone surrogate ({shown}), which is not text and cannot be encoded as UTF-8"
    if match := (_CONTROL if multiline else _CONTROL_OR_BREAK).search(text):
        code = f"U+{ord(match.group()):04X}"
        if match.group() in "\t\n\r":
            return f"contains a tab or line break ({code}): only a description may span lines"
        return f"contains the control character {code}, which would reach terminals and comments raw"
    if match := _BIDI.search(text):
        return (
            f"contains the bidirectional control U+{ord(match.group()):04X}, which makes text display "
            "in another order than it is written"
        )
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x01-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_CONTROL_OR_BREAK = re.compile("[\x01-\x1f\x7f-\x9f]")
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")


def _check_text(doc: _Doc) -> None:
    """Report every key and string value that is not storable text (iterative: any depth)."""
    todo: list[tuple[JsonPath, Any]] = [((), doc.data)]
    while todo:
        path, value = todo.pop()
        if isinstance(value, str):
            if problem := _text_problem(value, multiline=path[-1:] == ("description",)):
                doc.report(path, problem)
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and (problem := _text_problem(key)):
                    doc.report((*path, key), problem)
                else:
                    todo.append(((*path, key), item))
        elif isinstance(value, list):
            todo.extend(((*path, i), item) for i, item in enumerate(value))


def _check_schema(doc: _Doc) -> None:
    seen: set[tuple[JsonPath, str]] = set()
    for error in () if _schema_valid(doc.data) else _validator().iter_errors(doc.data):
        path: JsonPath = tuple(error.absolute_path)
        if path in doc.disputed:
            continue
        for sub_path, message in _explain(error, path):
            if (sub_path, message) not in seen:  # `required` reports each missing key as its own error
                seen.add((sub_path, message))
                doc.report(sub_path, message)
    _check_text(doc)
    # Sizes the schema's pattern lets through can still be fractional bytes (1.5B) or too large.
    plans = doc.data.get("plans") if isinstance(doc.data, dict) else None
    for index, plan in enumerate(plans if isinstance(plans, list) else ()):
        limits = plan.get("limits") if isinstance(plan, dict) else None
        size = limits.get("maxStorageBytes") if isinstance(limits, dict) else None
        if isinstance(size, str) and size != "unlimited" and _SIZE.match(size):
            try:
                parse_size(size)
            except ValueError as e:
                doc.report(("plans", index, "limits", "maxStorageBytes"), str(e))


def _explain(error: Any, path: JsonPath) -> Iterator[tuple[JsonPath, str]]:
    """One or more (path, message) for a jsonschema error, in the catalog's words."""
    kind, schema, instance = error.validator, error.schema, error.instance
    name = path[-1] if path else None
    if kind == "type":
        wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        if not path:
            yield path, f"the top level must be a mapping with a 'plans' list, not {_show(instance)}"
            return
        wanted_text = " or ".join(_TYPE_NAMES.get(str(t), str(t)) for t in wanted)
        yield path, f"must be {wanted_text}, not {_show(instance)}"
    elif kind == "required":
        for key in error.validator_value:
            if isinstance(instance, dict) and key not in instance:
                yield (*path, key), "missing (required)"
    elif kind == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        for key in instance:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                suggestion = f"; did you mean '{hint[0]}'?" if hint else f" (allowed: {', '.join(allowed)})"
                yield (*path, key), f"unknown key{suggestion}"
    elif kind == "not" and isinstance(instance, dict) and {"preset", "copy_from"} <= instance.keys():
        yield (*path, "copy_from"), "use either preset or copy_from, not both"
    elif kind == "anyOf" and schema.get("title") == "count limit":
        yield (
            path,
            f"must be a non-negative integer (at most {_MAX_COUNT}) or 'unlimited', not {_show(instance)}",
        )
    elif kind == "anyOf" and schema.get("title") == "storage limit":
        yield (
            path,
            (
                "must be a non-negative integer of bytes, 'unlimited' or a size such as 50GiB, "
                f"512MiB, 1.5TiB, 10GB, not {_show(instance)}"
            ),
        )
    elif kind == "pattern" and name in ("slug", "copy_from"):
        yield (
            path,
            (
                "must be lowercase letters, digits, '-' or '_', start with a letter or digit and be at most "
                f"63 characters, not {_show(instance)}"
            ),
        )
    elif kind == "pattern" and name == "url" and path[:1] == ("webhookEndpoint",):
        yield (
            path,
            f"must be an absolute http(s) URL ending {model.WEBHOOK_PATH}, not {_show(instance)}",
        )
    elif kind == "pattern" and path[:2] == ("webhookEndpoint", "events"):
        yield path, f"must be a Stripe event type such as invoice.paid, not {_show(instance)}"
    elif kind == "pattern" and name == "currency":
        yield path, f"must be a three-letter ISO 4217 currency code such as usd, not {_show(instance)}"
    elif kind == "pattern" and name == "name":
        if instance:  # "" already fails minLength
            yield path, "must not be blank"
    elif kind == "enum":
        choices = ", ".join("null" if v is None else str(v) for v in error.validator_value)
        yield path, f"must be one of {choices}, not {_show(instance)}"
    elif kind == "const":
        yield path, f"must be {json.dumps(error.validator_value)}, not {_show(instance)}"
    elif kind == "minimum":
        yield path, f"must be at least {error.validator_value}, not {instance}"
    elif kind == "maximum":
        yield path, f"must be at most {error.validator_value}, not {instance}"
    elif kind == "minLength":
        yield path, "must not be empty"
    elif kind == "maxLength":
        yield path, f"must be at most {error.validator_value} characters, not {len(instance)}"
    else:
        yield path, _one_line(error.message)


# --- resolution -----------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Entry:
    """One plan as written, with where it was written."""

    doc: _Doc
    index: int
    data: dict[str, Any]
    valid: bool

    @property
    def slug(self) -> str | None:
        slug = self.data.get("slug")
        return slug if isinstance(slug, str) else None

    @property
    def path(self) -> JsonPath:
        return ("plans", self.index)

    def problem(self, message: str, *keys: str | int) -> str:
        return _problem(self.doc, (*self.path, *keys), message)

    def at(self) -> str:
        line = self.doc.line(self.path)
        return f"{self.doc.file}:{line}" if line else self.doc.file


@dataclass(slots=True)
class _Fields:
    """A plan's resolved keys, before building the `PlanSpec`."""

    scalars: dict[str, Any]
    limits: dict[str, int]
    features: dict[str, bool]


def parse_size(text: str) -> int:
    """Bytes for `50GiB`, `512MiB`, `1.5TiB`, `10GB`, `100 MB` or a plain `1024`.

    Ki/Mi/Gi/Ti are 1024^n, K/M/G/T (with or without B) are 1000^n, case-insensitive.
    Raises ValueError unless the result is a whole number of bytes within a Postgres bigint.
    """
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size such as 50GiB, 512MiB, 10GB or a number of bytes")
    number, prefix, binary = match.groups()
    base = 1024 if binary else 1000
    size = Decimal(number) * base ** _POWERS[prefix.upper()] if prefix else Decimal(number)
    if size != size.to_integral_value():
        raise ValueError(f"{text!r} is {size} bytes, not a whole number of bytes")
    if size > _MAX_BYTES:
        raise ValueError(f"{text!r} is more than {_MAX_BYTES} bytes")
    return int(size)


def _limit_value(key: str, value: Any) -> int:
    if value == "unlimited":
        return model.UNLIMITED
    if isinstance(value, str) and key == "maxStorageBytes":
        return parse_size(value)
    assert isinstance(value, int) and not isinstance(value, bool)
    return value


class _Resolver:
    def __init__(self, entries: list[_Entry], problems: list[str]) -> None:
        self.entries = entries
        self.problems = problems
        self.by_slug: dict[str, _Entry] = {}
        self.done: dict[int, _Fields | None] = {}
        self.failed = False
        for entry in entries:
            slug = entry.slug
            if slug is None:
                continue
            if slug in self.by_slug:
                first = self.by_slug[slug]
                self.problems.append(
                    entry.problem(
                        f"duplicate slug '{_printable(slug)}': already defined at {first.at()} "
                        f"(plans[{first.index}])",
                        "slug",
                    )
                )
                self.failed = True
            else:
                self.by_slug[slug] = entry

    def resolve(self, entry: _Entry, chain: tuple[_Entry, ...] = ()) -> _Fields | None:
        key = id(entry)
        if key in self.done:
            return self.done[key]
        if not entry.valid:
            self.done[key] = None
            return None
        if entry in chain:
            cycle = [*chain[chain.index(entry) :], entry]
            text = " -> ".join(e.slug or "?" for e in cycle)
            for member in cycle[:-1]:
                self.problems.append(member.problem(f"copy_from cycle: {text}", "copy_from"))
                self.done[id(member)] = None
            self.failed = True
            return None
        fields = self._resolve_own(entry, (*chain, entry))
        if id(entry) not in self.done:  # not already failed as part of a cycle
            self.done[key] = fields
        if fields is None:
            self.failed = True
        return self.done[key]

    def _resolve_own(self, entry: _Entry, chain: tuple[_Entry, ...]) -> _Fields | None:
        data = entry.data
        base = _Fields(scalars={}, limits={}, features={})
        if isinstance(preset_name := data.get("preset"), str):
            preset = PRESETS[preset_name]
            base = _Fields(scalars={}, limits=dict(preset.limits), features=dict(preset.features))
        elif isinstance(source_slug := data.get("copy_from"), str):
            source = self.by_slug.get(source_slug)
            if source is None:
                known = ", ".join(_printable(s) for s in sorted(self.by_slug)) or "none"
                self.problems.append(
                    entry.problem(
                        f"unknown plan '{_printable(source_slug)}' (plans in the catalog: {known})",
                        "copy_from",
                    )
                )
                return None
            copied = self.resolve(source, chain)
            if copied is None:
                return None  # the source's own problem is reported at the source
            base = _Fields(
                scalars={k: v for k, v in copied.scalars.items() if k in _INHERITED},
                limits=dict(copied.limits),
                features=dict(copied.features),
            )
        ok = True
        for key, value in data.items():
            if key in ("limits", "features", "preset", "copy_from"):
                continue
            base.scalars[key] = value
        for key, value in (data.get("limits") or {}).items():
            try:
                base.limits[key] = _limit_value(key, value)
            except ValueError as e:
                self.problems.append(entry.problem(str(e), "limits", key))
                ok = False
        base.features.update(data.get("features") or {})
        missing = [key for key in LIMIT_KEYS if key not in base.limits]
        for key in missing:
            self.problems.append(
                entry.problem("missing: give every limit, or start from a preset or copy_from", "limits", key)
            )
        return base if ok and not missing else None


def _build(fields: _Fields) -> model.PlanSpec:
    scalars = fields.scalars
    is_default = bool(scalars.get("isDefault", False))
    price = scalars.get("priceCents")
    currency = scalars.get("currency")
    cycle = scalars.get("billingCycle")
    return model.PlanSpec(
        slug=scalars["slug"],
        name=scalars["name"],
        description=scalars.get("description") or "",
        price_cents=0 if price is None else price,  # cloud_plans.price is NOT NULL: "no price" is 0
        currency=currency.lower() if isinstance(currency, str) else None,
        billing_cycle=model.BillingCycle(cycle) if cycle else None,
        limits=model.Limits(**{_LIMIT_ATTRS[k]: v for k, v in fields.limits.items()}),
        features=model.Features(**{_FEATURE_ATTRS[k]: v for k, v in fields.features.items()}),
        is_default=is_default,
        is_active=bool(scalars.get("isActive", True)),
    )


def _plan_problems(entry: _Entry, plan: model.PlanSpec) -> Iterator[str]:
    if plan.currency is not None and plan.currency not in STRIPE_CURRENCIES:
        yield entry.problem(f"'{plan.currency}' is not a currency Stripe supports", "currency")
    if plan.is_default:
        if not plan.is_active:
            yield entry.problem("an inactive plan cannot be the default plan", "isDefault")
        if plan.price_cents:
            yield entry.problem(
                f"the default plan must have no price (absent, null or 0), not {plan.price_cents}: "
                "it gets no Stripe Price",
                "priceCents",
            )
        return
    if not plan.is_active:
        return
    if not plan.price_cents or plan.price_cents <= 0:
        given = f"not {plan.price_cents}" if plan.price_cents else "not missing or 0"
        yield entry.problem(f"must be a positive integer for an active paid plan, {given}", "priceCents")
    if plan.currency is None:
        yield entry.problem("required for an active paid plan (e.g. usd)", "currency")
    if plan.billing_cycle is None:
        yield entry.problem("required for an active paid plan: monthly or annual", "billingCycle")


def _default_problems(label: str, resolved: list[tuple[_Entry, model.PlanSpec]]) -> Iterator[str]:
    defaults = [(entry, plan) for entry, plan in resolved if plan.is_default and plan.is_active]
    if not defaults:
        yield (
            f"{label}: no default plan: exactly one active plan must have isDefault: true "
            "(the free plan new organizations get)"
        )
    first = defaults[0][0] if defaults else None
    for entry, _plan in defaults[1:]:
        assert first is not None
        yield entry.problem(
            f"a second default plan: '{first.slug}' at {first.at()} is already the default; "
            "exactly one active plan may have isDefault: true",
            "isDefault",
        )


# --- entry point ----------------------------------------------------------------------------------


def _parse(path: Path, number: int) -> _Doc:
    doc = _Doc(file=_printable(str(path)), number=number)
    text = _read_text(path, doc.file)
    try:
        if path.suffix.lower() == ".json":
            _parse_json(doc, text)
        else:
            _parse_yaml(doc, text)
    except RecursionError as e:
        raise errors.CatalogError([f"{doc.file}: nested too deeply to be a catalog"]) from e
    return doc


def load_catalog(path: Path) -> model.Catalog:
    """Load, validate and resolve the catalog at `path` (a file or a folder of catalog files).

    Raises `errors.CatalogError` carrying every problem found, one line each.
    """
    try:
        files = _catalog_files(path)
    except OSError as e:
        raise errors.CatalogError([f"{_printable(str(path))}: cannot read: {e.strerror or e}"]) from e
    fatal: list[str] = []
    docs: list[_Doc] = []
    label = _printable(str(path))
    for number, file_path in enumerate(files):
        try:
            docs.append(_parse(file_path, number))
        except errors.CatalogError as e:
            fatal.extend(e.problems)
    if (total := sum(map(_plan_count, docs))) > MAX_PLANS:
        raise _too_many_plans(label, f"{total} plans in its {len(docs)} files") from None
    for doc in docs:
        try:
            _check_schema(doc)  # inside: the JSON line walk may run here, on a problem
        except RecursionError as e:
            raise errors.CatalogError([f"{doc.file}: nested too deeply to be a catalog"]) from e
    return _resolve_docs(docs, fatal, label)


def load_catalog_text(text: str, *, source: str) -> model.Catalog:
    """Validate and resolve a kuploy.app catalog JSON document already in memory (fetched from a URL);
    problems name `source` as they name a file. Raises `errors.CatalogError`."""
    doc = _Doc(file=_printable(source))
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise errors.CatalogError([f"{doc.file}: larger than 10 MiB; refusing to parse it as a catalog"])
    try:
        _parse_json(doc, text.removeprefix("\ufeff"))
        _check_schema(doc)  # inside: the JSON line walk may run here, on a problem
    except RecursionError as e:
        raise errors.CatalogError([f"{doc.file}: nested too deeply to be a catalog"]) from e
    return _resolve_docs([doc], [], doc.file)


def _webhook_endpoint(docs: list[_Doc], problems: list[str]) -> model.WebhookEndpointSpec | None:
    """The one `webhookEndpoint` the catalog declares (in at most one file), events defaulted."""
    declared = [
        d for d in docs if isinstance(d.data, dict) and isinstance(d.data.get("webhookEndpoint"), dict)
    ]
    if len(declared) > 1:
        problems.append(
            _problem(
                declared[1],
                ("webhookEndpoint",),
                f"declared again (first in {declared[0].file}); one webhook endpoint per catalog",
            )
        )
        return None
    if not declared:
        return None
    doc = declared[0]
    if any(item.path[:1] == ("webhookEndpoint",) for item in doc.found):
        return None  # the schema check reported it
    data = doc.data["webhookEndpoint"]
    url, events = data.get("url"), data.get("events", list(model.WEBHOOK_EVENTS))
    if (
        not isinstance(url, str)
        or not isinstance(events, list)
        or not all(isinstance(e, str) for e in events)
    ):
        return None  # the schema check reported it
    if "*" not in events and (missing := [e for e in model.WEBHOOK_EVENTS if e not in events]):
        problems.append(
            _problem(
                doc,
                ("webhookEndpoint", "events"),
                f"misses {', '.join(missing)}: kuploy-cloud needs all six events of the billing guide",
            )
        )
        return None
    return model.WebhookEndpointSpec(url=url, events=tuple(sorted(set(events))))


def webhook_endpoint_from_flag(url: str) -> model.WebhookEndpointSpec:
    """`--webhook-url URL`: the endpoint with the six events of the guide, URL checked as the schema does."""
    pattern = _schema()["properties"]["webhookEndpoint"]["properties"]["url"]["pattern"]
    if not re.match(pattern, url):
        raise errors.ConfigError(
            f"--webhook-url must be an absolute http(s) URL ending {model.WEBHOOK_PATH}, "
            f"not {_printable(url)!r}"
        )
    return model.WebhookEndpointSpec(url=url)


def _resolve_docs(docs: list[_Doc], fatal: list[str], label: str) -> model.Catalog:
    found = sorted((item for doc in docs for item in doc.found), key=lambda item: item.key)
    problems = fatal + [item.text for item in found]

    entries: list[_Entry] = []
    for doc in docs:
        plans = doc.data.get("plans") if isinstance(doc.data, dict) else None
        if not isinstance(plans, list):
            continue
        bad = {item.path[1] for item in doc.found if len(item.path) > 1 and item.path[0] == "plans"}
        for index, data in enumerate(plans):
            if isinstance(data, dict):
                entries.append(_Entry(doc=doc, index=index, data=data, valid=index not in bad))

    complete = not problems
    resolver = _Resolver(entries, problems)
    resolved: list[tuple[_Entry, model.PlanSpec]] = []
    for entry in entries:
        try:
            fields = resolver.resolve(entry)
        except RecursionError as e:
            raise errors.CatalogError([*problems, f"{label}: copy_from chains are nested too deeply"]) from e
        if fields is None:
            complete = False
            continue
        plan = _build(fields)
        if resolver.by_slug.get(plan.slug) is entry:
            resolved.append((entry, plan))
        problems.extend(_plan_problems(entry, plan))
    if complete and not resolver.failed:
        problems.extend(_default_problems(label, resolved))
    endpoint = _webhook_endpoint(docs, problems)
    if problems:
        raise errors.CatalogError(problems)
    return model.Catalog(
        plans=tuple(plan for _, plan in resolved),
        sources=tuple(d.file for d in docs),
        webhook_endpoint=endpoint,
    )


# --- writing ---------------------------------------------------------------------------------------


def format_size(size: int) -> int | str:
    """`10737418240` → `10GiB`; sizes that are not a whole number of KiB..TiB stay plain bytes."""
    for unit, power in (("TiB", 4), ("GiB", 3), ("MiB", 2), ("KiB", 1)):
        if size > 0 and size % 1024**power == 0:
            return f"{size // 1024**power}{unit}"
    return size


def dump_catalog(catalog: model.Catalog, *, comment: str = "") -> str:
    """A YAML catalog that `load_catalog` reads back into the same plans (used by `export`).

    Every value is explicit (no preset, no copy_from): an export is the state as it is.
    """
    plans = []
    for plan in catalog.plans:
        entry: dict[str, Any] = {"slug": plan.slug, "name": plan.name}
        if plan.description:
            entry["description"] = plan.description
        for key, value in (
            ("priceCents", plan.price_cents),
            ("currency", plan.currency),
            ("billingCycle", plan.billing_cycle.value if plan.billing_cycle else None),
        ):
            if value is not None:
                entry[key] = value
        entry["isDefault"] = plan.is_default
        entry["isActive"] = plan.is_active
        entry["limits"] = {
            column: "unlimited"
            if value == model.UNLIMITED
            else (format_size(value) if column == "maxStorageBytes" else value)
            for column, value in plan.limits.as_columns().items()
        }
        entry["features"] = plan.features.as_json()
        plans.append(entry)
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    return header + yaml.dump(
        {"version": 1, "plans": plans}, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )
