"""Invoices through the API: create (from pending invoice items), update and delete drafts, finalize,
pay, void, mark uncollectible, and their lines (the Invoice object and its states: `invoices`).

Stripe's lifecycle (docs.stripe.com/invoicing/overview): `draft` → finalize → `open` (a `number`, a
hosted page) → `paid` | `void` | `uncollectible`. `/pay` finalizes a draft first, then charges the
given payment method, else the invoice's `default_payment_method`, else its subscription's, else the
customer's `invoice_settings.default_payment_method`; a decline answers 402 `card_error` while the
attempt (PaymentIntent, Charge, `invoice.payment_failed`) stands. `auto_advance` is stored but nothing
advances on its own here (Stripe finalizes about an hour later and retries payments)."""

from __future__ import annotations

import time

from ..common import merge_metadata
from ..context import Ctx
from ..errors import JSON, StripeError, missing, param_error
from ..events import emit, emit_update
from ..listing import create_route, update_route
from ..registry import Call, route
from ..rendering import list_object, ordered, render, snapshot
from .invoice_items import attach, pending_items
from .invoices import (
    blank_invoice,
    finalize_invoice,
    mark_failed,
    mark_paid,
    set_confirmation_secret,
)
from .payments import (
    AFTER_AUTHENTICATION,
    AFTER_CONFIRMATION,
    Payment,
    attempt_payment,
    default_payment_method,
)
from .subscriptions import NO_PAYMENT_METHOD, set_status

REQUIRES_ACTION = (
    "This payment requires additional user action before it can be completed successfully. Payment can "
    "be completed using the PaymentIntent associated with the invoice. For more details see: "
    "https://stripe.com/docs/billing/subscriptions/overview#requires-action"
)


# Begins as `create_subscription` does (an existing customer is required); what follows differs.
def create_invoice(ctx: Ctx, p: JSON) -> JSON:
    if "customer" not in p:
        raise missing("customer")
    customer = ctx.need("customer", p["customer"], "customer", status=400)
    parent = None
    if "subscription" in p:
        sub = ctx.need("subscription", p["subscription"], "subscription", status=400)
        if sub["customer"] != customer["id"]:
            raise param_error(
                f"The subscription {sub['id']} belongs to another customer than {customer['id']}.",
                "subscription",
            )
        parent = {
            "quote_details": None,
            "subscription_details": {"metadata": dict(sub["metadata"]), "subscription": sub["id"]},
            "type": "subscription_details",
        }
    now = int(time.time())
    invoice = blank_invoice(
        ctx,
        customer,
        currency=customer["currency"] or "usd",
        reason="manual",
        parent=parent,
        period=(now, now),
    )
    apply_settings(ctx, invoice, p)
    items = (
        pending_items(ctx, customer["id"])
        if p.get("pending_invoice_items_behavior", "exclude") == "include" and parent is None
        else []
    )
    currencies = {i["currency"] for i in items}
    if len(currencies) > 1:
        raise param_error(
            "The customer's pending invoice items have several currencies "
            f"({', '.join(sorted(currencies))}); an invoice has one.",
            "pending_invoice_items_behavior",
        )
    ctx.put("invoice", invoice)
    for item in items:
        attach(ctx, item, invoice)
    emit(ctx, "invoice.created", "invoice", invoice)
    return invoice


def apply_settings(ctx: Ctx, invoice: JSON, p: JSON) -> None:
    """collection_method, days_until_due, auto_advance, default_payment_method, description, metadata:
    all checked, then set."""
    info = ctx.internal(invoice["id"])  # days_until_due: a parameter, not a field of the Invoice
    method = p.get("collection_method", invoice["collection_method"])
    days = p.get("days_until_due", info.get("days_until_due") if "collection_method" not in p else None)
    if method == "send_invoice" and days is None:
        raise param_error(
            "Invoices with `collection_method=send_invoice` need `days_until_due` (or `due_date`).",
            "days_until_due",
        )
    if method == "charge_automatically" and days is not None:
        raise param_error(
            "`days_until_due` can only be set when `collection_method` is `send_invoice`.", "days_until_due"
        )
    if days is not None and not 0 <= days <= 3650:
        raise param_error("`days_until_due` must be between 0 and 3650.", "days_until_due")
    pm = p.get("default_payment_method", invoice["default_payment_method"]) or None
    if pm is not None and pm != invoice["default_payment_method"]:
        method_obj = ctx.need("payment_method", pm, "default_payment_method", status=400)
        if method_obj["customer"] != invoice["customer"]:
            raise param_error(
                f"The PaymentMethod {pm} is not attached to the invoice's customer {invoice['customer']}.",
                "default_payment_method",
            )
    metadata = merge_metadata(invoice["metadata"], p["metadata"], "metadata") if "metadata" in p else None
    invoice["collection_method"] = method
    info["days_until_due"] = days
    invoice["default_payment_method"] = pm
    if "auto_advance" in p:
        invoice["auto_advance"] = p["auto_advance"]
    if "description" in p:
        invoice["description"] = p["description"] or None
    if metadata is not None:
        invoice["metadata"] = metadata


