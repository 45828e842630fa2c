"""Where Stripe is written: one handler per Stripe operation.

Creates carry an idempotency key derived from the request itself, so a retry, or a re-run after a
crash that lost the answer, replays Stripe's first answer instead of creating a duplicate.
Updates are naturally idempotent; the SDK reuses its own key across its retries.
"""

from __future__ import annotations

import hashlib
import json
from functools import singledispatch
from typing import Any

import stripe

from reconciler.model import ownership_metadata
from reconciler.plan import (
    AdoptPrice,
    AdoptProduct,
    ArchivePrice,
    ArchiveProduct,
    Created,
    CreatePrice,
    CreateProduct,
    Op,
    ReactivatePrice,
    Ref,
    SetDefaultPrice,
    UpdateProduct,
)

Ids = dict[tuple[str, str], str]
"""Ids of objects created during this apply, by (plan slug, "product" | "price")."""


def idempotency_key(path: str, params: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps([path, params], sort_keys=True).encode()).hexdigest()
    return f"kuploy-reconciler-{digest[:48]}"


def resolve(ref: Ref, slug: str, ids: Ids) -> str:
    return ids[(slug, ref.kind)] if isinstance(ref, Created) else ref


@singledispatch
def run_stripe_op(op: Op, client: stripe.StripeClient, ids: Ids) -> None:
    raise TypeError(f"no Stripe handler for {type(op).__name__}")


@run_stripe_op.register
def _(op: AdoptProduct, client: stripe.StripeClient, ids: Ids) -> None:
    client.v1.products.update(op.product_id, params={"metadata": ownership_metadata(op.slug)})


@run_stripe_op.register
def _(op: AdoptPrice, client: stripe.StripeClient, ids: Ids) -> None:
    client.v1.prices.update(op.price_id, params={"metadata": ownership_metadata(op.slug)})


@run_stripe_op.register
def _(op: CreateProduct, client: stripe.StripeClient, ids: Ids) -> None:
    params: dict[str, Any] = {"name": op.name, "metadata": ownership_metadata(op.slug)}
    if op.description:
        params["description"] = op.description
    product = client.v1.products.create(
        params=params,  # type: ignore[arg-type]
        options={"idempotency_key": idempotency_key("/v1/products", params)},
    )
    ids[(op.slug, "product")] = product.id


@run_stripe_op.register
def _(op: UpdateProduct, client: stripe.StripeClient, ids: Ids) -> None:
    params = dict(op.after)
    client.v1.products.update(op.product_id, params=params)  # type: ignore[arg-type]


@run_stripe_op.register
def _(op: CreatePrice, client: stripe.StripeClient, ids: Ids) -> None:
    params: dict[str, Any] = {
        "product": resolve(op.product, op.slug, ids),
        "unit_amount": op.unit_amount,
        "currency": op.currency,
        "recurring": {"interval": op.interval},
        "lookup_key": op.lookup_key,
        "transfer_lookup_key": True,
        "metadata": ownership_metadata(op.slug),
    }
    price = client.v1.prices.create(
        params=params,  # type: ignore[arg-type]
        options={"idempotency_key": idempotency_key("/v1/prices", params)},
    )
    ids[(op.slug, "price")] = price.id


@run_stripe_op.register
def _(op: ReactivatePrice, client: stripe.StripeClient, ids: Ids) -> None:
    client.v1.prices.update(
        op.price_id, params={"active": True, "lookup_key": op.lookup_key, "transfer_lookup_key": True}
    )


@run_stripe_op.register
def _(op: SetDefaultPrice, client: stripe.StripeClient, ids: Ids) -> None:
    client.v1.products.update(
        resolve(op.product, op.slug, ids), params={"default_price": resolve(op.after, op.slug, ids)}
    )


@run_stripe_op.register
def _(op: ArchiveProduct, client: stripe.StripeClient, ids: Ids) -> None:
    # Clearing default_price first is what lets the Price be archived after it.
    client.v1.products.update(op.product_id, params={"active": False, "default_price": ""})


@run_stripe_op.register
def _(op: ArchivePrice, client: stripe.StripeClient, ids: Ids) -> None:
    client.v1.prices.update(op.price_id, params={"active": False})
