"""Invoices made by subscriptions and Checkout: build, finalize, paid, failed; retrieve and list."""

from __future__ import annotations

import html
import time
from decimal import ROUND_HALF_UP, Decimal

from ..context import Ctx
from ..errors import JSON
from ..events import emit
from ..listing import standard_routes
from ..registry import Kind, register_kind
from ..rendering import list_object, ordered, snapshot


def line_amount(price: JSON, quantity: int | None) -> int:
    """What `quantity` units of `price` cost, in minor units (metered: nothing up front)."""
    if quantity is None:
        return 0
    if price["billing_scheme"] == "tiered":
        tiers = price["tiers"] or []
        total = Decimal(0)
        if price["tiers_mode"] == "volume":
            tier = next((t for t in tiers if t["up_to"] is None or quantity <= t["up_to"]), tiers[-1])
            total = Decimal(tier["unit_amount_decimal"] or 0) * quantity + Decimal(
                tier["flat_amount_decimal"] or 0
            )
        else:  # graduated
            floor = 0
            for tier in tiers:
                top = quantity if tier["up_to"] is None else min(quantity, tier["up_to"])
                if top > floor:
                    total += Decimal(tier["unit_amount_decimal"] or 0) * (top - floor)
                    total += Decimal(tier["flat_amount_decimal"] or 0)
                floor = top
                if tier["up_to"] is None or quantity <= tier["up_to"]:
                    break
        return int(total.to_integral_value(ROUND_HALF_UP))
    unit = Decimal(price["unit_amount_decimal"] or 0)
    return int((unit * quantity).to_integral_value(ROUND_HALF_UP))


def build_invoice(ctx: Ctx, sub: JSON, reason: str, period_start: int, period_end: int) -> JSON:
    """A draft invoice for `sub`'s items, stored and made the subscription's `latest_invoice`."""
    customer = ctx.acct.customers[sub["customer"]]
    invoice = blank_invoice(
        ctx,
        customer,
        currency=sub["currency"],
        reason=reason,
        parent={
            "quote_details": None,
            "subscription_details": {"metadata": dict(sub["metadata"]), "subscription": sub["id"]},
            "type": "subscription_details",
        },
        period=(period_start, period_end),
    )
    invoice["auto_advance"] = True
    for item in sub["items"]:
        invoice["lines"].append(_subscription_line(ctx, sub, item, invoice["id"]))
    recompute_totals(invoice)
    ctx.put("invoice", invoice)
    sub["latest_invoice"] = invoice["id"]
    return invoice


def _subscription_line(ctx: Ctx, sub: JSON, item: JSON, invoice_id: str) -> JSON:
    """The invoice line billing subscription item `item` for its current period."""
    price = ctx.acct.prices[item["price"]]
    product = ctx.acct.products.get(price["product"])
    amount = line_amount(price, item["quantity"])
    name = product["name"] if product is not None else price["id"]
    return {
        "id": ctx.fresh_id("il_", 24),
        "object": "line_item",
        "amount": amount,
        "currency": price["currency"],
        "description": f"{item['quantity'] or 0} × {name}",
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": invoice_id,
        "livemode": ctx.mode == "live",
        "metadata": dict(item["metadata"]),
        "parent": {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": sub["id"],
                "subscription_item": item["id"],
            },
            "type": "subscription_item_details",
        },
        "period": {"end": item["current_period_end"], "start": item["current_period_start"]},
        "pretax_credit_amounts": [],
        "pricing": {
            "price_details": {"price": price["id"], "product": price["product"]},
            "type": "price_details",
            "unit_amount_decimal": price["unit_amount_decimal"],
        },
        "quantity": item["quantity"],
        "subtotal": amount,
        "taxes": [],
    }


def recompute_totals(invoice: JSON) -> None:
    """A draft's amounts from its lines (no tax, discounts or customer balance here)."""
    total = sum(int(line["amount"]) for line in invoice["lines"])
    for key in ("amount_due", "amount_remaining", "subtotal", "subtotal_excluding_tax", "total"):
        invoice[key] = total
    invoice["total_excluding_tax"] = total


def blank_invoice(
    ctx: Ctx, customer: JSON, *, currency: str, reason: str, parent: JSON | None, period: tuple[int, int]
) -> JSON:
    """A draft invoice without lines (not stored): Stripe's shape, `auto_advance` false as for invoices
    made through the API."""
    period_start, period_end = period
    invoice: JSON = {
        "id": ctx.fresh_id("in_", 24),
        "object": "invoice",
        "billing_reason": reason,
        "created": int(time.time()),
        "currency": currency,
        "lines": [],  # rendered as a list object
        "livemode": ctx.mode == "live",
        "parent": parent,
        "period_end": period_end,
        "period_start": period_start,
        "status": "draft",
    }
    return (
        invoice | _customer_details(customer) | _nothing_due() | _not_yet_collected() | _unmodelled_fields()
    )


