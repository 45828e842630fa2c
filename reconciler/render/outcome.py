"""What an apply did, and what a plan would archive → the lines the CLI prints. No I/O here."""

from __future__ import annotations

from typing import Protocol

from reconciler.plan import Plan
from reconciler.render.text import summary_line


class StripeCalls(Protocol):
    """What an apply sent to Stripe (`throttle.CallStats`, whose module imports stripe)."""

    @property
    def reads(self) -> int: ...
    @property
    def writes(self) -> int: ...
    @property
    def retries(self) -> int: ...
    @property
    def rate_limited(self) -> int: ...


class AppliedPlan(Protocol):
    """What an apply did (`api.ApplyOutcome`, which sits above render and is not imported here)."""

    @property
    def plan(self) -> Plan: ...
    @property
    def operations(self) -> int: ...
    @property
    def migrations(self) -> tuple[str, ...]: ...
    @property
    def rounds(self) -> int: ...
    @property
    def stats(self) -> StripeCalls | None: ...


class ArchivedPlans(Protocol):
    """What a plan archives of the active paid plans (`api.MassArchive`)."""

    @property
    def archived(self) -> tuple[str, ...]: ...
    @property
    def active_paid(self) -> int: ...
    @property
    def hint(self) -> str: ...
    def describe(self) -> str: ...


def render_applied(outcome: AppliedPlan) -> str:
    """The result of an apply that made changes: its migrations, its operations and the summary."""
    lines = [f"Migrations applied: {', '.join(outcome.migrations)}"] if outcome.migrations else []
    lines.append(f"Apply complete: {outcome.operations} operation(s). {summary_line(outcome.plan)}")
    return "".join(f"{line}\n" for line in lines)


def render_stripe_calls(stats: StripeCalls, *, rounds: int) -> str:
    return (
        f"Stripe: {stats.reads} read(s), {stats.writes} write(s), {stats.retries} retried "
        f"({stats.rate_limited} rate-limited); {rounds} round(s).\n"
    )


def mass_archive_warning(found: ArchivedPlans) -> str | None:
    """The warning of `plan` and `sync --dry-run` when the plan archives active paid plans; the
    guard of `apply` and `sync` refuses it beyond --max-archive-share."""
    if not (found.archived and found.active_paid):
        return None
    return (
        f"Warning: this plan archives {found.describe()}; apply and sync refuse more than "
        f"--max-archive-share (default 50%) without --allow-mass-archive.{found.hint}\n"
    )
