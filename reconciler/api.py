"""The operations behind the commands: plan, apply (also from a saved plan), drift, export, migrate,
seed. Called by `cli` and by `sandbox/checkout`.

Each opens its connections, holds the advisory lock where it writes, and hands pure values to
`diff` and `apply`. Nothing here parses argv or prints.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import psycopg

from reconciler import migrations, tool_version
from reconciler.apply import OnOp, Progress, apply_plan
from reconciler.apply.to_postgres import ApplyRecord, record_catalog
from reconciler.callstats import CallStats
from reconciler.catalog import load_catalog
from reconciler.connections import connect_postgres, stripe_client
from reconciler.diff import diff
from reconciler.drift import DriftReport, OutOfBandEvent, drift_report
from reconciler.errors import (
    ApplyError,
    ApplyInterrupted,
    ConfigError,
    KuployError,
    MassArchiveRefused,
    MigrationsInterrupted,
)
from reconciler.lock import advisory_lock
from reconciler.model import Catalog, CurrentState, fingerprint
from reconciler.plan import Plan
from reconciler.results import ApplyOutcome, MassArchive
from reconciler.savedplan import SavedPlan, check_fresh, read_saved_plan, write_saved_plan
from reconciler.settings import Secret, Settings, scrub
from reconciler.state.from_postgres import (
    read_drift_events,
    read_last_applied,
    read_plan_file_applied,
    read_rows,
)
from reconciler.state.from_stripe import count_active_subscriptions, read_stripe
from reconciler.throttle import StripeCalls

log = logging.getLogger(__name__)

ROUNDS = 5
"""An apply that stops on a transient Stripe failure re-reads the state and goes on, this often."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveGuard:
    """Refuse a plan that archives more than `max_share` of the active paid plans at once, unless
    `allow`: the guard against a bad upstream answer (or a catalog file that lost its plans)."""

    max_share: float = 0.5
    allow: bool = False


def mass_archive(planned: Plan, current: CurrentState) -> MassArchive:
    return MassArchive(
        archived=planned.archived_paid_plans(),
        in_postgres=sum(1 for row in current.rows.values() if row.spec.is_paid),
        in_stripe=len(current.stripe.plans_on_sale()),
    )


def check_mass_archive(planned: Plan, current: CurrentState, guard: ArchiveGuard) -> None:
    found = mass_archive(planned, current)
    if guard.allow or not found.archived or not found.active_paid:
        return
    share = len(found.archived) / found.active_paid
    if share > guard.max_share:
        raise MassArchiveRefused(
            f"refusing to archive {found.describe()} at once: {share:.0%} > {guard.max_share:.0%}. "
            f"Nothing was changed.{found.hint} If the catalog is right, re-run with --allow-mass-archive "
            "(or a higher --max-archive-share)"
        )


@contextmanager
def _connections(settings: Settings) -> Iterator[tuple[psycopg.Connection, StripeCalls]]:
    conn = connect_postgres(settings)
    try:
        yield conn, stripe_client(settings)
    finally:
        conn.close()


def read_current(
    conn: psycopg.Connection, calls: StripeCalls, catalog: Catalog | None = None
) -> CurrentState:
    """The current state; webhook endpoints are read only for a catalog that declares one."""
    migrations.check_cloud_plans(conn)
    pending = tuple(m.label for m in migrations.pending(conn))
    webhooks = catalog is not None and catalog.webhook_endpoint is not None
    return CurrentState(
        rows=read_rows(conn),
        stripe=read_stripe(calls, webhook_endpoints=webhooks),
        pending_migrations=pending,
    )


