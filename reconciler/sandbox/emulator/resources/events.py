"""Events as a resource: retrieve and list (`type` with `*` wildcards, `types[]`). Emitting them is
`..events`; delivering them, `..delivery`."""

from __future__ import annotations

import re

from ..context import Ctx
from ..errors import JSON, param_error
from ..listing import list_objects, standard_routes
from ..registry import Call, Kind, register_kind, route


def _matches(obj: JSON, p: JSON) -> bool:
    if "types" in p and obj["type"] not in p["types"]:
        return False
    wanted = p.get("type")
    return wanted is None or re.fullmatch(re.escape(wanted).replace(r"\*", ".*"), obj["type"]) is not None


register_kind(Kind("event", "events", path="/v1/events", matches=_matches))
standard_routes("event", listing=False)


@route("GET", "/v1/events", "event.list")
def _list(ctx: Ctx, call: Call) -> JSON:
    if "type" in call.params and "types" in call.params:
        raise param_error(
            "You may only specify one of these parameters: type, types.", "types", "parameters_exclusive"
        )
    return list_objects(ctx, "event", call.params, call.expand)
