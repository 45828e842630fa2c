"""Customers: create (with a `payment_method` to attach), retrieve, update (the default payment method
of invoices), delete (their subscriptions canceled), list."""

from __future__ import annotations

import re
import secrets
import string
import time

import stripe

from ..common import EMAIL_RE, address, merge_metadata
from ..context import Ctx
from ..errors import JSON, no_such, param_error, unmodelled
from ..events import emit
from ..listing import standard_routes, update_route
from ..params import PARAM_SPECS, spec_of
from ..registry import Call, Kind, register_kind, route
from ..rendering import render, snapshot
from .payment_methods import attach_method, check_attachable, resolve_method
from .subscriptions import cancel_subscription


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


def _default_method(
    ctx: Ctx, settings: JSON, customer: JSON | None, attached: JSON | None = None
) -> str | None:
    """The checked `invoice_settings[default_payment_method]`: a PaymentMethod attached to the customer
    (or the one attached by this request). None when not given."""
    ref = settings.get("default_payment_method")
    if not ref:
        return None
    param = "invoice_settings[default_payment_method]"
    if attached is not None and ref == attached["id"]:
        return str(ref)
    method = ctx.get("payment_method", ref)
    if method is None:
        raise no_such("PaymentMethod", ref, param, status=400)
    if customer is None or method["customer"] != customer["id"]:
        raise param_error(
            f"The customer does not have a payment method with the ID {ref}. The payment method must be "
            "attached to the customer.",
            param,
        )
    return str(method["id"])


def apply_customer(ctx: Ctx, customer: JSON, p: JSON) -> None:
    """Check every change first, then apply them all (a rejected update changes nothing)."""
    changes: JSON = {**_profile_changes(p), **_numbering_changes(p), **_address_changes(p)}
    if "metadata" in p:
        changes["metadata"] = merge_metadata(customer["metadata"], p["metadata"], "metadata")
    if "invoice_settings" in p:
        changes["invoice_settings"] = _invoice_settings(ctx, customer, p["invoice_settings"])
    customer.update(changes)


def _profile_changes(p: JSON) -> JSON:
    """Who the customer is and how it is written to: names, description, phone, the checked email,
    preferred locales and tax exemption (`""` unsets)."""
    changes: JSON = {}
    for key in ("business_name", "description", "individual_name", "name", "phone"):
        if key in p:
            changes[key] = p[key] or None
    if "email" in p:
        email = p["email"] or None
        if email is not None and (len(email) > 512 or not EMAIL_RE.match(email)):
            raise param_error(f"Invalid email address: {email}", "email", "email_invalid")
        changes["email"] = email
    if "preferred_locales" in p:
        changes["preferred_locales"] = list(p["preferred_locales"] or [])
    if "tax_exempt" in p:
        changes["tax_exempt"] = p["tax_exempt"] or "none"
    return changes


def _numbering_changes(p: JSON) -> JSON:
    """The balance and the checked invoice numbering: `invoice_prefix` and `next_invoice_sequence`."""
    changes: JSON = {}
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
    return changes


def _address_changes(p: JSON) -> JSON:
    """The billing `address` and the `shipping` details (`""` unsets either)."""
    changes: JSON = {}
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
    return changes


def _invoice_settings(ctx: Ctx, customer: JSON, given: JSON | None) -> JSON:
    """The customer's `invoice_settings` after the update: only `default_payment_method` is modelled."""
    settings = dict(given or {})
    for key in settings:
        if key != "default_payment_method":
            raise unmodelled(f"invoice_settings[{key}]")
    changed = dict(customer["invoice_settings"])
    if "default_payment_method" in settings:
        changed["default_payment_method"] = _default_method(ctx, settings, customer)
    return changed


INVOICE_PREFIX_RE = re.compile(r"^[A-Z0-9]{3,12}$")


# Declared as every Kind is (products.py alike): the registry's form, this resource's fields.
register_kind(
    Kind(
        "customer",
        "customers",
        path="/v1/customers",
        expandable={"default_source": "", "test_clock": ""},
        filters=("email",),  # case-sensitive, as Stripe documents
    )
)
standard_routes("customer", retrieve=False)
PARAM_SPECS["customer.delete"] = spec_of(stripe.params.CustomerDeleteParams)


def deleted_customer(customer_id: str) -> JSON:
    return {"id": customer_id, "object": "customer", "deleted": True}


@route("POST", "/v1/customers", "customer.create")
def _create(ctx: Ctx, call: Call) -> JSON:
    """With `payment_method`, that PaymentMethod is attached (a `pm_card_*` id: a new one), and
    `invoice_settings[default_payment_method]` may name it by the id given."""
    p = dict(call.params)
    ref = p.pop("payment_method", None)
    settings = dict(p.pop("invoice_settings", None) or {})
    for key in settings:
        if key != "default_payment_method":
            raise unmodelled(f"invoice_settings[{key}]")
    scratch: JSON = {"metadata": {}, "invoice_settings": {}}
    apply_customer(ctx, scratch, p)  # every check before anything is made
    method = resolve_method(ctx, ref, "payment_method") if ref else None
    if method is not None:
        check_attachable(ctx, method)
        if settings.get("default_payment_method") == ref:
            settings["default_payment_method"] = method["id"]
    default = _default_method(ctx, settings, None, attached=method)
    customer = create_customer(ctx, p)
    customer["invoice_settings"]["default_payment_method"] = default
    emit(ctx, "customer.created", "customer", customer)
    if method is not None:
        attach_method(ctx, method, customer)
    return render(ctx, "customer", customer, call.expand)


update_route("customer", apply_customer)


@route("GET", "/v1/customers/{id}", "customer.retrieve")
def _retrieve(ctx: Ctx, call: Call) -> JSON:
    customer = ctx.get("customer", call.ids[0])
    if customer is None and ctx.acct.internal.get(call.ids[0], {}).get("deleted_customer"):
        return deleted_customer(call.ids[0])  # Stripe still answers for a deleted customer
    return render(ctx, "customer", ctx.need("customer", call.ids[0]), call.expand)


@route("DELETE", "/v1/customers/{id}", "customer.delete")
def _delete(ctx: Ctx, call: Call) -> JSON:
    """Its subscriptions end now (customer.subscription.deleted each), its payment methods are
    detached, then the customer goes (customer.deleted with its last state)."""
    customer = ctx.need("customer", call.ids[0])
    for sub in sorted(ctx.acct.subscriptions.values(), key=lambda s: ctx.store.rank(ctx.mode, s)):
        if sub["customer"] == customer["id"] and sub["status"] not in ("canceled", "incomplete_expired"):
            cancel_subscription(ctx, sub, {})
            emit(ctx, "customer.subscription.deleted", "subscription", sub)
    for method in ctx.acct.payment_methods.values():
        if method["customer"] == customer["id"]:
            method["customer"] = None
            ctx.internal(method["id"])["used"] = True
    frozen = snapshot(ctx, "customer", customer)
    ctx.delete("customer", customer["id"])
    ctx.internal(customer["id"])["deleted_customer"] = True
    emit(ctx, "customer.deleted", "customer", customer, frozen=frozen)
    return deleted_customer(customer["id"])
