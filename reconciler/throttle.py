"""Every Stripe call goes through here: a client-side rate limit, and the retries that are ours to do.

The SDK retries nothing unless `max_network_retries` is set, and never a 429 unless Stripe sends
`Stripe-Should-Retry` (stripe/_http_client.py). So the SDK's own retries are off and this one loop
decides, for reads and writes alike:

- 429: back off (honouring `Retry-After`), halve the client-side rate, retry;
- network errors and timeouts: retry with the same idempotency key (Stripe replays a finished write);
- 409 and 5xx: retry unless Stripe says `Stripe-Should-Retry: false`;
- anything else (400, 401, 402, 404): permanent, raised at once.

Retries use exponential backoff with full jitter (`backoff.delay`), bounded in count. What was
retried is counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import stripe

from reconciler import backoff
from reconciler.callstats import CallStats

T = TypeVar("T")


class Throttle:
    """A token bucket shared by all threads of one command, adapting down on 429 and back up after.

    Like Stripe's own limiter it lets a short burst through after a pause (`burst` seconds' worth
    of requests, half a second by default, well inside the second's worth Stripe allows), then
    holds the steady rate. After a 429 the burst allowance is dropped until the rate recovers."""

    def __init__(
        self, max_rps: float, *, burst: float = 0.5, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_rps = max(0.1, max_rps)
        self.rate = self.max_rps
        self.burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._next_slot = clock() - burst
        self._last_cut = -1e9

    def acquire(self) -> None:
        """Wait for the next free slot at the current rate."""
        with self._lock:
            now = self._clock()
            allowance = self.burst if self.rate >= self.max_rps else 0.0
            slot = max(now - allowance, self._next_slot)
            self._next_slot = slot + 1.0 / self.rate
        delay = slot - now
        if delay > 0:
            time.sleep(delay)

    def slow_down(self) -> None:
        with self._lock:
            self.rate = max(min(1.0, self.max_rps), self.rate / 2)  # never above a maximum under 1/s
            self._last_cut = self._clock()
            self._next_slot = max(self._next_slot, self._clock())

    def speed_up(self) -> None:
        """After a success, creep back towards the maximum, no sooner than a second after a cut."""
        with self._lock:
            if self.rate < self.max_rps and self._clock() - self._last_cut > 1.0:
                self.rate = min(self.max_rps, self.rate * 1.1)


def retryable(error: stripe.StripeError) -> bool:
    if isinstance(error, stripe.RateLimitError | stripe.APIConnectionError):
        return True
    headers = error.headers or {}
    should_retry = {k.lower(): v for k, v in headers.items()}.get("stripe-should-retry")
    if should_retry is not None:
        return bool(should_retry == "true")
    status = error.http_status or 0
    return status == 409 or status >= 500


def transient(error: stripe.StripeError) -> bool:
    """Whether the cause may pass, so re-reading the state and trying again (with fresh idempotency
    keys) can finish the job, even where retrying this very request cannot (a replayed 500)."""
    if isinstance(error, stripe.RateLimitError | stripe.APIConnectionError):
        return True
    status = error.http_status or 0
    return status == 409 or status >= 500


def _retry_after(error: stripe.StripeError) -> float | None:
    headers = {k.lower(): v for k, v in (error.headers or {}).items()}
    try:
        return min(30.0, float(headers["retry-after"]))
    except (KeyError, TypeError, ValueError):
        return None


@dataclass
class StripeCalls:
    """The client plus the throttle, the retry policy and the counters of one command."""

    client: stripe.StripeClient
    throttle: Throttle
    stats: CallStats = field(default_factory=CallStats)
    max_attempts: int = 6
    base_delay: float = 0.25
    max_delay: float = 8.0
    sleep: Callable[[float], None] = time.sleep

    def read(self, fn: Callable[[stripe.StripeClient], T]) -> T:
        return self._call(fn, write=False)

    def write(self, fn: Callable[[stripe.StripeClient], T]) -> T:
        return self._call(fn, write=True)

    def _call(self, fn: Callable[[stripe.StripeClient], T], *, write: bool) -> T:
        for attempt in range(self.max_attempts):
            self.throttle.acquire()
            self.stats.add(**{"writes" if write else "reads": 1})
            try:
                result = fn(self.client)
            except stripe.StripeError as e:
                if isinstance(e, stripe.RateLimitError):
                    self.throttle.slow_down()
                    self.stats.add(rate_limited=1)
                if not retryable(e) or attempt == self.max_attempts - 1:
                    if write and transient(e) and not isinstance(e, stripe.RateLimitError):
                        self.stats.add(unanswered=1)
                    raise
                self.stats.add(retries=1)
                delay = _retry_after(e)
                if delay is None:
                    delay = backoff.delay(attempt, self.base_delay, self.max_delay)
                self.sleep(delay)
                continue
            self.throttle.speed_up()
            if write:
                self.stats.add(written=1)
            return result
        raise AssertionError("unreachable: the last attempt either returns or raises")
