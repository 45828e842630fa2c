"""The domain values every stage passes along: frozen, typed, stdlib only.

A `PlanSpec` is one fully explicit plan (presets and copy-from already resolved).
Money is an `int` of minor units. "Unlimited" limits are stored as `UNLIMITED` (-1),
the convention kuploy-cloud reads in `cloud_plans`.
"""

from __future__ import annotations

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

    @classmethod
    def from_stripe_interval(cls, interval: str) -> BillingCycle | None:
        return {"month": cls.MONTHLY, "year": cls.ANNUAL}.get(interval)


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Catalog:
    """The desired state: every plan, fully explicit, in catalog order."""

    plans: tuple[PlanSpec, ...]
    sources: tuple[str, ...] = ()

    def by_slug(self) -> dict[str, PlanSpec]:
        return {p.slug: p for p in self.plans}


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
class StripeState:
    """Every Product and Price the tool owns (marked in metadata), active or archived."""

    products: tuple[StripeProduct, ...] = ()
    prices: tuple[StripePrice, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class CurrentState:
    rows: Mapping[str, PlanRow]
    stripe: StripeState
    pending_migrations: tuple[str, ...] = ()


# --- ownership -----------------------------------------------------------------------------------

OWNER_KEY = "kuploy_managed_by"
OWNER_VALUE = "kuploy-reconciler"
PLAN_KEY = "kuploy_plan"
"""Stripe metadata keys marking an object as the tool's, and which plan it serves."""


def ownership_metadata(slug: str) -> dict[str, str]:
    return {OWNER_KEY: OWNER_VALUE, PLAN_KEY: slug}


def owned_slug(metadata: Mapping[str, str]) -> str | None:
    """The plan slug of an object the tool owns, or None for anything else (never touched)."""
    if metadata.get(OWNER_KEY) != OWNER_VALUE:
        return None
    return metadata.get(PLAN_KEY) or None


def lookup_key(slug: str) -> str:
    return f"kuploy_plan_{slug}"
