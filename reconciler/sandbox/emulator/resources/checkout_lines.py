"""A Checkout Session's line items: what a payment or subscription session sells (checked prices and
quantities in one currency, at least $0.50 in payment mode), and how Stripe lists them
(`GET /v1/checkout/sessions/{id}/line_items`, `expand[]=line_items`)."""

from __future__ import annotations

from ..common import check_currency
from ..context import Ctx
from ..errors import JSON, missing, no_such, param_error, unmodelled
from ..listing import list_page_limit
from ..rendering import list_object, render
from .invoices import line_amount
from .subscription_items import subscribable_price


def session_lines(ctx: Ctx, p: JSON, mode: str) -> tuple[list[JSON], str | None, int | None]:
    """What a new session sells: its line items (`price` id, `quantity`), currency and subtotal. A setup
    session sells nothing (no subtotal; its `currency` is given); the other modes sell their checked
    `line_items`, whose prices give the currency."""
    if mode == "setup":
        if p.get("line_items"):
            raise param_error("You can not pass `line_items` in `setup` mode.", "line_items")
        if "currency" not in p:
            # Stripe: `currency` is required in setup mode when `payment_method_types` is not set (it is
            # not modelled here, so always).
            raise missing("currency")
        return [], check_currency(p["currency"], "currency"), None
    if "currency" in p:
        raise unmodelled("currency")  # the prices' currency is the session's
    lines, currency = _line_items(ctx, p, mode)
    subtotal = sum(line_amount(ctx.acct.prices[line["price"]], line["quantity"]) for line in lines)
    if mode == "payment" and currency == "usd" and subtotal < 50:
        raise param_error(
            "The Checkout Session's total amount due must add up to at least $0.50 usd", "line_items"
        )
    return lines, currency, subtotal


def _line_items(ctx: Ctx, p: JSON, mode: str) -> tuple[list[JSON], str]:
    """The checked `line_items` of a payment or subscription session, and their one currency."""
    if not p.get("line_items"):
        raise param_error(f"`line_items` is required in `{mode}` mode.", "line_items", "parameter_missing")
    lines: list[JSON] = []
    currencies: set[str] = set()
    for i, given in enumerate(p["line_items"]):
        price, quantity = _line_item(ctx, given, i, mode)
        if mode == "subscription" and any(line["price"] == price["id"] for line in lines):
            raise param_error(
                f"Cannot add multiple subscription items with the same plan: {price['id']}", "line_items"
            )
        currencies.add(price["currency"])
        lines.append({"price": price["id"], "quantity": quantity})
    if len(currencies) > 1:
        raise param_error(
            "All line items of a Checkout Session must use the same currency; got "
            f"{', '.join(sorted(currencies))}.",
            "line_items",
        )
    return lines, currencies.pop()


def _line_item(ctx: Ctx, given: JSON, i: int, mode: str) -> tuple[JSON, int | None]:
    """Entry `i` of `line_items`: its price (recurring in subscription mode, else one-time) and its
    quantity (1…999,999; none for a metered price)."""
    param = f"line_items[{i}][price]"
    if "price" not in given:
        raise missing(param)
    if mode == "subscription":
        price = subscribable_price(ctx, given["price"], param)
        metered = price["recurring"]["usage_type"] == "metered"
    else:
        price = _one_time_price(ctx, given["price"], param)
        metered = False
    if metered and "quantity" in given:
        raise param_error(
            "Quantity should not be specified where usage_type is `metered`.",
            f"line_items[{i}][quantity]",
        )
    if not metered and "quantity" not in given:
        raise missing(f"line_items[{i}][quantity]")
    quantity = given.get("quantity")
    if quantity is not None and not 1 <= quantity <= 999_999:
        raise param_error(
            "Invalid quantity: must be between 1 and 999999.",
            f"line_items[{i}][quantity]",
            "parameter_invalid_integer",
        )
    return price, quantity


def _one_time_price(ctx: Ctx, price_id: str, param: str) -> JSON:
    price = ctx.acct.prices.get(price_id)
    if price is None:
        raise no_such("price", price_id, param, status=400)
    if not price["active"]:
        raise param_error("The price specified is inactive. This field only accepts active prices.", param)
    if price["type"] == "recurring":
        raise param_error(
            "You specified `payment` mode but passed a recurring price. Either switch to `subscription` "
            "mode or use only one-time prices.",
            param,
        )
    product = ctx.acct.products.get(price["product"])
    if product is not None and not product["active"]:
        raise param_error(
            f"The product `{product['id']}` is marked as inactive. You provided the price `{price_id}`.",
            param,
        )
    return price


def session_line_items(ctx: Ctx, session: JSON, p: JSON | None = None) -> JSON:
    """The session's line items as Stripe lists them (in the order given), paged by `limit`,
    `starting_after`, `ending_before` (the line items' ids)."""
    p = p or {}
    data = []
    for n, line in enumerate(ctx.internal(session["id"])["line_items"]):
        price = ctx.acct.prices[line["price"]]
        product = ctx.acct.products.get(price["product"])
        amount = line_amount(price, line["quantity"])
        data.append(
            {
                "id": f"li_{session['id'][-20:]}{n:04d}",
                "object": "item",
                "amount_discount": 0,
                "amount_subtotal": amount,
                "amount_tax": 0,
                "amount_total": amount,
                "currency": price["currency"],
                "description": product["name"] if product is not None else None,
                "price": render(ctx, "price", price, []),
                "quantity": line["quantity"],
            }
        )
    # Paged as `listing.list_objects` pages a kind, over a list that is not stored as one (the cursors
    # are the line items' made-up ids).
    limit = list_page_limit(p)
    ids = [item["id"] for item in data]
    for cursor in ("starting_after", "ending_before"):
        if cursor in p and p[cursor] not in ids:
            raise no_such("line_item", p[cursor], cursor, status=400)
    if "starting_after" in p:
        rest = data[ids.index(p["starting_after"]) + 1 :]
        page, has_more = rest[:limit], len(rest) > limit
    elif "ending_before" in p:
        rest = data[: ids.index(p["ending_before"])]
        page, has_more = rest[-limit:], len(rest) > limit
    else:
        page, has_more = data[:limit], len(data) > limit
    return list_object(page, f"/v1/checkout/sessions/{session['id']}/line_items", has_more=has_more)
