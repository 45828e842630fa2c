"""What `listen` tells its operator: Prometheus metrics (`GET /metrics`, `ListenerMetrics`) and JSON
log lines (`use_json_logs`). The metrics and log fields are listed in the README's "Webhook listener";
the rules behind them (labels, `--workers`, what a log line never holds) are in docs/listener.md."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import stripe
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from reconciler.callstats import CallStats

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds: an event takes a few milliseconds, a Stripe re-read 100–300 ms, a lock wait up to 30 s."""
EVENT_FIELDS = "kuploy_event"
"""The `extra` attribute of a log record about one event: its fields for a JSON line."""


class ListenerMetrics:
    """The listener's counters and histogram, recorded per event, exposed on `/metrics`."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_ENV))
        self.registry = CollectorRegistry()
        registry = self.registry
        self.events = Counter(
            "kuploy_listener_events",
            "Verified Stripe events, by type and outcome",
            ["type", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "kuploy_listener_event_duration_seconds",
            "Time from receiving a verified event to answering it",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.rejected = Counter(
            "kuploy_listener_rejected_requests",
            "Requests refused with 400 before any write",
            registry=registry,
        )
        self.unavailable = Counter(
            "kuploy_listener_unavailable",
            "Events answered 503 for Stripe to retry, by cause",
            ["cause"],
            registry=registry,
        )
        self.database_errors = Counter(
            "kuploy_listener_database_errors", "Events that failed on a database error", registry=registry
        )
        self.stripe_rereads = Counter(
            "kuploy_listener_stripe_rereads",
            "Requests re-reading a subscription from Stripe (retries included)",
            registry=registry,
        )
        if not self.multiprocess:
            ProcessCollector(registry=registry)

    def observe(self, event_type: str, outcome: str, seconds: float, failure: Exception | None) -> None:
        """One answered event; `failure`: why it was answered 503 (outcome `retry`) or 500."""
        self.events.labels(event_type, outcome).inc()
        self.duration.observe(seconds)
        if failure is None:
            return
        causes = [failure, *_causes(failure)]
        database = any(isinstance(e, psycopg.Error) for e in causes)
        if database:
            self.database_errors.inc()
        if outcome == "retry":
            failed_stripe = any(isinstance(e, stripe.StripeError) for e in causes)
            self.unavailable.labels("database" if database else "stripe" if failed_stripe else "other").inc()

    def call_stats(self) -> CallStats:
        """Stripe call counters that also count the listener's re-reads (it reads nothing else)."""
        return _CountedCalls(rereads=self.stripe_rereads)

    def exposition(self) -> bytes:
        """The text format of every metric: this process's, or the sum over all workers'."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen = {id(error)}
    cause = error.__cause__ or error.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        cause = cause.__cause__ or cause.__context__


@dataclasses.dataclass
class _CountedCalls(CallStats):
    rereads: Counter | None = None

    def add(self, **counts: int) -> None:
        super().add(**counts)
        if self.rereads is not None and counts.get("reads"):
            self.rereads.inc(counts["reads"])


@contextlib.contextmanager
def multiprocess_directory() -> Iterator[str]:
    """A fresh PROMETHEUS_MULTIPROC_DIR for the workers of one `listen`, deleted when it ends."""
    path = tempfile.mkdtemp(prefix="kuploy-listen-metrics-")
    previous = os.environ.get(MULTIPROCESS_ENV)
    os.environ[MULTIPROCESS_ENV] = path
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(MULTIPROCESS_ENV, None)
        else:
            os.environ[MULTIPROCESS_ENV] = previous
        shutil.rmtree(path, ignore_errors=True)


class JsonFormatter(logging.Formatter):
    """One JSON object per log record: time, level, logger, message, and an event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        fields = getattr(record, EVENT_FIELDS, None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info or record.exc_text:  # the redacting filter has set exc_text, redacted
            line["exception"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(line, default=str)


def use_json_logs() -> None:
    """Every handler of the root logger writes JSON lines (the CLI configured them)."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(JsonFormatter())
