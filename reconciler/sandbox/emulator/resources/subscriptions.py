"""Subscriptions: create (and the first invoice's payment), retrieve, update, cancel, list; how a
subscription and its items render. The items' own rules are `subscription_items`."""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any

from ..common import merge_metadata
from ..context import Ctx
from ..errors import JSON, StripeError, missing, param_error, unmodelled
from ..events import emit, emit_update
from ..listing import create_route, standard_routes, update_route
from ..registry import KINDS, Call, Kind, register_kind, route
from ..rendering import list_object, ordered, render, snapshot
from .invoices import build_invoice, finalize_invoice
from .subscription_items import check_items, created_items, updated_items

if TYPE_CHECKING:
    from .payments import Payment

# Stripe's answer when neither the invoice nor the customer has a payment method; `invoicing` pays
# invoices with the same answer.
NO_PAYMENT_METHOD = (
    "This customer has no attached payment source or default payment method. Please consider adding a "
    "default payment method. For more information, visit "
    "https://stripe.com/docs/billing/subscriptions/payment-methods-setting#payment-method-priority."
)


def create_subscription(ctx: Ctx, p: JSON) -> JSON:
    if "customer" not in p:
        raise missing("customer")
    customer = ctx.need("customer", p["customer"], "customer", status=400)
    if not p.get("items"):
        raise missing("items")
    now = int(time.time())
    sub_id = ctx.fresh_id("sub_", 24)
    items = created_items(ctx, sub_id, p["items"], now)
    currency = check_items(ctx, items, customer, None)
    behavior = p.get("payment_behavior", "allow_incomplete")
    if behavior == "pending_if_incomplete":
        raise param_error(
            "payment_behavior=pending_if_incomplete can only be used when updating a subscription.",
            "payment_behavior",
        )
    payment_method = p.get("default_payment_method") or None
    if payment_method is not None:
        check_customer_method(ctx, payment_method, customer["id"])
    sub = build_subscription(
        ctx, sub_id, customer, items, currency, now, p.get("metadata"), p.get("description")
    )
    sub["default_payment_method"] = payment_method
    settings = p.get("payment_settings") or {}
    for key in settings:
        if key != "save_default_payment_method":
            raise unmodelled(f"payment_settings[{key}]")
    if "save_default_payment_method" in settings:
        sub["payment_settings"]["save_default_payment_method"] = settings["save_default_payment_method"]
    set_cancel_at_period_end(ctx, sub, bool(p.get("cancel_at_period_end", False)), now)
    undo = Undo(ctx, customer) if behavior == "error_if_incomplete" else None
    if customer["currency"] is None:  # the first subscription sets it: Stripe sends customer.updated
        before = snapshot(ctx, "customer", customer)
        customer["currency"] = currency
        emit_update(ctx, "customer", customer, before)
    start_subscription(ctx, sub, behavior, undo)
    return sub


def start_subscription(ctx: Ctx, sub: JSON, behavior: str, undo: Undo | None) -> None:
    """The first invoice, as Stripe makes it (docs.stripe.com/billing/subscriptions/overview, "Payment
    behavior"): created, finalized, then charged to the subscription's default payment method, else the
    customer's (`allow_incomplete`, `error_if_incomplete`), or left open for the client to confirm
    (`default_incomplete`). Paid → `active`; otherwise `incomplete`, or for `error_if_incomplete` nothing
    at all and Stripe's error. `customer.subscription.created` carries the state the request ends in."""
    from .invoicing import collect, payment_method_for  # invoicing charges subscriptions' invoices too

    now = int(sub["created"])
    ctx.put("subscription", sub)
    created = emit(ctx, "customer.subscription.created", "subscription", sub)
    invoice = build_invoice(ctx, sub, "subscription_create", now, now)
    emit(ctx, "invoice.created", "invoice", invoice)
    finalize_invoice(ctx, invoice)  # pays it when nothing is due
    if invoice["status"] != "paid":
        method = None if behavior == "default_incomplete" else payment_method_for(ctx, invoice, None)
        if method is None and undo is not None:
            undo.restore()
            raise StripeError(400, NO_PAYMENT_METHOD)
        payment = collect(ctx, invoice, method)
        if invoice["status"] != "paid" and undo is not None:
            undo.restore()
            raise first_payment_error(payment)
    sub["status"] = "active" if invoice["status"] == "paid" else "incomplete"
    created["data"]["object"] = snapshot(ctx, "subscription", sub)


