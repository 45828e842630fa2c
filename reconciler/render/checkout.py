"""`sandbox checkout`'s report → a side-by-side table of the subscription as kuploy-cloud and as
Stripe see it, and the result line. No I/O here."""

from __future__ import annotations

from typing import Any, Protocol


class CheckoutResult(Protocol):
    """What a test checkout found (`sandbox.checkout.CheckoutReport`; render never imports the sandbox)."""

    @property
    def outcome(self) -> str: ...
    @property
    def kuploy(self) -> dict[str, Any] | None: ...
    @property
    def stripe(self) -> dict[str, Any] | None: ...
    @property
    def consistent(self) -> bool: ...


def render_checkout(report: CheckoutResult, *, card: str) -> str:
    """`card` as the user typed it (the report holds it without spaces)."""
    ours, theirs = report.kuploy or {}, report.stripe or {}
    fields = sorted(set(ours) | set(theirs))
    lines = [f"{'field':<22} {'kuploy-cloud (cloud_subscriptions)':<40} Stripe"]
    lines += [f"{name:<22} {ours.get(name, '')!s:<40} {theirs.get(name, '')}" for name in fields]
    if not fields:
        lines.append(
            f"no subscription: the card {card} was {report.outcome}, nothing was recorded on either side"
        )
    lines.append(f"Result: {'consistent' if report.consistent else 'INCONSISTENT'} ({report.outcome})")
    return "".join(f"{line}\n" for line in lines)
