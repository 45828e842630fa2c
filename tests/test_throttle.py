"""The client-side Stripe rate limit (`reconciler/throttle.py`) keeps below its maximum, whatever it is."""

from __future__ import annotations

import pytest

from reconciler.throttle import Throttle


@pytest.mark.parametrize("max_rps", [25 / 64, 0.5, 1.0, 2.0, 25.0])
def test_a_429_never_speeds_the_client_past_its_maximum(max_rps: float) -> None:
    # `listen --workers 64` gives each worker 25/64 requests/s in test mode: a 429 halves the pace,
    # down to one request a second, but never raises a maximum that is already below it.
    clock = [0.0]
    throttle = Throttle(max_rps, clock=lambda: clock[0])
    for _ in range(4):
        throttle.slow_down()
        assert throttle.rate <= max_rps
        clock[0] += 5.0
        throttle.speed_up()
        assert throttle.rate <= max_rps
