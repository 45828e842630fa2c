"""Webhook delivery for the Stripe emulator: Stripe's signature scheme, a background sender, retries.

Standard library only. The emulator hands over finished jobs (an event's JSON body, an endpoint's URL and
signing secret); nothing here reads or holds the emulator's lock while a request is on the wire.

What it follows, and where from:

* Signature: `Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">` keyed by the
  endpoint's `whsec_` secret (docs.stripe.com/webhooks "verify manually"; stripe-python
  `WebhookSignature.generate_signature_header`). A new timestamp and signature are made for every attempt,
  retries included, as Stripe does, so a retry is never rejected as stale by a 300 s tolerance.
* Headers: `Content-Type: application/json; charset=utf-8`, `User-Agent: Stripe/1.0
  (+https://stripe.com/docs/webhooks)`, `Cache-Control: no-cache`, `Accept: */*; q=0.5, application/xml`.
* Success is any 2xx; anything else (3xx included: redirects are not followed), a connection error or a
  timeout is a failure, retried after each delay of `retry_delays` in turn, then given up. Stripe retries
  "for up to three days with exponential backoff" in live mode and "three times over a few hours" in a
  sandbox, without publishing the intervals; the default here is three retries 1, 5 and 25 minutes
  apart (exponential, base 5). Tests pass short delays, e.g. `(0.1, 0.2, 0.5)`.
* Order: Stripe does not guarantee delivery order. Jobs are sent one at a time in the order they were
  created (events of one request keep their order), unless `shuffle` is set, which sends each batch in a
  seeded random order so consumers can be tested against reordering.
* A job whose endpoint was deleted or disabled meanwhile is dropped before its next attempt, as Stripe
  stops retrying then (`still_wanted`).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import http.client
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_DELIVERIES",
    "DEFAULT_RETRY_DELAYS",
    "USER_AGENT",
    "Deliverer",
    "DeliverySettings",
    "Job",
    "sign",
    "signed_headers",
]

USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (60.0, 300.0, 1500.0)
DEFAULT_TIMEOUT = 10.0
MAX_RETRIES = 20
MAX_ATTEMPT_LOG = 10_000
MAX_RESPONSE_EXCERPT = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliverySettings:
    """How webhook deliveries are sent: the delays of the retries after a failed attempt, each attempt's
    timeout, and whether due deliveries go out shuffled (seeded by the fault settings' `seed`)."""

    retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS
    timeout: float = DEFAULT_TIMEOUT
    shuffle: bool = False


DEFAULT_DELIVERIES = DeliverySettings()


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The `Stripe-Signature` header value for `body` signed with `secret` at `timestamp`."""
    signed = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


@dataclass(frozen=True)
class Job:
    """One event for one endpoint, or (`listener`) for one `stripe listen` session: then `endpoint_id`
    is its websocket id and the event is pushed over its websocket (`listen_sessions`), not POSTed."""

    mode: str
    event_id: str
    event_type: str
    endpoint_id: str
    url: str
    secret: str
    body: bytes
    listener: bool = False


def signed_headers(job: Job) -> dict[str, str]:
    """The headers of one delivery attempt of `job`, signed now (every attempt signs anew)."""
    return {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": USER_AGENT,
        "Accept": "*/*; q=0.5, application/xml",
        "Cache-Control": "no-cache",
        "Stripe-Signature": sign(job.body, job.secret, int(time.time())),
    }


@dataclass(order=True)
class _Scheduled:
    due: float
    seq: int
    job: Job = field(compare=False)
    attempt: int = field(compare=False, default=1)


def check_delays(delays: Iterable[Any]) -> tuple[float, ...]:
    out: list[float] = []
    for d in delays:
        if isinstance(d, bool) or not isinstance(d, int | float) or not 0 <= float(d) <= 86400 * 3:
            raise ValueError(f"a retry delay must be a number of seconds between 0 and 259200, not {d!r}")
        out.append(float(d))
    if len(out) > MAX_RETRIES:
        raise ValueError(f"at most {MAX_RETRIES} retry delays")
    return tuple(out)


class Deliverer:
    """A background sender: `enqueue()` never blocks on the network; one daemon thread sends."""

    def __init__(
        self,
        *,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        timeout: float = DEFAULT_TIMEOUT,
        shuffle: bool = False,
        seed: int | None = None,
        still_wanted: Callable[[Job], bool] | None = None,
        on_delivered: Callable[[Job], None] | None = None,
    ) -> None:
        self.retry_delays = check_delays(retry_delays)
        self.timeout = float(timeout)
        self.shuffle = shuffle
        self._rng = random.Random(seed)
        self._still_wanted = still_wanted
        self._on_delivered = on_delivered
        self._cond = threading.Condition()
        self._heap: list[_Scheduled] = []
        self._in_flight = 0
        self._seq = 0
        self._attempts: list[dict[str, Any]] = []
        self._stopped = False
        self._thread: threading.Thread | None = None

    # -- producer side

    def enqueue(self, jobs: Sequence[Job]) -> None:
        if not jobs:
            return
        batch = list(jobs)
        if self.shuffle:
            self._rng.shuffle(batch)
        with self._cond:
            if self._stopped:
                return
            now = time.monotonic()
            for job in batch:
                self._seq += 1
                heapq.heappush(self._heap, _Scheduled(now, self._seq, job))
            self._ensure_thread()
            self._cond.notify_all()

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="stripe-emulator-webhooks", daemon=True)
            self._thread.start()

    # -- observation

    def attempts(self) -> list[dict[str, Any]]:
        with self._cond:
            return [dict(a) for a in self._attempts]

    def pending(self) -> int:
        with self._cond:
            return len(self._heap) + self._in_flight

    def expedite(self) -> None:
        """Make every scheduled retry due now."""
        with self._cond:
            now = time.monotonic()
            for item in self._heap:
                item.due = min(item.due, now)
            heapq.heapify(self._heap)
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued, scheduled for retry or in flight; False on timeout."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while self._heap or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.timeout + 1)

    # -- the sender

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if self._heap and self._heap[0].due <= time.monotonic():
                        break
                    wait = self._heap[0].due - time.monotonic() if self._heap else None
                    self._cond.wait(wait)
                if self._stopped:
                    return
                item = heapq.heappop(self._heap)
                self._in_flight += 1
            try:
                self._attempt(item)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()

    def _attempt(self, item: _Scheduled) -> None:
        job = item.job
        if self._still_wanted is not None and not self._still_wanted(job):
            self._record(item, None, "endpoint deleted or disabled", "dropped", None)
            return
        status, error = self._post(job)
        if status is not None and 200 <= status < 300:
            self._record(item, status, None, "succeeded", None)
            if self._on_delivered is not None:
                self._on_delivered(job)
            return
        if item.attempt <= len(self.retry_delays):
            delay = self.retry_delays[item.attempt - 1]
            self._record(item, status, error, "failed", delay)
            with self._cond:
                if self._stopped:
                    return
                self._seq += 1
                heapq.heappush(
                    self._heap, _Scheduled(time.monotonic() + delay, self._seq, job, item.attempt + 1)
                )
        else:
            self._record(item, status, error, "gave_up", None)

    def _post(self, job: Job) -> tuple[int | None, str | None]:
        parts = urlsplit(job.url)
        headers = {**signed_headers(job), "Content-Length": str(len(job.body))}
        conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn = conn_cls(parts.hostname or "", parts.port, timeout=self.timeout)
        try:
            conn.request("POST", target, body=job.body, headers=headers)
            response = conn.getresponse()
            response.read(64 * 1024)
            return response.status, None
        except (OSError, http.client.HTTPException) as exc:
            return None, f"{type(exc).__name__}: {exc}"[:MAX_RESPONSE_EXCERPT]
        finally:
            conn.close()

    def _record(
        self, item: _Scheduled, status: int | None, error: str | None, outcome: str, retry_in: float | None
    ) -> None:
        job = item.job
        entry = {
            "event_id": job.event_id,
            "event_type": job.event_type,
            "endpoint_id": job.endpoint_id,
            "url": job.url,
            "mode": job.mode,
            "attempt": item.attempt,
            "status": status,
            "error": error,
            "outcome": outcome,
            "retry_in": retry_in,
            "at": time.time(),
        }
        with self._cond:
            self._attempts.append(entry)
            if len(self._attempts) > MAX_ATTEMPT_LOG:
                del self._attempts[: len(self._attempts) - MAX_ATTEMPT_LOG]
