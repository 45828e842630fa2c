"""`kuploy-reconciler`: click commands, exit codes and streams. No logic, SQL or Stripe calls here.

Exit codes: 0 ok · 1 any error (user, usage, failed apply) · 2 only for "changes present" with
`plan --detailed-exitcode` and for "drift found", as Terraform does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from reconciler.catalog import dump_catalog, load_catalog, webhook_endpoint_from_flag
from reconciler.errors import ConfigError, KuployError
from reconciler.fetch import fetch_catalog, is_url, url_label
from reconciler.files import write_atomically
from reconciler.model import WEBHOOK_PATH, Catalog
from reconciler.plan import Op, Plan
from reconciler.render.checkout import render_checkout
from reconciler.render.doctor import render_checks_json, render_checks_text
from reconciler.render.drift import render_drift_json, render_drift_text
from reconciler.render.json import render_json
from reconciler.render.markdown import render_markdown
from reconciler.render.outcome import mass_archive_warning, render_applied, render_stripe_calls
from reconciler.render.sandbox import render_database_line, render_sandbox_status
from reconciler.render.text import render_text
from reconciler.settings import (
    ARCHIVE_SHARE,
    LOCK_TIMEOUT,
    MAX_RPS,
    CatalogFetch,
    Environment,
    NumberRange,
    Settings,
    redact,
    redact_logging,
    secrets_in,
    state_dir,
)

if TYPE_CHECKING:
    # Imported by the commands that use them: `api` brings stripe, psycopg and deepdiff (~0.3 s),
    # which `--version` and `validate` do not need (start-up in BENCHMARKS.md).
    from reconciler import api


class Number(click.ParamType):  # type: ignore[type-arg,unused-ignore]  # generic since click 8.2
    """A flag's number, read by `NumberRange.parse` like the environment's (no nan, inf, overflow,
    or non-ASCII digits)."""

    name = "number"

    def __init__(self, accepted: NumberRange) -> None:
        self.accepted = accepted

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value  # a default
        flag = param.opts[0] if param is not None and param.opts else "value"
        try:
            return self.accepted.parse(str(value), flag)
        except ConfigError as e:
            raise click.UsageError(str(e), ctx) from None


def _color(stream: Any) -> bool:
    return "NO_COLOR" not in os.environ and hasattr(stream, "isatty") and stream.isatty()


def _settings(
    ctx: click.Context,
    *,
    live: bool = False,
    lock_timeout: float = 60.0,
    strict: bool = True,
    max_rps: float | None = None,
) -> Settings:
    """Settings from the environment; with neither DATABASE_URL nor STRIPE_SECRET_KEY, the sandbox."""
    env = Environment.read(live=live, strict=strict)
    max_rps = max_rps or env.max_rps
    if not env.wants_sandbox:
        return env.settings(lock_timeout=lock_timeout, max_rps=max_rps)
    if live:
        raise ConfigError(
            "--live needs DATABASE_URL and a live STRIPE_SECRET_KEY; the sandbox is test-mode only"
        )
    from reconciler.sandbox.session import sandbox_session

    announce = functools.partial(click.echo, err=True)
    return ctx.with_resource(
        sandbox_session(env, lock_timeout=lock_timeout, max_rps=max_rps, announce=announce)
    )


def _print_op(op: Op) -> None:
    click.echo(f"  done: {op.describe()} [plan {op.slug}]", err=True)


@contextlib.contextmanager
def _progress(ctx: click.Context) -> Iterator[Callable[[Op], None]]:
    """One line per operation in logs and CI; a progress bar on a terminal (stderr), unless --debug."""
    if not sys.stderr.isatty() or ctx.find_root().params.get("debug"):
        yield _print_op
        return
    with click.progressbar(length=1, label="applying", file=sys.stderr, show_pos=True) as bar:

        def tick(op: Op) -> None:
            bar.label = f"{op.describe()[:48]:<48}"
            bar.update(1)

        yield tick


def _fetch_config() -> CatalogFetch:
    return CatalogFetch.read()


def _load(
    source: str | None,
    *,
    write_cache: bool = False,
    webhook_url: str | None = None,
    required: bool = True,
) -> Catalog | None:
    """The desired catalog from a file, a folder or an https:// URL; with no SOURCE, from
    KUPLOY_CATALOG_URL. `--webhook-url` declares (or replaces) the catalog's webhook endpoint."""
    if source is None:
        config = _fetch_config()
        if config.url is None:
            if required:
                raise click.UsageError(
                    "give a CATALOG (file, folder or https:// URL) or set KUPLOY_CATALOG_URL"
                )
            return None
        source = config.url
    if is_url(source):
        fetched = fetch_catalog(source, _fetch_config(), write_cache=write_cache)
        how = "unchanged since the last fetch (304), cached copy" if fetched.not_modified else "fetched"
        click.echo(f"catalog: {url_label(source)}: {how}, {len(fetched.catalog.plans)} plan(s)", err=True)
        catalog = fetched.catalog
    else:
        catalog = load_catalog(Path(source))
    if webhook_url is not None:
        catalog = dataclasses.replace(catalog, webhook_endpoint=webhook_endpoint_from_flag(webhook_url))
    return catalog


