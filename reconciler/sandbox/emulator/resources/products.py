"""Products: create (with `default_price_data`), retrieve, update, delete, list."""

from __future__ import annotations

import time

from ..common import check_descriptor, merge_metadata
from ..context import Ctx
from ..errors import JSON, StripeError, no_such
from ..events import emit
from ..listing import create_route, standard_routes, update_route
from ..params import join
from ..registry import Call, Kind, register_kind, route
from ..rendering import snapshot
from .prices import build_price, store_price


def create_product(ctx: Ctx, p: JSON) -> JSON:
    product_id = p.get("id") or ctx.fresh_id("prod_", 14)
    if product_id in ctx.acct.products:
        raise StripeError(400, "Product already exists.", code="resource_already_exists", param="id")
    now = int(time.time())
    product = new_product(ctx, product_id, p, now, "")
    price = None
    if "default_price_data" in p:
        price = build_price(ctx, p["default_price_data"], product_id, "default_price_data")
        product["default_price"] = price["id"]
    ctx.put("product", product)
    if price is not None:
        store_price(ctx, price)
    emit(ctx, "product.created", "product", product)
    if price is not None:
        emit(ctx, "price.created", "price", price)
    return product


def new_product(ctx: Ctx, product_id: str, p: JSON, now: int, prefix: str) -> JSON:
    metadata = merge_metadata({}, p.get("metadata"), join(prefix, "metadata"))
    descriptor = p.get("statement_descriptor")
    if descriptor is not None:
        check_descriptor(descriptor, join(prefix, "statement_descriptor"))
    return {
        "id": product_id,
        "object": "product",
        "active": p.get("active", True),
        "created": now,
        "default_price": None,
        "description": p.get("description") or None,
        "images": list(p.get("images") or []),
        "livemode": ctx.mode == "live",
        "marketing_features": [{"name": f.get("name")} for f in p.get("marketing_features") or []],
        "metadata": metadata,
        "name": p["name"],
        "package_dimensions": p.get("package_dimensions") or None,
        "shippable": p.get("shippable"),
        "statement_descriptor": descriptor,
        "tax_code": p.get("tax_code") or None,
        "type": p.get("type", "service"),
        "unit_label": p.get("unit_label") or None,
        "updated": now,
        "url": p.get("url") or None,
    }


def update_product(ctx: Ctx, product: JSON, p: JSON) -> None:
    changes: JSON = {}
    if "default_price" in p:
        changes["default_price"] = _checked_default_price(ctx, product, p["default_price"])
    for key in ("active", "name", "shippable"):
        if key in p:
            changes[key] = p[key]
    for key in ("description", "tax_code", "unit_label", "url", "package_dimensions"):
        if key in p:
            changes[key] = p[key] or None
    if "images" in p:
        changes["images"] = list(p["images"] or [])
    if "marketing_features" in p:
        changes["marketing_features"] = [{"name": f.get("name")} for f in p["marketing_features"] or []]
    if "statement_descriptor" in p:
        check_descriptor(p["statement_descriptor"], "statement_descriptor")
        changes["statement_descriptor"] = p["statement_descriptor"]
    if "metadata" in p:
        changes["metadata"] = merge_metadata(product["metadata"], p["metadata"], "metadata")
    product.update(changes)
    product["updated"] = max(int(time.time()), int(product["updated"]))


def _checked_default_price(ctx: Ctx, product: JSON, price_id: str) -> str | None:
    """A product's default price: an existing, active price of that product; `""` unsets it."""
    if price_id == "":
        return None
    price = ctx.acct.prices.get(price_id)
    if price is None:
        raise no_such("price", price_id, "default_price", status=400)
    if price["product"] != product["id"]:
        raise StripeError(
            400,
            f"The price `{price_id}` does not belong to product `{product['id']}`; a product's "
            "default price must be one of its own prices.",
            param="default_price",
        )
    if not price["active"]:
        raise StripeError(
            400,
            f"The price `{price_id}` is archived (inactive) and cannot be set as the default "
            "price of a product.",
            param="default_price",
        )
    return price_id


def delete_product(ctx: Ctx, product: JSON) -> JSON:
    if any(price["product"] == product["id"] for price in ctx.acct.prices.values()):
        raise StripeError(
            400, "This product cannot be deleted because it has one or more user-created prices."
        )
    ctx.delete("product", product["id"])
    return {"id": product["id"], "object": "product", "deleted": True}


def _matches(obj: JSON, p: JSON) -> bool:
    return "ids" not in p or obj["id"] in p["ids"]


register_kind(
    Kind(
        "product",
        "products",
        path="/v1/products",
        expandable={"default_price": "price", "tax_code": ""},
        filters=("shippable", "url", "type"),
        matches=_matches,
    )
)
standard_routes("product")
create_route("product", create_product)
update_route("product", update_product, incidental=("updated",))


@route("DELETE", "/v1/products/{id}", "product.delete")
def _delete(ctx: Ctx, call: Call) -> JSON:
    product = ctx.need("product", call.ids[0])
    frozen = snapshot(ctx, "product", product)
    deleted = delete_product(ctx, product)
    emit(ctx, "product.deleted", "product", product, frozen=frozen)
    return deleted
