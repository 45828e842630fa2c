"""Where Stripe is written: `run_stripe_op`, one handler per Stripe operation, called by the apply
package's `_Run` (`apply/__init__.py`); each call goes through `StripeCalls` (client-side rate
limit, bounded retries).

Idempotency keys:
- A create carries a key derived from the request itself (and the apply round), so a retry, or a
  re-run after a crash that lost the answer, replays Stripe's first answer instead of creating a
  duplicate. Stripe replays a saved 5xx for the same key too, so a later round of the same apply
  (after re-reading the state, which adopts anything that was in fact created) derives fresh keys.
- An update carries a key made for that one call, reused across its retries; updates set absolute
  values, so repeating one is harmless anyway.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import singledispatch
from typing import Any

from reconciler.model import ownership_metadata, webhook_ownership_metadata

# The op types diff.py imports too: diff makes them, this module carries them out.
from reconciler.plan import (
    AdoptPrice,
    AdoptProduct,
    AdoptWebhookEndpoint,
    ArchivePrice,
    ArchiveProduct,
    Created,
    CreatePrice,
    CreateProduct,
    CreateWebhookEndpoint,
    Kind,
    Op,
    ReactivatePrice,
    Ref,
    SetDefaultPrice,
    SetLookupKey,
    UpdateProduct,
    UpdateWebhookEndpoint,
)
from reconciler.settings import Secret
from reconciler.throttle import StripeCalls

OnWebhookSecret = Callable[[str, Secret], None]
"""Receives (endpoint id, signing secret) of a webhook endpoint just created; the secret goes nowhere else."""


def _no_destination(endpoint_id: str, secret: Secret) -> None:
    raise AssertionError("api checks that a created webhook endpoint has a secret destination")


@dataclass
class StripeWriter:
    calls: StripeCalls
    round: int = 0
    """Which attempt of this apply: round 0 keys are pure content, so a re-run after a crash replays."""
    on_webhook_secret: OnWebhookSecret = _no_destination
    ids: dict[tuple[str, str], str] = field(default_factory=dict)
    """Ids of objects created during this apply, by (plan slug, "product" | "price")."""

    def resolve(self, ref: Ref, slug: str) -> str:
        return self.ids[(slug, ref.kind)] if isinstance(ref, Created) else ref

    def create(self, resource: str, params: dict[str, Any]) -> Any:
        key = creation_key(f"/v1/{resource}", params, self.round)
        return self.calls.write(
            lambda client: getattr(client.v1, resource).create(
                params=params, options={"idempotency_key": key}
            )
        )

    def update(self, resource: str, object_id: str, params: dict[str, Any]) -> Any:
        key = f"kuploy-reconciler-update-{uuid.uuid4().hex}"
        return self.calls.write(
            lambda client: getattr(client.v1, resource).update(
                object_id, params=params, options={"idempotency_key": key}
            )
        )


def creation_key(path: str, params: dict[str, Any], round: int = 0) -> str:
    content = [path, params] if round == 0 else [path, params, round]
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    return f"kuploy-reconciler-{digest[:48]}"


@singledispatch
def run_stripe_op(op: Op, writer: StripeWriter) -> None:
    raise TypeError(f"no Stripe handler for {type(op).__name__}")


@run_stripe_op.register
def _(op: AdoptProduct, writer: StripeWriter) -> None:
    writer.update("products", op.product_id, {"metadata": ownership_metadata(op.slug)})


@run_stripe_op.register
def _(op: AdoptPrice, writer: StripeWriter) -> None:
    writer.update("prices", op.price_id, {"metadata": ownership_metadata(op.slug)})


@run_stripe_op.register
def _(op: CreateProduct, writer: StripeWriter) -> None:
    params: dict[str, Any] = {"name": op.name, "metadata": ownership_metadata(op.slug)}
    if op.description:
        params["description"] = op.description
    if op.price is not None:
        params["default_price_data"] = {
            "unit_amount": op.price.unit_amount,
            "currency": op.price.currency,
            "recurring": {"interval": op.price.interval},
            "metadata": ownership_metadata(op.slug),
        }
    product = writer.create("products", params)
    writer.ids[(op.slug, Kind.PRODUCT)] = product.id
    if op.price is not None:
        default = product.default_price
        writer.ids[(op.slug, Kind.PRICE)] = default if isinstance(default, str) else default.id


@run_stripe_op.register
def _(op: UpdateProduct, writer: StripeWriter) -> None:
    writer.update("products", op.product_id, dict(op.after))


@run_stripe_op.register
def _(op: CreatePrice, writer: StripeWriter) -> None:
    params: dict[str, Any] = {
        "product": writer.resolve(op.product, op.slug),
        "unit_amount": op.unit_amount,
        "currency": op.currency,
        "recurring": {"interval": op.interval},
        "lookup_key": op.lookup_key,
        "transfer_lookup_key": True,
        "metadata": ownership_metadata(op.slug),
    }
    price = writer.create("prices", params)
    writer.ids[(op.slug, Kind.PRICE)] = price.id


@run_stripe_op.register
def _(op: ReactivatePrice, writer: StripeWriter) -> None:
    _claim_price(writer, op.price_id, op.lookup_key)


@run_stripe_op.register
def _(op: SetLookupKey, writer: StripeWriter) -> None:
    _claim_price(writer, writer.resolve(op.price, op.slug), op.lookup_key)


def _claim_price(writer: StripeWriter, price_id: str, lookup_key: str) -> None:
    """`ReactivatePrice` and `SetLookupKey` alike: active, with the plan's lookup key taken from any other."""
    writer.update("prices", price_id, {"active": True, "lookup_key": lookup_key, "transfer_lookup_key": True})