# Fields a finalized invoice may still change (docs.stripe.com/api/invoices/update: "once an invoice is
# finalized, only some fields can be updated").
FINALIZED_UPDATABLE = frozenset({"auto_advance", "description", "metadata", "expand"})


def update_invoice(ctx: Ctx, invoice: JSON, p: JSON) -> None:
    if invoice["status"] != "draft":
        if invoice["status"] in ("paid", "void") and set(p) - {"metadata"}:
            raise StripeError(
                400, f"You can only update the metadata of a {invoice['status']} invoice ({invoice['id']})."
            )
        for name in p:
            if name not in FINALIZED_UPDATABLE:
                raise param_error(
                    f"You can only update `{name}` on a draft invoice; {invoice['id']} is "
                    f"{invoice['status']}.",
                    name,
                    "invoice_not_editable",
                )
    apply_settings(ctx, invoice, p)


def need_status(invoice: JSON, allowed: tuple[str, ...], action: str) -> None:
    if invoice["status"] not in allowed:
        raise StripeError(
            400,
            f"You can only {action} {' or '.join(allowed)} invoices; {invoice['id']} is {invoice['status']}.",
        )


def payment_method_for(ctx: Ctx, invoice: JSON, given: str | None) -> str | None:
    """Stripe's order: the one given, the invoice's, its subscription's, the customer's default."""
    if given:
        return given
    if invoice["default_payment_method"]:
        return str(invoice["default_payment_method"])
    sub_id = ((invoice.get("parent") or {}).get("subscription_details") or {}).get("subscription")
    sub = ctx.get("subscription", sub_id) if sub_id else None
    if sub is not None and sub["default_payment_method"]:
        return str(sub["default_payment_method"])
    return default_payment_method(ctx, invoice["customer"])


def collect(ctx: Ctx, invoice: JSON, payment_method: str | None, *, off_session: bool = False) -> Payment:
    """One payment attempt on the open `invoice` (its events, then the invoice's): paid, failed or
    waiting for authentication. With no payment method the PaymentIntent waits for one and nothing is
    attempted (no invoice event)."""
    payment = attempt_payment(
        ctx,
        amount=int(invoice["amount_remaining"]),
        currency=invoice["currency"],
        customer=invoice["customer"],
        payment_method=payment_method,
        description=invoice["description"],
        invoice=invoice["id"],
        off_session=off_session,
    )
    attach_payment(ctx, invoice, payment)
    return payment


def attach_payment(ctx: Ctx, invoice: JSON, payment: Payment) -> None:
    """`payment` pays the open `invoice` (one of its `payments`, its `confirmation_secret`) and the
    invoice follows it. Also for a PaymentIntent made before its invoice: Checkout's since
    2025-03-31.basil, which charges first and creates the subscription after."""
    ctx.internal(payment.intent["id"])["invoice"] = invoice["id"]
    set_confirmation_secret(ctx, invoice, payment.intent)
    follow_payment(ctx, invoice, payment)


def follow_payment(ctx: Ctx, invoice: JSON, payment: Payment) -> None:
    """The invoice after a payment attempt on it, and its subscription: paid (an `incomplete`,
    `past_due` or `unpaid` subscription becomes `active`), failed (declined, or 3-D Secure failed: an
    active subscription's renewal makes it `past_due`), or waiting for authentication. No attempt (no
    payment method): nothing."""
    status = payment.intent["status"]
    if status == "succeeded":
        mark_paid(ctx, invoice)
    elif status == "requires_action":
        mark_failed(ctx, invoice, action_required=True)
    elif payment.error is not None:
        mark_failed(ctx, invoice, action_required=False)
    else:
        return
    sub_id = ((invoice.get("parent") or {}).get("subscription_details") or {}).get("subscription")
    sub = ctx.get("subscription", sub_id) if sub_id else None
    if sub is None:
        return
    if invoice["status"] == "paid":
        _save_payment_method(ctx, sub, payment)
    if invoice["status"] == "paid" and sub["status"] in ("incomplete", "past_due", "unpaid"):
        set_status(ctx, sub, "active")
    elif (
        invoice["status"] != "paid"
        and invoice["billing_reason"] != "subscription_create"
        and (sub["status"] == "active")
    ):
        set_status(ctx, sub, "past_due")