def _customer_details(customer: JSON) -> JSON:
    """The customer as the invoice copies it when made."""
    return {
        "customer": customer["id"],
        "customer_account": None,
        "customer_address": customer["address"],
        "customer_email": customer["email"],
        "customer_name": customer["name"],
        "customer_phone": customer["phone"],
        "customer_shipping": customer["shipping"],
        "customer_tax_exempt": customer["tax_exempt"],
        "customer_tax_ids": [],
    }


def _nothing_due() -> JSON:
    """The amounts of an invoice without lines (`recompute_totals` follows its lines)."""
    return {
        "amount_due": 0,
        "amount_overpaid": 0,
        "amount_paid": 0,
        "amount_paid_off_stripe": 0,
        "amount_remaining": 0,
        "amount_shipping": 0,
        "ending_balance": None,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "starting_balance": 0,
        "subtotal": 0,
        "subtotal_excluding_tax": 0,
        "total": 0,
        "total_discount_amounts": [],
        "total_excluding_tax": 0,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
    }


def _not_yet_collected() -> JSON:
    """The collection state of a draft: charged automatically, never attempted, no number or page yet
    (`finalize_invoice`, `mark_paid` and `mark_failed` move it on)."""
    return {
        "attempt_count": 0,
        "attempted": False,
        "auto_advance": False,
        "automatically_finalizes_at": None,
        "collection_method": "charge_automatically",
        "confirmation_secret": None,
        "default_payment_method": None,
        "default_source": None,
        "due_date": None,
        "effective_at": None,
        "hosted_invoice_url": None,
        "invoice_pdf": None,
        "last_finalization_error": None,
        "next_payment_attempt": None,
        "number": None,
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "receipt_number": None,
        "status_transitions": {
            "finalized_at": None,
            "marked_uncollectible_at": None,
            "paid_at": None,
            "voided_at": None,
        },
        "webhooks_delivered_at": None,
    }


def _unmodelled_fields() -> JSON:
    """What the emulator does not model (tax, discounts, shipping, Connect, rendering...), as a new
    invoice shows it; `description` and `metadata` are set through the API."""
    return {
        "account_country": "US",
        "account_name": "kuploy sandbox",
        "account_tax_ids": None,
        "application": None,
        "automatic_tax": {
            "disabled_reason": None,
            "enabled": False,
            "liability": None,
            "provider": None,
            "status": None,
        },
        "custom_fields": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "footer": None,
        "from_invoice": None,
        "issuer": {"type": "self"},
        "latest_revision": None,
        "metadata": {},
        "on_behalf_of": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "statement_descriptor": None,
        "test_clock": None,
        "threshold_reason": None,
    }


def finalize_invoice(ctx: Ctx, invoice: JSON) -> None:
    """draft → open: a `number` from the customer's sequence, the hosted page, `invoice.finalized`; an
    invoice with nothing due is paid at once (Stripe marks it paid when it finalizes)."""
    customer = ctx.acct.customers[invoice["customer"]]
    now = int(time.time())
    invoice["status"] = "open"
    invoice["number"] = f"{customer['invoice_prefix']}-{int(customer['next_invoice_sequence']):04d}"
    customer["next_invoice_sequence"] = int(customer["next_invoice_sequence"]) + 1
    invoice["effective_at"] = now
    invoice["ending_balance"] = 0
    invoice["status_transitions"] = {**invoice["status_transitions"], "finalized_at": now}
    days = ctx.internal(invoice["id"]).get("days_until_due")
    if invoice["collection_method"] == "send_invoice" and days is not None:
        invoice["due_date"] = now + int(days) * 86400
    base = f"http://{ctx.host or '127.0.0.1'}/_emulator/invoices/{invoice['id']}"
    invoice["hosted_invoice_url"] = base  # a live page: GET answers it (admin routes)
    invoice["invoice_pdf"] = None  # no PDF is rendered here
    invoice["webhooks_delivered_at"] = now
    emit(ctx, "invoice.finalized", "invoice", invoice)
    if invoice["amount_due"] == 0:
        mark_paid(ctx, invoice, attempted=False)


def mark_paid(ctx: Ctx, invoice: JSON, *, attempted: bool = True) -> None:
    """open → paid (`invoice.paid`, `invoice.payment_succeeded`); already paid: nothing."""
    if invoice["status"] == "paid":
        return
    now = int(time.time())
    if invoice["amount_due"] > 0 and attempted:
        invoice["attempt_count"] = int(invoice["attempt_count"]) + 1
        invoice["attempted"] = True
    invoice["status"] = "paid"
    invoice["amount_paid"] = invoice["amount_due"]
    invoice["amount_remaining"] = 0
    invoice["auto_advance"] = False
    invoice["next_payment_attempt"] = None
    invoice["status_transitions"] = {**invoice["status_transitions"], "paid_at": now}
    frozen = snapshot(ctx, "invoice", invoice)
    emit(ctx, "invoice.paid", "invoice", invoice, frozen=frozen)
    emit(ctx, "invoice.payment_succeeded", "invoice", invoice, frozen=frozen)


