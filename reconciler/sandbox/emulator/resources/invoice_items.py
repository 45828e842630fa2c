"""Invoice items: one-off charges for a customer's next invoice. Create, retrieve, update, delete, list.

An item is *pending* until an invoice takes it (`invoice` set at creation, or `POST /v1/invoices` with
`pending_invoice_items_behavior=include`); it changes or goes away only while it is pending or on a draft
invoice (docs.stripe.com/api/invoiceitems/update, /delete). It is priced by `amount` (+ `currency`) or by
a one-time `pricing[price]` and `quantity`. Stripe sends `invoiceitem.created` and `invoiceitem.deleted`
(there is no `invoiceitem.updated` event type)."""

from __future__ import annotations

import time

from ..common import check_currency, merge_metadata
from ..context import Ctx
from ..errors import JSON, StripeError, missing, param_error, unmodelled
from ..events import emit
from ..listing import standard_routes
from ..registry import Call, Kind, register_kind, route
from ..rendering import render
from .invoices import line_amount, recompute_totals

MODELLED_PRICING = frozenset({"price"})


def create_item(ctx: Ctx, p: JSON) -> JSON:
    customer = ctx.need("customer", p["customer"], "customer", status=400)
    item: JSON = {
        "id": ctx.fresh_id("ii_", 24),
        "object": "invoiceitem",
        "amount": 0,
        "currency": "",
        "customer": customer["id"],
        "customer_account": None,
        "date": int(time.time()),
        "description": p.get("description") or None,
        "discountable": True,
        "discounts": [],
        "invoice": None,
        "livemode": ctx.livemode,
        "metadata": merge_metadata({}, p.get("metadata"), "metadata"),
        "net_amount": 0,
        "parent": None,
        "period": {"end": int(time.time()), "start": int(time.time())},
        "pricing": None,
        "proration": False,
        "proration_details": {"credited_items": None},
        "quantity": 1,
        "quantity_decimal": "1",
        "tax_rates": [],
        "test_clock": None,
    }
    price_item(ctx, item, p, customer, creating=True)
    invoice = None
    if "invoice" in p:
        invoice = ctx.need("invoice", p["invoice"], "invoice", status=400)
        check_draft_for(invoice, customer["id"], item["currency"])
    ctx.put("invoiceitem", item)
    emit(ctx, "invoiceitem.created", "invoiceitem", item)
    if invoice is not None:
        attach(ctx, item, invoice)
    return item


def price_item(ctx: Ctx, item: JSON, p: JSON, customer: JSON, *, creating: bool) -> None:
    """Set amount, currency, pricing and quantity from `amount`/`currency` or `pricing[price]`/`quantity`
    (checked before anything changes)."""
    pricing = p.get("pricing") or {}
    _check_pricing_params(p, pricing)
    if "price" in pricing:
        _price_by_price(ctx, item, pricing["price"], p)
    elif "amount" in p or creating:
        _price_by_amount(item, p, customer, creating=creating)
    elif "quantity" in p:
        if item["pricing"]["price_details"] is None:
            raise param_error("`quantity` applies only to an item priced by `pricing[price]`.", "quantity")
        _price_by_price(ctx, item, item["pricing"]["price_details"]["price"], {"quantity": p["quantity"]})
    item["net_amount"] = item["amount"]


def _check_pricing_params(p: JSON, pricing: JSON) -> None:
    """`pricing` holds only `price`, which excludes `amount` and `currency`."""
    for key in pricing:
        if key not in MODELLED_PRICING:
            raise unmodelled(f"pricing[{key}]")
    if "amount" in p and "price" in pricing:
        raise param_error("You may only specify one of these parameters: amount, pricing[price].", "amount")
    if "currency" in p and "price" in pricing:
        raise param_error(
            "You may not specify `currency` with `pricing[price]`: the price sets the currency.", "currency"
        )


def _price_by_price(ctx: Ctx, item: JSON, price_id: str, p: JSON) -> None:
    """`quantity` (else the item's) units of the active one-time price `price_id`, in its currency."""
    price = ctx.need("price", price_id, "pricing[price]", status=400)
    if price["type"] != "one_time":
        raise param_error(
            "The price specified is set to `type=recurring` but this field only accepts prices with "
            "`type=one_time`.",
            "pricing[price]",
        )
    if not price["active"]:
        raise param_error(
            "The price specified is inactive. This field only accepts active prices.", "pricing[price]"
        )
    quantity = int(p["quantity"] if "quantity" in p else item["quantity"])
    check_quantity(quantity)
    item["currency"] = price["currency"]
    item["quantity"] = quantity
    item["quantity_decimal"] = str(quantity)
    item["amount"] = line_amount(price, quantity)
    item["pricing"] = {
        "price_details": {"price": price["id"], "product": price["product"]},
        "type": "price_details",
        "unit_amount_decimal": price["unit_amount_decimal"],
    }


def _price_by_amount(item: JSON, p: JSON, customer: JSON, *, creating: bool) -> None:
    """One line of `amount`; its currency is set at creation only (`currency`, else the customer's)."""
    if "amount" not in p:
        raise missing("amount")
    if "quantity" in p:
        raise param_error(
            "`quantity` applies to `pricing[price]`; with `amount` the item is one line of that amount.",
            "quantity",
        )
    if creating:
        currency = p.get("currency") or customer["currency"]
        if currency is None:
            raise missing("currency")
        item["currency"] = check_currency(currency, "currency")
    elif "currency" in p:
        raise unmodelled("currency")
    item["amount"] = int(p["amount"])
    item["quantity"] = 1
    item["quantity_decimal"] = "1"
    item["pricing"] = {
        "price_details": None,
        "type": "price_details",
        "unit_amount_decimal": str(item["amount"]),
    }


