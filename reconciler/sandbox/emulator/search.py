"""The Search API (`GET /v1/{products,prices,customers,subscriptions}/search`): Stripe's query language
as documented at docs.stripe.com/search, for the fields Stripe lets each resource be searched by, and
the `search_result` page with its `next_page` token. A query the emulator cannot read is refused with a
`400` naming `query`, never answered with a guess. Unlike Stripe, results are not eventually
consistent: a write is searchable at once."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass

import stripe

from .context import Ctx
from .errors import JSON, param_error
from .listing import item_expansions, page_limit
from .params import PARAM_SPECS, spec_of
from .registry import KINDS, Call, route
from .rendering import render

MAX_CLAUSES = 10
MIN_SUBSTRING = 3

# kind -> searchable field -> its type: "str", "num" (created, timestamps), "bool" ('true'/'false'),
# "metadata"; the fields with `~` (substring) support are in SUBSTRING.
FIELDS: dict[str, dict[str, str]] = {
    "product": {
        "active": "bool",
        "description": "str",
        "metadata": "metadata",
        "name": "str",
        "shippable": "bool",
        "url": "str",
    },
    "price": {
        "active": "bool",
        "currency": "str",
        "lookup_key": "str",
        "metadata": "metadata",
        "product": "str",
        "type": "str",
    },
    "customer": {"created": "num", "email": "str", "metadata": "metadata", "name": "str", "phone": "str"},
    "subscription": {"canceled_at": "num", "created": "num", "metadata": "metadata", "status": "str"},
}
SUBSTRING = {"name", "email", "description", "phone"}

_CLAUSE = re.compile(
    r"""\s*(?P<neg>-)?
    (?P<field>[a-z_]+)(?:\[(?P<q>['"])(?P<key>(?:\\.|(?!(?P=q)).)*)(?P=q)\])?
    (?P<op>:|~|>=|<=|>|<|=)
    (?:(?P<vq>['"])(?P<quoted>(?:\\.|(?!(?P=vq)).)*)(?P=vq)|(?P<bare>[^\s'"]+))
    """,
    re.VERBOSE,
)
_JOIN = re.compile(r"\s+(AND|OR)\s+|\s+", re.IGNORECASE)


@dataclass(frozen=True)
class Clause:
    negated: bool
    field: str
    key: str | None  # metadata['key']
    op: str
    value: str | None  # None: `field:null`


def _bad(message: str) -> Exception:
    return param_error(f"Invalid query: {message}", "query")


def parse(kind: str, query: str) -> tuple[list[Clause], str]:
    """The clauses of `query` and how they combine ("AND" or "OR")."""
    clauses: list[Clause] = []
    joins: set[str] = set()
    at = 0
    text = query.strip()
    if not text:
        raise _bad("the query is empty.")
    while at < len(text):
        if clauses:
            sep = _JOIN.match(text, at)
            if sep is None:
                raise _bad(f"expected AND, OR or a space at position {at}.")
            joins.add((sep.group(1) or "AND").upper())
            at = sep.end()
        m = _CLAUSE.match(text, at)
        if m is None:
            raise _bad(f"could not read a clause at position {at}: {text[at : at + 30]!r}.")
        clauses.append(_clause(kind, m))
        at = m.end()
    if len(joins) > 1:
        raise _bad("AND and OR cannot be combined in one query.")
    if len(clauses) > MAX_CLAUSES:
        raise _bad(f"a query combines at most {MAX_CLAUSES} clauses.")
    return clauses, joins.pop() if joins else "AND"


def _clause(kind: str, m: re.Match[str]) -> Clause:
    field, op = m["field"], m["op"]
    fields = FIELDS[kind]
    if field not in fields:
        known = ", ".join(sorted(fields))
        raise _bad(f"the field '{field}' cannot be searched on {kind}s; use one of {known}.")
    ftype = fields[field]
    if (ftype == "metadata") != (m["key"] is not None):
        raise _bad("metadata is searched by key, as metadata['key']:'value'.")
    value = m["quoted"] if m["quoted"] is not None else m["bare"]
    if m["quoted"] is not None:
        value = re.sub(r"\\(.)", r"\1", value)
    elif value == "null":
        value = None
    elif ftype != "num":
        raise _bad(f"the value of '{field}' must be in quotation marks.")
    if op == "~" and (field not in SUBSTRING or value is None or len(value) < MIN_SUBSTRING):
        raise _bad(
            f"'~' (substring) works on {', '.join(sorted(SUBSTRING & set(fields)))} only, with at least "
            f"{MIN_SUBSTRING} characters."
        )
    if op in (">", "<", ">=", "<=", "=") and ftype != "num":
        raise _bad(f"the field '{field}' does not support numeric comparison.")
    if ftype == "num" and value is not None and not value.lstrip("-").isdecimal():
        raise _bad(f"the value of '{field}' must be a number.")
    return Clause(m["neg"] is not None, field, m["key"], op, value)


def _holds(clause: Clause, obj: JSON) -> bool:
    actual = obj.get(clause.field)
    if clause.key is not None:
        actual = (actual or {}).get(clause.key)
    if clause.value is None:
        found = actual is None or actual == ""
    elif clause.op in (">", "<", ">=", "<=", "="):
        want = int(clause.value)
        found = (
            actual is not None
            and {
                ">": int(actual) > want,
                "<": int(actual) < want,
                ">=": int(actual) >= want,
                "<=": int(actual) <= want,
                "=": int(actual) == want,
            }[clause.op]
        )
    elif actual is None:
        found = False
    else:
        text = str(actual).lower()  # booleans are searched as 'true' / 'false'

        found = clause.value.lower() in text if clause.op == "~" else text == clause.value.lower()
    return found != clause.negated


def matcher(kind: str, query: str) -> Callable[[JSON], bool]:
    clauses, join = parse(kind, query)
    combine = all if join == "AND" else any
    return lambda obj: combine(_holds(c, obj) for c in clauses)


def _page_token(obj_id: str) -> str:
    return "page_" + base64.urlsafe_b64encode(obj_id.encode()).decode().rstrip("=")


def _page_cursor(ctx: Ctx, kind: str, token: str) -> tuple[int, int]:
    try:
        raw = token.removeprefix("page_")
        obj_id = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        obj_id = ""
    obj = ctx.get(kind, obj_id) if obj_id else None
    if obj is None:
        raise param_error(f"Invalid page: {token!r} is not a page token of this search.", "page")
    return ctx.store.rank(ctx.mode, obj)


def search(ctx: Ctx, kind: str, p: JSON, expand: list[str]) -> JSON:
    limit = page_limit(p)
    matches = matcher(kind, str(p["query"]))
    after = _page_cursor(ctx, kind, str(p["page"])) if p.get("page") else None
    page, has_more = ctx.store.page(ctx.mode, kind, limit=limit, after=after, matches=matches)
    inner = item_expansions(expand)
    return {
        "object": "search_result",
        "data": [render(ctx, kind, o, inner) for o in page],
        "has_more": has_more,
        "next_page": _page_token(page[-1]["id"]) if has_more and page else None,
        "url": f"{KINDS[kind].path}/search",
    }


def _register(kind: str, params: type) -> None:
    PARAM_SPECS[f"{kind}.search"] = spec_of(params)

    @route("GET", f"{KINDS[kind].path}/search", f"{kind}.search")
    def _search(ctx: Ctx, call: Call) -> JSON:
        return search(ctx, kind, call.params, call.expand)


_register("product", stripe.params.ProductSearchParams)
_register("price", stripe.params.PriceSearchParams)
_register("customer", stripe.params.CustomerSearchParams)
_register("subscription", stripe.params.SubscriptionSearchParams)
