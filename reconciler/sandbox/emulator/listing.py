"""List endpoints and retrieval, the same for every kind: `limit`, `starting_after`/`ending_before`
cursors over the kind's objects newest first (the store's ordered index: a page reads from the cursor
on, never the whole table), the `created` and `active` filters, then the kind's own (`Kind.filters` by
equality, then `Kind.matches`); `expand[]=data.x` expands inside each item. `standard_routes` registers
a kind's `GET` list and retrieve routes; `create_route` and `update_route` its `POST` routes where they
only call the resource module's create or update function."""

from __future__ import annotations

from collections.abc import Callable

from .context import Ctx
from .errors import JSON, no_such, param_error
from .events import emit_update
from .registry import KINDS, Call, route
from .rendering import render, snapshot

# Array filters Stripe caps (real answer quoted in stripe/stripe-node#2089 for 12 lookup keys).
ARRAY_LIMITS = {"lookup_keys": 10}


def list_objects(ctx: Ctx, kind: str, p: JSON, expand: list[str]) -> JSON:
    spec = KINDS[kind]
    for name, most in ARRAY_LIMITS.items():
        if len(p.get(name) or ()) > most:
            raise param_error(f"Array {name} exceeded maximum {most} allowed elements.", name)
    limit = list_page_limit(p)
    cursors: dict[str, tuple[int, int]] = {}
    for cursor_param in ("starting_after", "ending_before"):
        if cursor_param in p:
            cursor = ctx.get(kind, p[cursor_param])
            if cursor is None:
                raise no_such(spec.noun, p[cursor_param], cursor_param, status=400)
            cursors[cursor_param] = ctx.store.rank(ctx.mode, cursor)
    page, has_more = ctx.store.page(
        ctx.mode,
        kind,
        limit=limit,
        after=cursors.get("starting_after"),
        before=cursors.get("ending_before"),
        matches=lambda obj: _matches(kind, obj, p),
    )
    inner = item_expansions(expand)
    return {
        "object": "list",
        "data": [render(ctx, kind, o, inner) for o in page],
        "has_more": has_more,
        "url": spec.path,
    }


def page_limit(p: JSON) -> int:
    """A list or search page's `limit`: 1 to 100, 10 when not given."""
    limit = int(p.get("limit", 10))
    if not 1 <= limit <= 100:
        raise param_error("Invalid limit: must be between 1 and 100", "limit")
    return limit


def list_page_limit(p: JSON) -> int:
    """A list page's `limit`, refusing both cursors at once: a page starts after an object or ends
    before one (a search page has a `page` token instead)."""
    limit = page_limit(p)
    if "starting_after" in p and "ending_before" in p:
        raise param_error(
            "You may only specify one of these parameters: ending_before, starting_after.",
            "ending_before",
            "parameters_exclusive",
        )
    return limit


def item_expansions(expand: list[str]) -> list[str]:
    """A page's `expand[]` (`data.x`) as the expansions of each item (`x`); anything else is refused."""
    for path in expand:
        if not path.startswith("data."):
            raise param_error(
                f"This property cannot be expanded ({path}). You may want to try expanding 'data.{path}' "
                "instead.",
                "expand",
            )
    return [e[len("data.") :] for e in expand]


def _matches(kind: str, obj: JSON, p: JSON) -> bool:
    if "active" in p and obj["active"] != p["active"]:
        return False
    created = p.get("created")
    if isinstance(created, int) and obj["created"] != created:
        return False
    if isinstance(created, dict):
        c = int(obj["created"])
        checks = {
            "gt": lambda v: c > v,
            "gte": lambda v: c >= v,
            "lt": lambda v: c < v,
            "lte": lambda v: c <= v,
        }
        if not all(checks[op](v) for op, v in created.items()):
            return False
    spec = KINDS[kind]
    if not all(obj[key] == p[key] for key in spec.filters if key in p):
        return False
    return spec.matches is None or spec.matches(obj, p)


def standard_routes(kind: str, *, retrieve: bool = True, listing: bool = True) -> None:
    """`GET <path>` (list) and `GET <path>/{id}` (retrieve) for `kind`."""
    path = KINDS[kind].path
    assert path is not None

    if listing:

        @route("GET", path, f"{kind}.list")
        def _list(ctx: Ctx, call: Call) -> JSON:
            return list_objects(ctx, kind, call.params, call.expand)

    if retrieve:

        @route("GET", path + "/{id}", f"{kind}.retrieve")
        def _retrieve(ctx: Ctx, call: Call) -> JSON:
            return render(ctx, kind, ctx.need(kind, call.ids[0]), call.expand)


def create_route(kind: str, create: Callable[[Ctx, JSON], JSON]) -> None:
    """`POST <path>` for `kind`: `create(ctx, params)` makes the object (and emits its events); the
    answer is the object rendered. A create with checks of its own is written out in its module."""
    path = KINDS[kind].path
    assert path is not None

    @route("POST", path, f"{kind}.create")
    def _create(ctx: Ctx, call: Call) -> JSON:
        return render(ctx, kind, create(ctx, call.params), call.expand)


def update_route(
    kind: str, update: Callable[[Ctx, JSON, JSON], None], *, incidental: tuple[str, ...] = ()
) -> None:
    """`POST <path>/{id}` for `kind`: `update(ctx, obj, params)` changes the object in place, then
    `<kind>.updated` names what changed (`emit_update`, with its `incidental` fields); the answer is
    the object rendered."""
    path = KINDS[kind].path
    assert path is not None

    @route("POST", path + "/{id}", f"{kind}.update")
    def _update(ctx: Ctx, call: Call) -> JSON:
        obj = ctx.need(kind, call.ids[0])
        before = snapshot(ctx, kind, obj)
        update(ctx, obj, call.params)
        emit_update(ctx, kind, obj, before, incidental=incidental)
        return render(ctx, kind, obj, call.expand)
