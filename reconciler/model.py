"""The domain values every stage passes along: frozen, typed, stdlib only.

A `PlanSpec` is one fully explicit plan (presets and copy-from already resolved).
Money is an `int` of minor units. "Unlimited" limits are stored as `UNLIMITED` (-1),
the convention kuploy-cloud reads in `cloud_plans`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from types import MappingProxyType
from typing import Any

UNLIMITED = -1
"""Stored value of a limit declared `unlimited` in a catalog."""


class BillingCycle(StrEnum):
    MONTHLY = "monthly"
    ANNUAL = "annual"

    @property
    def stripe_interval(self) -> str:
        return "month" if self is BillingCycle.MONTHLY else "year"


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Resource limits; attribute names map 1:1 to camelCase columns via `LIMIT_COLUMNS`."""

    max_projects: int
    max_apps: int
    max_databases: int
    max_team_members: int
    max_domains: int
    max_custom_domains: int
    max_free_subdomains: int
    max_purchasable_domains: int
    max_instances: int
    max_storage_bytes: int
    build_minutes_per_month: int

    def as_columns(self) -> dict[str, int]:
        return {LIMIT_COLUMNS[f.name]: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True, kw_only=True)
class Features:
    white_label: bool = False
    custom_domains: bool = False
    domain_purchase: bool = False
    ai_assistant: bool = False
    multi_server: bool = False
    priority_support: bool = False

    def as_json(self) -> dict[str, bool]:
        return {FEATURE_KEYS[f.name]: getattr(self, f.name) for f in fields(self)}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


LIMIT_COLUMNS: Mapping[str, str] = MappingProxyType({f.name: _camel(f.name) for f in fields(Limits)})
"""`max_projects` → `maxProjects`, … (the `cloud_plans` column and catalog key)."""
FEATURE_KEYS: Mapping[str, str] = MappingProxyType({f.name: _camel(f.name) for f in fields(Features)})
"""`white_label` → `whiteLabel`, … (the key in the `features` jsonb and in catalogs)."""

CLOUD_PLANS_COLUMNS: tuple[str, ...] = (
    "planId",
    "name",
    "stripeProductId",
    "stripePriceId",
    "price",
    "currency",
    "billingCycle",
    *LIMIT_COLUMNS.values(),
    "features",
    "isDefault",
    "isActive",
    "description",
)
"""The `cloud_plans` columns the tool writes, in order (the upsert and the schema check use them)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanSpec:
    """One plan as the catalog wants it, or as a `cloud_plans` row has it."""

    slug: str
    name: str
    description: str = ""
    price_cents: int | None = None
    currency: str | None = None
    billing_cycle: BillingCycle | None = None
    limits: Limits
    features: Features = field(default_factory=Features)
    is_default: bool = False
    is_active: bool = True

    @property
    def is_paid(self) -> bool:
        """Wants a Stripe Product and Price: active and not the default plan."""
        return self.is_active and not self.is_default

    def as_dict(self) -> dict[str, Any]:
        """The plan's catalog-owned fields, flat and JSON-ready, in a stable order."""
        return {
            "name": self.name,
            "description": self.description,
            "priceCents": self.price_cents,
            "currency": self.currency,
            "billingCycle": self.billing_cycle.value if self.billing_cycle else None,
            "isDefault": self.is_default,
            "isActive": self.is_active,
            "limits": self.limits.as_columns(),
            "features": self.features.as_json(),
        }


def plan_from_dict(slug: str, values: Mapping[str, Any]) -> PlanSpec:
    """The inverse of `PlanSpec.as_dict`, for plans the tool wrote itself (saved plans, apply records)."""
    cycle = values["billingCycle"]
    limits = values["limits"]
    features = values["features"]
    return PlanSpec(
        slug=slug,
        name=values["name"],
        description=values["description"],
        price_cents=values["priceCents"],
        currency=values["currency"],
        billing_cycle=BillingCycle(cycle) if cycle else None,
        limits=Limits(**{attr: int(limits[column]) for attr, column in LIMIT_COLUMNS.items()}),
        features=Features(**{attr: bool(features.get(key, False)) for attr, key in FEATURE_KEYS.items()}),
        is_default=bool(values["isDefault"]),
        is_active=bool(values["isActive"]),
    )


