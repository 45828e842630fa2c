"""Where the plan is computed: `(desired, current) → Plan`. Pure; no I/O.

Keys on the plan slug, alembic-style: desired − current → create, current − desired → archive,
both → compare the fields the catalog owns. Stripe objects are matched to plans by their
ownership metadata, never by the ids in `cloud_plans`, so a run that crashed between writing
Stripe and writing Postgres is adopted rather than duplicated.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

from deepdiff import DeepDiff

from reconciler.errors import KuployError
from reconciler.model import (
    Catalog,
    CurrentState,
    PlanRow,
    PlanSpec,
    StripePrice,
    StripeProduct,
    StripeState,
    StripeWebhookEndpoint,
    WebhookEndpointSpec,
    flatten,
    lookup_key,
    owned_slug,
    ownership_metadata,
)
from reconciler.plan import (
    WEBHOOK_ADDRESS,
    Action,
    AdoptPrice,
    AdoptProduct,
    AdoptWebhookEndpoint,
    ArchivePrice,
    ArchiveProduct,
    Created,
    CreatePrice,
    CreateProduct,
    CreateWebhookEndpoint,
    FieldChange,
    Kind,
    Op,
    Phase,
    Plan,
    PlanChange,
    PriceData,
    ReactivatePrice,
    Ref,
    SetDefaultPrice,
    SetLookupKey,
    UpdateProduct,
    UpdateWebhookEndpoint,
    WebhookEndpointChange,
    WriteRow,
)


def diff(desired: Catalog, current: CurrentState, *, adopt: bool = False) -> Plan:
    """The plan that makes `current` match `desired`. With `adopt`, existing Products and Prices
    without ownership metadata that belong to a plan are taken over instead of duplicated."""
    wanted = desired.by_slug()
    products: dict[str, list[StripeProduct]] = defaultdict(list)
    prices: dict[str, list[StripePrice]] = defaultdict(list)
    for product in current.stripe.products:
        if (slug := owned_slug(product.metadata)) is not None:
            products[slug].append(product)
    for price in current.stripe.prices:
        if (slug := owned_slug(price.metadata)) is not None:
            prices[slug].append(price)
    adoptions = _adopt(desired, current, products, prices) if adopt else {}

    unknown = (set(current.rows) | set(products) | set(prices)) - set(wanted)
    slugs = [plan.slug for plan in desired.plans] + sorted(unknown)
    changes = []
    for slug in slugs:
        change = _diff_plan(
            slug,
            wanted.get(slug),
            current.rows.get(slug),
            products[slug],
            prices[slug],
            adoptions.get(slug, []),
        )
        if change is not None:
            changes.append(change)
    return Plan(
        changes=tuple(changes),
        pending_migrations=current.pending_migrations,
        webhook_endpoint=_diff_webhook_endpoint(desired.webhook_endpoint, current.stripe, adopt=adopt),
    )


def _diff_webhook_endpoint(
    spec: WebhookEndpointSpec | None, stripe: StripeState, *, adopt: bool
) -> WebhookEndpointChange | None:
    """Create the declared endpoint, or update the owned one in place (URL, events, enabled). Nothing
    declared: endpoints are left alone. An endpoint at the same URL made without the tool is adopted
    with `adopt`, else refused (a second endpoint would sign with a secret the listener lacks)."""
    if spec is None:
        return None
    after = {"url": spec.url, "events": list(spec.events), "enabled": True}
    owned = [e for e in stripe.webhook_endpoints if e.owned]
    ops: list[Op] = []
    endpoint: StripeWebhookEndpoint | None = None
    if owned:
        endpoint = max(owned, key=lambda e: (e.url == spec.url, e.created, e.id))
    else:
        same_url = [e for e in stripe.webhook_endpoints if e.url == spec.url]
        if same_url and not adopt:
            raise KuployError(
                f"webhook endpoint {same_url[0].id} at {spec.url} was not made by kuploy-reconciler: "
                "pass --adopt to manage it (its signing secret stays the one you have), or delete it"
            )
        if same_url:
            endpoint = max(same_url, key=lambda e: (e.created, e.id))
            ops.append(AdoptWebhookEndpoint(slug=WEBHOOK_ADDRESS, endpoint_id=endpoint.id, url=endpoint.url))
    if endpoint is None:
        ops.append(CreateWebhookEndpoint(slug=WEBHOOK_ADDRESS, url=spec.url, events=spec.events))
        return WebhookEndpointChange(
            action=Action.CREATE, before=None, after=after, fields=(), ops=tuple(ops)
        )
    before = {"url": endpoint.url, "events": list(endpoint.events), "enabled": endpoint.enabled}
    changed = [key for key in after if after[key] != before[key]]
    if changed:
        ops.append(
            UpdateWebhookEndpoint(
                slug=WEBHOOK_ADDRESS,
                endpoint_id=endpoint.id,
                before=tuple((k, _stripe_value(k, before[k])) for k in changed),
                after=tuple((k, _stripe_value(k, after[k])) for k in changed),
            )
        )
    if not ops:
        return None
    return WebhookEndpointChange(
        action=Action.UPDATE,
        before=before,
        after=after,
        fields=tuple(FieldChange(path=k, before=before[k], after=after[k]) for k in changed),
        ops=tuple(ops),
    )


def _stripe_value(key: str, value: Any) -> Any:
    return tuple(value) if key == "events" else value


def _adopt(
    desired: Catalog,
    current: CurrentState,
    products: dict[str, list[StripeProduct]],
    prices: dict[str, list[StripePrice]],
) -> dict[str, list[Op]]:
    """Pick, per paid plan without an owned Product, the unowned Product that is clearly its own:
    the one its `cloud_plans` row names, else the only active one with exactly the plan's name.
    The picked objects are treated as owned from here on (the adopt ops mark them so in Stripe)."""
    claimed: set[str] = set()
    ops: dict[str, list[Op]] = {}
    for spec in desired.plans:
        if not spec.is_paid or products[spec.slug]:
            continue
        row = current.rows.get(spec.slug)
        named = [
            p for p in current.stripe.unowned_products if row is not None and p.id == row.stripe_product_id
        ]
        if not named:
            same_name = [p for p in current.stripe.unowned_products if p.active and p.name == spec.name]
            named = same_name if len(same_name) == 1 else []
        if not named or named[0].id in claimed:
            continue
        product = named[0]
        claimed.add(product.id)
        marked = ownership_metadata(spec.slug)
        products[spec.slug].append(replace(product, metadata={**product.metadata, **marked}))
        ops[spec.slug] = [AdoptProduct(slug=spec.slug, product_id=product.id, name=product.name)]
        for price in current.stripe.unowned_prices:
            if price.product == product.id:
                prices[spec.slug].append(replace(price, metadata={**price.metadata, **marked}))
                ops[spec.slug].append(AdoptPrice(slug=spec.slug, price_id=price.id))
    return ops


def _target(spec: PlanSpec | None, row: PlanRow | None) -> PlanSpec | None:
    """The row the plan should end with; a plan absent from the catalog is soft-deleted."""
    if spec is not None:
        return spec
    if row is not None:
        return replace(row.spec, is_active=False, is_default=False)
    return None


def _diff_plan(
    slug: str,
    spec: PlanSpec | None,
    row: PlanRow | None,
    products: list[StripeProduct],
    prices: list[StripePrice],
    adoptions: list[Op],
) -> PlanChange | None:
    target = _target(spec, row)
    product = _pick_product(products, row)
    if target is not None and target.is_paid:
        stripe = _converge_paid(slug, target, product, products, prices)
    else:
        stripe = _converge_unpaid(slug, target, row, product, products, prices)
    ops = [*adoptions, *stripe.ops]

    if target is not None and (
        row is None
        or row.spec != target
        or row.stripe_product_id != stripe.product
        or row.stripe_price_id != stripe.price
    ):
        ops.insert(
            _first_index_after_prepare(ops),
            WriteRow(
                slug=slug,
                before=row,
                after=target,
                stripe_product_id=stripe.product,
                stripe_price_id=stripe.price,
            ),
        )

    if not ops:
        return None
    before = row.spec.as_dict() if row else None
    after = target.as_dict() if target else None
    return PlanChange(
        slug=slug,
        action=_action(row, target),
        before=before,
        after=after,
        fields=(*_field_changes(before, after), *stripe.fields),
        ops=tuple(ops),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Converged:
    """What brings one plan's Stripe objects to its target: the operations, in order; the Stripe
    fields they change (shown after the plan's own); the ids the plan's row then holds."""

    ops: tuple[Op, ...] = ()
    fields: tuple[FieldChange, ...] = ()
    product: Ref | None = None
    price: Ref | None = None


def _converge_paid(
    slug: str,
    target: PlanSpec,
    product: StripeProduct | None,
    products: list[StripeProduct],
    prices: list[StripePrice],
) -> _Converged:
    if product is None:
        return _create_paid(slug, target, prices)
    ops, fields = _update_product(slug, target, product)
    price_ops, price_ref = _converge_price(slug, target, product, prices)
    ops += price_ops
    if product.default_price != price_ref:
        ops.append(
            SetDefaultPrice(slug=slug, product=product.id, before=product.default_price, after=price_ref)
        )
        fields.append(
            FieldChange(
                path="stripe.product.default_price", before=product.default_price, after=str(price_ref)
            )
        )
    # Anything else this plan owns that is still live goes: duplicates, superseded prices.
    ops += _archive_live(slug, products, prices, keep_product=product, keep_price=price_ref)
    return _Converged(ops=tuple(ops), fields=tuple(fields), product=product.id, price=price_ref)


def _update_product(
    slug: str, target: PlanSpec, product: StripeProduct
) -> tuple[list[Op], list[FieldChange]]:
    """The Product's name, description and active flag, where they differ from the target."""
    wanted = {"name": target.name, "description": target.description, "active": True}
    observed = {"name": product.name, "description": product.description, "active": product.active}
    changed = tuple(k for k in wanted if wanted[k] != observed[k])
    if not changed:
        return [], []
    update = UpdateProduct(
        slug=slug,
        product_id=product.id,
        before=tuple((k, observed[k]) for k in changed),
        after=tuple((k, wanted[k]) for k in changed),
    )
    fields = [
        FieldChange(path=f"stripe.product.{k}", before=observed[k], after=wanted[k])
        for k in changed
        if k != "active"
    ]
    return [update], fields


def _converge_price(
    slug: str, target: PlanSpec, product: StripeProduct, prices: list[StripePrice]
) -> tuple[list[Op], Ref]:
    """The plan's Price: an existing one with the target's terms, made active and given the plan's
    lookup key, or a new one (Stripe never changes a Price's amount)."""
    assert target.price_cents and target.currency and target.billing_cycle, "validated by the catalog"
    interval = target.billing_cycle.stripe_interval
    key = lookup_key(slug)
    match = _matching_price(product, prices, target, interval)
    if match is None:
        create = CreatePrice(
            slug=slug,
            product=product.id,
            unit_amount=target.price_cents,
            currency=target.currency,
            interval=interval,
            lookup_key=key,
        )
        return [create], Created(Kind.PRICE)
    if not match.active:
        return [ReactivatePrice(slug=slug, price_id=match.id, lookup_key=key)], match.id
    if match.lookup_key != key:
        return [SetLookupKey(slug=slug, price=match.id, lookup_key=key)], match.id
    return [], match.id


def _create_paid(slug: str, target: PlanSpec, prices: list[StripePrice]) -> _Converged:
    """A paid plan without a live Product: one call makes the Product, its Price and the default; a
    second gives the Price its key. Any Price left active without its Product goes."""
    assert target.price_cents and target.currency and target.billing_cycle, "validated by the catalog"
    interval = target.billing_cycle.stripe_interval
    first_price = PriceData(unit_amount=target.price_cents, currency=target.currency, interval=interval)
    ops: list[Op] = [
        CreateProduct(slug=slug, name=target.name, description=target.description, price=first_price),
        SetLookupKey(slug=slug, price=Created(Kind.PRICE), lookup_key=lookup_key(slug)),
        *_archive_live(slug, [], prices),
    ]
    return _Converged(ops=tuple(ops), product=Created(Kind.PRODUCT), price=Created(Kind.PRICE))


def _matching_price(
    product: StripeProduct, prices: list[StripePrice], target: PlanSpec, interval: str
) -> StripePrice | None:
    """The Price of `product` with the target's amount, currency and interval: the current default
    first, then an active one, then the newest."""
    candidates = [
        p
        for p in prices
        if p.product == product.id
        and p.unit_amount == target.price_cents
        and p.currency == target.currency
        and p.interval == interval
    ]
    candidates.sort(key=lambda p: (p.id == product.default_price, p.active, p.created), reverse=True)
    return candidates[0] if candidates else None


def _converge_unpaid(
    slug: str,
    target: PlanSpec | None,
    row: PlanRow | None,
    product: StripeProduct | None,
    products: list[StripeProduct],
    prices: list[StripePrice],
) -> _Converged:
    """Inactive and default plans have no live Product or Price: archive what is left. A soft-deleted
    plan's row keeps pointing at its (archived) objects."""
    ops = tuple(_archive_live(slug, products, prices))
    if target is None or target.is_default:
        return _Converged(ops=ops)
    if row is None:
        return _Converged(ops=ops, product=product.id if product else None)
    return _Converged(ops=ops, product=row.stripe_product_id, price=row.stripe_price_id)


def _archive_live(
    slug: str,
    products: list[StripeProduct],
    prices: list[StripePrice],
    *,
    keep_product: StripeProduct | None = None,
    keep_price: Ref | None = None,
) -> list[Op]:
    """Archive every live Product and active Price of the plan but the ones it keeps."""
    ops: list[Op] = [
        ArchiveProduct(slug=slug, product_id=p.id)
        for p in products
        if p is not keep_product and _is_live_product(p, prices)
    ]
    ops += [ArchivePrice(slug=slug, price_id=p.id) for p in prices if p.active and p.id != keep_price]
    return ops


def _is_live_product(product: StripeProduct, prices: list[StripePrice]) -> bool:
    """Active, or archived but still holding an active default Price (which blocks archiving it)."""
    if product.active:
        return True
    return any(p.id == product.default_price and p.active for p in prices)


def _pick_product(products: list[StripeProduct], row: PlanRow | None) -> StripeProduct | None:
    """The plan's Product: the one its row names, else the newest active, else the newest."""
    if not products:
        return None
    if row is not None:
        for product in products:
            if product.id == row.stripe_product_id:
                return product
    return max(products, key=lambda p: (p.active, p.created, p.id))


def _first_index_after_prepare(ops: list[Op]) -> int:
    """Where a Postgres write goes in a plan's op list: after Stripe's additive steps."""
    for index, op in enumerate(ops):
        if op.phase > Phase.RECORD:
            return index
    return len(ops)


def _action(row: PlanRow | None, target: PlanSpec | None) -> Action:
    if target is None:
        return Action.ARCHIVE  # only leftover Stripe objects of a plan that has no row
    if row is None:
        return Action.CREATE
    if not target.is_active and row.spec.is_active:
        return Action.ARCHIVE
    if target.is_active and not row.spec.is_active:
        return Action.REACTIVATE
    before_price = (row.spec.price_cents, row.spec.currency, row.spec.billing_cycle)
    after_price = (target.price_cents, target.currency, target.billing_cycle)
    if target.is_paid and row.spec.is_paid and before_price != after_price:
        return Action.REPLACE_PRICE
    return Action.UPDATE


def _field_changes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[FieldChange]:
    """Per-field changes of the catalog-owned fields, in a stable order."""
    if before is None or after is None:
        return []
    result = DeepDiff(before, after, verbose_level=2, view="tree")
    changes = []
    for report in ("values_changed", "type_changes", "dictionary_item_added", "dictionary_item_removed"):
        for item in result.get(report, []):
            path = ".".join(str(part) for part in item.path(output_format="list"))
            old = None if report == "dictionary_item_added" else item.t1
            new = None if report == "dictionary_item_removed" else item.t2
            changes.append(FieldChange(path=path, before=old, after=new))
    order = {key: index for index, key in enumerate(path for path, _value in flatten(after))}
    return sorted(changes, key=lambda c: order.get(c.path, len(order)))