REQUIRES_ACTION = (
    "Payment for this subscription requires additional user action before it can be completed successfully."
)


def first_payment_error(payment: Payment) -> StripeError:
    """`error_if_incomplete`'s 402 when the first invoice could not be paid (nothing was created)."""
    if payment.intent["status"] == "requires_action":
        return StripeError(
            402, REQUIRES_ACTION, type_="card_error", code="subscription_payment_intent_requires_action"
        )
    error = dict(payment.error or {})
    return StripeError(
        402,
        str(error.get("message", "Your card was declined.")),
        type_="card_error",
        code=error.get("code", "card_declined"),
        extra={k: error[k] for k in ("decline_code", "advice_code") if error.get(k) is not None},
    )


class Undo:
    """What an `error_if_incomplete` create must take back when the first payment fails: every object
    made since (invoice, PaymentIntent, Charge, PaymentMethod...) and the customer's invoice sequence and
    currency. Its events are discarded with the error."""

    def __init__(self, ctx: Ctx, customer: JSON) -> None:
        self.ctx = ctx
        self.customer = customer
        self.saved = copy.deepcopy(customer)
        self.ids = {kind: set(ctx.acct.table(kind)) for kind in KINDS if kind != "event"}

    def restore(self) -> None:
        for kind, before in self.ids.items():
            for obj_id in set(self.ctx.acct.table(kind)) - before:
                self.ctx.delete(kind, obj_id)
        self.customer.clear()
        self.customer.update(self.saved)


def check_customer_method(ctx: Ctx, method_id: str, customer_id: str) -> None:
    method = ctx.get("payment_method", method_id)
    if method is None or method["customer"] != customer_id:
        raise param_error(
            f"The customer does not have a payment method with the ID {method_id}. The payment method must "
            "be attached to the customer.",
            "default_payment_method",
        )


def build_subscription(
    ctx: Ctx,
    sub_id: str,
    customer: JSON,
    items: list[JSON],
    currency: str,
    now: int,
    metadata: Any,
    description: str | None,
    metadata_param: str = "metadata",
) -> JSON:
    """A new active subscription of `items` (not stored): the caller sets its payment method and
    starts it."""
    sub: JSON = {
        "id": sub_id,
        "object": "subscription",
        "billing_cycle_anchor": now,
        # Flexible is the default billing mode of subscriptions created since API 2025-09-30.clover.
        "billing_mode": {
            "flexible": {"proration_discounts": "included"},
            "type": "flexible",
            "updated_at": now,
        },
        "created": now,
        "currency": currency,
        "customer": customer["id"],
        "description": description,
        "items": items,  # stored with price ids; rendered as a list object with full prices
        "livemode": ctx.mode == "live",
        "metadata": merge_metadata({}, metadata, metadata_param),
        "start_date": now,
        "status": "active",
    }
    return sub | _subscription_defaults()


def _subscription_defaults() -> JSON:
    """What a new subscription starts with: charged automatically, nothing canceled, pending or
    invoiced yet, and the features not modelled (tax, discounts, trials, schedules, Connect...) off."""
    return {
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor_config": None,
        "billing_schedules": [],
        "billing_thresholds": None,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically",
        "customer_account": None,
        "days_until_due": None,
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "discounts": [],
        "ended_at": None,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "latest_invoice": None,
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "schedule": None,
        "test_clock": None,
        "transfer_data": None,
        "trial_end": None,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": None,
    }