WEBHOOK_PATH = "/api/webhooks/stripe"
"""The path kuploy-cloud (and `listen`) receives Stripe events on."""
WEBHOOK_EVENTS: tuple[str, ...] = (
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
)
"""The six events of the billing guide, in the guide's order."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookEndpointSpec:
    """The Stripe webhook endpoint the catalog declares: its URL and the events it receives (sorted)."""

    url: str
    events: tuple[str, ...] = tuple(sorted(WEBHOOK_EVENTS))

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "events": list(self.events)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WebhookEndpointSpec:
        return cls(url=str(data["url"]), events=tuple(sorted(str(e) for e in data["events"])))


@dataclass(frozen=True, slots=True, kw_only=True)
class Catalog:
    """The desired state: every plan, fully explicit, in catalog order; optionally the webhook endpoint
    (None: the catalog does not manage one, and any existing endpoint is left alone)."""

    plans: tuple[PlanSpec, ...]
    sources: tuple[str, ...] = ()
    webhook_endpoint: WebhookEndpointSpec | None = None

    def by_slug(self) -> dict[str, PlanSpec]:
        return {p.slug: p for p in self.plans}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready and lossless: what saved plans and apply records store. `webhookEndpoint` is
        present only when declared, so catalogs without one keep the fingerprint they always had."""
        data: dict[str, Any] = {
            "sources": list(self.sources),
            "plans": [{"slug": p.slug, **p.as_dict()} for p in self.plans],
        }
        if self.webhook_endpoint is not None:
            data["webhookEndpoint"] = self.webhook_endpoint.as_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Catalog:
        plans = tuple(plan_from_dict(p["slug"], p) for p in data["plans"])
        endpoint = data.get("webhookEndpoint")
        return cls(
            plans=plans,
            sources=tuple(data.get("sources", ())),
            webhook_endpoint=WebhookEndpointSpec.from_dict(endpoint) if endpoint else None,
        )


# --- current state -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanRow:
    """One `cloud_plans` row."""

    spec: PlanSpec
    stripe_product_id: str | None
    stripe_price_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StripeProduct:
    id: str
    name: str
    description: str
    active: bool
    default_price: str | None
    metadata: Mapping[str, str]
    created: int = 0


# Alike in shape to StripeProduct by design: different records, different fields.
@dataclass(frozen=True, slots=True, kw_only=True)
class StripePrice:
    id: str
    product: str
    active: bool
    unit_amount: int | None
    currency: str
    interval: str | None
    lookup_key: str | None
    metadata: Mapping[str, str]
    created: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class StripeWebhookEndpoint:
    id: str
    url: str
    events: tuple[str, ...]
    """Sorted."""
    enabled: bool
    metadata: Mapping[str, str]
    created: int = 0

    @property
    def owned(self) -> bool:
        return self.metadata.get(OWNER_KEY) == OWNER_VALUE


