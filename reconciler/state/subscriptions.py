"""The listener's rows: `cloud_stripe_events` (one per Stripe event, its outcome and detail) and
`cloud_subscriptions` (one per subscription). Every statement the listener runs is here, static SQL;
the caller owns the transaction (`pipelined_transaction`) and the subscription's advisory lock."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import class_row

_INSERT_EVENT = (
    "INSERT INTO cloud_stripe_events "
    '(id, type, "objectId", created, livemode, "receivedAt", outcome, detail, plan, "processedAt") '
    "VALUES (%s, %s, %s, to_timestamp(%s), %s, %s, %s, %s, %s, "
)
_RECORD_EVENT = _INSERT_EVENT + "clock_timestamp()) ON CONFLICT (id) DO NOTHING RETURNING id"
"""An event with its final outcome, nothing else to do."""
_RECORD_EVENT_AND_LOCK = (
    _INSERT_EVENT + "NULL) ON CONFLICT (id) DO NOTHING RETURNING id, pg_advisory_xact_lock(%s, hashtext(%s))"
)
"""An event still processing, and its subscription's lock, taken only if the event is new."""

_PLAN_PREFIX = "plan "
PLAN_IN_DETAIL = "^plan ([^:]+)"
"""The plan a `plan_detail` names, as a POSIX regular expression for SQL's `substring(detail from …)`:
rows recorded before the `plan` column (migration 0008) name their plan only in their detail."""


@dataclass(frozen=True, slots=True)
class EventRow:
    """What `cloud_stripe_events` keeps of an event besides its outcome."""

    id: str
    type: str
    object_id: str | None
    created: int
    livemode: bool
    received: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionState:
    """A subscription as Stripe says it is (as of second `as_of`), ready to be stored."""

    sub_id: str
    organization: str | None
    customer: str | None
    prices: Sequence[tuple[str, str | None]]
    """(Price id, the plan its metadata names) for each item, in order."""
    status: str
    period_end: int | None
    cancel_at_period_end: bool
    as_of: int
    read: bool


@dataclass(frozen=True, slots=True)
class StoredSubscription:
    """What the listener's rules read of a stored subscription row."""

    status: str
    as_of: int | None
    """The second its state is Stripe's as of."""
    read: bool
    """Whether that state was read from Stripe (vs. an event's snapshot)."""
    invoice_id: str | None
    invoice_status: str | None
    invoice_created: int | None


@contextlib.asynccontextmanager
async def pipelined_transaction(conn: psycopg.AsyncConnection) -> AsyncIterator[None]:
    """One transaction on an autocommit connection in pipeline mode: statements are sent as they are
    executed and only reading a result waits for the server, so BEGIN travels with the first
    statements and COMMIT with the last (a snapshot event: two round trips instead of six). Anything
    raised in the block, or by a statement the server ran in the pipeline, rolls it all back."""
    try:
        async with conn.pipeline():
            await conn.execute("BEGIN")
            yield
            await conn.execute("COMMIT")  # sent, and waited for, by the pipeline's closing sync
    except BaseException:
        # The pipeline is closed (its sync ended what the server skipped after an error): the
        # transaction is open or failed. A broken connection has nothing to roll back; the pool
        # replaces it.
        with contextlib.suppress(psycopg.Error):
            await conn.rollback()
        raise


def plan_detail(plan: str, what: str) -> str:
    """The detail stored for a Product/Price event of `plan` (the plan itself goes in its own column)."""
    return f"{_PLAN_PREFIX}{plan}: {what}"


async def record_event(
    conn: psycopg.AsyncConnection,
    event: EventRow,
    outcome: str,
    detail: str | None,
    *,
    plan: str | None = None,
) -> bool:
    """Record an event already decided (with the plan a Product/Price event is about); False when it
    was recorded before. Atomic on its own."""
    cur = await conn.execute(
        _RECORD_EVENT,
        (
            event.id,
            event.type,
            event.object_id,
            event.created,
            event.livemode,
            event.received,
            outcome,
            detail,
            plan,
        ),
    )
    return await cur.fetchone() is not None