def set_cancel_at_period_end(ctx: Ctx, sub: JSON, flag: bool, now: int) -> None:
    sub["cancel_at_period_end"] = flag
    if flag:
        sub["cancel_at"] = max(int(i["current_period_end"]) for i in sub["items"])
        sub["canceled_at"] = now
        sub["cancellation_details"] = {**sub["cancellation_details"], "reason": "cancellation_requested"}
    else:
        sub["cancel_at"] = None
        sub["canceled_at"] = None
        sub["cancellation_details"] = {"comment": None, "feedback": None, "reason": None}


# Stripe's pending updates take only these (docs.stripe.com/billing/subscriptions/pending-updates-reference;
# of them the emulator models items and proration_behavior).
PENDING_UPDATE_PARAMS = frozenset({"items", "proration_behavior", "payment_behavior", "expand"})


def update_subscription(ctx: Ctx, sub: JSON, p: JSON) -> None:
    """An update never makes an invoice here (prorations are not modelled), so no update needs a
    payment: with every `payment_behavior` the change applies at once (`pending_update` stays null)."""
    _check_updatable(ctx, sub, p)
    now = int(time.time())
    items = updated_items(ctx, sub, p["items"], now) if "items" in p else [dict(i) for i in sub["items"]]
    currency = check_items(ctx, items, ctx.acct.customers.get(sub["customer"]), sub["id"])
    metadata = (
        merge_metadata(sub["metadata"], p["metadata"], "metadata") if "metadata" in p else sub["metadata"]
    )
    # All checked: apply.
    sub["items"] = items
    sub["currency"] = currency
    sub["metadata"] = metadata
    if "description" in p:
        sub["description"] = p["description"] or None
    if "default_payment_method" in p:
        sub["default_payment_method"] = p["default_payment_method"] or None
    if "cancel_at_period_end" in p:
        set_cancel_at_period_end(ctx, sub, p["cancel_at_period_end"], now)
    elif sub["cancel_at_period_end"]:
        sub["cancel_at"] = max(int(i["current_period_end"]) for i in items)


def _check_updatable(ctx: Ctx, sub: JSON, p: JSON) -> None:
    """A canceled subscription takes only metadata; a pending update only what Stripe's pending
    updates take; a new default payment method must be the customer's."""
    if sub["status"] == "canceled" and set(p) - {"metadata"}:
        raise StripeError(
            400, "A canceled subscription can only update its cancellation_details and metadata."
        )
    if p.get("payment_behavior") == "pending_if_incomplete":
        for name in sorted(set(p) - PENDING_UPDATE_PARAMS):
            raise param_error(
                f"`{name}` cannot be updated with `payment_behavior=pending_if_incomplete`: pending updates "
                f"only take {', '.join(sorted(PENDING_UPDATE_PARAMS - {'payment_behavior', 'expand'}))}.",
                name,
            )
    if p.get("default_payment_method"):
        check_customer_method(ctx, p["default_payment_method"], sub["customer"])


def cancel_subscription(ctx: Ctx, sub: JSON, p: JSON) -> None:
    if sub["status"] == "canceled":
        raise StripeError(
            400,
            f"The subscription `{sub['id']}` has already been canceled; a canceled subscription can "
            "only update its cancellation_details and metadata.",
        )
    now = int(time.time())
    details = p.get("cancellation_details") or {}
    sub["status"] = "canceled"
    sub["canceled_at"] = now
    sub["ended_at"] = now
    sub["cancellation_details"] = {
        "comment": details.get("comment") or None,
        "feedback": details.get("feedback") or None,
        "reason": "cancellation_requested",
    }


def set_status(ctx: Ctx, sub: JSON, status: str) -> None:
    if sub["status"] == status:
        return
    before = snapshot(ctx, "subscription", sub)
    sub["status"] = status
    emit_update(ctx, "subscription", sub, before)