@dataclass(frozen=True, slots=True, kw_only=True)
class StripeState:
    """Stripe as read: every Product and Price, active or archived, the owned ones (marked in
    metadata) apart from the unowned; and, when read, every webhook endpoint of the account."""

    products: tuple[StripeProduct, ...] = ()
    prices: tuple[StripePrice, ...] = ()
    unowned_products: tuple[StripeProduct, ...] = ()
    unowned_prices: tuple[StripePrice, ...] = ()
    """Objects without ownership metadata: never touched, only candidates for `apply --adopt`."""
    webhook_endpoints: tuple[StripeWebhookEndpoint, ...] = ()
    """Every webhook endpoint of the account, owned or not (only owned ones are ever changed)."""

    def plans_on_sale(self) -> frozenset[str]:
        """Slugs of the plans Stripe sells now: an owned active Product with an owned active Price."""
        priced = {price.product for price in self.prices if price.active and owned_slug(price.metadata)}
        return frozenset(
            slug
            for product in self.products
            if product.active and product.id in priced and (slug := owned_slug(product.metadata))
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CurrentState:
    rows: Mapping[str, PlanRow]
    stripe: StripeState
    pending_migrations: tuple[str, ...] = ()

    def snapshot(self) -> dict[str, Any]:
        """Everything a plan was computed from, JSON-ready and in a stable order (no secrets in it)."""
        return {
            "cloud_plans": {
                slug: {
                    "stripeProductId": row.stripe_product_id,
                    "stripePriceId": row.stripe_price_id,
                    **row.spec.as_dict(),
                }
                for slug, row in sorted(self.rows.items())
            },
            "stripe_products": {
                p.id: {
                    "name": p.name,
                    "description": p.description,
                    "active": p.active,
                    "default_price": p.default_price,
                    "metadata": dict(sorted(p.metadata.items())),
                }
                for p in sorted(self.stripe.products, key=lambda p: p.id)
            },
            "stripe_prices": {
                p.id: {
                    "product": p.product,
                    "active": p.active,
                    "unit_amount": p.unit_amount,
                    "currency": p.currency,
                    "interval": p.interval,
                    "lookup_key": p.lookup_key,
                    "metadata": dict(sorted(p.metadata.items())),
                }
                for p in sorted(self.stripe.prices, key=lambda p: p.id)
            },
            "pending_migrations": list(self.pending_migrations),
            **self._webhook_snapshot(),
        }

    def _webhook_snapshot(self) -> dict[str, Any]:
        """Webhook endpoints, only when there are any (plan files made before they were read stay fresh)."""
        if not self.stripe.webhook_endpoints:
            return {}
        return {
            "stripe_webhook_endpoints": {
                e.id: {
                    "url": e.url,
                    "events": list(e.events),
                    "enabled": e.enabled,
                    "metadata": dict(sorted(e.metadata.items())),
                }
                for e in sorted(self.stripe.webhook_endpoints, key=lambda e: e.id)
            }
        }


def printable(text: str) -> str:
    """`text` with every character that is not printable shown as its JSON escape: controls (`\\n`,
    `\\u001b`, the one-byte terminal CSI `\\u009b`), bidirectional overrides (`\\u202e`), line and
    paragraph separators. Text from a catalog, Postgres, Stripe or a webhook goes through it before
    it reaches a terminal, a log line or an error, so it can neither split a line nor hide itself."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in text)


def flatten(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as (dotted path, value) pairs in order: `{"a": {"b": 1}}` → `[("a.b", 1)]`."""
    out: list[tuple[str, Any]] = []
    for key, value in values.items():
        if isinstance(value, dict):
            out.extend(flatten(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", value))
    return out


def fingerprint(document: Any) -> str:
    """A stable digest of a JSON-ready document."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


# --- ownership -----------------------------------------------------------------------------------

OWNER_KEY = "kuploy_managed_by"
OWNER_VALUE = "kuploy-reconciler"
PLAN_KEY = "kuploy_plan"
"""Stripe metadata keys marking an object as the tool's, and which plan it serves."""


WEBHOOK_KEY = "kuploy_resource"
WEBHOOK_VALUE = "webhook_endpoint"


def webhook_ownership_metadata() -> dict[str, str]:
    return {OWNER_KEY: OWNER_VALUE, WEBHOOK_KEY: WEBHOOK_VALUE}


def ownership_metadata(slug: str) -> dict[str, str]:
    return {OWNER_KEY: OWNER_VALUE, PLAN_KEY: slug}


def owned_slug(metadata: Mapping[str, str]) -> str | None:
    """The plan slug of an object the tool owns, or None for anything else (never touched)."""
    if metadata.get(OWNER_KEY) != OWNER_VALUE:
        return None
    return metadata.get(PLAN_KEY) or None


def lookup_key(slug: str) -> str:
    return f"kuploy_plan_{slug}"