_READ_SUBSCRIPTION = (
    'SELECT status, "stateAsOf" AS as_of, "stateRead" AS read, "latestInvoiceId" AS invoice_id, '
    '"latestInvoiceStatus" AS invoice_status, '
    'extract(epoch FROM "latestInvoiceCreated")::bigint AS invoice_created '
    'FROM cloud_subscriptions WHERE "stripeSubscriptionId" = %s'
)


async def record_event_and_read(
    conn: psycopg.AsyncConnection, event: EventRow, lock_space: int, sub_id: str
) -> tuple[bool, StoredSubscription | None]:
    """Record an event as processing and take its subscription's lock (one statement), then read the
    subscription's row: (False, …) without the lock when the event was recorded before (a copy racing
    on another connection waits for that transaction to end), else (True, the row or None).

    Both go in one round trip in a pipeline, and the read is still taken under the lock: the server
    runs them in order, and under READ COMMITTED a statement's snapshot is taken when it starts, so
    after the INSERT (and the lock wait in its RETURNING) finished: it sees what the previous holder
    of the lock committed."""
    inserted = await conn.execute(
        _RECORD_EVENT_AND_LOCK,
        (
            event.id, event.type, event.object_id, event.created, event.livemode, event.received,
            "processing", None, None, lock_space, sub_id,
        ),
    )  # fmt: skip
    read = await conn.cursor(row_factory=class_row(StoredSubscription)).execute(_READ_SUBSCRIPTION, (sub_id,))
    stored = await read.fetchone()  # the round trip: the INSERT's answer (or its error) comes first
    if await inserted.fetchone() is None:
        return False, None
    return True, stored


async def finish_event(
    conn: psycopg.AsyncConnection, event_id: str, outcome: str, detail: str | None
) -> None:
    await conn.execute(
        'UPDATE cloud_stripe_events SET outcome = %s, detail = %s, "processedAt" = clock_timestamp() '
        "WHERE id = %s",
        (outcome, detail, event_id),
    )


async def attach_checkout(
    conn: psycopg.AsyncConnection, sub_id: str, organization: str | None, customer: str | None
) -> None:
    """Give a stored subscription the organization (and customer) of its checkout."""
    await conn.execute(
        'UPDATE cloud_subscriptions SET "organizationId" = COALESCE(%s, "organizationId"), '
        '"stripeCustomerId" = COALESCE("stripeCustomerId", %s), "updatedAt" = now() '
        'WHERE "stripeSubscriptionId" = %s',
        (organization, customer, sub_id),
    )


async def store_latest_invoice(
    conn: psycopg.AsyncConnection, sub_id: str, invoice_id: str, status: str, created: int
) -> None:
    await conn.execute(
        'UPDATE cloud_subscriptions SET "latestInvoiceId" = %s, "latestInvoiceStatus" = %s, '
        '"latestInvoiceCreated" = to_timestamp(%s), "updatedAt" = now() WHERE "stripeSubscriptionId" = %s',
        (invoice_id, status, created, sub_id),
    )


# One statement: the plan is looked up as the row is written. It is the first item whose Price is a
# plan's in cloud_plans (its current or an older row), else whose Price is owned by a plan
# (`kuploy_plan` metadata) that has a row; without one, the first item's Price, flagged unknown.
_UPSERT_SUBSCRIPTION = """
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
"""


async def upsert_subscription(conn: psycopg.AsyncConnection, state: SubscriptionState) -> None:
    """Write the subscription row from `state`. The caller holds its lock."""
    await conn.execute(
        _UPSERT_SUBSCRIPTION,
        {
            "prices": [price for price, _ in state.prices],
            "slugs": [slug for _, slug in state.prices],
            "sub": state.sub_id,
            "org": state.organization,
            "customer": state.customer,
            "status": state.status,
            "period_end": state.period_end,
            "cancel": state.cancel_at_period_end,
            "as_of": state.as_of,
            "read": state.read,
        },
    )
