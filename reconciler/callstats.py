"""What one command did against Stripe, counted: a plain value below everything that reports it.

`throttle.StripeCalls` counts into it; `results.ApplyOutcome` carries it; `render/outcome.py` prints it.
It lives apart from `throttle` (which imports stripe) so that render can import it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class CallStats:
    """Exact counts of what one command did against Stripe (thread-safe)."""

    reads: int = 0
    writes: int = 0
    """Write requests sent, retries included."""
    retries: int = 0
    rate_limited: int = 0
    written: int = 0
    """Write calls Stripe answered with success: the writes made."""
    unanswered: int = 0
    """Write calls that ended without a clear answer (a network error, a timeout, a 5xx or 409):
    Stripe may have made them."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)