def _required(catalog: Catalog | None) -> Catalog:
    assert catalog is not None
    return catalog


def _warn_mass_archive(outcome: api.PlanOutcome) -> None:
    if (warning := mass_archive_warning(outcome.mass_archive)) is not None:
        click.echo(warning, err=True, nl=False)


# click.Path (not checked, kept a str: a catalog may be a URL) so that shells complete file names.
catalog_argument = click.argument("catalog", metavar="CATALOG", type=click.Path())
optional_catalog_argument = click.argument("catalog", metavar="[CATALOG]", required=False, type=click.Path())
webhook_url_option = click.option(
    "--webhook-url",
    metavar="URL",
    help="Declare the Stripe webhook endpoint (https://…/api/webhooks/stripe, the six billing events), "
    "e.g. for a kuploy.app catalog; replaces the catalog's webhookEndpoint.",
)
guard_options = [
    click.option(
        "--max-archive-share",
        type=Number(ARCHIVE_SHARE),
        default=0.5,
        show_default=True,
        help="Refuse a plan archiving more than this share of the active paid plans at once.",
    ),
    click.option(
        "--allow-mass-archive", is_flag=True, help="Archive any number of active paid plans (no guard)."
    ),
]
secret_options = [
    click.option(
        "--webhook-secret-file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="When the webhook endpoint is created, write its signing secret here (mode 0600; an "
        "existing non-empty file is never overwritten).",
    ),
    click.option(
        "--print-webhook-secret",
        is_flag=True,
        help="When the webhook endpoint is created, print STRIPE_WEBHOOK_SECRET=… on stdout (shown once).",
    ),
]


def _secrets(file: Path | None, print_secret: bool) -> api.WebhookSecretDestination:
    from reconciler import api

    return api.WebhookSecretDestination(file=file, show=click.echo if print_secret else None)


def _with(options: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def decorate(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


live_option = click.option("--live", is_flag=True, help="Allow a live Stripe key (sk_live_…): real money.")
adopt_option = click.option(
    "--adopt",
    is_flag=True,
    help="Take over a plan's existing Stripe Product/Prices that carry no ownership metadata "
    "(the Product its cloud_plans row names, else the only active one with the plan's name).",
)
lock_option = click.option(
    "--lock-timeout",
    type=Number(LOCK_TIMEOUT),
    default=60.0,
    show_default=True,
    help="Seconds to wait for another apply.",
)
output_option = click.option(
    "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True
)


def examples(*command_lines: str) -> str:
    """A command's --help epilog: example command lines, kept as written (`\b` stops click re-wrapping)."""
    return "\b\nExamples:\n" + "\n".join(f"  $ kuploy-reconciler {line}" for line in command_lines)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples(
        "plan examples/",
        "apply examples/ --auto-approve",
        "drift",
    )
    + "\n\n\b\nShell completion (bash; zsh_source and fish_source for the others):\n"
    '  $ eval "$(_KUPLOY_RECONCILER_COMPLETE=bash_source kuploy-reconciler)"',
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(package_name="kuploy-reconciler")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Reconcile the kuploy-cloud plan catalog with cloud_plans and Stripe."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, stream=sys.stderr)
    redact_logging()


@cli.command(epilog=examples("validate examples/", "validate catalog.yaml"))
@catalog_argument
def validate(catalog: str) -> int:
    """Check a catalog (schema and invariants): a file, a folder or an https:// URL.
    Reads the catalog only."""
    loaded = _required(_load(catalog))
    shown = url_label(catalog) if is_url(catalog) else catalog
    click.echo(f"{shown}: valid, {len(loaded.plans)} plan(s)")
    return 0


@cli.command(
    "plan",
    epilog=examples("plan examples/", "plan catalog/ -o markdown --out plan.json --detailed-exitcode"),
)
@optional_catalog_argument
@click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
    help="markdown: a pull-request comment.",
)
@click.option("--out", type=click.Path(path_type=Path), help="Save the plan for a later `apply FILE`.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 with no changes, 2 with changes, 1 on error.")
@adopt_option
@webhook_url_option
@live_option
@click.pass_context
def plan_command(
    ctx: click.Context,
    catalog: str | None,
    output: str,
    out: Path | None,
    detailed_exitcode: bool,
    adopt: bool,
    webhook_url: str | None,
    live: bool,
) -> int:
    """Show what apply would change to match CATALOG (a file, a folder or an https:// URL; default
    KUPLOY_CATALOG_URL). Writes nothing but the --out file."""
    from reconciler import api

    desired = _required(_load(catalog, webhook_url=webhook_url))
    outcome = api.plan_outcome(_settings(ctx, live=live), desired, adopt=adopt, out=out)
    planned = outcome.plan
    _warn_mass_archive(outcome)
    if output == "json":
        click.echo(render_json(planned), nl=False)
    elif output == "markdown":
        click.echo(render_markdown(planned), nl=False)
    else:
        click.echo(render_text(planned, color=_color(sys.stdout)), nl=False)
    if out is not None:
        click.echo(f"Plan saved to {out}: apply it with `kuploy-reconciler apply {out}`.", err=True)
    return 2 if detailed_exitcode and planned.has_changes else 0


max_rps_option = click.option(
    "--max-rps",
    type=Number(MAX_RPS),
    help="Stripe requests per second (default: 25 with a test key, 90 with a live key; "
    "env KUPLOY_STRIPE_MAX_RPS).",
)
write_options = [
    webhook_url_option,
    *secret_options,
    *guard_options,
    live_option,
    lock_option,
    max_rps_option,
]
"""The options `apply` and `sync` share: both write through `api.apply`."""


@cli.command(
    "apply",
    epilog=examples(
        "apply examples/", "apply plan.json", "apply catalog/ --auto-approve --webhook-secret-file ./whsec"
    ),
)
@click.argument("target", metavar="[CATALOG|PLANFILE]", required=False, type=click.Path())
@click.option("--auto-approve", is_flag=True, help="Apply without asking (CI).")
@adopt_option
@_with(write_options)
@click.pass_context
def apply_command(
    ctx: click.Context,
    target: str | None,
    auto_approve: bool,
    adopt: bool,
    webhook_url: str | None,
    webhook_secret_file: Path | None,
    print_webhook_secret: bool,
    max_archive_share: float,
    allow_mass_archive: bool,
    live: bool,
    lock_timeout: float,
    max_rps: float | None,
) -> int:
    """Make cloud_plans and Stripe match CATALOG (a file, a folder or an https:// URL; default
    KUPLOY_CATALOG_URL), after showing the plan; or apply a saved PLANFILE exactly (no prompt;
    refused, with nothing written, if the state changed since it was made)."""
    from reconciler import api
    from reconciler.savedplan import is_saved_plan

    saved = target is not None and not is_url(target) and is_saved_plan(Path(target))
    if saved and (adopt or webhook_url):
        raise ConfigError(
            "--adopt and --webhook-url are decided at plan time: run plan with them and --out FILE, "
            "then apply FILE"
        )
    if not saved and not auto_approve and not sys.stdin.isatty():
        raise ConfigError("apply needs confirmation: run it on a terminal, or pass --auto-approve")
    desired = None if saved else _load(target, write_cache=True, webhook_url=webhook_url)
    guard = api.ArchiveGuard(max_share=max_archive_share, allow=allow_mass_archive)
    secrets = _secrets(webhook_secret_file, print_webhook_secret)
    settings = _settings(ctx, live=live, lock_timeout=lock_timeout, max_rps=max_rps)

    def confirm(planned: Plan) -> bool:
        click.echo(render_text(planned, color=_color(sys.stdout)), nl=False)
        if auto_approve or saved:
            return True
        answer = click.prompt("Apply these changes? Only 'yes' is accepted", default="", show_default=False)
        return bool(answer.strip() == "yes")

    with _progress(ctx) as on_op:
        if desired is None:
            assert target is not None
            outcome = api.apply_saved(
                settings, Path(target), confirm=confirm, on_op=on_op, guard=guard, secrets=secrets
            )
        else:
            outcome = api.apply(
                settings, desired, confirm=confirm, on_op=on_op, adopt=adopt, guard=guard, secrets=secrets
            )
    return _report(outcome)


def _report(outcome: api.ApplyOutcome) -> int:
    if not outcome.plan.has_changes:
        click.echo(render_text(outcome.plan), nl=False)
        return 0
    if not outcome.confirmed:
        raise KuployError("apply cancelled: nothing was changed")
    click.echo(render_applied(outcome), nl=False)
    if outcome.stats is not None:
        click.echo(render_stripe_calls(outcome.stats, rounds=outcome.rounds), err=True, nl=False)
    return 0


@cli.command("sync", epilog=examples("sync --dry-run", "sync --live"))
@optional_catalog_argument
@click.option(
    "--dry-run", is_flag=True, help="Fetch and show the plan; write nothing at all (not even the cache)."
)
@_with(write_options)
@click.pass_context
def sync_command(
    ctx: click.Context,
    catalog: str | None,
    dry_run: bool,
    webhook_url: str | None,
    webhook_secret_file: Path | None,
    print_webhook_secret: bool,
    max_archive_share: float,
    allow_mass_archive: bool,
    live: bool,
    lock_timeout: float,
    max_rps: float | None,
) -> int:
    """The license sync, unattended: fetch the kuploy.app catalog (KUPLOY_CATALOG_URL with the bearer
    KUPLOY_LICENSE_KEY, or CATALOG), print the plan, apply it without a prompt. Exit 0 done or nothing
    to do, 1 on any failure (an unreachable or invalid catalog writes nothing)."""
    from reconciler import api

    desired = _required(_load(catalog, write_cache=not dry_run, webhook_url=webhook_url))
    settings = _settings(ctx, live=live, lock_timeout=lock_timeout, max_rps=max_rps)
    if dry_run:
        preview = api.plan_outcome(settings, desired)
        _warn_mass_archive(preview)
        click.echo(render_text(preview.plan, color=_color(sys.stdout)), nl=False)
        click.echo("Dry run: nothing was written.", err=True)
        return 0
    guard = api.ArchiveGuard(max_share=max_archive_share, allow=allow_mass_archive)

    def show(planned: Plan) -> bool:
        click.echo(render_text(planned, color=_color(sys.stdout)), nl=False)
        return True

    secrets = _secrets(webhook_secret_file, print_webhook_secret)
    with _progress(ctx) as on_op:
        outcome = api.apply(settings, desired, confirm=show, on_op=on_op, guard=guard, secrets=secrets)
    return _report(outcome)


@cli.command("drift", epilog=examples("drift", "drift catalog/ -o json"))
@optional_catalog_argument
@output_option
@live_option
@click.pass_context
def drift_command(ctx: click.Context, catalog: str | None, output: str, live: bool) -> int:
    """Report changes made by hand in Stripe or cloud_plans, against CATALOG (a file, a folder or an
    https:// URL) or else the last applied catalog (also when KUPLOY_CATALOG_URL is set: sync records
    what it applied). Exit 0 no drift, 2 drift, 1 error."""
    from reconciler import api

    desired = _load(catalog) if catalog is not None else None
    report = api.drift(_settings(ctx, live=live), desired)
    click.echo(render_drift_json(report) if output == "json" else render_drift_text(report), nl=False)
    return 2 if report.has_drift else 0


@cli.command(epilog=examples("export --out catalog/plans.yaml"))
@click.option("--out", type=click.Path(path_type=Path), help="Write the catalog here instead of stdout.")
@live_option
@click.pass_context
def export(ctx: click.Context, out: Path | None, live: bool) -> int:
    """Write the current cloud_plans as a YAML catalog (to adopt an existing instance into Git)."""
    from reconciler import api

    catalog = api.export(_settings(ctx, live=live))
    text = dump_catalog(
        catalog,
        comment="Exported from cloud_plans by `kuploy-reconciler export`: review it, commit it, plan it.",
    )
    if out is None:
        click.echo(text, nl=False)
    else:
        write_atomically(out, text, what="the catalog")
        click.echo(f"Exported {len(catalog.plans)} plan(s) to {out}", err=True)
    return 0


@cli.command(epilog=examples("doctor", "doctor --live -o json"))
@output_option
@live_option
@click.pass_context
def doctor(ctx: click.Context, output: str, live: bool) -> int:
    """The billing guide's troubleshooting list as checks, each with its fix. Exit 0 healthy, 1 not."""
    from reconciler.doctor import run_checks

    settings: Settings | None
    try:
        settings, error = _settings(ctx, live=live, strict=False), None
    except ConfigError as e:
        settings, error = None, str(e)
    checks = run_checks(settings, os.environ, error)
    healthy = all(c.ok for c in checks)
    click.echo(render_checks_json(checks) if output == "json" else render_checks_text(checks), nl=False)
    return 0 if healthy else 1


@cli.command(epilog=examples("migrate", "migrate --lock-timeout 300"))
@lock_option
@live_option
@click.pass_context
def migrate(ctx: click.Context, lock_timeout: float, live: bool) -> int:
    """Create or upgrade the tool's own cloud_* tables."""
    from reconciler import api

    ran = api.migrate(_settings(ctx, live=live, lock_timeout=lock_timeout))
    click.echo(f"Migrations applied: {', '.join(ran)}" if ran else "Database is up to date.")
    return 0


@cli.command(epilog=examples("seed"))
@lock_option
@live_option
@click.pass_context
def seed(ctx: click.Context, lock_timeout: float, live: bool) -> int:
    """Write the bootstrap plans, only into an empty cloud_plans (first boot)."""
    from reconciler import api

    outcome = api.seed(_settings(ctx, live=live, lock_timeout=lock_timeout), on_op=_print_op)
    click.echo(f"Seeded {len(outcome.plan.changes)} bootstrap plan(s).")
    return 0


def _exit_cleanly(signum: int, frame: Any) -> None:
    raise SystemExit(0)


@cli.command(
    epilog=examples(
        "listen", "listen --host 0.0.0.0 --port 8080 --workers 2", "listen --log-format json --no-metrics"
    )
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0 in a pod).")
@click.option("--port", type=int, default=8080, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes sharing the port. They share nothing but Postgres (the event id keeps "
    "them exactly-once) and split the Stripe rate limit; about one per core.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per line (an event's: event_id, type, outcome, subscription, ms).",
)
@click.option(
    "--metrics/--no-metrics",
    default=True,
    show_default=True,
    help="Serve Prometheus metrics on GET /metrics (summed over the workers).",
)
@live_option
@click.pass_context
def listen(
    ctx: click.Context, host: str, port: int, workers: int, log_format: str, metrics: bool, live: bool
) -> int:
    """Serve the Stripe webhook listener: POST /api/webhooks/stripe, GET /healthz, GET /readyz,
    GET /metrics. Needs STRIPE_WEBHOOK_SECRET; run `migrate` (or an apply) first so /readyz reports
    ready."""
    import uvicorn

    from reconciler import listener
    from reconciler.telemetry import multiprocess_directory

    webhook_secret = listener.webhook_secret_from_environment()
    settings = _settings(ctx, live=live)
    listener.configure_logging(json_lines=log_format == "json")
    started = (
        f"Webhook listener on http://{host}:{port}{WEBHOOK_PATH}"
        f"{f' ({workers} workers)' if workers > 1 else ''}; Ctrl-C stops it"
    )
    if log_format == "json":
        listener.logger.info(started)
    else:
        click.echo(started, err=True)
    app: Any = "reconciler.listener:app_from_environment"  # an import string, or the app itself
    if workers == 1:
        app = listener.create_app(settings, webhook_secret=webhook_secret, metrics=metrics)
    else:
        if metrics:  # the workers' metrics, summed on every worker's /metrics; deleted at the end
            ctx.with_resource(multiprocess_directory())
        os.environ.update(
            listener.worker_environment(
                settings, workers=workers, live=live, log_format=log_format, metrics=metrics
            )
        )
    # uvicorn shuts down gracefully on SIGTERM, then raises it again: leave through the context's
    # cleanup (the sandbox database this command started is stopped), not by dying on it.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        app,
        host=host,
        port=port,
        factory=workers > 1,
        workers=workers,
        # JSON: uvicorn's records go through the root handlers (JSON, redacting) instead of its own.
        log_config=None if log_format == "json" else listener.uvicorn_log_config(),
        log_level="warning",
        access_log=False,
        server_header=False,
    )
    return 0


@cli.group(
    epilog=examples(
        "sandbox status", "sandbox stop", "sandbox serve --port 12111", "sandbox checkout --plan pro"
    )
)
def sandbox() -> None:
    """The local sandbox: the embedded PostgreSQL (status, start, stop, reset), the Stripe emulator
    (serve) and a test checkout."""


@sandbox.command("status", epilog=examples("sandbox status"))
def sandbox_status() -> int:
    """Show what the sandbox runs and where its state is (KUPLOY_STATE_DIR, default .kuploy-sandbox/).
    Starts or stops nothing."""
    from reconciler.sandbox.postgres import sandbox_status

    click.echo(render_sandbox_status(sandbox_status(state_dir())), nl=False)
    return 0


@sandbox.command("start", epilog=examples("sandbox start"))
def sandbox_start() -> int:
    """Start the sandbox PostgreSQL and keep it running between commands (each command then skips its
    start) until `sandbox stop`. Without it, a command starts it for itself and stops it at its end."""
    from reconciler.sandbox.postgres import keep_sandbox_database

    status = keep_sandbox_database(state_dir())
    click.echo(render_database_line(status), nl=False)
    return 0


@sandbox.command("stop", epilog=examples("sandbox stop"))
def sandbox_stop() -> int:
    """Stop the sandbox PostgreSQL; its data stays for the next command. Refused while a command uses it."""
    from reconciler.sandbox.postgres import stop_sandbox_database

    state = state_dir()
    before = stop_sandbox_database(state)
    if before.running:
        click.echo(
            f"Stopped the sandbox PostgreSQL (pid {before.pid}); its data stays in {before.data_dir}/."
        )
    else:
        click.echo("The sandbox PostgreSQL is not running: nothing to stop.")
    return 0


@sandbox.command("reset", epilog=examples("sandbox reset", "sandbox reset --yes"))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (needed without a terminal).")
def sandbox_reset(yes: bool) -> int:
    """Stop the sandbox PostgreSQL and delete the sandbox's state: its database and the Stripe
    emulator's objects (the catalog cache stays). Asks first; refused while a command uses it."""
    from reconciler.sandbox.postgres import DATABASE_DIR, EMULATOR_STATE, reset_sandbox

    state = state_dir()
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError("sandbox reset needs confirmation: run it on a terminal, or pass --yes")
        answer = click.prompt(
            f"Delete the sandbox database ({state}/{DATABASE_DIR}/) and Stripe emulator objects "
            f"({state}/{EMULATOR_STATE})? Only 'yes' is accepted",
            default="",
            show_default=False,
        )
        if answer.strip() != "yes":
            raise KuployError("sandbox reset cancelled: nothing was changed")
    dropped = reset_sandbox(state)
    click.echo(
        f"Sandbox reset: deleted {', '.join(str(p) for p in dropped)}; nothing runs."
        if dropped
        else f"Sandbox reset: nothing to delete in {state}/; nothing runs."
    )
    return 0


@sandbox.command(
    "checkout",
    epilog=examples(
        "sandbox checkout --plan pro", "sandbox checkout --plan pro --card '4000 0000 0000 3220'"
    ),
)
@click.option(
    "--plan", "plan_slug", required=True, help="Slug of an active paid plan (apply a catalog first)."
)
@click.option("--org", "organization", default="org_sandbox", show_default=True, help="Organization id.")
@click.option(
    "--card",
    default="4242 4242 4242 4242",
    show_default=True,
    help="A test card of the guide: 4242… succeeds, 4000 0000 0000 0002 is declined, "
    "4000 0000 0000 3220 requires 3D Secure.",
)
@click.option("--no-authenticate", is_flag=True, help="Leave a 3D Secure payment unauthenticated.")
@click.pass_context
def sandbox_checkout(
    ctx: click.Context, plan_slug: str, organization: str, card: str, no_authenticate: bool
) -> int:
    """The guide's "Test your setup": check out a plan with a test card in the sandbox and show the
    subscription as kuploy-cloud and as Stripe see it. Exit 0 when both agree."""
    from reconciler.sandbox.checkout import run_checkout

    report = run_checkout(
        _settings(ctx), plan=plan_slug, organization=organization, card=card, authenticate=not no_authenticate
    )
    for step in report.steps:
        click.echo(f"  {step}", err=True)
    click.echo(render_checkout(report, card=card), nl=False)
    return 0 if report.consistent else 1


@sandbox.command(
    "serve", epilog=examples("sandbox serve", "sandbox serve --port 12111 --latency-ms 50 --rate-limit 25")
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=12111, show_default=True)
@click.option("--latency-ms", type=int, default=0, show_default=True, help="Delay every answer.")
@click.option("--state-file", type=click.Path(path_type=Path), default=None, help="Persist objects here.")
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Answer Stripe's 429 beyond N requests per second (default: no limit).",
)
@click.option(
    "--error-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of requests answered 500 api_error (half before, half after the write).",
)
@click.option(
    "--timeout-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of requests whose connection hangs, then closes without an answer.",
)
@click.option("--hang-seconds", type=click.FloatRange(0, 600), default=30.0, show_default=True)
@click.option("--seed", type=int, default=None, help="Seed the faults for a reproducible run.")
def sandbox_serve(
    host: str,
    port: int,
    latency_ms: int,
    state_file: Path | None,
    rate_limit: float | None,
    error_rate: float,
    timeout_rate: float,
    hang_seconds: float,
    seed: int | None,
) -> int:
    """Serve the Stripe emulator (Products, Prices, Customers, Subscriptions, Webhooks) until Ctrl-C.

    Faults can also be changed while it runs: POST /_emulator/faults (JSON), GET /_emulator/stats."""
    from reconciler.sandbox import emulator

    click.echo(f"Stripe emulator on http://{host}:{port} (STRIPE_API_BASE); Ctrl-C stops it", err=True)
    try:
        faults = emulator.FaultSettings(
            rate_limit=rate_limit,
            error_rate=error_rate,
            timeout_rate=timeout_rate,
            seed=seed,
            latency_ms=latency_ms,
            hang_seconds=hang_seconds,
        )
        emulator.serve(host=host, port=port, state_file=state_file, faults=faults)
    except emulator.EmulatorConfigError as e:
        raise ConfigError(str(e)) from e
    return 0


def main(argv: list[str] | None = None) -> None:
    """Entry point: maps every failure to one `Error:` line and exit 1 (tracebacks with --debug)."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        code = cli.main(args=args, prog_name="kuploy-reconciler", standalone_mode=False)
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted: nothing was changed.", err=True)
        code = 1
    except click.ClickException as e:  # usage errors: 1, not click's 2 (2 means "changes")
        e.show()
        code = 1
    except KuployError as e:
        for line in str(e).splitlines() or [type(e).__name__]:
            click.echo(f"Error: {line}", err=True)
        code = 1
    except Exception as e:  # the one broad except: never a traceback unless asked
        if debug:  # asked: the traceback, with what looks like a secret masked (`redact`)
            shown = "".join(traceback.format_exception(e))
            click.echo(redact(shown, secrets_in(os.environ)), err=True, nl=False)
        click.echo(f"Error: unexpected {type(e).__name__} (re-run with --debug for details)", err=True)
        code = 1
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    sys.exit(code if isinstance(code, int) else 0)
