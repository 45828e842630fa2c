"""Prices: create (with `product_data`), retrieve, update (lookup-key transfer), list."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import cast

from ..common import check_currency, merge_metadata
from ..context import Ctx
from ..errors import JSON, StripeError, missing, no_such, param_error
from ..events import emit, emit_update
from ..listing import create_route, standard_routes, update_route
from ..params import join
from ..registry import Kind, register_kind
from ..rendering import snapshot


def create_price(ctx: Ctx, p: JSON) -> JSON:
    if "product" in p and "product_data" in p:
        raise param_error(
            "You may only specify one of these parameters: product, product_data.",
            "product",
            "parameters_exclusive",
        )
    created_product = None
    if "product_data" in p:
        data = p["product_data"]
        product_id = data.get("id") or ctx.fresh_id("prod_", 14)
        if product_id in ctx.acct.products:
            raise StripeError(
                400, "Product already exists.", code="resource_already_exists", param="product_data[id]"
            )
        # products.py builds the product; it imports this module, so import it here.
        from .products import new_product

        created_product = new_product(ctx, product_id, data, int(time.time()), "product_data")
    elif "product" in p:
        product_id = p["product"]
        if product_id not in ctx.acct.products:
            raise no_such("product", product_id, "product", status=400)
    else:
        raise missing("product")
    price = build_price(ctx, p, product_id, "")
    lookup_key = p.get("lookup_key")
    holder = None
    if lookup_key is not None:
        holder = lookup_holder(ctx, _checked_lookup_key(lookup_key), None, bool(p.get("transfer_lookup_key")))
        price["lookup_key"] = lookup_key
    price["nickname"] = p.get("nickname")
    # Everything is checked: now mutate, atomically.
    if holder is not None:
        _release_lookup_key(ctx, holder)
    if created_product is not None:
        ctx.put("product", created_product)
        emit(ctx, "product.created", "product", created_product)
    store_price(ctx, price)
    if price["recurring"] is not None:
        # Stripe still announces a recurring Price as its legacy Plan too, first (same id; seen in
        # real `stripe trigger` logs).
        from .subscriptions import plan_of

        emit(ctx, "plan.created", "price", price, frozen=plan_of(price))
    emit(ctx, "price.created", "price", price)
    return price


def store_price(ctx: Ctx, price: JSON) -> None:
    ctx.put("price", price)


def build_price(ctx: Ctx, p: JSON, product_id: str, prefix: str) -> JSON:
    """A new Price of `product_id` from create params (`prefix`: where they sit in the request, for
    error params, e.g. `default_price_data`); checked, not stored."""

    def name(key: str) -> str:
        return join(prefix, key)

    currency = check_currency(p["currency"], name("currency"))
    scheme = p.get("billing_scheme", "per_unit")
    amount = _tiered_amount(p, name) if scheme == "tiered" else _per_unit_amount(p, name)
    recurring = _recurring(p["recurring"], name) if "recurring" in p else None
    transform = p.get("transform_quantity")
    if transform is not None and amount["tiers"] is not None:
        raise param_error("transform_quantity cannot be combined with tiers.", name("transform_quantity"))
    currency_options = _extra_currency_options(p.get("currency_options") or {}, prefix)
    tax_behavior = p.get("tax_behavior", "unspecified")
    currency_options[currency] = {
        "custom_unit_amount": amount["custom_unit_amount"],
        "tax_behavior": tax_behavior,
        "unit_amount": amount["unit_amount"],
        "unit_amount_decimal": amount["unit_amount_decimal"],
    }
    return {
        "id": ctx.fresh_id("price_", 24),
        "object": "price",
        "active": p.get("active", True),
        "billing_scheme": scheme,
        "created": int(time.time()),
        "currency": currency,
        "currency_options": currency_options,
        "custom_unit_amount": amount["custom_unit_amount"],
        "livemode": ctx.mode == "live",
        "lookup_key": None,
        "metadata": merge_metadata({}, p.get("metadata"), name("metadata")),
        "nickname": None,
        "product": product_id,
        "recurring": recurring,
        "tax_behavior": tax_behavior,
        "tiers": amount["tiers"],
        "tiers_mode": amount["tiers_mode"],
        "transform_quantity": (
            {"divide_by": transform["divide_by"], "round": transform["round"]} if transform else None
        ),
        "type": "recurring" if recurring else "one_time",
        "unit_amount": amount["unit_amount"],
        "unit_amount_decimal": amount["unit_amount_decimal"],
    }


_AMOUNT_PARAMS = ("unit_amount", "unit_amount_decimal", "custom_unit_amount")


def _amount(
    *,
    unit_amount: int | None = None,
    unit_amount_decimal: str | None = None,
    custom_unit_amount: JSON | None = None,
    tiers: list[JSON] | None = None,
    tiers_mode: str | None = None,
) -> JSON:
    """What a Price charges, as its fields: exactly one way is set, the others are None."""
    return {
        "custom_unit_amount": custom_unit_amount,
        "tiers": tiers,
        "tiers_mode": tiers_mode,
        "unit_amount": unit_amount,
        "unit_amount_decimal": unit_amount_decimal,
    }


def _given_amount(p: JSON, name: Callable[[str], str]) -> list[str]:
    """Which of the amount params are given; more than one is refused."""
    given = [k for k in _AMOUNT_PARAMS if k in p]
    if len(given) > 1:
        raise param_error(
            f"You may only specify one of these parameters: {', '.join(given)}.",
            name(given[0]),
            "parameters_exclusive",
        )
    return given


def _tiered_amount(p: JSON, name: Callable[[str], str]) -> JSON:
    """`billing_scheme=tiered`: `tiers` and `tiers_mode`, and no flat amount."""
    given = _given_amount(p, name)
    if given:
        raise param_error(f"You cannot specify `{given[0]}` with `billing_scheme=tiered`.", name(given[0]))
    if not p.get("tiers"):
        raise missing(name("tiers"))
    if "tiers_mode" not in p:
        raise missing(name("tiers_mode"))
    tiers = [
        {
            "flat_amount": t.get("flat_amount"),
            "flat_amount_decimal": str(t["flat_amount"]) if "flat_amount" in t else None,
            "unit_amount": t.get("unit_amount"),
            "unit_amount_decimal": str(t["unit_amount"]) if "unit_amount" in t else None,
            "up_to": None if t["up_to"] == "inf" else t["up_to"],
        }
        for t in p["tiers"]
    ]
    return _amount(tiers=tiers, tiers_mode=p["tiers_mode"])


def _per_unit_amount(p: JSON, name: Callable[[str], str]) -> JSON:
    """`billing_scheme=per_unit`: exactly one of `unit_amount`, `unit_amount_decimal` or
    `custom_unit_amount`."""
    given = _given_amount(p, name)
    if not given:
        raise param_error(
            "Missing required param: unit_amount. One of `unit_amount`, `unit_amount_decimal`, or "
            "`custom_unit_amount` is required, unless `billing_scheme=tiered`.",
            name("unit_amount"),
            "parameter_missing",
        )
    if given[0] == "unit_amount":
        return _unit_amount(int(p["unit_amount"]), name("unit_amount"))
    if given[0] == "unit_amount_decimal":
        return _unit_amount_decimal(p["unit_amount_decimal"], name("unit_amount_decimal"))
    cua = p["custom_unit_amount"]
    if not cua.get("enabled"):
        raise param_error(
            "custom_unit_amount[enabled] must be true when custom_unit_amount is given.",
            name("custom_unit_amount[enabled]"),
        )
    return _amount(custom_unit_amount={k: cua.get(k) for k in ("maximum", "minimum", "preset")})


def _unit_amount(unit_amount: int, param: str) -> JSON:
    if unit_amount < 0:
        raise param_error(
            "This value must be greater than or equal to 0.", param, "parameter_invalid_integer"
        )
    if unit_amount > MAX_UNIT_AMOUNT:
        raise StripeError(
            400,
            f"This value must be less than or equal to {MAX_UNIT_AMOUNT}.",
            code="amount_too_large",
            param=param,
        )
    return _amount(unit_amount=unit_amount, unit_amount_decimal=str(unit_amount))


def _unit_amount_decimal(given: str, param: str) -> JSON:
    """A decimal amount (≤ 12 decimals); `unit_amount` too when it is whole."""
    dec = Decimal(given)
    if dec < 0 or dec > MAX_UNIT_AMOUNT or -cast(int, dec.as_tuple().exponent) > 12:
        raise param_error(f"Invalid decimal: {given}", param)
    return _amount(
        unit_amount=int(dec) if dec == dec.to_integral_value() else None,
        unit_amount_decimal=format(dec.normalize(), "f"),
    )


def _recurring(r: JSON, name: Callable[[str], str]) -> JSON:
    """The `recurring` hash: at most three years between charges; `metered` needs a `meter`."""
    interval = r["interval"]
    count = int(r.get("interval_count", 1))
    if count < 1 or count > MAX_INTERVAL_COUNT[interval]:
        raise param_error(
            "Invalid interval_count: the maximum interval allowed is three years (3 years, "
            "36 months, 156 weeks or 1095 days) and interval_count must be at least 1.",
            name("recurring[interval_count]"),
        )
    usage_type = r.get("usage_type", "licensed")
    if usage_type == "metered" and not r.get("meter"):
        raise missing(name("recurring[meter]"))
    return {
        "interval": interval,
        "interval_count": count,
        "meter": r.get("meter"),
        "trial_period_days": r.get("trial_period_days"),
        "usage_type": usage_type,
    }


def _extra_currency_options(options: JSON, prefix: str) -> JSON:
    """`currency_options` for currencies other than the price's own (create and update): a
    `unit_amount` and a `tax_behavior` each."""
    out: JSON = {}
    for cur, opt in options.items():
        code = check_currency(cur, join(prefix, f"currency_options[{cur}]"))
        amount = opt.get("unit_amount")
        out[code] = {
            "custom_unit_amount": None,
            "tax_behavior": opt.get("tax_behavior", "unspecified"),
            "unit_amount": amount,
            "unit_amount_decimal": None if amount is None else str(amount),
        }
    return out


def update_price(ctx: Ctx, price: JSON, p: JSON) -> None:
    changes: JSON = {}
    holder = None
    if "active" in p:
        _check_archivable(ctx, price, p["active"])
        changes["active"] = p["active"]
    if "lookup_key" in p:
        key = _checked_lookup_key(p["lookup_key"])
        holder = lookup_holder(ctx, key, price["id"], bool(p.get("transfer_lookup_key")))
        changes["lookup_key"] = key
    if "nickname" in p:
        changes["nickname"] = p["nickname"]
    if "tax_behavior" in p:
        _check_tax_behavior_change(price, p["tax_behavior"])
        changes["tax_behavior"] = p["tax_behavior"]
    if "metadata" in p:
        changes["metadata"] = merge_metadata(price["metadata"], p["metadata"], "metadata")
    if "currency_options" in p:
        changes["currency_options"] = _updated_currency_options(price, p["currency_options"])
    if holder is not None:
        _release_lookup_key(ctx, holder)
    price.update(changes)


def _check_archivable(ctx: Ctx, price: JSON, active: bool) -> None:
    """A product's default price cannot be archived."""
    product = ctx.acct.products.get(price["product"])
    if active is False and product is not None and product["default_price"] == price["id"]:
        raise StripeError(
            400,
            "This price cannot be archived because it is the default price of its product.",
            param="active",
        )


