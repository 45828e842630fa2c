"""Fault injection for reliability tests and benchmarks: the settings (checked all at once) and the
seeded draw of each Stripe request's fault. What each fault does to a request is in `pipeline`; the
reasons (Stripe's documented behaviour) are in docs/stripe-emulator.md."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from .errors import JSON, EmulatorConfigError

FAULTS = ("rate_limited", "error_before_write", "error_after_write", "timeout")
MAX_HANG_SECONDS = 600.0
FAULT_SETTINGS = (
    "rate_limit",
    "error_rate",
    "timeout_rate",
    "seed",
    "latency_ms",
    "hang_seconds",
    "after_write_share",
)


def number(name: str, value: Any, low: float, high: float | None = None) -> float:
    """A setting as a float within [low, high]; EmulatorConfigError otherwise (bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EmulatorConfigError(f"Stripe emulator {name} must be a number, not {value!r}")
    result = float(value)
    if result != result or result < low or (high is not None and result > high):
        shown = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
        raise EmulatorConfigError(f"Stripe emulator {name} must be {shown}, not {value!r}")
    return result


class Faults:
    """The current settings, the random sequence and the rate limiter's token bucket. Not thread-safe:
    the emulator calls it under its lock."""

    def __init__(self) -> None:
        self.latency_ms = 0
        self.rate_limit: float | None = None
        self.error_rate = 0.0
        self.timeout_rate = 0.0
        self.seed: int | None = None
        self.hang_seconds = 30.0
        self.after_write_share = 0.5
        self._rng = random.Random()
        self._tokens = 0.0
        self._refilled = 0.0

    def settings(self) -> JSON:
        return {
            "rate_limit": self.rate_limit,
            "error_rate": self.error_rate,
            "timeout_rate": self.timeout_rate,
            "seed": self.seed,
            "latency_ms": self.latency_ms,
            "hang_seconds": self.hang_seconds,
            "after_write_share": self.after_write_share,
        }

    def update(self, settings: JSON, now: float) -> None:
        """Change settings; the ones not given keep their value. All are checked before any is applied.
        `seed` (even the same one) restarts the random sequence; `rate_limit` refills the bucket."""
        unknown = sorted(set(settings) - set(FAULT_SETTINGS))
        if unknown:
            raise EmulatorConfigError(
                f"Unknown Stripe emulator fault setting(s): {', '.join(unknown)} "
                f"(known: {', '.join(FAULT_SETTINGS)})"
            )
        new = self.settings()
        if "rate_limit" in settings:
            limit = settings["rate_limit"]
            new["rate_limit"] = None if limit is None else number("rate_limit", limit, 0.0)
            if new["rate_limit"] == 0.0:
                raise EmulatorConfigError("Stripe emulator rate_limit must be > 0 (or null for no limit)")
        for name in ("error_rate", "timeout_rate", "after_write_share"):
            if name in settings:
                new[name] = number(name, settings[name], 0.0, 1.0)
        if new["error_rate"] + new["timeout_rate"] > 1.0:
            raise EmulatorConfigError("Stripe emulator error_rate + timeout_rate must be at most 1")
        if "hang_seconds" in settings:
            new["hang_seconds"] = number("hang_seconds", settings["hang_seconds"], 0.0, MAX_HANG_SECONDS)
        if "latency_ms" in settings:
            latency = settings["latency_ms"]
            if isinstance(latency, bool) or not isinstance(latency, int) or latency < 0:
                raise EmulatorConfigError(
                    f"Stripe emulator latency_ms must be an integer >= 0, not {latency!r}"
                )
        if "seed" in settings:
            seed = settings["seed"]
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                raise EmulatorConfigError(f"Stripe emulator seed must be an integer or null, not {seed!r}")
        self.rate_limit = new["rate_limit"]
        self.error_rate = new["error_rate"]
        self.timeout_rate = new["timeout_rate"]
        self.after_write_share = new["after_write_share"]
        self.hang_seconds = new["hang_seconds"]
        if "latency_ms" in settings:
            self.latency_ms = int(settings["latency_ms"])
        if "seed" in settings:
            self.seed = settings["seed"]
            self._rng = random.Random(self.seed)
        if "rate_limit" in settings:
            self._tokens = max(self.rate_limit or 0.0, 1.0)
            self._refilled = now

    def draw(self, clock: Callable[[], float]) -> str | None:
        """Decide one Stripe request's fault, once per request, in arrival order."""
        # Always two draws, whatever the settings: the i-th request's fate depends on the seed alone.
        # One draw splits [0, 1) into timeout | error | none, so each rate is exactly what was asked.
        u_fault, u_after = self._rng.random(), self._rng.random()
        if self.rate_limit is not None:
            now = clock()
            burst = max(self.rate_limit, 1.0)
            self._tokens = min(burst, self._tokens + (now - self._refilled) * self.rate_limit)
            self._refilled = now
            if self._tokens < 1.0:
                return "rate_limited"
            self._tokens -= 1.0
        if u_fault < self.timeout_rate:
            return "timeout"
        if u_fault < self.timeout_rate + self.error_rate:
            return "error_after_write" if u_after < self.after_write_share else "error_before_write"
        return None
