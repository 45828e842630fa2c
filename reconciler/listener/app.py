"""The HTTP app: `POST /api/webhooks/stripe` (verify, then process within `EVENT_DEADLINE`, answer
200/400/503), `/healthz`, `/readyz`, `/metrics`, and one log line and metric per answer. The design
is in docs/listener.md."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from reconciler import migrations
from reconciler.connections import stripe_client
from reconciler.listener.events import Outcome, process_event, route_of
from reconciler.listener.pool import ConnectionPool
from reconciler.listener.verification import (
    MAX_BODY,
    TOLERANCE,
    Event,
    Rejected,
    Unavailable,
    check_mode,
    read_body,
    verify_event,
)
from reconciler.model import WEBHOOK_PATH, printable
from reconciler.settings import Secret, Settings, key_mode
from reconciler.telemetry import CONTENT_TYPE, EVENT_FIELDS, ListenerMetrics

logger = logging.getLogger("reconciler.listener")
"""One logger for the whole package: operators filter on `reconciler.listener`."""

EVENT_DEADLINE = 8.0
"""Seconds an event may take (database and Stripe included) before it is answered 503, for Stripe to
retry it. Stripe publishes no number: its docs say an endpoint "must quickly return a successful status
code (2xx) prior to any complex logic that could cause a timeout" (docs.stripe.com/webhooks,
"Acknowledge events immediately"), its support page calls a late answer "Timed out"
(support.stripe.com/questions/webhooks-how-to-investigate-and-fix-timed-out), and integrators report
10 to 20 s. Answering before that keeps the outcome ours: a clear 503, not a delivery Stripe gave up on
while the listener still held a transaction open."""


def _loggable(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters, what is not printable escaped (`\\n`, `\\u009b`, `\\u202e`):
    a value from an event never splits, recolours or reorders a log line."""
    return printable(text[:limit])


def _log_event(event: Event, outcome: str, seconds: float) -> None:
    ms = seconds * 1000
    route = route_of(event)
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


