"""API versions: which `Stripe-Version` values the emulator answers, and how an object stored in the
newest shape (the SDK's pinned version) is shown to a client pinned to an older one. Each change is
keyed by the version that made it, from Stripe's changelog, so any version from `OLDEST` on gets every
change made after it undone:

- 2025-03-31.basil: a subscription's billing period moved onto its items; an invoice's `subscription`
  moved under `parent`, its `paid`, `payment_intent` and `charge` gave way to `payments`, and it gained
  `confirmation_secret`; line items' `type`/`subscription_item`/`price` moved under `parent` and
  `pricing`; PaymentIntents and Charges lost `invoice`; Checkout's `shipping_details` moved under
  `collected_information`.
- 2024-04-10: a product's `features` became `marketing_features`; an invoice's `rendering_options`
  became `rendering`.

A request without `Stripe-Version` gets the account's default, which is the SDK's pinned version. A
webhook endpoint created with `api_version` gets its events' objects in that version."""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable

import stripe

from .context import Ctx
from .errors import JSON, StripeError

DEFAULT = stripe.api_version  # the account's default version
OLDEST = "2023-08-16"  # the oldest version whose shapes are modelled
BASIL = "2025-03-31"
FEATURES_RENAMED = "2024-04-10"
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$")


def requested(version: str | None) -> str:
    """The version a request is answered in, or Stripe's 400 for one that cannot exist (not a date, or
    a future one); a version older than the oldest modelled one is refused too, rather than answered in
    a shape it never had. One newer than the default (another SDK's pin, such as stripe-node's) gets
    the newest shape modelled."""
    if version is None or version == "":
        return DEFAULT
    if not _VERSION.match(version) or not _is_date(version[:10]) or version[:10] > _today():
        raise StripeError(400, f"Invalid Stripe API version: {version}", cacheable=False)
    if version[:10] < OLDEST:
        raise StripeError(
            400,
            f"This Stripe emulator answers API versions from {OLDEST} on; {version} is older and not "
            "modelled. Pin a newer version, or extend the emulator.",
            cacheable=False,
        )
    return version


def _today() -> str:
    return datetime.datetime.now(datetime.UTC).date().isoformat()


def _is_date(text: str) -> bool:
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def shape(ctx: Ctx, kind: str, out: JSON, version: str | None) -> JSON:
    """`out` (rendered in the newest shape) as a client pinned to `version` sees it."""
    day = (version or DEFAULT)[:10]
    for since, kinds in _CHANGES:
        if day < since and kind in kinds:
            kinds[kind](ctx, out, version or DEFAULT)
    return out


# --- 2025-03-31.basil ------------------------------------------------------------------------------


def _subscription_before_basil(ctx: Ctx, out: JSON, version: str) -> None:
    items = (out.get("items") or {}).get("data") or []
    periods = [(i.pop("current_period_start", None), i.pop("current_period_end", None)) for i in items]
    starts = [s for s, _ in periods if s is not None]
    ends = [e for _, e in periods if e is not None]
    out["current_period_start"] = min(starts) if starts else out.get("start_date")
    out["current_period_end"] = max(ends) if ends else None
    out.setdefault("discount", None)
    out.pop("discounts", None)


def _invoice_before_basil(ctx: Ctx, out: JSON, version: str) -> None:
    parent = out.pop("parent", None) or {}
    details = parent.get("subscription_details") or None
    out["subscription"] = details["subscription"] if details else None
    out["subscription_details"] = {"metadata": details.get("metadata") or {}} if details else None
    out["subscription_proration_date"] = None
    out["quote"] = None
    out["paid"] = out.get("status") == "paid"
    out["paid_out_of_band"] = False
    intent = _invoice_intent(ctx, out)
    out["payment_intent"] = intent["id"] if intent else None
    out["charge"] = intent.get("latest_charge") if intent else None
    out.pop("confirmation_secret", None)
    out.pop("payments", None)
    out.pop("amount_overpaid", None)
    out.pop("amount_paid_off_stripe", None)
    taxes = out.pop("total_taxes", None)
    out["tax"] = None
    out["total_tax_amounts"] = taxes or []
    out.setdefault("discount", None)
    lines = out.get("lines")
    if isinstance(lines, dict):
        lines["data"] = [_line_before_basil(ctx, line, version) for line in lines.get("data") or []]


