"""Read every Product, Price and webhook endpoint, archived ones too (re-adding a plan reactivates its
archived Product), for plan, apply, drift and doctor alike: list calls only, 100 a page, through
`throttle.StripeCalls`; never the Search API (it lags writes). Why the two lists are read at once, as
raw JSON pages: BENCHMARKS.md ("Where the time goes" and round 2)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import stripe

from reconciler.errors import StateReadError
from reconciler.model import StripePrice, StripeProduct, StripeState, StripeWebhookEndpoint, owned_slug
from reconciler.throttle import StripeCalls

PAGE = 100


def list_all(calls: StripeCalls, resource: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every object of a list endpoint (`/v1/<resource>`) as JSON, 100 a page, each page through the
    throttle and retries."""
    objects: list[dict[str, Any]] = []
    query: dict[str, Any] = {"limit": PAGE, **(params or {})}
    path = f"/v1/{resource}"
    while True:

        def fetch(client: stripe.StripeClient, query: dict[str, Any] = query) -> Any:
            return client.raw_request("get", path, **query)

        page = calls.read(fetch).data
        data = page.get("data") or []
        objects.extend(data)
        if not page.get("has_more") or not data:
            return objects
        query = {**query, "starting_after": data[-1]["id"]}


def read_stripe(calls: StripeCalls, *, webhook_endpoints: bool = False) -> StripeState:
    """Owned objects, and the unowned ones apart (never touched; candidates for `--adopt`); with
    `webhook_endpoints` (the catalog declares one), every webhook endpoint too."""
    try:
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="stripe-read") as pool:
            listed_products = pool.submit(read_products, calls)
            listed_prices = pool.submit(read_prices, calls)
            listed_endpoints = pool.submit(read_webhook_endpoints, calls) if webhook_endpoints else None
            products = listed_products.result()
            prices = listed_prices.result()
            endpoints = listed_endpoints.result() if listed_endpoints is not None else ()
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
        webhook_endpoints=endpoints,
    )


def read_products(calls: StripeCalls) -> tuple[StripeProduct, ...]:
    """Every Product, owned or not, archived too. Raises Stripe's errors as they come."""
    return tuple(_product(p) for p in list_all(calls, "products"))


def read_prices(calls: StripeCalls) -> tuple[StripePrice, ...]:
    """Every Price, owned or not, archived too. Raises Stripe's errors as they come."""
    return tuple(_price(p) for p in list_all(calls, "prices"))


def read_webhook_endpoints(calls: StripeCalls) -> tuple[StripeWebhookEndpoint, ...]:
    """Every webhook endpoint, owned or not, in Stripe's order. Raises Stripe's errors as they come."""
    return tuple(_webhook_endpoint(e) for e in list_all(calls, "webhook_endpoints"))


def check_key(calls: StripeCalls) -> None:
    """The cheapest read Stripe authenticates (one Product, one page); raises what Stripe answers."""
    calls.read(lambda client: client.raw_request("get", "/v1/products", limit=1))


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
        for item in (subscription.get("items") or {}).get("data") or ():
            price = item.get("price")
            price = price if isinstance(price, str) or price is None else price.get("id")
            if price in wanted:
                counts[price] += 1
    return counts


def _reason(e: stripe.StripeError) -> str:
    if isinstance(e, stripe.APIConnectionError):
        return "Stripe is unreachable (network error)"
    return e.user_message or type(e).__name__


def _metadata(obj: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in (obj.get("metadata") or {}).items()}


def _id(value: Any) -> Any:
    """An id, whether Stripe sent it as a string or expanded into the object."""
    return value.get("id") if isinstance(value, dict) else value


def _product(p: dict[str, Any]) -> StripeProduct:
    return StripeProduct(
        id=p["id"],
        name=p["name"],
        description=p.get("description") or "",
        active=bool(p.get("active")),
        default_price=_id(p.get("default_price")),
        metadata=_metadata(p),
        created=int(p.get("created") or 0),
    )


def _price(p: dict[str, Any]) -> StripePrice:
    recurring = p.get("recurring")
    return StripePrice(
        id=p["id"],
        product=_id(p.get("product")),
        active=bool(p.get("active")),
        unit_amount=p.get("unit_amount"),
        currency=p["currency"],
        interval=recurring.get("interval") if recurring else None,
        lookup_key=p.get("lookup_key"),
        metadata=_metadata(p),
        created=int(p.get("created") or 0),
    )


def _webhook_endpoint(e: dict[str, Any]) -> StripeWebhookEndpoint:
    return StripeWebhookEndpoint(
        id=e["id"],
        url=e["url"],
        events=tuple(sorted(e.get("enabled_events") or ())),
        enabled=e.get("status") == "enabled",
        metadata=_metadata(e),
        created=int(e.get("created") or 0),
    )