class _Webhook:
    """The webhook route and what it owns for the app's lifespan: the pool, the Stripe client, the
    metrics and the events still processing."""

    def __init__(
        self,
        settings: Settings,
        webhook_secret: Secret,
        *,
        pool_size: int,
        max_body: int,
        tolerance: int,
        event_deadline: float,
        metrics: bool,
    ) -> None:
        self.pool = ConnectionPool(settings.database_url, size=pool_size)
        self.live = key_mode(settings.stripe_secret_key.reveal()) == "live"
        # Fail fast: a webhook that cannot be read now is answered 503 and Stripe retries it later.
        self.calls = dataclasses.replace(stripe_client(settings), max_attempts=3, max_delay=2.0)
        self.running: set[asyncio.Task[Outcome | None]] = set()
        self.telemetry = ListenerMetrics() if metrics else None
        if self.telemetry is not None:
            self.calls = dataclasses.replace(self.calls, stats=self.telemetry.call_stats())
        self.secret = webhook_secret
        self.max_body = max_body
        self.tolerance = tolerance
        self.event_deadline = event_deadline

    def finished(self, event: Event, outcome: str, started: float, failure: Exception | None = None) -> None:
        seconds = time.perf_counter() - started
        _log_event(event, outcome, seconds)
        if self.telemetry is not None:
            self.telemetry.observe(event.type, outcome, seconds, failure)

    async def handle(self, event: Event, received: datetime) -> Outcome | None:
        try:
            async with self.pool.connection() as conn:
                return await process_event(conn, self.calls, event, received)
        except psycopg.errors.UndefinedTable as e:
            raise Unavailable("the listener's tables are missing: run `kuploy-reconciler migrate`") from e
        except psycopg.errors.UndefinedColumn as e:
            raise Unavailable("the listener's tables are out of date: run `kuploy-reconciler migrate`") from e
        except psycopg.errors.LockNotAvailable as e:
            raise Unavailable("timed out waiting for a lock") from e
        except psycopg.OperationalError as e:
            raise Unavailable("database unavailable") from e
        except psycopg.DataError as e:
            # A value the checks above let through that Postgres cannot store: every retry would
            # fail the same way. The transaction rolled back; nothing was written.
            raise Rejected(f"event holds a value the database cannot store ({type(e).__name__})") from e

    def settled(self, task: asyncio.Task[Outcome | None]) -> None:
        self.running.discard(task)
        if not task.cancelled():
            task.exception()  # the request that waited for it reported it; else nobody needs it

    async def handle_in_time(self, event: Event, received: datetime) -> Outcome | None:
        """`handle`, answered by `event_deadline` whatever the database or Stripe do. Past it the
        processing is cancelled in the background (psycopg cancels the query in the server, the
        transaction rolls back, the event row with it) and the request answers 503 at once, instead
        of waiting for that clean-up too."""
        task = asyncio.ensure_future(self.handle(event, received))
        self.running.add(task)
        task.add_done_callback(self.settled)
        try:
            async with asyncio.timeout(self.event_deadline):
                return await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            raise Unavailable(
                f"not processed within {self.event_deadline:g} s (database or Stripe too slow)"
            ) from None

    def rejected(self, reason: str) -> JSONResponse:
        if self.telemetry is not None:
            self.telemetry.rejected.inc()
        return JSONResponse({"error": reason}, status_code=400)

    async def receive(self, request: Request) -> JSONResponse:
        started = time.perf_counter()
        received = datetime.now(UTC)
        try:
            body = await read_body(request, self.max_body)
            event = verify_event(body, request.headers.get("stripe-signature"), self.secret, self.tolerance)
            check_mode(event, live=self.live)
        except Rejected as e:
            ms = (time.perf_counter() - started) * 1000
            logger.warning("stripe_webhook rejected reason=%r ms=%.1f", str(e), ms)
            return self.rejected(str(e))
        try:
            outcome = await self.handle_in_time(event, received)
        except Rejected as e:
            self.finished(event, "rejected", started)
            logger.warning("stripe_event id=%s rejected: %s", _loggable(event.id), e)
            return self.rejected(str(e))
        except Unavailable as e:
            self.finished(event, "retry", started, e)
            logger.warning(
                "stripe_event id=%s not processed: %s", _loggable(event.id), _loggable(str(e), 300)
            )
            return JSONResponse({"error": f"{e}; retry later"}, status_code=503)
        except Exception as e:
            self.finished(event, "error", started, e)
            logger.error("stripe_event id=%s failed: %s", _loggable(event.id), type(e).__name__)
            logger.debug("stripe_event failure", exc_info=True)
            return JSONResponse({"error": "internal error; retry later"}, status_code=500)
        if outcome is None:
            self.finished(event, "duplicate", started)
            return JSONResponse({"received": True, "duplicate": True})
        self.finished(event, outcome.kind, started)
        return JSONResponse({"received": True, "outcome": outcome.kind})

    async def close(self) -> None:
        for task in self.running:
            task.cancel()
        await asyncio.gather(*self.running, return_exceptions=True)
        await self.pool.close()


async def _healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def _readiness(settings: Settings) -> tuple[bool, str]:
    try:
        with psycopg.connect(settings.database_url.reveal(), connect_timeout=5) as conn:
            todo = migrations.pending(conn)
    except psycopg.Error:
        return False, "database unreachable"
    if todo:
        return False, f"migrations pending: {', '.join(m.label for m in todo)}"
    return True, "ready"


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
    webhook = _Webhook(
        settings,
        webhook_secret,
        pool_size=pool_size,
        max_body=max_body,
        tolerance=tolerance,
        event_deadline=event_deadline,
        metrics=metrics,
    )
    telemetry = webhook.telemetry

    async def readyz(request: Request) -> JSONResponse:
        ok, reason = await run_in_threadpool(_readiness, settings)
        return JSONResponse({"status": "ready" if ok else "not ready", "reason": reason}, 200 if ok else 503)

    async def metrics_endpoint(request: Request) -> Response:
        assert telemetry is not None
        return Response(await run_in_threadpool(telemetry.exposition), media_type=CONTENT_TYPE)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await webhook.pool.open()  # in this process: each of `listen --workers N` has its own pool
        try:
            yield
        finally:
            await webhook.close()

    return Starlette(
        routes=[
            Route(WEBHOOK_PATH, webhook.receive, methods=["POST"]),
            Route("/healthz", _healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            *([Route("/metrics", metrics_endpoint, methods=["GET"])] if telemetry is not None else []),
        ],
        lifespan=lifespan,
    )