def render_item(ctx: Ctx, item: JSON, expand: list[str], depth: int) -> JSON:
    out = dict(item)
    price_expand: list[str] = []
    for path in expand:
        head, _, rest = path.partition(".")
        if head != "price" or not rest:  # the price is always a full object, never expandable
            raise param_error(f"This property cannot be expanded ({path}).", "expand")
        price_expand.append(rest)
    price = ctx.acct.prices[item["price"]]
    out["price"] = render(ctx, "price", price, price_expand, depth + 1)
    out["plan"] = plan_of(price)
    return ordered(out)


def plan_of(price: JSON) -> JSON:
    """The legacy `plan` view of a recurring price, which subscription items still carry."""
    recurring = price["recurring"]
    return {
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": price["billing_scheme"],
        "created": price["created"],
        "currency": price["currency"],
        "interval": recurring["interval"],
        "interval_count": recurring["interval_count"],
        "livemode": price["livemode"],
        "metadata": price["metadata"],
        "meter": recurring["meter"],
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": price["tiers_mode"],
        "transform_usage": price["transform_quantity"],
        "trial_period_days": recurring["trial_period_days"],
        "usage_type": recurring["usage_type"],
    }


def _render(ctx: Ctx, obj: JSON, out: JSON, groups: dict[str, list[str]], depth: int) -> dict[str, list[str]]:
    """Items are stored with price ids and shown as a list object with full prices (`items.data.x`)."""
    item_expand: list[str] = []
    for rest in groups.pop("items", []):
        if not rest.startswith("data."):
            raise param_error(
                f"This property cannot be expanded (items.{rest}). You may want to try "
                f"expanding 'items.data.{rest}' instead.",
                "expand",
            )
        item_expand.append(rest[len("data.") :])
    out["items"] = list_object(
        [render_item(ctx, i, item_expand, depth + 1) for i in obj["items"]],
        f"/v1/subscription_items?subscription={obj['id']}",
        total_count=True,
    )
    return groups


def _matches(obj: JSON, p: JSON) -> bool:
    status = p.get("status")
    if status is None and obj["status"] in ("canceled", "incomplete_expired"):
        return False
    if status == "ended" and obj["status"] not in ("canceled", "incomplete_expired"):
        return False
    if status not in (None, "all", "ended") and obj["status"] != status:
        return False
    if "customer" in p and obj["customer"] != p["customer"]:
        return False
    return "price" not in p or any(item["price"] == p["price"] for item in obj["items"])


register_kind(
    Kind(
        "subscription",
        "subscriptions",
        event_prefix="customer.subscription",
        path="/v1/subscriptions",
        expandable={
            "customer": "customer",
            "application": "",
            "default_payment_method": "",
            "default_source": "",
            "latest_invoice": "invoice",
            "on_behalf_of": "",
            "pending_setup_intent": "",
            "schedule": "",
            "test_clock": "",
        },
        matches=_matches,
        render=_render,
    )
)
standard_routes("subscription")
create_route("subscription", create_subscription)
update_route("subscription", update_subscription)


@route("POST", "/v1/subscriptions/{id}/resume", "subscription.resume")
def _resume(ctx: Ctx, call: Call) -> JSON:
    """Only a `paused` subscription resumes. Stripe pauses one when its trial ends without a payment
    method (`trial_settings.end_behavior.missing_payment_method=pause`); trials are not modelled, so no
    subscription here is ever paused and resuming answers Stripe's refusal."""
    sub = ctx.need("subscription", call.ids[0])
    if sub["status"] != "paused":
        raise StripeError(
            400,
            f"Subscription {sub['id']} is {sub['status']}, not paused: only a paused subscription can be "
            "resumed.",
        )
    raise unmodelled("resume")  # unreachable today: kept loud should pausing ever be modelled


@route("DELETE", "/v1/subscriptions/{id}", "subscription.cancel")
def _cancel(ctx: Ctx, call: Call) -> JSON:
    sub = ctx.need("subscription", call.ids[0])
    cancel_subscription(ctx, sub, call.params)
    emit(ctx, "customer.subscription.deleted", "subscription", sub)
    return render(ctx, "subscription", sub, call.expand)
