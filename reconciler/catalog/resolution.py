"""Plans as written → plans with every key: `preset`, `copy_from` (across files, cycles found) and
sizes resolved, duplicate slugs refused, then built into `model.PlanSpec`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler import model
from reconciler.catalog.problems import Doc, JsonPath, printable, problem
from reconciler.catalog.sizes import parse_size

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


@dataclass(slots=True, eq=False)
class Entry:
    """One plan as written, with where it was written."""

    doc: Doc
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
        return problem(self.doc, (*self.path, *keys), message)

    def at(self) -> str:
        line = self.doc.line(self.path)
        return f"{self.doc.file}:{line}" if line else self.doc.file


@dataclass(slots=True)
class Fields:
    """A plan's resolved keys, before building the `PlanSpec`."""

    scalars: dict[str, Any]
    limits: dict[str, int]
    features: dict[str, bool]


def _limit_value(key: str, value: Any) -> int:
    if value == "unlimited":
        return model.UNLIMITED
    if isinstance(value, str) and key == "maxStorageBytes":
        return parse_size(value)
    assert isinstance(value, int) and not isinstance(value, bool)
    return value


class Resolver:
    def __init__(self, entries: list[Entry], problems: list[str]) -> None:
        self.entries = entries
        self.problems = problems
        self.by_slug: dict[str, Entry] = {}
        self.done: dict[int, Fields | None] = {}
        self.failed = False
        for entry in entries:
            slug = entry.slug
            if slug is None:
                continue
            if slug in self.by_slug:
                first = self.by_slug[slug]
                self.problems.append(
                    entry.problem(
                        f"duplicate slug '{printable(slug)}': already defined at {first.at()} "
                        f"(plans[{first.index}])",
                        "slug",
                    )
                )
                self.failed = True
            else:
                self.by_slug[slug] = entry

    def resolve(self, entry: Entry, chain: tuple[Entry, ...] = ()) -> Fields | None:
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

    def _resolve_own(self, entry: Entry, chain: tuple[Entry, ...]) -> Fields | None:
        data = entry.data
        base = Fields(scalars={}, limits={}, features={})
        if isinstance(preset_name := data.get("preset"), str):
            preset = PRESETS[preset_name]
            base = Fields(scalars={}, limits=dict(preset.limits), features=dict(preset.features))
        elif isinstance(source_slug := data.get("copy_from"), str):
            source = self.by_slug.get(source_slug)
            if source is None:
                known = ", ".join(printable(s) for s in sorted(self.by_slug)) or "none"
                self.problems.append(
                    entry.problem(
                        f"unknown plan '{printable(source_slug)}' (plans in the catalog: {known})",
                        "copy_from",
                    )
                )
                return None
            copied = self.resolve(source, chain)
            if copied is None:
                return None  # the source's own problem is reported at the source
            base = Fields(
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


def build(fields: Fields) -> model.PlanSpec:
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
