"""Fault injection for reliability tests and benchmarks: the settings (checked all at once) and the
seeded draw of each Stripe request's fault. What each fault does to a request is in `pipeline`; the
reasons (Stripe's documented behaviour) are in docs/stripe-emulator.md."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import JSON, EmulatorConfigError

FAULTS = ("rate_limited", "error_before_write", "error_after_write", "timeout")
MAX_HANG_SECONDS = 600.0


def number(name: str, value: Any, low: float, high: float | None = None) -> float:
    """A setting as a float within [low, high]; EmulatorConfigError otherwise (bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EmulatorConfigError(f"Stripe emulator {name} must be a number, not {value!r}")
    result = float(value)
    if result != result or result < low or (high is not None and result > high):
        shown = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
        raise EmulatorConfigError(f"Stripe emulator {name} must be {shown}, not {value!r}")
    return result


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultSettings:
    """The fault settings, the one list of them: the `sandbox serve` flags, `serve`, `start_in_thread`,
    `Emulator` and `POST /_emulator/faults` all pass them as this. Checked when made (EmulatorConfigError),
    numbers as floats: an invalid one never exists. The defaults inject no fault."""

    rate_limit: float | None = None  # requests per second before Stripe's 429 (None: no limit)
    error_rate: float = 0.0  # share of requests answered 500 api_error
    timeout_rate: float = 0.0  # share of requests whose connection hangs, then closes unanswered
    seed: int | None = None  # seeds the draws (and the delivery shuffle) for a reproducible run
    latency_ms: int = 0  # delay of every answer
    hang_seconds: float = 30.0  # how long a timed-out connection hangs
    after_write_share: float = 0.5  # of the errors, the share that come after the write

    def __post_init__(self) -> None:
        if self.rate_limit is not None:
            self._set("rate_limit", number("rate_limit", self.rate_limit, 0.0))
            if self.rate_limit == 0.0:
                raise EmulatorConfigError("Stripe emulator rate_limit must be > 0 (or null for no limit)")
        for name in ("error_rate", "timeout_rate", "after_write_share"):
            self._set(name, number(name, getattr(self, name), 0.0, 1.0))
        if self.error_rate + self.timeout_rate > 1.0:
            raise EmulatorConfigError("Stripe emulator error_rate + timeout_rate must be at most 1")
        self._set("hang_seconds", number("hang_seconds", self.hang_seconds, 0.0, MAX_HANG_SECONDS))
        latency = self.latency_ms
        if isinstance(latency, bool) or not isinstance(latency, int) or latency < 0:
            raise EmulatorConfigError(f"Stripe emulator latency_ms must be an integer >= 0, not {latency!r}")
        seed = self.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise EmulatorConfigError(f"Stripe emulator seed must be an integer or null, not {seed!r}")

    def _set(self, name: str, value: float) -> None:
        object.__setattr__(self, name, value)  # frozen: only while it is made


NO_FAULTS = FaultSettings()
FAULT_SETTINGS = tuple(f.name for f in fields(FaultSettings))


class Faults:
    """The current settings, the random sequence and the rate limiter's token bucket. Not thread-safe:
    the emulator calls it under its lock."""

    def __init__(self, settings: FaultSettings, now: float) -> None:
        self.current = settings
        self._rng = random.Random(settings.seed)
        self._tokens = max(settings.rate_limit or 0.0, 1.0)
        self._refilled = now

    def settings(self) -> JSON:
        return asdict(self.current)

    def update(self, settings: Mapping[str, Any], now: float) -> None:
        """Change settings; the ones not given keep their value. All are checked before any is applied.
        `seed` (even the same one) restarts the random sequence; `rate_limit` refills the bucket."""
        unknown = sorted(set(settings) - set(FAULT_SETTINGS))
        if unknown:
            raise EmulatorConfigError(
                f"Unknown Stripe emulator fault setting(s): {', '.join(unknown)} "
                f"(known: {', '.join(FAULT_SETTINGS)})"
            )
        self.current = replace(self.current, **settings)
        if "seed" in settings:
            self._rng = random.Random(self.current.seed)
        if "rate_limit" in settings:
            self._tokens = max(self.current.rate_limit or 0.0, 1.0)
            self._refilled = now

    def draw(self, clock: Callable[[], float]) -> str | None:
        """Decide one Stripe request's fault, once per request, in arrival order."""
        # Always two draws, whatever the settings: the i-th request's fate depends on the seed alone.
        # One draw splits [0, 1) into timeout | error | none, so each rate is exactly what was asked.
        u_fault, u_after = self._rng.random(), self._rng.random()
        current = self.current
        if current.rate_limit is not None:
            now = clock()
            burst = max(current.rate_limit, 1.0)
            self._tokens = min(burst, self._tokens + (now - self._refilled) * current.rate_limit)
            self._refilled = now
            if self._tokens < 1.0:
                return "rate_limited"
            self._tokens -= 1.0
        if u_fault < current.timeout_rate:
            return "timeout"
        if u_fault < current.timeout_rate + current.error_rate:
            return "error_after_write" if u_after < current.after_write_share else "error_before_write"
        return None
