"""What a verified event does, and the ordering rules: route it to a handler (or an outcome known
from the event alone), record it exactly once, and never move a subscription's state or latest invoice
backwards (ask Stripe when seconds tie). The rows are written by `reconciler.state.subscriptions`."""

from __future__ import annotations

import asyncio
import email.utils
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg
import stripe

from reconciler.listener.verification import Event, Unavailable, items_of
from reconciler.model import WEBHOOK_EVENTS, owned_slug
from reconciler.state import subscriptions
from reconciler.state.subscriptions import EventRow, StoredSubscription, SubscriptionState
from reconciler.throttle import StripeCalls

LOCK_SPACE = 0x6B75
"""First key of the listener's two-int4 advisory locks (one per subscription)."""
APPLY_KEY_PREFIX = "kuploy-reconciler-"

HANDLED = frozenset(WEBHOOK_EVENTS)
_INVOICE_STATUS = {"invoice.paid": "paid", "invoice.payment_failed": "payment_failed"}
_INVOICE_RANK = {"payment_failed": 1, "paid": 2}


class OutcomeKind(StrEnum):
    """What an event did, as stored in `cloud_stripe_events.outcome` and answered to Stripe."""

    PROCESSED = "processed"
    STALE = "stale"
    IGNORED = "ignored"
    APPLY = "apply"
    """A Product/Price event an apply caused."""
    DRIFT = "drift"
    """A Product/Price event on an owned object, made outside the tool."""


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    detail: str | None = None
    plan: str | None = None
    """The plan a Product/Price event is about (apply and drift outcomes)."""


async def process_event(
    conn: psycopg.AsyncConnection, calls: StripeCalls, event: Event, received: datetime
) -> Outcome | None:
    """Record `event` and its effect in one transaction; None when it was already recorded."""
    row = EventRow(event.id, event.type, event.object_id, event.created, event.livemode, received)
    route = route_of(event)
    if isinstance(route, Outcome):
        # Nothing to do but record it: one statement, atomic on its own.
        new = await subscriptions.record_event(conn, row, route.kind, route.detail, plan=route.plan)
        return route if new else None
    handler, sub_id = route
    async with subscriptions.pipelined_transaction(conn):
        # The row is inserted first, and only a new event takes its subscription's lock; the
        # subscription's row is read under it.
        new, stored = await subscriptions.record_event_and_read(conn, row, LOCK_SPACE, sub_id)
        if not new:
            return None
        outcome = await handler(conn, calls, event, sub_id, stored)
        await subscriptions.finish_event(conn, event.id, outcome.kind, outcome.detail)
        return outcome


Handler = Callable[
    [psycopg.AsyncConnection, StripeCalls, Event, str, StoredSubscription | None], Awaitable[Outcome]
]
"""Runs in the event's transaction, holding the lock of the subscription (its fourth argument), with
that subscription's stored row (None without one). Its statements are pipelined: a write costs no
round trip of its own, reading a result does."""


def route_of(event: Event) -> tuple[Handler, str] | Outcome:
    """What `event` does: a handler and the subscription it changes, or an outcome known from the
    event alone (nothing to write but the event's own row)."""
    ignored = OutcomeKind.IGNORED
    if event.type == "checkout.session.completed":
        sub_id = _id_of(event.object.get("subscription"))
        return (
            (_on_checkout, sub_id) if sub_id else Outcome(ignored, "checkout session without a subscription")
        )
    if event.type.startswith("customer.subscription.") and event.type in HANDLED:
        sub_id = event.object_id
        return (_on_subscription, sub_id) if sub_id else Outcome(ignored, "subscription event without an id")
    if event.type in _INVOICE_STATUS:
        sub_id = _subscription_of_invoice(event.object)
        return (
            (_on_invoice, sub_id)
            if sub_id and event.object_id
            else Outcome(ignored, "invoice without a subscription")
        )
    if event.type.startswith(("product.", "price.")):
        return _catalog_outcome(event)
    return Outcome(ignored, "event type not handled")


def _id_of(ref: Any) -> str | None:
    """An id from an expandable field: the string, or the expanded object's id."""
    if isinstance(ref, str) and ref:
        return ref
    if isinstance(ref, Mapping) and isinstance(ref.get("id"), str):
        return str(ref["id"])
    return None


