"""The plan as data: typed operations, grouped per billing plan.

`diff.py` builds a `Plan`; `render/` shows it; `apply/` executes its operations. Each operation
is small and carries what it needs to run (ids, before/after values), nothing else.

Operations run in three phases so that a crash at any point leaves a state the next run adopts:

1. PREPARE (Stripe, additive): create/update Products and Prices, move default prices.
   Nothing a customer can see breaks: old prices stay active.
2. RECORD (Postgres): every `cloud_plans` write in one transaction (a default switch is atomic).
3. RETIRE (Stripe, subtractive): archive superseded Prices and removed Products, only after
   `cloud_plans` stopped pointing at them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, ClassVar

from reconciler.model import PlanRow, PlanSpec


class Phase(IntEnum):
    PREPARE = 1
    RECORD = 2
    RETIRE = 3


class Action(StrEnum):
    """What happens to a billing plan, as shown to the operator."""

    CREATE = "create"
    REACTIVATE = "reactivate"
    REPLACE_PRICE = "replace-price"
    UPDATE = "update"
    ARCHIVE = "archive"


class Kind(StrEnum):
    """The kinds of Stripe object an apply creates and later ops refer to."""

    PRODUCT = "product"
    PRICE = "price"


@dataclass(frozen=True, slots=True)
class Created:
    """Stands for the id of an object this apply creates earlier, for the same plan."""

    kind: Kind

    def __str__(self) -> str:
        return f"(new {self.kind.value})"


Ref = str | Created
"""An existing Stripe id, or the id of an object created earlier in this apply."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Op:
    phase: ClassVar[Phase]
    slug: str

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True, slots=True, kw_only=True)
class AdoptProduct(Op):
    """Marks an existing Product that carries no ownership metadata as this plan's (`apply --adopt`)."""

    phase: ClassVar[Phase] = Phase.PREPARE
    product_id: str
    name: str

    def describe(self) -> str:
        return f"adopt Stripe Product {self.product_id} {self.name!r} (it had no ownership metadata)"


@dataclass(frozen=True, slots=True, kw_only=True)
class AdoptPrice(Op):
    phase: ClassVar[Phase] = Phase.PREPARE
    price_id: str

    def describe(self) -> str:
        return f"adopt Stripe Price {self.price_id} (it had no ownership metadata)"


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceData:
    unit_amount: int
    currency: str
    interval: str

    def __str__(self) -> str:
        return f"{self.unit_amount} {self.currency}/{self.interval}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateProduct(Op):
    """A new Product; with `price`, its first Price is created and made the default in the same call."""

    phase: ClassVar[Phase] = Phase.PREPARE
    name: str
    description: str
    price: PriceData | None = None

    def describe(self) -> str:
        with_price = f" with default Price {self.price}" if self.price else ""
        return f"create Stripe Product {self.name!r}{with_price}"


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateProduct(Op):
    """Sets name/description and reactivates an archived Product; never touches prices."""

    phase: ClassVar[Phase] = Phase.PREPARE
    product_id: str
    before: tuple[tuple[str, Any], ...]
    after: tuple[tuple[str, Any], ...]

    def describe(self) -> str:
        fields = ", ".join(key for key, _ in self.after)
        return f"update Stripe Product {self.product_id} ({fields})"


@dataclass(frozen=True, slots=True, kw_only=True)
class CreatePrice(Op):
    """A new recurring Price that takes over the plan's lookup key."""

    phase: ClassVar[Phase] = Phase.PREPARE
    product: Ref
    unit_amount: int
    currency: str
    interval: str
    lookup_key: str

    def describe(self) -> str:
        return f"create Stripe Price {self.unit_amount} {self.currency}/{self.interval}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReactivatePrice(Op):
    """Brings back an archived (or key-less) Price that already has the wanted amount."""

    phase: ClassVar[Phase] = Phase.PREPARE
    price_id: str
    lookup_key: str

    def describe(self) -> str:
        return f"reactivate Stripe Price {self.price_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SetLookupKey(Op):
    """Gives the plan's Price (one just created, or an existing one diff found active) the plan's
    lookup key, taking it from any other Price. Executed as the same call as `ReactivatePrice`: it
    sets `active: true` too, so a Price archived since the plan was read comes back active."""

    phase: ClassVar[Phase] = Phase.PREPARE
    price: Ref
    lookup_key: str

    def describe(self) -> str:
        return f"set lookup key {self.lookup_key!r} on Stripe Price {self.price}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SetDefaultPrice(Op):
    phase: ClassVar[Phase] = Phase.PREPARE
    product: Ref
    before: str | None
    after: Ref

    def describe(self) -> str:
        return f"set default Price of {self.product}: {self.before or '(none)'} → {self.after}"


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteRow(Op):
    """Insert or update one `cloud_plans` row; all rows of an apply commit together."""

    phase: ClassVar[Phase] = Phase.RECORD
    before: PlanRow | None
    after: PlanSpec
    stripe_product_id: Ref | None
    stripe_price_id: Ref | None

    def describe(self) -> str:
        verb = "insert" if self.before is None else "update"
        return f"{verb} cloud_plans row {self.slug!r}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveProduct(Op):
    """Archives a Product and clears its default Price (so that Price can be archived too)."""

    phase: ClassVar[Phase] = Phase.RETIRE
    product_id: str

    def describe(self) -> str:
        return f"archive Stripe Product {self.product_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchivePrice(Op):
    phase: ClassVar[Phase] = Phase.RETIRE
    price_id: str

    def describe(self) -> str:
        return f"archive Stripe Price {self.price_id}"


