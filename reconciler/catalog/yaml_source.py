"""YAML text → plain data, with the line of every key and value (from PyYAML's composed nodes).

Refused, each with its own message: aliases and merge keys, duplicate and non-string keys, tags
PyYAML would construct objects for, and plain scalars that YAML 1.1 and YAML 1.2 read differently
(`0700`, `1:30`, `yes`). `plain_scalar_tag` is also what `export` quotes by.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from reconciler import errors
from reconciler.catalog.problems import Doc, JsonPath, one_line, show
from reconciler.catalog.sources import MAX_PLANS, too_many_plans

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


def plain_scalar_tag(value: str) -> str:
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


class _TooManyPlans(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _Loader(yaml.SafeLoader):  # type: ignore[misc,unused-ignore]
    """SafeLoader that refuses aliases (no alias bombs, no hidden sharing between plans), resolves
    plain scalars only where YAML 1.1 and 1.2 agree (`plain_scalar_tag`), and stops at plan
    `MAX_PLANS + 1`, before composing the rest."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._keys: list[Any] = []  # the keys and indexes of the node being composed, root first

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            return plain_scalar_tag(value)
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


def parse_yaml(doc: Doc, text: str) -> None:
    loader: Any = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            raise errors.CatalogError([f"{doc.file}: empty file: expected a mapping with a 'plans' list"])
        doc.data = _from_node(loader, doc, node, ())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        message = one_line(" ".join(p for p in (e.context, e.problem) if p))
        head = f"{doc.file}:{mark.line + 1}" if mark else doc.file
        column = f" (column {mark.column + 1})" if mark else ""
        raise errors.CatalogError([f"{head}: invalid YAML: {message}{column}"]) from e
    except _TooManyPlans as e:
        raise too_many_plans(
            f"{doc.file}:{e.line}: plans[{MAX_PLANS}]", f"more than {MAX_PLANS} plans"
        ) from None
    except yaml.reader.ReaderError as e:
        line = text[: e.position].count("\n") + 1
        raise errors.CatalogError(
            [f"{doc.file}:{line}: invalid YAML: unacceptable character #x{e.character:04x}"]
        ) from e
    except yaml.YAMLError as e:
        raise errors.CatalogError([f"{doc.file}: invalid YAML: {one_line(str(e))}"]) from e
    finally:
        if loader is not None:
            loader.dispose()


def _from_node(loader: Any, doc: Doc, node: Any, path: JsonPath) -> Any:
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
                shown = show(key) if isinstance(key_node, yaml.ScalarNode) else "a list or mapping"
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
