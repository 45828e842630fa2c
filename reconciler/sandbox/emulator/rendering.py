"""One render stack for every kind: a stored object becomes the JSON Stripe answers, with `expand[]`
followed through the store (at most `MAX_EXPAND_DEPTH` levels), kind-specific shaping from the kind's
render hook, Stripe's key order, and the shape of the API version asked (`versions`)."""

from __future__ import annotations

import json
from typing import cast

from . import versions
from .context import Ctx
from .errors import JSON, param_error
from .registry import KINDS

MAX_EXPAND_DEPTH = 4


def ordered(obj: JSON) -> JSON:
    """Stripe's key order: id, object, then alphabetical."""
    head = {k: obj[k] for k in ("id", "object") if k in obj}
    return head | {k: obj[k] for k in sorted(obj) if k not in head}


def expansions(expand: list[str]) -> dict[str, list[str]]:
    """`["a.b", "a", "c"]` -> `{"a": ["b"], "c": []}`: the rest of each path, by its first field."""
    groups: dict[str, list[str]] = {}
    for path in expand:
        head, _, rest = path.partition(".")
        groups.setdefault(head, [])
        if rest:
            groups[head].append(rest)
    return groups


def render(
    ctx: Ctx, kind: str, obj: JSON, expand: list[str], depth: int = 0, *, version: str | None = None
) -> JSON:
    """`obj` as Stripe answers it, in `version` (default: the request's `Stripe-Version`; the kinds'
    render hooks render what they nest in the same version)."""
    if version is not None and version != ctx.version:
        asked, ctx.version = ctx.version, version
        try:
            return render(ctx, kind, obj, expand, depth)
        finally:
            ctx.version = asked
    version = ctx.version
    spec = KINDS[kind]
    out = dict(obj)
    groups = expansions(expand)
    if spec.render is not None:
        groups = spec.render(ctx, obj, out, groups, depth)
    for head, rests in groups.items():
        target_kind = spec.expandable.get(head)
        if target_kind is None:
            raise param_error(f"This property cannot be expanded ({head}).", "expand")
        if depth + 1 >= MAX_EXPAND_DEPTH and rests:
            raise param_error(
                f"You cannot expand more than {MAX_EXPAND_DEPTH} levels of a property.", "expand"
            )
        ref = obj.get(head)
        target = ctx.get(target_kind, ref) if ref is not None and target_kind else None
        if target is not None:
            out[head] = render(ctx, target_kind, target, rests, depth + 1)
    return ordered(versions.shape(ctx, kind, out, version))


def snapshot(ctx: Ctx, kind: str, obj: JSON) -> JSON:
    """The object as the API shows it now in the account's default version, frozen (an event's
    `data.object`; `events.commit` re-shapes it for an endpoint pinned to another version)."""
    rendered = render(ctx, kind, obj, [], version=versions.DEFAULT)
    return cast(JSON, json.loads(json.dumps(rendered, default=str)))


def list_object(data: list[JSON], url: str, *, has_more: bool = False, total_count: bool = False) -> JSON:
    out: JSON = {"object": "list", "data": data, "has_more": has_more}
    if total_count:
        out["total_count"] = len(data)
    out["url"] = url
    return out