def _check_tax_behavior_change(price: JSON, wanted: str) -> None:
    """`tax_behavior` cannot change once `inclusive` or `exclusive`."""
    current = price["tax_behavior"]
    if current in ("inclusive", "exclusive") and wanted != current:
        raise StripeError(
            400, f"tax_behavior cannot be changed once it is set to `{current}`.", param="tax_behavior"
        )


def _updated_currency_options(price: JSON, options: JSON | str) -> JSON:
    """`""` keeps only the price's own currency; a hash adds or replaces the currencies it names."""
    if isinstance(options, str):  # "", the only string the params let through
        return {price["currency"]: price["currency_options"][price["currency"]]}
    return {**price["currency_options"], **_extra_currency_options(options, "")}


def _checked_lookup_key(key: str) -> str:
    if len(key) > MAX_LOOKUP_KEY_LEN:
        raise param_error(
            f"Invalid lookup_key: must be at most {MAX_LOOKUP_KEY_LEN} characters", "lookup_key"
        )
    return key


def _release_lookup_key(ctx: Ctx, holder: JSON) -> None:
    """The price that held a lookup key taken by `transfer_lookup_key` loses it (`price.updated`)."""
    before = snapshot(ctx, "price", holder)
    holder["lookup_key"] = None
    emit_update(ctx, "price", holder, before)