def check_quantity(quantity: int) -> None:
    if quantity < 0:
        raise param_error(
            "This value must be greater than or equal to 0.", "quantity", "parameter_invalid_integer"
        )


def check_draft_for(invoice: JSON, customer: str, currency: str) -> None:
    if invoice["status"] != "draft":
        raise param_error(
            f"You can only add invoice items to draft invoices; {invoice['id']} is {invoice['status']}.",
            "invoice",
        )
    if invoice["customer"] != customer:
        raise param_error(
            f"The invoice {invoice['id']} belongs to another customer than this invoice item.", "invoice"
        )
    if invoice["lines"] and invoice["currency"] != currency:
        raise param_error(
            f"The invoice item's currency ({currency}) must match the invoice's ({invoice['currency']}).",
            "currency",
        )


def attach(ctx: Ctx, item: JSON, invoice: JSON) -> None:
    """Put `item` on the draft `invoice` as a line."""
    item["invoice"] = invoice["id"]
    if not invoice["lines"]:
        invoice["currency"] = item["currency"]
    invoice["lines"].append(line_of(ctx, item, invoice["id"]))
    recompute_totals(invoice)


def line_of(ctx: Ctx, item: JSON, invoice_id: str) -> JSON:
    return {
        "id": ctx.fresh_id("il_", 24),
        "object": "line_item",
        "amount": item["amount"],
        "currency": item["currency"],
        "description": item["description"],
        "discount_amounts": [],
        "discountable": item["discountable"],
        "discounts": [],
        "invoice": invoice_id,
        "livemode": item["livemode"],
        "metadata": dict(item["metadata"]),
        "parent": {
            "invoice_item_details": {
                "invoice_item": item["id"],
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": None,
            },
            "subscription_item_details": None,
            "type": "invoice_item_details",
        },
        "period": dict(item["period"]),
        "pretax_credit_amounts": [],
        "pricing": item["pricing"],
        "quantity": item["quantity"],
        "subtotal": item["amount"],
        "taxes": [],
    }


def line_index(invoice: JSON, item_id: str) -> int | None:
    for n, line in enumerate(invoice["lines"]):
        details = (line.get("parent") or {}).get("invoice_item_details") or {}
        if details.get("invoice_item") == item_id:
            return n
    return None


def editable_invoice(ctx: Ctx, item: JSON, doing: str) -> JSON | None:
    """The draft invoice `item` is on (None when pending); refused once that invoice is finalized."""
    if item["invoice"] is None:
        return None
    invoice = ctx.need("invoice", item["invoice"])
    if invoice["status"] != "draft":
        raise StripeError(
            400,
            f"You can only {doing} invoice items that are pending or on a draft invoice; "
            f"{item['id']} is on {invoice['id']}, which is {invoice['status']}.",
        )
    return invoice


def pending_items(ctx: Ctx, customer: str) -> list[JSON]:
    """The customer's pending items, oldest first (what an invoice including them takes)."""
    found = [
        i
        for i in ctx.acct.table("invoiceitem").values()
        if i["customer"] == customer and i["invoice"] is None
    ]
    return sorted(found, key=lambda i: ctx.store.rank(ctx.mode, i))


def _matches(obj: JSON, p: JSON) -> bool:
    return "pending" not in p or (obj["invoice"] is None) == p["pending"]


register_kind(
    Kind(
        "invoiceitem",
        "invoiceitems",
        noun="invoiceitem",
        path="/v1/invoiceitems",
        expandable={"customer": "customer", "invoice": "invoice", "test_clock": "", "discounts": ""},
        filters=("customer", "invoice"),
        matches=_matches,
    )
)
standard_routes("invoiceitem")


@route("POST", "/v1/invoiceitems", "invoiceitem.create")
def _create(ctx: Ctx, call: Call) -> JSON:
    if "customer" not in call.params:
        raise missing("customer")
    return render(ctx, "invoiceitem", create_item(ctx, call.params), call.expand)


@route("POST", "/v1/invoiceitems/{id}", "invoiceitem.update")
def _update(ctx: Ctx, call: Call) -> JSON:
    item = ctx.need("invoiceitem", call.ids[0])
    invoice = editable_invoice(ctx, item, "update")
    p = call.params
    changed = dict(item)
    price_item(ctx, changed, p, ctx.need("customer", item["customer"]), creating=False)
    if "metadata" in p:
        changed["metadata"] = merge_metadata(item["metadata"], p["metadata"], "metadata")
    if "description" in p:
        changed["description"] = p["description"] or None
    item.update(changed)
    if invoice is not None:
        n = line_index(invoice, item["id"])
        if n is not None:
            invoice["lines"][n] = {**line_of(ctx, item, invoice["id"]), "id": invoice["lines"][n]["id"]}
            recompute_totals(invoice)
    return render(ctx, "invoiceitem", item, call.expand)


@route("DELETE", "/v1/invoiceitems/{id}", "invoiceitem.delete")
def _delete(ctx: Ctx, call: Call) -> JSON:
    item = ctx.need("invoiceitem", call.ids[0])
    invoice = editable_invoice(ctx, item, "delete")
    if invoice is not None:
        n = line_index(invoice, item["id"])
        if n is not None:
            del invoice["lines"][n]
            recompute_totals(invoice)
    emit(ctx, "invoiceitem.deleted", "invoiceitem", {**item, "deleted": True})
    ctx.delete("invoiceitem", item["id"])
    return {"id": item["id"], "object": "invoiceitem", "deleted": True}