def _subscription_of_invoice(invoice: Mapping[str, Any]) -> str | None:
    """`invoice.subscription` before API 2025-03-31, `parent.subscription_details.subscription` since."""
    parent = invoice.get("parent") if isinstance(invoice.get("parent"), Mapping) else {}
    details = parent.get("subscription_details") if isinstance(parent, Mapping) else None
    return _id_of(invoice.get("subscription")) or (
        _id_of(details.get("subscription")) if isinstance(details, Mapping) else None
    )


# The three handlers share one signature by design: each is a `Handler`, chosen by `route_of`.
async def _on_checkout(
    conn: psycopg.AsyncConnection,
    calls: StripeCalls,
    event: Event,
    sub_id: str,
    stored: StoredSubscription | None,
) -> Outcome:
    session = event.object
    client_reference = session.get("client_reference_id")
    org = client_reference if isinstance(client_reference, str) and client_reference else None
    if stored is not None:
        # The session is not the subscription: a row its own events made only gains the organization.
        await subscriptions.attach_checkout(conn, sub_id, org, _id_of(session.get("customer")))
        return Outcome(OutcomeKind.PROCESSED, f"subscription {sub_id}: {stored.status}")
    state = await _sync_subscription(conn, calls, sub_id, organization=org)  # no row yet: ask Stripe
    return Outcome(OutcomeKind.PROCESSED, f"subscription {sub_id}: {state.get('status')}")


async def _on_subscription(
    conn: psycopg.AsyncConnection,
    calls: StripeCalls,
    event: Event,
    sub_id: str,
    stored: StoredSubscription | None,
) -> Outcome:
    as_of, read = (stored.as_of, stored.read) if stored is not None else (None, False)
    # A state read from Stripe is dated by its `Date` header, possibly a second after the read:
    # the second before it is ambiguous too.
    if as_of is not None and event.created < as_of - (1 if read else 0):
        return Outcome(OutcomeKind.STALE, f"subscription {sub_id}: stored state is newer than this event")
    if as_of is None or event.created > as_of:
        # A snapshot from a later second than the stored state is newer: no need to ask Stripe.
        snapshot = event.object
        if event.type == "customer.subscription.deleted":
            snapshot = {**snapshot, "status": "canceled"}  # deleted is final, whatever the payload says
        await _store_subscription(conn, sub_id, snapshot, as_of=event.created, read=False)
        return Outcome(OutcomeKind.PROCESSED, f"subscription {sub_id}: {snapshot.get('status')}")
    state = await _sync_subscription(conn, calls, sub_id)  # ambiguous: ask Stripe
    return Outcome(OutcomeKind.PROCESSED, f"subscription {sub_id}: {state.get('status')} (re-read)")


async def _on_invoice(
    conn: psycopg.AsyncConnection,
    calls: StripeCalls,
    event: Event,
    sub_id: str,
    stored: StoredSubscription | None,
) -> Outcome:
    invoice = event.object
    invoice_id = str(event.object_id)
    status = _INVOICE_STATUS[event.type]
    stamped = invoice.get("created")
    created: int = stamped if isinstance(stamped, int) else event.created
    stored_id, stored_status, stored_created = (
        (stored.invoice_id, stored.invoice_status, stored.invoice_created)
        if stored is not None
        else (None,) * 3
    )
    newest: str | None = None
    tie = stored_id is not None and stored_id != invoice_id and created == stored_created
    if stored is None or tie:
        # No row yet (it is made from Stripe's answer), or two invoices of the same second: ask Stripe
        # which invoice is the subscription's latest.
        newest = _id_of((await _sync_subscription(conn, calls, sub_id)).get("latest_invoice"))
    if newest is not None and newest != invoice_id:
        return Outcome(
            OutcomeKind.STALE, f"invoice {invoice_id} is not subscription {sub_id}'s latest ({newest})"
        )
    if stored_id is not None:
        if stored_id == invoice_id:
            newer = _INVOICE_RANK.get(status, 0) >= _INVOICE_RANK.get(stored_status or "", 0)
        else:
            newer = newest == invoice_id or (created, invoice_id) > (stored_created or 0, stored_id)
        if not newer:
            older = f"invoice {invoice_id} {status} is older than {stored_id} {stored_status}"
            return Outcome(OutcomeKind.STALE, older)
    await subscriptions.store_latest_invoice(conn, sub_id, invoice_id, status, created)
    return Outcome(OutcomeKind.PROCESSED, f"subscription {sub_id}: invoice {invoice_id} {status}")