@run_stripe_op.register
def _(op: SetDefaultPrice, writer: StripeWriter) -> None:
    writer.update(
        "products",
        writer.resolve(op.product, op.slug),
        {"default_price": writer.resolve(op.after, op.slug)},
    )


@run_stripe_op.register
def _(op: ArchiveProduct, writer: StripeWriter) -> None:
    # Clearing default_price first is what lets the Price be archived after it.
    writer.update("products", op.product_id, {"active": False, "default_price": ""})


@run_stripe_op.register
def _(op: ArchivePrice, writer: StripeWriter) -> None:
    writer.update("prices", op.price_id, {"active": False})


WEBHOOK_DESCRIPTION = "kuploy-cloud billing events (managed by kuploy-reconciler)"


@run_stripe_op.register
def _(op: CreateWebhookEndpoint, writer: StripeWriter) -> None:
    endpoint = writer.create(
        "webhook_endpoints",
        {
            "url": op.url,
            "enabled_events": list(op.events),
            "description": WEBHOOK_DESCRIPTION,
            "metadata": webhook_ownership_metadata(),
        },
    )
    secret = getattr(endpoint, "secret", None)
    if not secret:
        raise AssertionError("Stripe returns the signing secret when it creates a webhook endpoint")
    writer.on_webhook_secret(endpoint.id, Secret(str(secret)))


_WEBHOOK_PARAMS = {"url": "url", "events": "enabled_events", "enabled": "disabled"}


@run_stripe_op.register
def _(op: UpdateWebhookEndpoint, writer: StripeWriter) -> None:
    params: dict[str, Any] = {}
    for key, value in op.after:
        if key == "enabled":
            params["disabled"] = not value
        else:
            params[_WEBHOOK_PARAMS[key]] = list(value) if key == "events" else value
    writer.update("webhook_endpoints", op.endpoint_id, params)


@run_stripe_op.register
def _(op: AdoptWebhookEndpoint, writer: StripeWriter) -> None:
    writer.update("webhook_endpoints", op.endpoint_id, {"metadata": webhook_ownership_metadata()})
