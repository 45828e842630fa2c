"""How long to wait before a retry: exponential backoff with jitter, shared by every retry loop
(the Stripe calls in `throttle.py`, the catalog fetch in `fetch.py`)."""

from __future__ import annotations

import random


def delay(attempt: int, base: float, cap: float, *, floor: float = 0.0) -> float:
    """A random wait in [floor, min(cap, base × 2**attempt)] before retry number `attempt` (from 0).

    `floor` 0 is full jitter (AWS's name for it): retries of many clients spread out at once."""
    return random.uniform(floor, min(cap, base * 2**attempt))
