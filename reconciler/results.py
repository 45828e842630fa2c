"""What the commands report, as plain frozen values: an apply's outcome, what a plan archives of the
active paid plans, a doctor check. No I/O here.

`api` and `doctor` produce them; `render/outcome.py` and `render/doctor.py` show them. They live below
render (as `drift.DriftReport` does) so that render imports the values themselves, not a copy of
their fields."""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.callstats import CallStats
from reconciler.plan import Plan


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplyOutcome:
    plan: Plan
    confirmed: bool
    operations: int = 0
    migrations: tuple[str, ...] = ()
    rounds: int = 0
    stats: CallStats | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MassArchive:
    """What a plan archives, against the active paid plans counted in both places: `cloud_plans` can
    be empty or stale (a wrong DATABASE_URL, a restored backup, a new install pointed at a live
    account) while Stripe still sells every plan, so the larger count is the one guarded."""

    archived: tuple[str, ...]
    """Slugs of the active paid plans (in either place) the plan archives."""
    in_postgres: int
    in_stripe: int

    @property
    def active_paid(self) -> int:
        return max(self.in_postgres, self.in_stripe)

    def describe(self) -> str:
        """`3 of 5 active paid plan(s) (pro, team, max; 0 in cloud_plans, 5 on sale in Stripe)`."""
        names = ", ".join(self.archived)
        counts = f"{self.in_postgres} in cloud_plans, {self.in_stripe} on sale in Stripe"
        return f"{len(self.archived)} of {self.active_paid} active paid plan(s) ({names}; {counts})"

    @property
    def hint(self) -> str:
        if self.in_postgres >= self.in_stripe:
            return ""
        return (
            " cloud_plans has fewer active paid plans than Stripe sells: is DATABASE_URL the database "
            "this Stripe account was applied with?"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
