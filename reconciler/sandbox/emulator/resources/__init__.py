"""One module per Stripe resource. Importing this package registers every kind and route; a new
resource module is added to this list."""

from __future__ import annotations

from . import (
    charges,
    checkout,
    customers,
    events,
    invoice_items,
    invoices,
    invoicing,
    payment_intents,
    payment_methods,
    payment_pages,
    prices,
    products,
    renewals,
    setup_intents,
    stripecli_sessions,
    subscriptions,
    webhook_endpoints,
)

__all__ = [
    "charges",
    "checkout",
    "customers",
    "events",
    "invoice_items",
    "invoices",
    "invoicing",
    "payment_intents",
    "payment_methods",
    "payment_pages",
    "prices",
    "products",
    "renewals",
    "setup_intents",
    "stripecli_sessions",
    "subscriptions",
    "webhook_endpoints",
]
