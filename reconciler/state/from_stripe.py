"""Read every Product and Price the tool owns: list calls only, 100 a page, all pages.

Never the Search API (it lags writes) and never one retrieve per object. Archived objects are read
too: re-adding a plan reactivates its archived Product instead of creating another.
"""

from __future__ import annotations

from typing import Any

import stripe

from reconciler.errors import StateReadError
from reconciler.model import StripePrice, StripeProduct, StripeState, StripeWebhookEndpoint, owned_slug
from reconciler.throttle import StripeCalls

PAGE = 100


def list_all(calls: StripeCalls, resource: str, params: dict[str, Any] | None = None) -> list[Any]:
    """Every object of a list endpoint, 100 a page, each page through the throttle and retries."""
    objects: list[Any] = []
    query: dict[str, Any] = {"limit": PAGE, **(params or {})}
    while True:

        def fetch(client: stripe.StripeClient, query: dict[str, Any] = query) -> Any:
            return getattr(client.v1, resource).list(params=query)

        page = calls.read(fetch)
        objects.extend(page.data)
        if not page.has_more or not page.data:
            return objects
        query = {**query, "starting_after": page.data[-1].id}


def read_stripe(calls: StripeCalls, *, webhook_endpoints: bool = False) -> StripeState:
    """Owned objects, and the unowned ones apart (never touched; candidates for `--adopt`); with
    `webhook_endpoints` (the catalog declares one), every webhook endpoint too."""
    endpoints: list[StripeWebhookEndpoint] = []
    try:
        products = [_product(p) for p in list_all(calls, "products")]
        prices = [_price(p) for p in list_all(calls, "prices")]
        if webhook_endpoints:
            endpoints = [_webhook_endpoint(e) for e in list_all(calls, "webhook_endpoints")]
    except stripe.AuthenticationError as e:
        raise StateReadError(
            f"Stripe rejected STRIPE_SECRET_KEY: {e.user_message or 'authentication failed'}"
        ) from e
    except stripe.StripeError as e:
        raise StateReadError(f"cannot read Products/Prices from Stripe: {_reason(e)}") from e
    return StripeState(
        products=tuple(p for p in products if owned_slug(p.metadata) is not None),
        prices=tuple(p for p in prices if owned_slug(p.metadata) is not None),
        unowned_products=tuple(p for p in products if owned_slug(p.metadata) is None),
        unowned_prices=tuple(p for p in prices if owned_slug(p.metadata) is None),
        webhook_endpoints=tuple(endpoints),
    )


def _webhook_endpoint(e: Any) -> StripeWebhookEndpoint:
    return StripeWebhookEndpoint(
        id=e.id,
        url=e.url,
        events=tuple(sorted(e.enabled_events or ())),
        enabled=e.status == "enabled",
        metadata=_metadata(e),
        created=int(e.created or 0),
    )


def count_active_subscriptions(calls: StripeCalls, price_ids: tuple[str, ...]) -> dict[str, int]:
    """Active subscriptions on each of `price_ids` (the Prices a plan archives), from one listing of
    the active subscriptions. If Stripe won't answer (a restricted key, an error) the result is
    empty, so the plan says "unknown" rather than a wrong 0."""
    wanted = set(price_ids)
    counts = dict.fromkeys(price_ids, 0)
    try:
        subscriptions = list_all(calls, "subscriptions", {"status": "active"})
    except stripe.StripeError:
        return {}
    for subscription in subscriptions:
        for item in subscription["items"].data:
            price = item.price.id if not isinstance(item.price, str) else item.price
            if price in wanted:
                counts[price] += 1
    return counts


def _reason(e: stripe.StripeError) -> str:
    if isinstance(e, stripe.APIConnectionError):
        return "Stripe is unreachable (network error)"
    return e.user_message or type(e).__name__


def _metadata(obj: Any) -> dict[str, str]:
    metadata = obj.metadata.to_dict() if obj.metadata else {}
    return {str(k): str(v) for k, v in metadata.items()}


def _product(p: Any) -> StripeProduct:
    default = p.default_price
    return StripeProduct(
        id=p.id,
        name=p.name,
        description=p.description or "",
        active=bool(p.active),
        default_price=default if isinstance(default, str) or default is None else default.id,
        metadata=_metadata(p),
        created=int(p.created or 0),
    )


def _price(p: Any) -> StripePrice:
    product = p.product
    recurring = p.recurring
    return StripePrice(
        id=p.id,
        product=product if isinstance(product, str) else product.id,
        active=bool(p.active),
        unit_amount=p.unit_amount,
        currency=p.currency,
        interval=recurring.interval if recurring else None,
        lookup_key=p.lookup_key,
        metadata=_metadata(p),
        created=int(p.created or 0),
    )