class WebhookSecretDestination:
    """Where the signing secret of a webhook endpoint apply creates goes, once: a file made with mode
    0600 (an existing non-empty file is never overwritten) and/or `show` (the CLI's stdout)."""

    def __init__(self, file: Path | None = None, show: Callable[[str], None] | None = None) -> None:
        self.file = file
        self.show = show

    @property
    def given(self) -> bool:
        return self.file is not None or self.show is not None

    def prepare(self) -> None:
        """Before any write: claim the file (create it empty, 0600), so the secret cannot be lost to a
        file that cannot be written, and an existing secret is never overwritten."""
        if self.file is None:
            return
        try:
            if self.file.exists() and self.file.stat().st_size > 0:
                raise ConfigError(
                    f"--webhook-secret-file {self.file} exists and is not empty: refusing to overwrite a "
                    "signing secret; choose another file (or remove it if it is stale). Nothing was changed"
                )
            fd = os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            os.fchmod(fd, 0o600)
            os.close(fd)
        except OSError as e:
            raise ConfigError(
                f"cannot write --webhook-secret-file {self.file}: {e.strerror or e}. Nothing was changed"
            ) from e

    def deliver(self, endpoint_id: str, secret: Secret) -> None:
        if self.file is not None:
            fd = os.open(self.file, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(secret.reveal())  # no newline: `kubectl create secret --from-file` takes it as is
            log.warning("webhook endpoint %s created: its signing secret is in %s", endpoint_id, self.file)
        if self.show is not None:
            self.show(f"STRIPE_WEBHOOK_SECRET={secret.reveal()}")


def _check_webhook(
    planned: Plan, catalog: Catalog, settings: Settings, secrets: WebhookSecretDestination
) -> None:
    """Before any write: a created endpoint needs a place for its secret; live mode needs https."""
    change = planned.webhook_endpoint
    if change is None:
        return
    url = catalog.webhook_endpoint.url if catalog.webhook_endpoint else ""
    if settings.live and not url.startswith("https://"):
        raise ConfigError(f"webhook endpoint {url}: live mode needs an https:// URL. Nothing was changed")
    if change.creates and not secrets.given:
        raise ConfigError(
            "this apply creates the webhook endpoint, and Stripe shows its signing secret only once: pass "
            "--webhook-secret-file PATH (or --print-webhook-secret). Nothing was changed"
        )


def _plan(calls: StripeCalls, catalog: Catalog, current: CurrentState, *, adopt: bool) -> Plan:
    """`diff`, then, when the plan archives Prices, `Plan.subscriptions`: the active subscriptions on
    them, counted in Stripe (diff itself does no I/O)."""
    planned = diff(catalog, current, adopt=adopt)
    if not planned.archived_price_ids():
        return planned
    return replace(planned, subscriptions=count_active_subscriptions(calls, planned.archived_price_ids()))


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanOutcome:
    plan: Plan
    mass_archive: MassArchive
    """What the plan archives of the active paid plans (for the mass-archive warning)."""


def plan(settings: Settings, catalog: Catalog, *, adopt: bool = False, out: Path | None = None) -> Plan:
    """What `apply` would do now. Reads only; with `out`, also saves the plan file there."""
    return plan_outcome(settings, catalog, adopt=adopt, out=out).plan


def plan_outcome(
    settings: Settings, catalog: Catalog, *, adopt: bool = False, out: Path | None = None
) -> PlanOutcome:
    with _connections(settings) as (conn, calls):
        current = read_current(conn, calls, catalog)
        planned = _plan(calls, catalog, current, adopt=adopt)
    if out is not None:
        write_saved_plan(out, planned, catalog, current, adopt=adopt, tool_version=tool_version())
    return PlanOutcome(plan=planned, mass_archive=mass_archive(planned, current))


def apply(
    settings: Settings,
    catalog: Catalog,
    *,
    confirm: Callable[[Plan], bool],
    on_op: OnOp = lambda op: None,
    adopt: bool = False,
    guard: ArchiveGuard = ArchiveGuard(),
    secrets: WebhookSecretDestination | None = None,
) -> ApplyOutcome:
    """Lock, read, plan, check the guards, ask, migrate, execute. The plan is recomputed under the lock."""
    return _apply(settings, catalog, adopt=adopt, confirm=confirm, on_op=on_op, guard=guard, secrets=secrets)


def apply_saved(
    settings: Settings,
    path: Path,
    *,
    confirm: Callable[[Plan], bool],
    on_op: OnOp = lambda op: None,
    guard: ArchiveGuard = ArchiveGuard(),
    secrets: WebhookSecretDestination | None = None,
) -> ApplyOutcome:
    """Apply exactly the saved plan in `path`, or refuse (exit 1, nothing written) if it is stale."""
    saved = read_saved_plan(path)
    return _apply(
        settings,
        saved.catalog,
        adopt=saved.adopt,
        confirm=confirm,
        on_op=on_op,
        guard=guard,
        secrets=secrets,
        saved=(path, saved),
    )


def _apply(
    settings: Settings,
    catalog: Catalog,
    *,
    adopt: bool,
    confirm: Callable[[Plan], bool],
    on_op: OnOp,
    guard: ArchiveGuard,
    secrets: WebhookSecretDestination | None,
    saved: tuple[Path, SavedPlan] | None = None,
) -> ApplyOutcome:
    """`apply` and `apply_saved`: a saved plan is refused, before anything is written, if it was
    applied already or if the plan recomputed under the lock differs from it."""
    secrets = secrets or WebhookSecretDestination()
    with _connections(settings) as (conn, calls), advisory_lock(conn, timeout=settings.lock_timeout):
        if saved is not None:
            _check_not_applied(conn, *saved)
        current = read_current(conn, calls, catalog)
        planned = _plan(calls, catalog, current, adopt=adopt)
        if saved is not None:
            check_fresh(saved[1], current, planned)
        if not planned.has_changes:
            if saved is None:
                _remember_catalog(conn, catalog)
            return ApplyOutcome(plan=planned, confirmed=True)
        check_mass_archive(planned, current, guard)
        _check_webhook(planned, catalog, settings, secrets)
        if not confirm(planned):
            return ApplyOutcome(plan=planned, confirmed=False)
        if planned.webhook_endpoint is not None and planned.webhook_endpoint.creates:
            secrets.prepare()
        plan_file_id = saved[1].id if saved is not None else None
        record = ApplyRecord(catalog=catalog, summary=planned.summary(), plan_file_id=plan_file_id)
        return _execute(conn, calls, planned, record, on_op, settings=settings, adopt=adopt, secrets=secrets)


def _check_not_applied(conn: psycopg.Connection, path: Path, saved: SavedPlan) -> None:
    if (when := read_plan_file_applied(conn, saved.id)) is not None:
        raise KuployError(
            f"{path}: this plan was already applied at {when:%Y-%m-%d %H:%M:%S %Z}; run plan again"
        )


def _execute(
    conn: psycopg.Connection,
    calls: StripeCalls,
    planned: Plan,
    record: ApplyRecord,
    on_op: OnOp,
    *,
    settings: Settings,
    adopt: bool = False,
    secrets: WebhookSecretDestination | None = None,
) -> ApplyOutcome:
    """Migrate, then apply; a round stopped by a transient Stripe failure (rate limit, outage, lost
    answer) is followed by another that re-reads the state first, so what was done is adopted.

    Whatever stops it (an error, Stripe becoming unreachable, Ctrl-C), the error says exactly what
    was written before, counted where it happened, and that re-running converges."""
    progress = Progress()
    ran: tuple[str, ...] = ()
    try:
        ran = migrations.migrate(conn)
        if not planned.has_resource_changes:
            _remember_catalog(conn, record.catalog)
            return ApplyOutcome(plan=planned, confirmed=True, migrations=ran, stats=calls.stats)
        return _rounds(conn, calls, planned, record, on_op, progress, ran, settings, adopt, secrets)
    except KeyboardInterrupt:
        raise ApplyInterrupted(
            f"apply interrupted (Ctrl-C). {_written(calls.stats, progress, ran)}"
        ) from None
    except MigrationsInterrupted as e:  # before any Stripe write; those it applied stay
        raise ApplyInterrupted(
            f"apply interrupted (Ctrl-C) while migrating. {_written(calls.stats, progress, e.applied)}"
        ) from None
    except (KuployError, psycopg.Error) as e:
        transient = isinstance(e, ApplyError) and e.transient
        reason = scrub(str(e).strip(), settings.database_url.reveal()).rstrip(".") or type(e).__name__
        raise ApplyError(f"{reason}. {_written(calls.stats, progress, ran)}", transient=transient) from e


def _written(stats: CallStats, progress: Progress, migrated: tuple[str, ...]) -> str:
    """What an apply that stopped had written, and what to do: exact counts, or "nothing"."""
    stripe = f"{stats.written} Stripe write(s) made" if stats.written or stats.unanswered else ""
    if stats.unanswered:
        stripe += f" ({stats.unanswered} more got no clear answer: Stripe may have made them)"
    postgres = [f"migrations {', '.join(migrated)} applied"] if migrated else []
    if progress.rows:
        postgres.append(f"{progress.rows} cloud_plans row(s) written")
    if not stripe and not postgres:
        return "Nothing was changed."
    written = "; ".join([stripe or "Stripe untouched", ", ".join(postgres) or "Postgres untouched"])
    return (
        f"Done before it stopped: {written}. Re-running apply is safe: it adopts what was done and "
        "finishes the rest."
    )


def _rounds(
    conn: psycopg.Connection,
    calls: StripeCalls,
    planned: Plan,
    record: ApplyRecord,
    on_op: OnOp,
    progress: Progress,
    ran: tuple[str, ...],
    settings: Settings,
    adopt: bool,
    secrets: WebhookSecretDestination | None,
) -> ApplyOutcome:
    """Run `apply_plan` up to `ROUNDS` times: after a transient failure, re-read and re-plan what is left."""
    count, todo = 0, planned
    for round in range(ROUNDS):
        try:
            count += apply_plan(
                todo,
                record,
                calls=calls,
                conn=conn,
                on_op=on_op,
                concurrency=settings.concurrency,
                round=round,
                on_webhook_secret=secrets.deliver if secrets is not None else None,
                progress=progress,
            )
            return ApplyOutcome(
                plan=planned,
                confirmed=True,
                operations=count,
                migrations=ran,
                rounds=round + 1,
                stats=calls.stats,
            )
        except ApplyError as e:
            if not e.transient or round == ROUNDS - 1:
                raise
            log.warning(
                "apply round %d stopped on a transient error; re-reading state to finish: %s", round + 1, e
            )
        todo = _plan(calls, record.catalog, read_current(conn, calls, record.catalog), adopt=adopt)
        if not todo.has_resource_changes:
            break
    return ApplyOutcome(
        plan=planned, confirmed=True, operations=count, migrations=ran, rounds=round + 1, stats=calls.stats
    )


def _remember_catalog(conn: psycopg.Connection, catalog: Catalog) -> None:
    """Record a catalog that needed no change if it is not the last one recorded (for `drift`).
    The same catalog applied twice writes nothing the second time."""
    if migrations.pending(conn):
        return
    last = read_last_applied(conn)
    if last is None or last[1] != fingerprint(catalog.as_dict()):
        record_catalog(conn, ApplyRecord(catalog=catalog, summary={}))


def drift(settings: Settings, catalog: Catalog | None = None) -> DriftReport:
    """Out-of-band changes against `catalog`, or against the last catalog successfully applied."""
    with _connections(settings) as (conn, calls):
        if catalog is not None:
            baseline = "the catalog given"
        else:
            last = read_last_applied(conn)
            if last is None:
                raise KuployError("no catalog has been applied yet: run drift with a CATALOG argument")
            catalog, baseline = last[0], "the last applied catalog"
        current = read_current(conn, calls, catalog)
        events = tuple(
            OutOfBandEvent(
                plan=e.plan or "?",
                event_id=e.event_id,
                type=e.type,
                object_id=e.object_id,
                created=f"{e.created:%Y-%m-%d %H:%M:%S %Z}",
            )
            for e in read_drift_events(conn)
        )
    planned = diff(catalog, replace(current, pending_migrations=()))
    return drift_report(planned, baseline=baseline, events=events)


def export(settings: Settings) -> Catalog:
    """The current `cloud_plans` as a catalog (every plan, inactive ones marked so)."""
    with _connections(settings) as (conn, _client):
        migrations.check_cloud_plans(conn)
        rows = read_rows(conn)
    if not rows:
        raise KuployError("cloud_plans is empty or missing: nothing to export (run seed or apply first)")
    ordered = sorted(rows.values(), key=lambda r: (not r.spec.is_default, not r.spec.is_active, r.spec.slug))
    return Catalog(plans=tuple(r.spec for r in ordered), sources=("cloud_plans",))


def migrate(settings: Settings) -> tuple[str, ...]:
    with _connections(settings) as (conn, _client), advisory_lock(conn, timeout=settings.lock_timeout):
        return migrations.migrate(conn)


def bootstrap_catalog() -> Catalog:
    with resources.as_file(resources.files("reconciler.bootstrap") / "plans.yaml") as path:
        return load_catalog(Path(path))


def seed(settings: Settings, *, on_op: OnOp = lambda op: None) -> ApplyOutcome:
    """Write the shipped bootstrap plans, only into an empty `cloud_plans`."""
    catalog = bootstrap_catalog()
    with _connections(settings) as (conn, calls), advisory_lock(conn, timeout=settings.lock_timeout):
        current = read_current(conn, calls)
        if current.rows:
            raise KuployError(
                f"cloud_plans already has {len(current.rows)} plan(s); seed only writes into an empty table "
                "(use apply to change existing plans)"
            )
        planned = diff(catalog, current)
        record = ApplyRecord(catalog=catalog, summary=planned.summary())
        return _execute(conn, calls, planned, record, on_op, settings=settings)
