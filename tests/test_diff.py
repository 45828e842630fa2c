"""The planner on hand-built models: pure, fast, no I/O."""

from __future__ import annotations

from dataclasses import replace

from reconciler.diff import diff
from reconciler.model import (
    BillingCycle,
    Catalog,
    CurrentState,
    Limits,
    PlanRow,
    PlanSpec,
    StripePrice,
    StripeProduct,
    StripeState,
    lookup_key,
    ownership_metadata,
)
from reconciler.plan import (
    Action,
    ArchivePrice,
    ArchiveProduct,
    Created,
    CreatePrice,
    CreateProduct,
    Kind,
    Phase,
    ReactivatePrice,
    SetDefaultPrice,
    UpdateProduct,
    WriteRow,
)

LIMITS = Limits(
    max_projects=1,
    max_apps=2,
    max_databases=3,
    max_team_members=4,
    max_domains=5,
    max_custom_domains=6,
    max_free_subdomains=7,
    max_purchasable_domains=8,
    max_instances=9,
    max_storage_bytes=10 * 1024**3,
    build_minutes_per_month=11,
)
FREE = PlanSpec(slug="free", name="Free", price_cents=0, limits=LIMITS, is_default=True)
PRO = PlanSpec(
    slug="pro",
    name="Pro",
    price_cents=2000,
    currency="cad",
    billing_cycle=BillingCycle.MONTHLY,
    limits=LIMITS,
)


def product(
    slug: str, id: str = "prod_1", *, active: bool = True, default: str | None = "price_1", name: str = "Pro"
) -> StripeProduct:
    return StripeProduct(
        id=id,
        name=name,
        description="",
        active=active,
        default_price=default,
        metadata=ownership_metadata(slug),
    )


def price(
    slug: str, id: str = "price_1", *, amount: int = 2000, active: bool = True, product_id: str = "prod_1"
) -> StripePrice:
    return StripePrice(
        id=id,
        product=product_id,
        active=active,
        unit_amount=amount,
        currency="cad",
        interval="month",
        lookup_key=lookup_key(slug) if active else None,
        metadata=ownership_metadata(slug),
    )


def converged(*specs: PlanSpec) -> CurrentState:
    rows = {}
    products, prices = [], []
    for spec in specs:
        if spec.is_paid:
            rows[spec.slug] = PlanRow(
                spec=spec, stripe_product_id=f"prod_{spec.slug}", stripe_price_id=f"price_{spec.slug}"
            )
            products.append(
                product(spec.slug, f"prod_{spec.slug}", default=f"price_{spec.slug}", name=spec.name)
            )
            prices.append(
                price(
                    spec.slug,
                    f"price_{spec.slug}",
                    amount=spec.price_cents or 0,
                    product_id=f"prod_{spec.slug}",
                )
            )
        else:
            rows[spec.slug] = PlanRow(spec=spec, stripe_product_id=None, stripe_price_id=None)
    return CurrentState(rows=rows, stripe=StripeState(products=tuple(products), prices=tuple(prices)))


def types(ops: tuple[object, ...]) -> list[str]:
    return [type(op).__name__ for op in ops]


def test_empty_state_creates_everything_in_crash_safe_order() -> None:
    plan = diff(Catalog(plans=(FREE, PRO)), CurrentState(rows={}, stripe=StripeState()))
    assert [(c.slug, c.action) for c in plan.changes] == [("free", Action.CREATE), ("pro", Action.CREATE)]
    assert types(plan.changes[0].ops) == ["WriteRow"]
    # The Product, its first Price and the default in one call; the lookup key in a second.
    assert types(plan.changes[1].ops) == ["CreateProduct", "SetLookupKey", "WriteRow"]
    create = plan.changes[1].ops[0]
    assert isinstance(create, CreateProduct) and create.price is not None and create.price.unit_amount == 2000
    write = plan.changes[1].ops[-1]
    assert isinstance(write, WriteRow)
    assert write.stripe_product_id == Created(Kind.PRODUCT) and write.stripe_price_id == Created(Kind.PRICE)
    phases = [op.phase for op in plan.ops_in_order()]
    assert phases == sorted(phases)


def test_converged_state_has_no_changes() -> None:
    plan = diff(Catalog(plans=(FREE, PRO)), converged(FREE, PRO))
    assert plan.changes == ()
    assert not plan.has_changes


def test_price_change_creates_moves_default_then_archives_after_the_row() -> None:
    plan = diff(Catalog(plans=(FREE, replace(PRO, price_cents=2500))), converged(FREE, PRO))
    (change,) = plan.changes
    assert change.action is Action.REPLACE_PRICE
    assert types(change.ops) == ["CreatePrice", "SetDefaultPrice", "WriteRow", "ArchivePrice"]
    create, set_default, _, archive = change.ops
    assert isinstance(create, CreatePrice) and create.product == "prod_pro" and create.unit_amount == 2500
    assert isinstance(set_default, SetDefaultPrice) and set_default.before == "price_pro"
    assert isinstance(archive, ArchivePrice) and archive.price_id == "price_pro"
    assert archive.phase is Phase.RETIRE
    first = change.fields[0]
    assert (first.path, first.before, first.after) == ("priceCents", 2000, 2500)


