"""What an apply did, and what a plan would archive → the lines the CLI prints. No I/O here."""

from __future__ import annotations

from reconciler.callstats import CallStats
from reconciler.render.text import summary_line
from reconciler.results import ApplyOutcome, MassArchive


def render_applied(outcome: ApplyOutcome) -> str:
    """The result of an apply that made changes: its migrations, its operations and the summary."""
    lines = [f"Migrations applied: {', '.join(outcome.migrations)}"] if outcome.migrations else []
    lines.append(f"Apply complete: {outcome.operations} operation(s). {summary_line(outcome.plan)}")
    return "".join(f"{line}\n" for line in lines)


def render_stripe_calls(stats: CallStats, *, rounds: int) -> str:
    return (
        f"Stripe: {stats.reads} read(s), {stats.writes} write(s), {stats.retries} retried "
        f"({stats.rate_limited} rate-limited); {rounds} round(s).\n"
    )


def mass_archive_warning(found: MassArchive) -> str | None:
    """The warning of `plan` and `sync --dry-run` when the plan archives active paid plans; the
    guard of `apply` and `sync` refuses it beyond --max-archive-share."""
    if not (found.archived and found.active_paid):
        return None
    return (
        f"Warning: this plan archives {found.describe()}; apply and sync refuse more than "
        f"--max-archive-share (default 50%) without --allow-mass-archive.{found.hint}\n"
    )
