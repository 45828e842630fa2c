"""A subscription's items: the prices a subscription may take, the items a create or an update's
`items[]` makes (added, changed, deleted; a new billing interval starts a new period), and Stripe's rules
over a whole item set. How an item renders (with its legacy `plan`) is `subscriptions.render_item`."""

from __future__ import annotations

from ..common import merge_metadata, period_end
from ..context import Ctx
from ..errors import JSON, StripeError, missing, no_such, param_error, unmodelled
from ..params import MODELLED_ITEM_PARAMS

MAX_SUBSCRIPTION_ITEMS = 20


def created_items(ctx: Ctx, sub_id: str, given_items: list[JSON], now: int) -> list[JSON]:
    """The items of a new subscription from a create's `items[]` (each checked; not yet as a set)."""
    items: list[JSON] = []
    for i, given in enumerate(given_items):
        check_item_params(given, "subscription.create", i)
        if "price" not in given:
            raise missing(f"items[{i}][price]")
        price = subscribable_price(ctx, given["price"], f"items[{i}][price]")
        item = new_item(ctx, sub_id, price, now)
        apply_item(ctx, item, given, price, f"items[{i}]")
        items.append(item)
    return items


def updated_items(ctx: Ctx, sub: JSON, given_items: list[JSON], now: int) -> list[JSON]:
    """`sub`'s items after an update's `items[]`, as copies (`sub` is unchanged): an entry with an `id`
    changes or deletes that item, one without adds an item. At least one item must remain."""
    items = [dict(i) for i in sub["items"]]
    by_id = {i["id"]: i for i in items}
    for n, given in enumerate(given_items):
        prefix = f"items[{n}]"
        check_item_params(given, "subscription.update", n)
        if "id" not in given:
            items.append(_added_item(ctx, sub["id"], given, prefix, now))
            continue
        item = by_id.get(given["id"])
        if item is None:
            raise no_such("subscription item", given["id"], f"{prefix}[id]", status=400)
        if given.get("deleted"):
            items.remove(item)
            del by_id[item["id"]]
        else:
            _change_item(ctx, item, given, prefix, now)
    if not items:
        raise param_error("A subscription must have at least one item.", "items")
    return items


def _added_item(ctx: Ctx, sub_id: str, given: JSON, prefix: str, now: int) -> JSON:
    if given.get("deleted"):
        raise missing(f"{prefix}[id]")
    if "price" not in given:
        raise missing(f"{prefix}[price]")
    price = subscribable_price(ctx, given["price"], f"{prefix}[price]")
    item = new_item(ctx, sub_id, price, now)
    apply_item(ctx, item, given, price, prefix)
    return item


def _change_item(ctx: Ctx, item: JSON, given: JSON, prefix: str, now: int) -> None:
    """A new price (a new billing interval starts a new period now), quantity or metadata."""
    price = (
        subscribable_price(ctx, given["price"], f"{prefix}[price]")
        if "price" in given and given["price"] != item["price"]
        else ctx.acct.prices[item["price"]]
    )
    old = ctx.acct.prices[item["price"]]["recurring"]
    if price["recurring"]["interval"] != old["interval"] or (
        price["recurring"]["interval_count"] != old["interval_count"]
    ):
        item["current_period_start"] = now
        item["current_period_end"] = period_end(now, price["recurring"])
    apply_item(ctx, item, given, price, prefix)
    item["price"] = price["id"]


def check_item_params(given: JSON, route: str, i: int) -> None:
    for key in given:
        if key not in MODELLED_ITEM_PARAMS[route]:
            raise unmodelled(f"items[{i}][{key}]")


def subscribable_price(ctx: Ctx, price_id: str, param: str) -> JSON:
    price = ctx.acct.prices.get(price_id)
    if price is None:
        raise no_such("price", price_id, param, status=400)
    if not price["active"]:
        raise StripeError(
            400, "The price specified is inactive. This field only accepts active prices.", param=param
        )
    if price["type"] != "recurring":
        raise StripeError(
            400,
            "The price specified is set to `type=one_time` but this field only accepts prices with "
            "`type=recurring`.",
            param=param,
        )
    product = ctx.acct.products.get(price["product"])
    if product is not None and not product["active"]:
        raise StripeError(
            400,
            f"The product `{product['id']}` is marked as inactive, and thus no new subscriptions can be "
            f"created with any of its prices. You provided the price `{price_id}`.",
            param=param,
        )
    return price


def new_item(ctx: Ctx, sub_id: str, price: JSON, now: int) -> JSON:
    return {
        "id": ctx.fresh_id("si_", 14),
        "object": "subscription_item",
        "billing_thresholds": None,
        "created": now,
        "current_period_end": period_end(now, price["recurring"]),
        "current_period_start": now,
        "discounts": [],
        "metadata": {},
        "price": price["id"],
        "quantity": 1,
        "subscription": sub_id,
        "tax_rates": [],
    }


def apply_item(ctx: Ctx, item: JSON, given: JSON, price: JSON, prefix: str) -> None:
    """Set an item's price, quantity and metadata from its request entry (already checked)."""
    metered = price["recurring"]["usage_type"] == "metered"
    if metered and "quantity" in given:
        raise param_error(
            f"Quantity should not be specified where usage_type is `metered`. Remove quantity from "
            f"`{prefix}`.",
            f"{prefix}[quantity]",
        )
    quantity = given.get("quantity", item["quantity"] if item["price"] == price["id"] else 1)
    if quantity is not None and quantity < 0:
        raise param_error(
            "This value must be greater than or equal to 0.",
            f"{prefix}[quantity]",
            "parameter_invalid_integer",
        )
    item["quantity"] = None if metered else quantity
    item["metadata"] = merge_metadata(item["metadata"], given.get("metadata"), f"{prefix}[metadata]")


def check_items(ctx: Ctx, items: list[JSON], customer: JSON | None, sub_id: str | None) -> str:
    """Stripe's rules over a subscription's whole item set; returns its currency."""
    if len(items) > MAX_SUBSCRIPTION_ITEMS:
        raise param_error(f"A subscription can have at most {MAX_SUBSCRIPTION_ITEMS} items.", "items")
    seen: set[str] = set()
    currencies: set[str] = set()
    for item in items:
        if item["price"] in seen:
            raise param_error(
                f"Cannot add multiple subscription items with the same plan: {item['price']}", "items"
            )
        seen.add(item["price"])
        currencies.add(ctx.acct.prices[item["price"]]["currency"])
    if len(currencies) > 1:
        raise param_error(
            f"All prices on a subscription must have the same currency; got {', '.join(sorted(currencies))}.",
            "items",
        )
    currency = currencies.pop()
    if customer is not None:
        others = {
            s["currency"]
            for s in ctx.acct.subscriptions.values()
            if s["customer"] == customer["id"]
            and s["id"] != sub_id
            and s["status"] not in ("canceled", "incomplete_expired")
        }
        held = next(iter(others - {currency}), None)
        if held is not None:
            raise param_error(
                "You cannot combine currencies on a single customer. This customer has an active "
                f"subscription, subscription schedule, discount, quote, or invoice item with currency "
                f"{held}.",
                "currency",
            )
    return currency