def mark_failed(ctx: Ctx, invoice: JSON, *, action_required: bool) -> None:
    invoice["attempt_count"] = int(invoice["attempt_count"]) + 1
    invoice["attempted"] = True
    if invoice["billing_reason"] != "subscription_create" and not action_required:
        # Stripe's retry schedule (Smart Retries) is not modelled: one retry announced, 3 days on.
        invoice["next_payment_attempt"] = int(time.time()) + 3 * 86400
    kind = "invoice.payment_action_required" if action_required else "invoice.payment_failed"
    emit(ctx, kind, "invoice", invoice)


def set_confirmation_secret(ctx: Ctx, invoice: JSON, intent: JSON) -> None:
    """Remember the PaymentIntent that collects `invoice` (its client secret is the invoice's includable
    `confirmation_secret`, shown when `expand[]=confirmation_secret` asks for it)."""
    secret = intent.get("client_secret")
    if secret:
        ctx.internal(invoice["id"])["confirmation_secret"] = {
            "client_secret": secret,
            "type": "payment_intent",
        }


def hosted_page(ctx: Ctx, invoice: JSON) -> str:
    """The small HTML page an invoice's `hosted_invoice_url` shows (Stripe's hosted invoice page: number,
    status, lines, amount due)."""

    def money(amount: int) -> str:
        return f"{amount / 100:.2f} {str(invoice['currency']).upper()}"

    rows = "".join(
        f"<tr><td>{html.escape(str(line['description'] or ''))}</td><td>{line['quantity'] or ''}</td>"
        f"<td>{money(int(line['amount']))}</td></tr>"
        for line in invoice["lines"]
    )
    title = html.escape(f"Invoice {invoice['number'] or invoice['id']}")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
        f"<h1>{title}</h1><p>Status: {html.escape(invoice['status'])}</p>"
        f"<p>Customer: {html.escape(str(invoice['customer_email'] or invoice['customer']))}</p>"
        f"<table><tr><th>Description</th><th>Qty</th><th>Amount</th></tr>{rows}</table>"
        f"<p>Total: {money(int(invoice['total']))}</p>"
        f"<p>Amount due: {money(int(invoice['amount_remaining']))}</p>"
        "</body></html>\n"
    )


def _render(ctx: Ctx, obj: JSON, out: JSON, groups: dict[str, list[str]], depth: int) -> dict[str, list[str]]:
    if groups.pop("confirmation_secret", None) is not None:
        out["confirmation_secret"] = ctx.internal(obj["id"]).get("confirmation_secret")
    if groups.pop("payments", None) is not None:  # includable since 2025-03-31.basil
        out["payments"] = list_object(invoice_payments(ctx, obj), f"/v1/invoice_payments?invoice={obj['id']}")
    out["lines"] = list_object(
        [ordered(line) for line in obj["lines"]], f"/v1/invoices/{obj['id']}/lines", total_count=True
    )
    return groups


def invoice_payments(ctx: Ctx, invoice: JSON) -> list[JSON]:
    """The invoice's `payments`: one `invoice_payment` per PaymentIntent made for it, newest first,
    the newest being the default (Stripe's shape, docs.stripe.com/api/invoice-payment/object)."""
    intents = [
        pi
        for pi in ctx.store.list(ctx.mode, "payment_intent")
        if ctx.internal(pi["id"]).get("invoice") == invoice["id"]
    ]
    payments: list[JSON] = []
    for n, intent in enumerate(intents):
        paid = intent["status"] == "succeeded"
        status = "paid" if paid else "canceled" if intent["status"] == "canceled" else "open"
        payments.append(
            ordered(
                {
                    "id": "inpay_" + str(intent["id"]).removeprefix("pi_"),
                    "object": "invoice_payment",
                    "amount_paid": intent["amount_received"] if paid else None,
                    "amount_requested": intent["amount"],
                    "created": intent["created"],
                    "currency": intent["currency"],
                    "invoice": invoice["id"],
                    "is_default": n == 0,
                    "livemode": invoice["livemode"],
                    "payment": {"type": "payment_intent", "payment_intent": intent["id"]},
                    "status": status,
                    "status_transitions": {
                        "canceled_at": intent.get("canceled_at"),
                        "paid_at": (invoice["status_transitions"] or {}).get("paid_at") if paid else None,
                    },
                }
            )
        )
    return payments


def _matches(obj: JSON, p: JSON) -> bool:
    parent = obj.get("parent") or {}
    sub_id = (parent.get("subscription_details") or {}).get("subscription")
    return "subscription" not in p or sub_id == p["subscription"]


register_kind(
    Kind(
        "invoice",
        "invoices",
        path="/v1/invoices",
        expandable={
            "customer": "customer",
            "application": "",
            "default_payment_method": "",
            "default_source": "",
            "from_invoice": "",
            "latest_revision": "",
            "on_behalf_of": "",
            "test_clock": "",
        },
        filters=("customer", "status", "collection_method"),
        matches=_matches,
        render=_render,
    )
)
standard_routes("invoice")
