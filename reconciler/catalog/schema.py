"""The JSON Schema check (`schemas/catalog.schema.json`) and its errors in the catalog's words.

A valid catalog is checked by a compiled quick check alone (fastjsonschema); one it refuses goes
through jsonschema, whose errors are the ones reported.

Every jsonschema error becomes one or more (path, message) problems on the `Doc`; text that parses
but cannot be stored (NUL, lone surrogates) and sizes the schema's pattern lets through but that are
not whole bytes are reported here too. The schema is read once, its local `$ref`s inlined.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from reconciler import model
from reconciler.catalog.problems import Doc, JsonPath, one_line, show
from reconciler.catalog.sizes import SIZE, parse_size

_MAX_COUNT = 2**31 - 1


def _is_integer(checker: Any, instance: Any) -> bool:
    """JSON Schema's integer, minus floats such as 2000.0 and minus booleans."""
    return isinstance(instance, int) and not isinstance(instance, bool)


def _schema_text() -> str:
    """The shipped schema, read as package data."""
    try:
        package = resources.files("reconciler")
    except NotADirectoryError:
        # Python 3.11 cannot build the resource reader of a namespace package whose __path__ holds an
        # editable-install hook; the schema sits beside this package either way.
        return Path(__file__).parent.with_name("schemas").joinpath("catalog.schema.json").read_text("utf-8")
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


def webhook_url_pattern() -> str:
    """The schema's pattern for `webhookEndpoint.url` (`--webhook-url` is checked by it too)."""
    pattern: str = _schema()["properties"]["webhookEndpoint"]["properties"]["url"]["pattern"]
    return pattern


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


def _check_text(doc: Doc) -> None:
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


def check_schema(doc: Doc) -> None:
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
        if isinstance(size, str) and size != "unlimited" and SIZE.match(size):
            try:
                parse_size(size)
            except ValueError as e:
                doc.report(("plans", index, "limits", "maxStorageBytes"), str(e))


def _explain(error: Any, path: JsonPath) -> Iterator[tuple[JsonPath, str]]:
    """One or more (path, message) for a jsonschema error, in the catalog's words."""
    if error.validator in ("type", "required", "additionalProperties", "not"):
        yield from _explain_shape(error, path)
    elif error.validator in ("anyOf", "pattern"):
        yield from _explain_form(error, path)
    else:
        yield from _explain_value(error, path)


def _explain_shape(error: Any, path: JsonPath) -> Iterator[tuple[JsonPath, str]]:
    """Wrong type, missing or unknown keys, preset together with copy_from."""
    kind, schema, instance = error.validator, error.schema, error.instance
    if kind == "type":
        wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        if not path:
            yield path, f"the top level must be a mapping with a 'plans' list, not {show(instance)}"
            return
        wanted_text = " or ".join(_TYPE_NAMES.get(str(t), str(t)) for t in wanted)
        yield path, f"must be {wanted_text}, not {show(instance)}"
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
    else:
        yield path, one_line(error.message)


def _explain_form(error: Any, path: JsonPath) -> Iterator[tuple[JsonPath, str]]:
    """A limit, slug, URL, event type, currency or name not written the way it must be."""
    kind, schema, instance = error.validator, error.schema, error.instance
    name = path[-1] if path else None
    if kind == "anyOf" and schema.get("title") == "count limit":
        yield (
            path,
            f"must be a non-negative integer (at most {_MAX_COUNT}) or 'unlimited', not {show(instance)}",
        )
    elif kind == "anyOf" and schema.get("title") == "storage limit":
        yield (
            path,
            (
                "must be a non-negative integer of bytes, 'unlimited' or a size such as 50GiB, "
                f"512MiB, 1.5TiB, 10GB, not {show(instance)}"
            ),
        )
    elif kind == "pattern" and name in ("slug", "copy_from"):
        yield (
            path,
            (
                "must be lowercase letters, digits, '-' or '_', start with a letter or digit and be at most "
                f"63 characters, not {show(instance)}"
            ),
        )
    elif kind == "pattern" and name == "url" and path[:1] == ("webhookEndpoint",):
        yield (
            path,
            f"must be an absolute http(s) URL ending {model.WEBHOOK_PATH}, not {show(instance)}",
        )
    elif kind == "pattern" and path[:2] == ("webhookEndpoint", "events"):
        yield path, f"must be a Stripe event type such as invoice.paid, not {show(instance)}"
    elif kind == "pattern" and name == "currency":
        yield path, f"must be a three-letter ISO 4217 currency code such as usd, not {show(instance)}"
    elif kind == "pattern" and name == "name":
        if instance:  # "" already fails minLength
            yield path, "must not be blank"
    else:
        yield path, one_line(error.message)


def _explain_value(error: Any, path: JsonPath) -> Iterator[tuple[JsonPath, str]]:
    """A value outside its choices or bounds."""
    kind, instance = error.validator, error.instance
    if kind == "enum":
        choices = ", ".join("null" if v is None else str(v) for v in error.validator_value)
        yield path, f"must be one of {choices}, not {show(instance)}"
    elif kind == "const":
        yield path, f"must be {json.dumps(error.validator_value)}, not {show(instance)}"
    elif kind == "minimum":
        yield path, f"must be at least {error.validator_value}, not {instance}"
    elif kind == "maximum":
        yield path, f"must be at most {error.validator_value}, not {instance}"
    elif kind == "minLength":
        yield path, "must not be empty"
    elif kind == "maxLength":
        yield path, f"must be at most {error.validator_value} characters, not {len(instance)}"
    else:
        yield path, one_line(error.message)