def _catalog_outcome(event: Event) -> Outcome:
    metadata = event.object.get("metadata")
    slug = owned_slug(metadata) if isinstance(metadata, Mapping) else None
    if slug is None:
        return Outcome(OutcomeKind.IGNORED, "not owned by kuploy-reconciler")
    if _caused_by_apply(event):
        return Outcome(OutcomeKind.APPLY, subscriptions.plan_detail(slug, "made by an apply"), slug)
    return Outcome(OutcomeKind.DRIFT, subscriptions.plan_detail(slug, f"{event.type} outside the tool"), slug)


def _caused_by_apply(event: Event) -> bool:
    """Every write an apply makes carries an idempotency key with the apply's prefix (creates derive
    it from their content, updates make one per call), and Stripe puts that key on the event."""
    return bool(event.idempotency_key and event.idempotency_key.startswith(APPLY_KEY_PREFIX))


# --- the subscription row ----------------------------------------------------------------------


async def _sync_subscription(
    conn: psycopg.AsyncConnection,
    calls: StripeCalls,
    sub_id: str,
    *,
    organization: str | None = None,
) -> Mapping[str, Any]:
    """Store what Stripe says the subscription is now; returns that state. The caller holds its lock:
    Stripe is asked only once it is held (in a thread: the SDK blocks)."""
    path = f"/v1/subscriptions/{urllib.parse.quote(sub_id, safe='')}"
    try:
        response = await asyncio.to_thread(calls.read, lambda c: c.raw_request("get", path))
    except stripe.InvalidRequestError as e:
        # Stripe keeps canceled subscriptions readable: a 404 means this key cannot see it (another
        # account or mode), not that it ended. Storing a status Stripe did not send would record a
        # paying customer as canceled; answer 503 instead, with nothing written, and say why.
        if e.http_status == 404:
            raise Unavailable(
                f"Stripe has no subscription {sub_id} for this listener's key (404): is "
                "STRIPE_SECRET_KEY of the account that sends these events?"
            ) from e
        raise Unavailable(f"Stripe refused to read subscription {sub_id} ({e.http_status})") from e
    except stripe.StripeError as e:
        raise Unavailable(f"cannot read subscription {sub_id} from Stripe ({e.http_status})") from e
    state: Mapping[str, Any] = response.data
    as_of = _stripe_clock(response.headers.get("Date")) or int(time.time())
    await _store_subscription(conn, sub_id, state, as_of=as_of, read=True, organization=organization)
    return state


def _stripe_clock(date: str | None) -> int | None:
    """Stripe's own clock at the answer (its `Date` header), in whole seconds."""
    if not date:
        return None
    try:
        return int(email.utils.parsedate_to_datetime(date).timestamp())
    except (TypeError, ValueError):
        return None


async def _store_subscription(
    conn: psycopg.AsyncConnection,
    sub_id: str,
    state: Mapping[str, Any],
    *,
    as_of: int,
    read: bool,
    organization: str | None = None,
) -> None:
    """Upsert the subscription row from `state` (Stripe's as of second `as_of`). Caller holds its lock."""
    metadata = state.get("metadata") if isinstance(state.get("metadata"), Mapping) else {}
    org = organization or (metadata or {}).get("organizationId")
    prices = [
        (price_id, _slug_of(item.get("price")))
        for item in items_of(state)
        if (price_id := _id_of(item.get("price")))
    ]
    row = SubscriptionState(
        sub_id=sub_id,
        organization=org if isinstance(org, str) and org else None,
        customer=_id_of(state.get("customer")),
        prices=prices,
        status=str(state.get("status") or "unknown"),
        period_end=_period_end(state),
        cancel_at_period_end=bool(state.get("cancel_at_period_end", False)),
        as_of=as_of,
        read=read,
    )
    await subscriptions.upsert_subscription(conn, row)


def _period_end(state: Mapping[str, Any]) -> int | None:
    """`current_period_end`: on the subscription before API 2025-03-31, on its items since."""
    ends = [state.get("current_period_end"), *(i.get("current_period_end") for i in items_of(state))]
    values = [e for e in ends if isinstance(e, int)]
    return max(values) if values else None


def _slug_of(price: Any) -> str | None:
    """The plan an expanded Price is owned by (`kuploy_plan` metadata), if any."""
    metadata = price.get("metadata") if isinstance(price, Mapping) else None
    return owned_slug(metadata) if isinstance(metadata, Mapping) else None
