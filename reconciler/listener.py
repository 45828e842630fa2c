"""`kuploy-reconciler listen`: the Stripe webhook listener — verify, dedupe by event id, record, re-read.

Routes (a starlette app from `create_app(settings, webhook_secret=...)`, no module state):

- `POST /api/webhooks/stripe` — the Stripe webhook endpoint.
- `GET /healthz` — the process is up (liveness).
- `GET /readyz` — the database answers and every migration is applied (readiness).
- `GET /metrics` — Prometheus metrics (`reconciler/telemetry.py`).

**Verification first.** The body is read with a cap (`MAX_BODY`, 1 MiB; `Content-Length` is not
trusted, the stream is counted) and its `Stripe-Signature` is checked by the SDK's
`stripe.WebhookSignature.verify_header` against `STRIPE_WEBHOOK_SECRET` (300 s tolerance; any of
several `v1` signatures may match, as during a secret rotation). A missing or bad signature, a stale
timestamp, a body that is too large, not UTF-8, not JSON or not an event, an event whose `livemode`
is not the mode of the listener's Stripe key, or an event Postgres could never store (a NUL or an
unpaired surrogate anywhere, a time outside 1970..9999): 400 with a short reason, before any
connection is taken, so nothing is written. (A 500 or 503 would have Stripe retry it for days,
failing the same way each time.)

**Exactly once.** An event's row in `cloud_stripe_events` is INSERTed first (`ON CONFLICT DO
NOTHING`), in the same transaction as its effect. A duplicate finds the row and is answered 200
with no effect; a copy racing on another connection (or replica) waits on the primary key until
the first commits (then it is a duplicate) or rolls back (then it does the work). Any failure
while processing (database or Stripe unreachable, a lock wait over 30 s) rolls the whole
transaction back, event row included, and answers 503, so Stripe's retry does the work later. So does
an event not processed within `EVENT_DEADLINE` (8 s): the request is answered 503 then, well before
Stripe gives up on it, and the processing is cancelled behind it.
The INSERT of an event that changes a subscription also takes that subscription's lock (below) in
its RETURNING clause, which runs for an inserted row only: a duplicate never waits for the lock.
An event with nothing to do but be recorded (an ignored type, a Product or Price event) is that
one INSERT, with its outcome, atomic on its own.

**Never backwards: compare seconds, and ask Stripe when they tie.** Events arrive out of order,
several in the same second, so whole-second `created` alone cannot order them. Each subscription
row keeps `"stateAsOf"`: the Stripe-clock second its state is as of (the `created` of the event
whose snapshot it holds, or Stripe's `Date` header when the listener re-read the subscription).
Under a transaction-scoped advisory lock keyed on the subscription id
(`pg_advisory_xact_lock(LOCK_SPACE, hashtext(id))`) a `customer.subscription.*` event from a *later*
second than `"stateAsOf"` stores its own snapshot (it is newer); one from an *earlier* second is
recorded as `stale` and changes nothing; one from the *same* second is ambiguous, so the listener
RE-FETCHES the subscription from Stripe (`GET /v1/subscriptions/{id}` through the SDK's
`raw_request`: the JSON, without building a typed object) inside the lock and stores what
Stripe says now. Stripe keeps canceled subscriptions readable, so a 404 means the listener's key
cannot see it (another account or mode): that is a 503 with nothing written, never a status Stripe
did not send. A state read from Stripe
(`"stateRead"`) is dated by the answer's `Date` header, which can be a second later than the
moment Stripe read the state; so against a read state, an event from that second *or the one
before it* is ambiguous and re-reads, and only an older one is stale. Checkout and invoice events
carry no subscription snapshot: they re-read it only when its row does not exist yet (the row is
made from Stripe's answer); otherwise they change only their own columns. Each stored state is
therefore at least as new as the one before it, whatever the arrival order, and Stripe is asked
only for a subscription's first checkout/invoice event and when seconds tie. That is what keeps a
webhook fast: a re-read costs a round trip to Stripe (100–300 ms from most hosts), a snapshot none.
(The lock lives in the two-int4 advisory key space, never the reconciler's bigint apply lock, so
`listen` never waits on `apply`.)

`organizationId` comes from the checkout session's `client_reference_id` (immutable, and the event
is signed) or the subscription's `metadata.organizationId`; a later event without one keeps it.
`planId` is the `cloud_plans` row whose `"stripePriceId"` is the subscription's Price, else the
plan the Price is owned by (`kuploy_plan` metadata: subscriptions left on an archived price);
otherwise NULL with `"priceUnknown"` set — the row is kept, never dropped.

**Invoices.** `latestInvoiceStatus` ("paid" / "payment_failed") comes from the invoice event, under
the same subscription lock, guarded against going backwards by the invoice's own state: the same
invoice only moves forward ("paid" is final: a paid invoice never fails afterwards), and a
different invoice wins only if it was created in a later second. Two different invoices of the same
second are a tie, settled like a subscription's: the subscription is re-read, and when it names
its `latest_invoice` only that invoice may set the status (Stripe's own answer); without one, the
invoice id breaks the tie, arbitrarily but the same way in every arrival order. The status of the
subscription itself comes from its own `customer.subscription.*` events, which Stripe sends with
every status change an invoice causes (`past_due`, `active` again).

**Product and Price events** on objects the tool owns (`kuploy_managed_by` metadata) are recorded
with outcome `drift` for `drift` to report, unless an apply caused them: every write of an apply
carries an idempotency key starting `kuploy-reconciler-`, and Stripe names that key in the event's
`request`. Anything else is acknowledged and recorded as `ignored`.

**Connections and threads.** Events are processed on the event loop with psycopg's async
connections, from a small pool (`ConnectionPool`, a LIFO list of autocommit connections with a
bounded number of slots; a connection that failed is closed along with every idle one). A thread
per event cost more CPU than the SQL itself (the hand-off, and the GIL passed back and forth on
every statement). Only the rare Stripe re-read runs in a thread, since the SDK blocks: one
`StripeCalls` per app (the thread-safe SDK client behind the shared client-side rate limit, with
few retries: a slow webhook is better answered 503 and retried by Stripe). `/readyz` opens its own
connection. One process is bound by one core; `listen --workers N` runs N of them on one port.

Logging: one line per event (`id`, `type`, `outcome`, `ms`; in JSON also `subscription`) or per
rejected request (`reason`), on `reconciler.listener`. Never the secret, headers or payloads; what
comes from an event has its control and format characters escaped, so a `type` holding `\\n` cannot
forge a second line. Metrics: `GET /metrics` (unless `metrics=False`), recorded where each event is
answered; see `reconciler/telemetry.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import email.utils
import json
import logging
import os
import re
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import stripe
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from reconciler import migrations
from reconciler.connections import stripe_client
from reconciler.errors import ConfigError
from reconciler.model import WEBHOOK_EVENTS, WEBHOOK_PATH, owned_slug, printable
from reconciler.settings import Environment, RedactingFilter, Secret, Settings, key_mode, redact_logging
from reconciler.telemetry import CONTENT_TYPE, EVENT_FIELDS, ListenerMetrics, use_json_logs
from reconciler.throttle import StripeCalls

logger = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
"""Largest accepted body (Stripe's events are far smaller)."""
DRAIN_FACTOR = 16
"""An oversized body is read and discarded up to 16 × the cap, so the client sees the 400, not a reset."""
TOLERANCE = 300
EVENT_DEADLINE = 8.0
"""Seconds an event may take (database and Stripe included) before it is answered 503, for Stripe to
retry it. Stripe publishes no number: its docs say an endpoint "must quickly return a successful status
code (2xx) prior to any complex logic that could cause a timeout" (docs.stripe.com/webhooks,
"Acknowledge events immediately"), its support page calls a late answer "Timed out"
(support.stripe.com/questions/webhooks-how-to-investigate-and-fix-timed-out), and integrators report
10 to 20 s. Answering before that keeps the outcome ours: a clear 503, not a delivery Stripe gave up on
while the listener still held a transaction open."""
MAX_TIMESTAMP = 253402300799
"""9999-12-31T23:59:59Z, the last second both Python and Postgres hold. An event or object time
outside 0..MAX_TIMESTAMP is refused (400): Postgres would fail on it, on every retry."""
LOCK_SPACE = 0x6B75
"""First key of the listener's two-int4 advisory locks (one per subscription)."""
APPLY_KEY_PREFIX = "kuploy-reconciler-"
WORKER_LIVE_ENV = "KUPLOY_LISTENER_LIVE"
"""Set to 1 by `listen --live --workers N` for its worker processes (see `app_from_environment`)."""
WORKER_DEBUG_ENV = "KUPLOY_LISTENER_DEBUG"
"""Set to 1 by `listen --debug --workers N`: the workers log at debug level too."""
WORKER_LOG_FORMAT_ENV = "KUPLOY_LISTENER_LOG_FORMAT"
"""`json` for `listen --log-format json --workers N`."""
WORKER_METRICS_ENV = "KUPLOY_LISTENER_METRICS"
"""Set to 0 by `listen --no-metrics --workers N`."""

HANDLED = frozenset(WEBHOOK_EVENTS)
_INVOICE_STATUS = {"invoice.paid": "paid", "invoice.payment_failed": "payment_failed"}
_INVOICE_RANK = {"payment_failed": 1, "paid": 2}


class Rejected(Exception):
    """A request refused before any write: 400 with this short reason."""


class Unavailable(Exception):
    """A dependency failed (database, Stripe): 503, nothing written, Stripe retries."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """The parts of a verified Stripe event the listener uses."""

    id: str
    type: str
    created: int
    livemode: bool
    object: Mapping[str, Any]
    idempotency_key: str | None

    @property
    def object_id(self) -> str | None:
        value = self.object.get("id")
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class Outcome:
    outcome: str
    detail: str | None = None


# --- verification ------------------------------------------------------------------------------


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The raw body, refused past `limit` bytes (counted on the stream, whatever Content-Length says)."""
    drain = DRAIN_FACTOR * limit
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > drain:
        raise Rejected(f"payload too large (limit {limit} bytes)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > drain:
            break
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise Rejected(f"payload too large (limit {limit} bytes)")
    return b"".join(chunks)


def verify_event(body: bytes, signature: str | None, secret: Secret, tolerance: int = TOLERANCE) -> Event:
    """Check the signature over the raw body, then parse it. Raises `Rejected` with a short reason."""
    if not signature:
        raise Rejected("missing Stripe-Signature header")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Rejected("body is not UTF-8") from e
    try:
        stripe.WebhookSignature.verify_header(text, signature, secret.reveal(), tolerance)
    except stripe.SignatureVerificationError as e:
        reason = str(e.user_message or "signature verification failed").rstrip(".")
        raise Rejected(f"bad signature: {reason[:100]}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise Rejected("body is not JSON") from e
    # JSON can carry a NUL or a lone surrogate only as an escape (\u0000, \ud800); Postgres cannot
    # store either, so every retry would fail the same way.
    if _UNSTORABLE_ESCAPE.search(text) and _unstorable(data):
        raise Rejected("event holds a NUL or an unpaired surrogate")
    return _event(data)


_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_UNSTORABLE_CHAR = re.compile("[\x00\ud800-\udfff]")


def _unstorable(value: Any) -> bool:
    if isinstance(value, str):
        return _UNSTORABLE_CHAR.search(value) is not None
    if isinstance(value, dict):
        return any(_unstorable(k) or _unstorable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_unstorable(v) for v in value)
    return False


def _in_range(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TIMESTAMP


def _event(data: Any) -> Event:
    if not isinstance(data, dict):
        raise Rejected("body is not a Stripe event")
    event_id, event_type, created = data.get("id"), data.get("type"), data.get("created")
    obj = (data.get("data") or {}).get("object") if isinstance(data.get("data"), dict) else None
    if not (isinstance(event_id, str) and 0 < len(event_id) <= 255):
        raise Rejected("event has no valid id")
    if not (isinstance(event_type, str) and 0 < len(event_type) <= 255):
        raise Rejected("event has no valid type")
    if not (isinstance(created, int) and _in_range(created)):
        raise Rejected("event has no valid created time")
    if not isinstance(obj, dict):
        raise Rejected("event has no data.object")
    if not isinstance(data.get("livemode"), bool):
        raise Rejected("event has no valid livemode")
    # The object's times the listener stores (an invoice's `created`, a period end).
    items = _items(obj)
    times = [obj.get("created"), obj.get("current_period_end"), *(i.get("current_period_end") for i in items)]
    if any(isinstance(t, int) and not _in_range(t) for t in times):
        raise Rejected("event has a time out of range")
    request = data.get("request")
    key = request.get("idempotency_key") if isinstance(request, dict) else None
    return Event(
        id=event_id,
        type=event_type,
        created=created,
        livemode=data["livemode"],
        object=obj,
        idempotency_key=key if isinstance(key, str) else None,
    )


def check_mode(event: Event, *, live: bool) -> None:
    """Refuse an event of the other mode than the listener's Stripe key: a live endpoint's secret
    paired with a test key (or the reverse) would otherwise record live customers from a re-read
    that cannot see them, or test events as real ones."""
    if event.livemode != live:
        mode, key = ("live", "test") if event.livemode else ("test", "live")
        raise Rejected(f"{mode}-mode event {event.id[:40]}, but STRIPE_SECRET_KEY is a {key}-mode key")


# --- connections -------------------------------------------------------------------------------


class ConnectionPool:
    """At most `size` autocommit connections, reused LIFO; a failed one is closed with the idle ones.

    Asynchronous: events are processed on the event loop, no thread per event (a thread hop and the
    GIL passed back and forth on every statement cost more CPU than the statements themselves)."""

    def __init__(self, dsn: Secret, *, size: int = 8, wait: float = 10.0, connect_timeout: int = 5) -> None:
        self._dsn = dsn
        self._slots = asyncio.Semaphore(size)
        self._idle: list[psycopg.AsyncConnection] = []
        self._wait = wait
        self._connect_timeout = connect_timeout

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        try:
            async with asyncio.timeout(self._wait):
                await self._slots.acquire()
        except TimeoutError:
            raise Unavailable("no database connection free") from None
        try:
            conn = await self._take()
            try:
                yield conn
            except psycopg.OperationalError:
                if conn.broken or conn.closed:
                    await conn.close()
                    await self.clear()  # the server probably went away: the idle ones are dead too
                else:
                    await self._give_back(conn)  # a lock timeout or a cancelled query: still healthy
                raise
            except BaseException:
                await self._give_back(conn)
                raise
            else:
                await self._give_back(conn)
        finally:
            self._slots.release()

    async def _take(self) -> psycopg.AsyncConnection:
        while self._idle:
            conn = self._idle.pop()
            if not (conn.closed or conn.broken):
                return conn
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._dsn.reveal(), autocommit=True, connect_timeout=self._connect_timeout
            )
        except psycopg.Error as e:
            raise Unavailable("database unreachable") from e
        try:
            # Per session, like apply's advisory lock: DATABASE_URL must not be a transaction-mode
            # pooler. A stuck peer answers 503, and Stripe retries.
            await conn.execute("SET lock_timeout = '30s'")
        except BaseException as e:
            await conn.close()
            if isinstance(e, psycopg.Error):
                raise Unavailable("database unreachable") from e
            raise
        return conn

    async def _give_back(self, conn: psycopg.AsyncConnection) -> None:
        healthy = not (conn.closed or conn.broken)
        if healthy and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            self._idle.append(conn)
        else:
            await conn.close()

    async def clear(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()


# --- processing --------------------------------------------------------------------------------


_INSERT_EVENT = (
    "INSERT INTO cloud_stripe_events "
    '(id, type, "objectId", created, livemode, "receivedAt", outcome, detail, "processedAt") '
    "VALUES (%s, %s, %s, to_timestamp(%s), %s, %s, %s, %s, {processed}) "
    "ON CONFLICT (id) DO NOTHING RETURNING id"
)
RECORD_EVENT = _INSERT_EVENT.format(processed="clock_timestamp()")
"""An event with its final outcome, nothing else to do."""
RECORD_EVENT_AND_LOCK = _INSERT_EVENT.format(processed="NULL") + ", pg_advisory_xact_lock(%s, hashtext(%s))"
"""An event still processing, and its subscription's lock, taken only if the event is new."""


async def process_event(
    conn: psycopg.AsyncConnection, calls: StripeCalls, event: Event, received: datetime
) -> Outcome | None:
    """Record `event` and its effect in one transaction; None when it was already recorded."""
    row = (event.id, event.type, event.object_id, event.created, event.livemode, received)
    route = _route(event)
    if isinstance(route, Outcome):
        # Nothing to do but record it: one statement, atomic on its own.
        cur = await conn.execute(RECORD_EVENT, (*row, route.outcome, route.detail))
        inserted = await cur.fetchone()
        return None if inserted is None else route
    handler, sub_id = route
    async with conn.transaction():
        # The row is inserted first (a copy racing on another connection waits here for this one to
        # commit or roll back), and only a new event takes its subscription's lock, in the same
        # statement: RETURNING runs for inserted rows only.
        cur = await conn.execute(RECORD_EVENT_AND_LOCK, (*row, "processing", None, LOCK_SPACE, sub_id))
        if await cur.fetchone() is None:
            return None
        outcome = await handler(conn, calls, event, sub_id)
        await conn.execute(
            'UPDATE cloud_stripe_events SET outcome = %s, detail = %s, "processedAt" = clock_timestamp() '
            "WHERE id = %s",
            (outcome.outcome, outcome.detail, event.id),
        )
        return outcome


Handler = Callable[[psycopg.AsyncConnection, StripeCalls, Event, str], Awaitable[Outcome]]
"""Runs in the event's transaction, holding the lock of the subscription (its last argument)."""


def _route(event: Event) -> tuple[Handler, str] | Outcome:
    """What `event` does: a handler and the subscription it changes, or an outcome known from the
    event alone (nothing to write but the event's own row)."""
    if event.type == "checkout.session.completed":
        sub_id = _id_of(event.object.get("subscription"))
        return (
            (_on_checkout, sub_id)
            if sub_id
            else Outcome("ignored", "checkout session without a subscription")
        )
    if event.type.startswith("customer.subscription.") and event.type in HANDLED:
        sub_id = event.object_id
        return (
            (_on_subscription, sub_id) if sub_id else Outcome("ignored", "subscription event without an id")
        )
    if event.type in _INVOICE_STATUS:
        sub_id = _subscription_of_invoice(event.object)
        return (
            (_on_invoice, sub_id)
            if sub_id and event.object_id
            else Outcome("ignored", "invoice without a subscription")
        )
    if event.type.startswith(("product.", "price.")):
        return _catalog_outcome(event)
    return Outcome("ignored", "event type not handled")


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


async def _on_checkout(
    conn: psycopg.AsyncConnection, calls: StripeCalls, event: Event, sub_id: str
) -> Outcome:
    session = event.object
    client_reference = session.get("client_reference_id")
    org = client_reference if isinstance(client_reference, str) and client_reference else None
    # The session is not the subscription: a row its own events made only gains the organization.
    cur = await conn.execute(
        'UPDATE cloud_subscriptions SET "organizationId" = COALESCE(%s, "organizationId"), '
        '"stripeCustomerId" = COALESCE("stripeCustomerId", %s), "updatedAt" = now() '
        'WHERE "stripeSubscriptionId" = %s RETURNING status',
        (org, _id_of(session.get("customer")), sub_id),
    )
    known = await cur.fetchone()
    if known is not None:
        return Outcome("processed", f"subscription {sub_id}: {known[0]}")
    state = await _sync_subscription(conn, calls, sub_id, organization=org)  # no row yet: ask Stripe
    return Outcome("processed", f"subscription {sub_id}: {state.get('status')}")


async def _on_subscription(
    conn: psycopg.AsyncConnection, calls: StripeCalls, event: Event, sub_id: str
) -> Outcome:
    cur = await conn.execute(
        'SELECT "stateAsOf", "stateRead" FROM cloud_subscriptions WHERE "stripeSubscriptionId" = %s',
        (sub_id,),
    )
    row = await cur.fetchone()
    as_of, read = row if row is not None else (None, False)
    # A state read from Stripe is dated by its `Date` header, possibly a second after the read:
    # the second before it is ambiguous too.
    if as_of is not None and event.created < as_of - (1 if read else 0):
        return Outcome("stale", f"subscription {sub_id}: stored state is newer than this event")
    if as_of is None or event.created > as_of:
        # A snapshot from a later second than the stored state is newer: no need to ask Stripe.
        snapshot = event.object
        if event.type == "customer.subscription.deleted":
            snapshot = {**snapshot, "status": "canceled"}  # deleted is final, whatever the payload says
        await _store_subscription(conn, sub_id, snapshot, as_of=event.created, read=False)
        return Outcome("processed", f"subscription {sub_id}: {snapshot.get('status')}")
    state = await _sync_subscription(conn, calls, sub_id)  # ambiguous: ask Stripe
    return Outcome("processed", f"subscription {sub_id}: {state.get('status')} (re-read)")


async def _on_invoice(
    conn: psycopg.AsyncConnection, calls: StripeCalls, event: Event, sub_id: str
) -> Outcome:
    invoice = event.object
    invoice_id = str(event.object_id)
    status = _INVOICE_STATUS[event.type]
    created = invoice.get("created") if isinstance(invoice.get("created"), int) else event.created
    cur = await conn.execute(
        'SELECT "latestInvoiceId", "latestInvoiceStatus", extract(epoch FROM "latestInvoiceCreated")::bigint '
        'FROM cloud_subscriptions WHERE "stripeSubscriptionId" = %s',
        (sub_id,),
    )
    row = await cur.fetchone()
    stored_id, stored_status, stored_created = row if row is not None else (None, None, None)
    newest: str | None = None
    tie = stored_id is not None and stored_id != invoice_id and created == stored_created
    if row is None or tie:
        # No row yet (it is made from Stripe's answer), or two invoices of the same second: ask Stripe
        # which invoice is the subscription's latest.
        newest = _id_of((await _sync_subscription(conn, calls, sub_id)).get("latest_invoice"))
    if newest is not None and newest != invoice_id:
        return Outcome("stale", f"invoice {invoice_id} is not subscription {sub_id}'s latest ({newest})")
    if stored_id is not None:
        if stored_id == invoice_id:
            newer = _INVOICE_RANK.get(status, 0) >= _INVOICE_RANK.get(stored_status, 0)
        else:
            newer = newest == invoice_id or (created, invoice_id) > (stored_created or 0, stored_id)
        if not newer:
            older = f"invoice {invoice_id} {status} is older than {stored_id} {stored_status}"
            return Outcome("stale", older)
    await conn.execute(
        'UPDATE cloud_subscriptions SET "latestInvoiceId" = %s, "latestInvoiceStatus" = %s, '
        '"latestInvoiceCreated" = to_timestamp(%s), "updatedAt" = now() WHERE "stripeSubscriptionId" = %s',
        (invoice_id, status, created, sub_id),
    )
    return Outcome("processed", f"subscription {sub_id}: invoice {invoice_id} {status}")


def _catalog_outcome(event: Event) -> Outcome:
    metadata = event.object.get("metadata")
    slug = owned_slug(metadata) if isinstance(metadata, Mapping) else None
    if slug is None:
        return Outcome("ignored", "not owned by kuploy-reconciler")
    if _caused_by_apply(event):
        return Outcome("apply", f"plan {slug}: made by an apply")
    return Outcome("drift", f"plan {slug}: {event.type} outside the tool")


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
        for item in _items(state)
        if (price_id := _id_of(item.get("price")))
    ]
    # One statement: the plan is looked up as the row is written. It is the first item whose Price
    # is a plan's in cloud_plans (its current or an older row), else whose Price is owned by a plan
    # (`kuploy_plan` metadata) that has a row; without one, the first item's Price, flagged unknown.
    await conn.execute(
        """
        WITH item AS (
            SELECT i.price, i.n,
                   COALESCE((SELECT p."planId" FROM cloud_plans p WHERE p."stripePriceId" = i.price
                             ORDER BY p."isActive" DESC LIMIT 1),
                            (SELECT p."planId" FROM cloud_plans p WHERE p."planId" = i.slug)) AS plan
            FROM unnest(%(prices)s::text[], %(slugs)s::text[]) WITH ORDINALITY AS i(price, slug, n)
        ), chosen AS (
            SELECT price, plan FROM item ORDER BY plan IS NULL, n LIMIT 1
        )
        INSERT INTO cloud_subscriptions AS s
            ("stripeSubscriptionId", "organizationId", "stripeCustomerId", "stripePriceId", "planId",
             "priceUnknown", status, "currentPeriodEnd", "cancelAtPeriodEnd", "stateAsOf", "stateRead",
             "updatedAt")
        SELECT %(sub)s, %(org)s, %(customer)s, chosen.price, chosen.plan, chosen.plan IS NULL, %(status)s,
               to_timestamp(%(period_end)s), %(cancel)s, %(as_of)s, %(read)s, now()
        FROM (SELECT 1) AS one LEFT JOIN chosen ON true
        ON CONFLICT ("stripeSubscriptionId") DO UPDATE SET
            "organizationId" = COALESCE(EXCLUDED."organizationId", s."organizationId"),
            "stripeCustomerId" = COALESCE(EXCLUDED."stripeCustomerId", s."stripeCustomerId"),
            "stripePriceId" = COALESCE(EXCLUDED."stripePriceId", s."stripePriceId"),
            "planId" = CASE WHEN EXCLUDED."stripePriceId" IS NULL THEN s."planId" ELSE EXCLUDED."planId" END,
            "priceUnknown" = CASE WHEN EXCLUDED."stripePriceId" IS NULL THEN s."priceUnknown"
                                  ELSE EXCLUDED."priceUnknown" END,
            status = EXCLUDED.status,
            "currentPeriodEnd" = COALESCE(EXCLUDED."currentPeriodEnd", s."currentPeriodEnd"),
            "cancelAtPeriodEnd" = EXCLUDED."cancelAtPeriodEnd",
            "stateAsOf" = GREATEST(EXCLUDED."stateAsOf", s."stateAsOf"),
            "stateRead" = EXCLUDED."stateRead",
            "updatedAt" = now()
        """,
        {
            "prices": [price for price, _ in prices],
            "slugs": [slug for _, slug in prices],
            "sub": sub_id,
            "org": org if isinstance(org, str) and org else None,
            "customer": _id_of(state.get("customer")),
            "status": str(state.get("status") or "unknown"),
            "period_end": _period_end(state),
            "cancel": bool(state.get("cancel_at_period_end", False)),
            "as_of": as_of,
            "read": read,
        },
    )


def _items(state: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = state.get("items")
    data = items.get("data") if isinstance(items, Mapping) else items
    return [i for i in data or () if isinstance(i, Mapping)]


def _period_end(state: Mapping[str, Any]) -> int | None:
    """`current_period_end`: on the subscription before API 2025-03-31, on its items since."""
    ends = [state.get("current_period_end"), *(i.get("current_period_end") for i in _items(state))]
    values = [e for e in ends if isinstance(e, int)]
    return max(values) if values else None


def _slug_of(price: Any) -> str | None:
    """The plan an expanded Price is owned by (`kuploy_plan` metadata), if any."""
    metadata = price.get("metadata") if isinstance(price, Mapping) else None
    return owned_slug(metadata) if isinstance(metadata, Mapping) else None


# --- the app -----------------------------------------------------------------------------------


def _loggable(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters, what is not printable escaped (`\\n`, `\\u009b`, `\\u202e`):
    a value from an event never splits, recolours or reorders a log line."""
    return printable(text[:limit])


def _log_event(event: Event, outcome: str, seconds: float) -> None:
    ms = seconds * 1000
    route = _route(event)
    fields = {
        "event_id": _loggable(event.id),
        "type": _loggable(event.type),
        "outcome": outcome,
        "subscription": route[1] if isinstance(route, tuple) else None,
        "ms": round(ms, 1),
    }
    logger.info(
        "stripe_event id=%s type=%s outcome=%s ms=%.1f",
        _loggable(event.id),
        _loggable(event.type),
        outcome,
        ms,
        extra={EVENT_FIELDS: fields},
    )


def create_app(
    settings: Settings,
    *,
    webhook_secret: Secret,
    pool_size: int = 8,
    max_body: int = MAX_BODY,
    tolerance: int = TOLERANCE,
    event_deadline: float = EVENT_DEADLINE,
    metrics: bool = True,
) -> Starlette:
    """The listener as a starlette app; its pool and Stripe client live as long as its lifespan."""
    pool = ConnectionPool(settings.database_url, size=pool_size)
    live = key_mode(settings.stripe_secret_key.reveal()) == "live"
    # Fail fast: a webhook that cannot be read now is answered 503 and Stripe retries it later.
    calls = dataclasses.replace(stripe_client(settings), max_attempts=3, max_delay=2.0)
    running: set[asyncio.Task[Outcome | None]] = set()
    telemetry = ListenerMetrics() if metrics else None
    if telemetry is not None:
        calls = dataclasses.replace(calls, stats=telemetry.call_stats())

    def finished(event: Event, outcome: str, started: float, failure: Exception | None = None) -> None:
        seconds = time.perf_counter() - started
        _log_event(event, outcome, seconds)
        if telemetry is not None:
            telemetry.observe(event.type, outcome, seconds, failure)

    async def handle(event: Event, received: datetime) -> Outcome | None:
        try:
            async with pool.connection() as conn:
                return await process_event(conn, calls, event, received)
        except psycopg.errors.UndefinedTable as e:
            raise Unavailable("the listener's tables are missing: run `kuploy-reconciler migrate`") from e
        except psycopg.errors.LockNotAvailable as e:
            raise Unavailable("timed out waiting for a lock") from e
        except psycopg.OperationalError as e:
            raise Unavailable("database unavailable") from e
        except psycopg.DataError as e:
            # A value the checks above let through that Postgres cannot store: every retry would
            # fail the same way. The transaction rolled back; nothing was written.
            raise Rejected(f"event holds a value the database cannot store ({type(e).__name__})") from e

    def settled(task: asyncio.Task[Outcome | None]) -> None:
        running.discard(task)
        if not task.cancelled():
            task.exception()  # the request that waited for it reported it; else nobody needs it

    async def handle_in_time(event: Event, received: datetime) -> Outcome | None:
        """`handle`, answered by `event_deadline` whatever the database or Stripe do. Past it the
        processing is cancelled in the background (psycopg cancels the query in the server, the
        transaction rolls back, the event row with it) and the request answers 503 at once, instead
        of waiting for that clean-up too."""
        task = asyncio.ensure_future(handle(event, received))
        running.add(task)
        task.add_done_callback(settled)
        try:
            async with asyncio.timeout(event_deadline):
                return await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            raise Unavailable(
                f"not processed within {event_deadline:g} s (database or Stripe too slow)"
            ) from None

    async def webhook(request: Request) -> JSONResponse:
        started = time.perf_counter()
        received = datetime.now(UTC)
        try:
            body = await read_body(request, max_body)
            event = verify_event(body, request.headers.get("stripe-signature"), webhook_secret, tolerance)
            check_mode(event, live=live)
        except Rejected as e:
            ms = (time.perf_counter() - started) * 1000
            logger.warning("stripe_webhook rejected reason=%r ms=%.1f", str(e), ms)
            if telemetry is not None:
                telemetry.rejected.inc()
            return JSONResponse({"error": str(e)}, status_code=400)
        try:
            outcome = await handle_in_time(event, received)
        except Rejected as e:
            finished(event, "rejected", started)
            logger.warning("stripe_event id=%s rejected: %s", _loggable(event.id), e)
            if telemetry is not None:
                telemetry.rejected.inc()
            return JSONResponse({"error": str(e)}, status_code=400)
        except Unavailable as e:
            finished(event, "retry", started, e)
            logger.warning(
                "stripe_event id=%s not processed: %s", _loggable(event.id), _loggable(str(e), 300)
            )
            return JSONResponse({"error": f"{e}; retry later"}, status_code=503)
        except Exception as e:
            finished(event, "error", started, e)
            logger.error("stripe_event id=%s failed: %s", _loggable(event.id), type(e).__name__)
            logger.debug("stripe_event failure", exc_info=True)
            return JSONResponse({"error": "internal error; retry later"}, status_code=500)
        if outcome is None:
            finished(event, "duplicate", started)
            return JSONResponse({"received": True, "duplicate": True})
        finished(event, outcome.outcome, started)
        return JSONResponse({"received": True, "outcome": outcome.outcome})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    def readiness() -> tuple[bool, str]:
        try:
            with psycopg.connect(settings.database_url.reveal(), connect_timeout=5) as conn:
                todo = migrations.pending(conn)
        except psycopg.Error:
            return False, "database unreachable"
        if todo:
            return False, f"migrations pending: {', '.join(m.label for m in todo)}"
        return True, "ready"

    async def readyz(request: Request) -> JSONResponse:
        ok, reason = await run_in_threadpool(readiness)
        return JSONResponse({"status": "ready" if ok else "not ready", "reason": reason}, 200 if ok else 503)

    async def metrics_endpoint(request: Request) -> Response:
        assert telemetry is not None
        return Response(await run_in_threadpool(telemetry.exposition), media_type=CONTENT_TYPE)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            await pool.clear()

    return Starlette(
        routes=[
            Route(WEBHOOK_PATH, webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            *([Route("/metrics", metrics_endpoint, methods=["GET"])] if telemetry is not None else []),
        ],
        lifespan=lifespan,
    )


def configure_logging(*, debug: bool = False, json_lines: bool = False) -> None:
    """One line per event on stderr: `reconciler.listener` at info, whatever else is configured;
    with `json_lines`, every line is a JSON object."""
    # A no-op when the CLI already configured logging (with --debug or not).
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, stream=sys.stderr)
    redact_logging()
    if json_lines:
        use_json_logs()
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration, each of its handlers redacting (`RedactingFilter`): its
    error log prints tracebacks of whatever an app raised."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": RedactingFilter}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact"]
    return config


def webhook_secret_from_environment() -> Secret:
    secret = os.environ.get("STRIPE_WEBHOOK_SECRET") or None
    if secret is None:
        raise ConfigError(
            "listen needs STRIPE_WEBHOOK_SECRET: the signing secret (whsec_…) of the Stripe webhook "
            "endpoint pointing at this listener (Stripe Dashboard → Developers → Webhooks)"
        )
    return Secret(secret)


def app_from_environment() -> Starlette:
    """The app of one worker process of `listen --workers N` (uvicorn starts workers from an import
    string, so only the environment crosses): `listen` resolved the settings, sandbox included, into
    DATABASE_URL, STRIPE_SECRET_KEY, STRIPE_API_BASE, KUPLOY_STRIPE_MAX_RPS (its share of the rate)
    and `WORKER_LIVE_ENV`, before the workers started."""
    configure_logging(
        debug=os.environ.get(WORKER_DEBUG_ENV) == "1",
        json_lines=os.environ.get(WORKER_LOG_FORMAT_ENV) == "json",
    )
    env = Environment.read(live=os.environ.get(WORKER_LIVE_ENV) == "1", strict=False)
    return create_app(
        env.settings(),
        webhook_secret=webhook_secret_from_environment(),
        metrics=os.environ.get(WORKER_METRICS_ENV) != "0",
    )
