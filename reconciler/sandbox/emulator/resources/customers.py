"""Customers: create, retrieve, update, list."""

from __future__ import annotations

import re
import secrets
import string
import time

from ..common import EMAIL_RE, address, merge_metadata
from ..context import Ctx
from ..errors import JSON, param_error
from ..events import emit, emit_update
from ..listing import standard_routes
from ..registry import Call, Kind, register_kind, route
from ..rendering import render, snapshot


def create_customer(ctx: Ctx, p: JSON) -> JSON:
    customer: JSON = {
        "id": ctx.fresh_id("cus_", 14),
        "object": "customer",
        "address": None,
        "balance": 0,
        "business_name": None,
        "created": int(time.time()),
        "currency": None,
        "customer_account": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": None,
        "individual_name": None,
        "invoice_prefix": "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(8)),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": ctx.mode == "live",
        "metadata": {},
        "name": None,
        "next_invoice_sequence": 1,
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }
    apply_customer(ctx, customer, p)
    ctx.put("customer", customer)
    return customer


def apply_customer(ctx: Ctx, customer: JSON, p: JSON) -> None:
    """Check every change first, then apply them all (a rejected update changes nothing)."""
    changes: JSON = {}
    for key in ("business_name", "description", "individual_name", "name", "phone"):
        if key in p:
            changes[key] = p[key] or None
    if "email" in p:
        email = p["email"] or None
        if email is not None and (len(email) > 512 or not EMAIL_RE.match(email)):
            raise param_error(f"Invalid email address: {email}", "email", "email_invalid")
        changes["email"] = email
    if "balance" in p:
        changes["balance"] = p["balance"]
    if "invoice_prefix" in p:
        prefix = p["invoice_prefix"]
        if not INVOICE_PREFIX_RE.match(prefix):
            raise param_error(
                "Invalid invoice_prefix: it must be 3 to 12 uppercase letters or numbers.", "invoice_prefix"
            )
        changes["invoice_prefix"] = prefix
    if "next_invoice_sequence" in p:
        if p["next_invoice_sequence"] < 1:
            raise param_error(
                "This value must be greater than or equal to 1.",
                "next_invoice_sequence",
                "parameter_invalid_integer",
            )
        changes["next_invoice_sequence"] = p["next_invoice_sequence"]
    if "preferred_locales" in p:
        changes["preferred_locales"] = list(p["preferred_locales"] or [])
    if "tax_exempt" in p:
        changes["tax_exempt"] = p["tax_exempt"] or "none"
    if "address" in p:
        changes["address"] = address(p["address"]) if p["address"] else None
    if "shipping" in p:
        ship = p["shipping"]
        changes["shipping"] = (
            {
                "address": address(ship["address"]),
                "carrier": None,
                "name": ship["name"],
                "phone": ship.get("phone") or None,
                "tracking_number": None,
            }
            if ship
            else None
        )
    if "metadata" in p:
        changes["metadata"] = merge_metadata(customer["metadata"], p["metadata"], "metadata")
    customer.update(changes)


INVOICE_PREFIX_RE = re.compile(r"^[A-Z0-9]{3,12}$")


def _matches(obj: JSON, p: JSON) -> bool:
    return "email" not in p or obj["email"] == p["email"]  # case-sensitive, as Stripe documents


register_kind(
    Kind(
        "customer",
        "customers",
        path="/v1/customers",
        expandable={"default_source": "", "test_clock": ""},
        matches=_matches,
    )
)
standard_routes("customer")


@route("POST", "/v1/customers", "customer.create")
def _create(ctx: Ctx, call: Call) -> JSON:
    customer = create_customer(ctx, call.params)
    emit(ctx, "customer.created", "customer", customer)
    return render(ctx, "customer", customer, call.expand)


@route("POST", "/v1/customers/{id}", "customer.update")
def _update(ctx: Ctx, call: Call) -> JSON:
    customer = ctx.need("customer", call.ids[0])
    before = snapshot(ctx, "customer", customer)
    apply_customer(ctx, customer, call.params)
    emit_update(ctx, "customer", customer, before)
    return render(ctx, "customer", customer, call.expand)
