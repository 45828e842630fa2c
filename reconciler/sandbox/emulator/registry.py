"""What the resource modules register: their kinds (table, URL noun, expandable fields, list filter,
render hook) and their routes. The pipeline dispatches through `ROUTES`; nothing else lists resources."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .errors import JSON
from .store import TABLES

if TYPE_CHECKING:
    from .context import Ctx


@dataclass(frozen=True)
class Call:
    """One routed API call: the ids in its path, its checked params (without `expand`), its expansions."""

    ids: tuple[str, ...]
    params: JSON
    expand: list[str]


Handler = Callable[["Ctx", Call], JSON]
# (ctx, stored object, rendered copy, expansions by head, depth) -> the expansions it did not handle
RenderHook = Callable[["Ctx", JSON, JSON, dict[str, list[str]], int], dict[str, list[str]]]


@dataclass(frozen=True)
class Kind:
    name: str  # "product", "checkout_session"
    table: str  # "products", "checkout_sessions" (store and state-file name)
    noun: str = ""  # as Stripe's "No such ..." says it (default: name)
    event_prefix: str = ""  # the `type` prefix of its events (default: name)
    path: str | None = None  # its list URL, e.g. "/v1/products" (None: no Stripe route)
    # expandable field -> kind it points to; "" marks a field that is always null here
    expandable: Mapping[str, str] = field(default_factory=dict)
    # list params that keep the objects whose field of the same name equals the value given
    filters: tuple[str, ...] = ()
    matches: Callable[[JSON, JSON], bool] | None = None  # list filter beyond `created`/`active`/`filters`
    render: RenderHook | None = None  # kind-specific rendering (hidden fields, nested lists)


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str  # "/v1/products/{id}"
    name: str  # "product.update": also the key of its PARAM_SPECS entry
    handler: Handler
    regex: re.Pattern[str]


KINDS: dict[str, Kind] = {}
ROUTES: list[Route] = []

# Stripe endpoints the emulator does not model, which official SDKs call (stripe-node's
# `invoices.createPreview`, `*.search`, `billingPortal.sessions.create`): refused saying so. Without
# this, `/v1/invoices/create_preview` was taken for invoice `create_preview` ("Received unknown
# parameter: customer") and `/v1/invoices/search` for a missing invoice "search".
UNMODELLED_ENDPOINTS: frozenset[tuple[str, str]] = frozenset(
    {
        ("POST", "/v1/invoices/create_preview"),
        ("GET", "/v1/invoices/search"),
        ("GET", "/v1/payment_intents/search"),
        ("GET", "/v1/charges/search"),
        ("POST", "/v1/billing_portal/sessions"),
        ("POST", "/v1/billing_portal/configurations"),
        ("GET", "/v1/billing_portal/configurations"),
    }
)


def register_kind(kind: Kind) -> Kind:
    noun = kind.noun or kind.name
    prefix = kind.event_prefix or kind.name
    full = replace(kind, noun=noun, event_prefix=prefix)
    KINDS[kind.name] = full
    TABLES[kind.name] = kind.table
    return full


def route(method: str, pattern: str, name: str) -> Callable[[Handler], Handler]:
    """Register a handler for `method pattern`; `{id}` (or any `{name}`) matches one path segment."""
    regex = re.compile("^" + re.sub(r"\\\{\w+\\\}", "([^/]+)", re.escape(pattern)) + "$")

    def add(handler: Handler) -> Handler:
        new = Route(method, pattern, name, handler, regex)
        if "{" in pattern:
            ROUTES.append(new)
        else:  # a literal path (`/v1/products/search`) wins over `/v1/products/{id}`, as in Stripe
            first_pattern = next((i for i, r in enumerate(ROUTES) if "{" in r.pattern), len(ROUTES))
            ROUTES.insert(first_pattern, new)
        return handler

    return add