def lookup_holder(ctx: Ctx, key: str, self_id: str | None, transfer: bool) -> JSON | None:
    holder = next(
        (pr for pr in ctx.acct.prices.values() if pr["lookup_key"] == key and pr["id"] != self_id), None
    )
    if holder is not None and not transfer:
        raise StripeError(
            400, f"A price (`{holder['id']}`) already uses that lookup key.", param="lookup_key"
        )
    return holder


MAX_LOOKUP_KEY_LEN = 200
MAX_UNIT_AMOUNT = 99_999_999
# Stripe caps a recurring interval at three years.
MAX_INTERVAL_COUNT = {"day": 1095, "week": 156, "month": 36, "year": 3}
INCLUDABLE = ("currency_options", "tiers")


def _matches(obj: JSON, p: JSON) -> bool:
    if "product" in p and obj["product"] != p["product"]:
        return False
    if "currency" in p and obj["currency"] != str(p["currency"]).lower():
        return False
    if "type" in p and obj["type"] != p["type"]:
        return False
    if "lookup_keys" in p and obj["lookup_key"] not in p["lookup_keys"]:
        return False
    recurring = p.get("recurring")
    if recurring:
        if obj["recurring"] is None:
            return False
        for key, value in recurring.items():
            if obj["recurring"].get(key) != value:
                return False
    return True


def _render(ctx: Ctx, obj: JSON, out: JSON, groups: dict[str, list[str]], depth: int) -> dict[str, list[str]]:
    """`currency_options` and `tiers` are shown only when asked with `expand[]` (Stripe's "includable")."""
    for hidden in INCLUDABLE:
        out.pop(hidden, None)
    rest: dict[str, list[str]] = {}
    for head, rests in groups.items():
        if head in INCLUDABLE and not rests:
            if head != "tiers" or obj["billing_scheme"] == "tiered":
                out[head] = obj[head]
        else:
            rest[head] = rests
    return rest


register_kind(
    Kind(
        "price",
        "prices",
        path="/v1/prices",
        expandable={"product": "product"},
        matches=_matches,
        render=_render,
    )
)
standard_routes("price")
create_route("price", create_price)
update_route("price", update_price, incidental=("updated",))