def _save_payment_method(ctx: Ctx, sub: JSON, payment: Payment) -> None:
    """`payment_settings.save_default_payment_method=on_subscription`: the card a subscription's
    invoice was paid with becomes the subscription's default payment method, attached to its customer
    (docs.stripe.com/api/subscriptions/create#create_subscription-payment_settings)."""
    method_id = payment.intent.get("payment_method")
    if sub["payment_settings"].get("save_default_payment_method") != "on_subscription" or not method_id:
        return
    method = ctx.get("payment_method", str(method_id))
    customer = ctx.get("customer", str(sub["customer"]))
    if method is None or customer is None or sub["default_payment_method"] == method["id"]:
        return
    if method["customer"] is None:  # saved by this very payment (setup_future_usage), not reused
        method["customer"] = customer["id"]
        emit(ctx, "payment_method.attached", "payment_method", method)
    before = snapshot(ctx, "subscription", sub)
    sub["default_payment_method"] = method["id"]
    emit_update(ctx, "subscription", sub, before)


def settle(ctx: Ctx, payment: Payment) -> None:
    """An invoice's PaymentIntent confirmed outside `/pay` (the client confirming the intent of
    `confirmation_secret`, 3-D Secure completed): the invoice and its subscription follow."""
    invoice_id = ctx.internal(payment.intent["id"]).get("invoice")
    invoice = ctx.get("invoice", str(invoice_id)) if invoice_id else None
    if invoice is not None and invoice["status"] == "open":
        follow_payment(ctx, invoice, payment)


AFTER_AUTHENTICATION.append(settle)
AFTER_CONFIRMATION.append(settle)


def payment_error(payment: Payment) -> StripeError:
    """The 402 a failed `/pay` answers (its attempt kept): the decline, or authentication required."""
    if payment.intent["status"] == "requires_action":
        return StripeError(
            402,
            REQUIRES_ACTION,
            type_="card_error",
            code="invoice_payment_intent_requires_action",
            kept=True,
            extra={"payment_intent": payment.intent},
        )
    if payment.error is None:
        return StripeError(400, NO_PAYMENT_METHOD, kept=True)
    body = dict(payment.error)
    return StripeError(
        402,
        str(body.pop("message")),
        type_=str(body.pop("type", "card_error")),
        code=body.pop("code", None),
        kept=True,
        extra={k: v for k, v in body.items() if k not in ("doc_url", "param")},
    )


def pay_invoice(ctx: Ctx, invoice: JSON, p: JSON) -> None:
    if invoice["status"] == "paid":
        raise StripeError(400, "Invoice is already paid.")
    need_status(invoice, ("draft", "open"), "pay")
    if invoice["status"] == "draft":
        finalize_invoice(ctx, invoice)
        if invoice["status"] == "paid":  # nothing was due
            return
    if p.get("paid_out_of_band"):
        if "payment_method" in p:
            raise param_error("You cannot pass `payment_method` with `paid_out_of_band`.", "payment_method")
        invoice["amount_paid_off_stripe"] = invoice["amount_remaining"]
        mark_paid(ctx, invoice, attempted=False)
        return
    payment_method = payment_method_for(ctx, invoice, p.get("payment_method"))
    if payment_method is None:
        # Stripe refuses before attempting anything; the finalization above stands.
        raise StripeError(400, NO_PAYMENT_METHOD, kept=True)
    payment = collect(ctx, invoice, payment_method, off_session=bool(p.get("off_session", False)))
    if payment.intent["status"] != "succeeded":
        raise payment_error(payment)