WEBHOOK_ADDRESS = "webhook_endpoint"
"""The address of the webhook endpoint in plans and drift reports (and the `slug` of its ops)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateWebhookEndpoint(Op):
    """A new webhook endpoint; Stripe shows its signing secret in this one answer only, so apply hands it
    to the destination the operator chose (a 0600 file, or stdout on request), never to a log."""

    phase: ClassVar[Phase] = Phase.PREPARE
    url: str
    events: tuple[str, ...]

    def describe(self) -> str:
        return (
            f"create Stripe webhook endpoint {self.url} ({len(self.events)} events); "
            "its signing secret is written once"
        )


# Alike in shape to UpdateProduct by design: one op type per Stripe object, each with before/after.
@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateWebhookEndpoint(Op):
    """Sets URL, events or enabled in place: the endpoint and its signing secret stay."""

    phase: ClassVar[Phase] = Phase.PREPARE
    endpoint_id: str
    before: tuple[tuple[str, Any], ...]
    after: tuple[tuple[str, Any], ...]

    def describe(self) -> str:
        fields = ", ".join(key for key, _ in self.after)
        return f"update Stripe webhook endpoint {self.endpoint_id} ({fields})"


@dataclass(frozen=True, slots=True, kw_only=True)
class AdoptWebhookEndpoint(Op):
    """Marks an existing endpoint at the catalog's URL, made without the tool, as managed (`--adopt`);
    its signing secret stays the one the operator has."""

    phase: ClassVar[Phase] = Phase.PREPARE
    endpoint_id: str
    url: str

    def describe(self) -> str:
        return (
            f"adopt Stripe webhook endpoint {self.endpoint_id} at {self.url} (it had no ownership metadata)"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldChange:
    """One field of a plan that changes: `path` like `name`, `limits.maxApps`, `stripe.product.name`."""

    path: str
    before: Any
    after: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanChange:
    """Everything that happens to one billing plan."""

    slug: str
    action: Action
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    fields: tuple[FieldChange, ...]
    ops: tuple[Op, ...]

    @property
    def address(self) -> str:
        return f"plan.{self.slug}"


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookEndpointChange:
    """What happens to the catalog's webhook endpoint: `before`/`after` are `{url, events, enabled}`."""

    action: Action  # CREATE or UPDATE
    before: dict[str, Any] | None
    after: dict[str, Any]
    fields: tuple[FieldChange, ...]
    ops: tuple[Op, ...]
    address: ClassVar[str] = WEBHOOK_ADDRESS

    @property
    def creates(self) -> bool:
        return any(isinstance(op, CreateWebhookEndpoint) for op in self.ops)


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    changes: tuple[PlanChange, ...] = ()
    pending_migrations: tuple[str, ...] = ()
    subscriptions: Mapping[str, int] = field(default_factory=dict)
    """Active subscriptions per Price this plan archives (they stay on it), where Stripe reported them."""
    webhook_endpoint: WebhookEndpointChange | None = None
    """The change to the webhook endpoint the catalog declares, if any."""

    def archived_price_ids(self) -> tuple[str, ...]:
        return tuple(
            op.price_id for change in self.changes for op in change.ops if isinstance(op, ArchivePrice)
        )

    def archived_paid_plans(self) -> tuple[str, ...]:
        """Slugs of the plans this plan archives that are active paid plans now (what customers can
        buy): active and paid in `cloud_plans`, or with a live Product in Stripe (a plan with no row,
        as when the database is not the one this Stripe account was applied with)."""
        return tuple(
            change.slug
            for change in self.changes
            if change.action is Action.ARCHIVE
            and (
                (
                    change.before is not None
                    and change.before.get("isActive")
                    and not change.before.get("isDefault")
                )
                or any(isinstance(op, ArchiveProduct) for op in change.ops)
            )
        )

    def subscriptions_staying(self, change: PlanChange) -> int | None:
        """How many active subscriptions stay on the Prices `change` archives; None if not known."""
        counts = [self.subscriptions.get(op.price_id) for op in change.ops if isinstance(op, ArchivePrice)]
        if not counts or any(c is None for c in counts):
            return None
        return sum(c for c in counts if c is not None)

    @property
    def has_changes(self) -> bool:
        return self.has_resource_changes or bool(self.pending_migrations)

    @property
    def has_resource_changes(self) -> bool:
        """Something to do in Stripe or `cloud_plans` (migrations aside)."""
        return bool(self.changes) or self.webhook_endpoint is not None

    @property
    def resource_count(self) -> int:
        return len(self.changes) + (self.webhook_endpoint is not None)

    def summary(self) -> dict[str, int]:
        counts = Counter(change.action for change in self.changes)
        if self.webhook_endpoint is not None:
            counts[self.webhook_endpoint.action] += 1
        return {action.value: counts.get(action, 0) for action in Action}

    def ops_in_order(self) -> tuple[Op, ...]:
        """All operations, phase by phase, in plan order within a phase (sort is stable); the webhook
        endpoint's first."""
        ops = list(self.webhook_endpoint.ops) if self.webhook_endpoint is not None else []
        ops += [op for change in self.changes for op in change.ops]
        return tuple(sorted(ops, key=lambda op: op.phase))