def _invoice_intent(ctx: Ctx, invoice: JSON) -> JSON | None:
    """The PaymentIntent of the invoice's default payment (its newest), if any."""
    from .resources.invoices import invoice_payments

    for payment in invoice_payments(ctx, invoice):
        if payment["is_default"]:
            return ctx.get("payment_intent", str(payment["payment"]["payment_intent"]))
    return None


def _line_before_basil(ctx: Ctx, line: JSON, version: str) -> JSON:
    from .rendering import ordered, render
    from .resources.subscriptions import plan_of

    out = dict(line)
    parent = out.pop("parent", None) or {}
    sub_item = parent.get("subscription_item_details") or {}
    inv_item = parent.get("invoice_item_details") or {}
    details = sub_item or inv_item
    out["type"] = "subscription" if sub_item else "invoiceitem"
    out["subscription"] = details.get("subscription")
    out["subscription_item"] = sub_item.get("subscription_item")
    out["invoice_item"] = details.get("invoice_item")
    out["proration"] = bool(details.get("proration"))
    out["proration_details"] = details.get("proration_details") or {"credited_items": None}
    pricing = out.pop("pricing", None) or {}
    price_id = (pricing.get("price_details") or {}).get("price")
    price = ctx.get("price", price_id) if isinstance(price_id, str) else None
    out["price"] = render(ctx, "price", price, [], version=version) if price else None
    out["plan"] = plan_of(price) if price and price.get("recurring") else None
    out.pop("taxes", None)
    out.pop("pretax_credit_amounts", None)
    out.pop("subtotal", None)
    out["tax_amounts"] = []
    out["tax_rates"] = []
    out["amount_excluding_tax"] = out.get("amount")
    out["unit_amount_excluding_tax"] = pricing.get("unit_amount_decimal")
    return ordered(out)


def _payment_before_basil(ctx: Ctx, out: JSON, version: str) -> None:
    """PaymentIntents and Charges: the `invoice` link Stripe removed."""
    linked = ctx.store.internal(ctx.mode, str(out["id"])).get("invoice")
    if linked is None and out.get("object") == "charge" and out.get("payment_intent"):
        linked = ctx.store.internal(ctx.mode, str(out["payment_intent"])).get("invoice")
    out["invoice"] = linked


def _checkout_before_basil(ctx: Ctx, out: JSON, version: str) -> None:
    collected = out.pop("collected_information", None) or {}
    out["shipping_details"] = collected.get("shipping_details")


# --- 2024-04-10 --------------------------------------------------------------------------------------


def _product_before_features_rename(ctx: Ctx, out: JSON, version: str) -> None:
    out["features"] = out.pop("marketing_features", [])


def _invoice_before_rendering_rename(ctx: Ctx, out: JSON, version: str) -> None:
    out["rendering_options"] = out.pop("rendering", None)


Change = Callable[[Ctx, JSON, str], None]
# (the version that made the changes, the undo per kind), newest first
_CHANGES: tuple[tuple[str, dict[str, Change]], ...] = (
    (
        BASIL,
        {
            "subscription": _subscription_before_basil,
            "invoice": _invoice_before_basil,
            "payment_intent": _payment_before_basil,
            "charge": _payment_before_basil,
            "checkout_session": _checkout_before_basil,
        },
    ),
    (
        FEATURES_RENAMED,
        {"product": _product_before_features_rename, "invoice": _invoice_before_rendering_rename},
    ),
)