def _lines(ctx: Ctx, invoice: JSON, p: JSON) -> JSON:
    limit = p.get("limit", 10)
    if not 1 <= limit <= 100:
        raise param_error("Invalid limit: must be between 1 and 100", "limit")
    if "starting_after" in p and "ending_before" in p:
        raise param_error(
            "You may only specify one of these parameters: ending_before, starting_after.", "ending_before"
        )
    lines = [ordered(line) for line in invoice["lines"]]
    ids = [line["id"] for line in lines]
    start, stop = 0, len(lines)
    for cursor in ("starting_after", "ending_before"):
        if cursor in p:
            if p[cursor] not in ids:
                raise param_error(f"No such line item: '{p[cursor]}'", cursor)
            if cursor == "starting_after":
                start = ids.index(p[cursor]) + 1
            else:
                stop = ids.index(p[cursor])
    if "ending_before" in p:
        page = lines[max(start, stop - limit) : stop]
        more = stop - limit > start
    else:
        page = lines[start : start + limit]
        more = start + limit < stop
    return list_object(page, f"/v1/invoices/{invoice['id']}/lines", has_more=more)


create_route("invoice", create_invoice)
update_route("invoice", update_invoice)


@route("DELETE", "/v1/invoices/{id}", "invoice.delete")
def _delete(ctx: Ctx, call: Call) -> JSON:
    invoice = ctx.need("invoice", call.ids[0])
    if invoice["status"] != "draft":
        raise StripeError(
            400,
            f"You can only delete draft invoices; {invoice['id']} is {invoice['status']} (void it instead).",
        )
    if invoice["parent"] is not None and invoice["billing_reason"] != "manual":
        raise StripeError(400, f"{invoice['id']} is a subscription's invoice: it can only be voided.")
    for item in list(ctx.acct.table("invoiceitem").values()):
        if item["invoice"] == invoice["id"]:  # back to pending, for the customer's next invoice
            item["invoice"] = None
    emit(ctx, "invoice.deleted", "invoice", invoice)
    ctx.delete("invoice", invoice["id"])
    return {"id": invoice["id"], "object": "invoice", "deleted": True}


@route("POST", "/v1/invoices/{id}/finalize", "invoice.finalize_invoice")
def _finalize(ctx: Ctx, call: Call) -> JSON:
    invoice = ctx.need("invoice", call.ids[0])
    if invoice["status"] != "draft":
        raise StripeError(
            400, "This invoice is already finalized, you can't re-finalize a non-draft invoice."
        )
    if "auto_advance" in call.params:
        invoice["auto_advance"] = call.params["auto_advance"]
    finalize_invoice(ctx, invoice)
    return render(ctx, "invoice", invoice, call.expand)


@route("POST", "/v1/invoices/{id}/pay", "invoice.pay")
def _pay(ctx: Ctx, call: Call) -> JSON:
    invoice = ctx.need("invoice", call.ids[0])
    pay_invoice(ctx, invoice, call.params)
    return render(ctx, "invoice", invoice, call.expand)


@route("POST", "/v1/invoices/{id}/void", "invoice.void_invoice")
def _void(ctx: Ctx, call: Call) -> JSON:
    invoice = ctx.need("invoice", call.ids[0])
    need_status(invoice, ("open", "uncollectible"), "void")
    invoice["status"] = "void"
    invoice["auto_advance"] = False
    invoice["next_payment_attempt"] = None
    invoice["status_transitions"] = {**invoice["status_transitions"], "voided_at": int(time.time())}
    emit(ctx, "invoice.voided", "invoice", invoice)
    return render(ctx, "invoice", invoice, call.expand)


@route("POST", "/v1/invoices/{id}/mark_uncollectible", "invoice.mark_uncollectible")
def _uncollectible(ctx: Ctx, call: Call) -> JSON:
    invoice = ctx.need("invoice", call.ids[0])
    need_status(invoice, ("open",), "mark uncollectible")
    invoice["status"] = "uncollectible"
    invoice["auto_advance"] = False
    invoice["next_payment_attempt"] = None
    invoice["status_transitions"] = {
        **invoice["status_transitions"],
        "marked_uncollectible_at": int(time.time()),
    }
    emit(ctx, "invoice.marked_uncollectible", "invoice", invoice)
    return render(ctx, "invoice", invoice, call.expand)


@route("GET", "/v1/invoices/{id}/lines", "invoice.list_lines")
def _list_lines(ctx: Ctx, call: Call) -> JSON:
    return _lines(ctx, ctx.need("invoice", call.ids[0]), call.params)