def test_price_back_to_an_archived_amount_reuses_that_price() -> None:
    current = converged(FREE, replace(PRO, price_cents=2500))
    old = price("pro", "price_old", amount=2000, active=False, product_id="prod_pro")
    current = replace(current, stripe=replace(current.stripe, prices=(*current.stripe.prices, old)))
    (change,) = diff(Catalog(plans=(FREE, PRO)), current).changes
    assert types(change.ops) == ["ReactivatePrice", "SetDefaultPrice", "WriteRow", "ArchivePrice"]
    reactivate = change.ops[0]
    assert isinstance(reactivate, ReactivatePrice) and reactivate.price_id == "price_old"


def test_rename_updates_product_and_row_but_never_the_price() -> None:
    (change,) = diff(Catalog(plans=(FREE, replace(PRO, name="Pro+"))), converged(FREE, PRO)).changes
    assert change.action is Action.UPDATE
    assert types(change.ops) == ["UpdateProduct", "WriteRow"]
    update = change.ops[0]
    assert isinstance(update, UpdateProduct) and update.after == (("name", "Pro+"),)


def test_limit_change_only_writes_the_row() -> None:
    richer = replace(PRO, limits=replace(LIMITS, max_apps=99))
    (change,) = diff(Catalog(plans=(FREE, richer)), converged(FREE, PRO)).changes
    assert types(change.ops) == ["WriteRow"]
    assert [(f.path, f.before, f.after) for f in change.fields] == [("limits.maxApps", 2, 99)]


def test_removed_plan_is_soft_deleted_product_cleared_before_price_archived() -> None:
    (change,) = diff(Catalog(plans=(FREE,)), converged(FREE, PRO)).changes
    assert change.action is Action.ARCHIVE
    assert types(change.ops) == ["WriteRow", "ArchiveProduct", "ArchivePrice"]
    write = change.ops[0]
    assert isinstance(write, WriteRow) and write.after.is_active is False
    assert write.stripe_product_id == "prod_pro"  # the row keeps pointing at its archived objects


def test_readding_reactivates_the_same_product_and_price() -> None:
    archived = replace(PRO, is_active=False)
    current = CurrentState(
        rows={
            "free": PlanRow(spec=FREE, stripe_product_id=None, stripe_price_id=None),
            "pro": PlanRow(spec=archived, stripe_product_id="prod_1", stripe_price_id="price_1"),
        },
        stripe=StripeState(
            products=(product("pro", active=False, default=None),), prices=(price("pro", active=False),)
        ),
    )
    (change,) = diff(Catalog(plans=(FREE, PRO)), current).changes
    assert change.action is Action.REACTIVATE
    assert types(change.ops) == ["UpdateProduct", "ReactivatePrice", "SetDefaultPrice", "WriteRow"]
    assert not any(isinstance(op, (CreateProduct, CreatePrice)) for op in change.ops)


def test_stripe_objects_without_a_row_are_adopted() -> None:
    current = CurrentState(
        rows={"free": PlanRow(spec=FREE, stripe_product_id=None, stripe_price_id=None)},
        stripe=StripeState(products=(product("pro"),), prices=(price("pro"),)),
    )
    (change,) = diff(Catalog(plans=(FREE, PRO)), current).changes
    assert change.action is Action.CREATE
    assert types(change.ops) == ["WriteRow"]
    write = change.ops[0]
    assert isinstance(write, WriteRow) and (write.stripe_product_id, write.stripe_price_id) == (
        "prod_1",
        "price_1",
    )


def test_duplicate_products_are_archived_and_the_rows_one_kept() -> None:
    current = converged(FREE, PRO)
    dup = product("pro", "prod_dup", default="price_dup")
    dup_price = price("pro", "price_dup", product_id="prod_dup")
    current = replace(
        current,
        stripe=StripeState(
            products=(*current.stripe.products, dup), prices=(*current.stripe.prices, dup_price)
        ),
    )
    (change,) = diff(Catalog(plans=(FREE, PRO)), current).changes
    assert [
        (type(op).__name__, getattr(op, "product_id", getattr(op, "price_id", None))) for op in change.ops
    ] == [
        ("ArchiveProduct", "prod_dup"),
        ("ArchivePrice", "price_dup"),
    ]


def test_default_switch_updates_both_rows_in_the_record_phase() -> None:
    paid_free = replace(
        FREE, is_default=False, price_cents=500, currency="cad", billing_cycle=BillingCycle.MONTHLY
    )
    default_pro = replace(PRO, is_default=True)
    plan = diff(Catalog(plans=(paid_free, default_pro)), converged(FREE, PRO))
    writes = [op for op in plan.ops_in_order() if isinstance(op, WriteRow)]
    assert {w.slug for w in writes} == {"free", "pro"}
    pro_ops = next(c for c in plan.changes if c.slug == "pro").ops
    assert types(pro_ops) == ["WriteRow", "ArchiveProduct", "ArchivePrice"]
    pro_write = pro_ops[0]
    assert isinstance(pro_write, WriteRow) and pro_write.stripe_price_id is None
    assert any(isinstance(op, ArchiveProduct) for op in pro_ops)


def test_unknown_row_not_in_catalog_and_inactive_is_left_alone() -> None:
    gone = replace(PRO, is_active=False)
    current = CurrentState(
        rows={
            "free": PlanRow(spec=FREE, stripe_product_id=None, stripe_price_id=None),
            "pro": PlanRow(spec=gone, stripe_product_id="prod_1", stripe_price_id="price_1"),
        },
        stripe=StripeState(
            products=(product("pro", active=False, default=None),), prices=(price("pro", active=False),)
        ),
    )
    assert diff(Catalog(plans=(FREE,)), current).changes == ()
