"""`kuploy-reconciler`: click commands, exit codes and streams. No logic, SQL or Stripe calls here.

Exit codes: 0 ok · 1 any error (user, usage, failed apply) · 2 only for "changes present" with
`plan --detailed-exitcode`, as Terraform does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from reconciler import api
from reconciler.catalog import load_catalog
from reconciler.errors import ConfigError, KuployError
from reconciler.plan import Op, Plan
from reconciler.render.json import render_json
from reconciler.render.text import render_text, summary_line
from reconciler.settings import SANDBOX_STRIPE_KEY, Environment, Settings

log = logging.getLogger("reconciler")


def _color(stream: Any) -> bool:
    return "NO_COLOR" not in os.environ and hasattr(stream, "isatty") and stream.isatty()


def _settings(ctx: click.Context, *, live: bool = False, lock_timeout: float = 60.0) -> Settings:
    """Settings from the environment; with neither DATABASE_URL nor STRIPE_SECRET_KEY, the sandbox."""
    env = Environment.read(live=live)
    if not env.wants_sandbox:
        assert env.database_url is not None and env.stripe_secret_key is not None
        return Settings(
            database_url=env.database_url,
            stripe_secret_key=env.stripe_secret_key,
            stripe_api_base=env.stripe_api_base,
            live=live,
            lock_timeout=lock_timeout,
        )
    if live:
        raise ConfigError(
            "--live needs DATABASE_URL and a live STRIPE_SECRET_KEY; the sandbox is test-mode only"
        )
    from reconciler.sandbox.emulator import start_in_thread
    from reconciler.sandbox.postgres import start_embedded_postgres
    from reconciler.settings import Secret

    state = env.state_dir
    database_url = start_embedded_postgres(state / "postgres")
    emulator = ctx.with_resource(start_in_thread(state_file=state / "stripe.json"))
    click.echo(
        f"sandbox mode: embedded PostgreSQL and Stripe emulator, state in {state}/ "
        "(set DATABASE_URL and STRIPE_SECRET_KEY to use real ones)",
        err=True,
    )
    return Settings(
        database_url=Secret(database_url),
        stripe_secret_key=Secret(SANDBOX_STRIPE_KEY),
        stripe_api_base=emulator.url,
        sandbox=True,
        state_dir=state,
        lock_timeout=lock_timeout,
    )


def _print_op(op: Op) -> None:
    click.echo(f"  done: {op.describe()} [plan {op.slug}]", err=True)


catalog_argument = click.argument("catalog", type=click.Path(path_type=Path))
live_option = click.option("--live", is_flag=True, help="Allow a live Stripe key (sk_live_…): real money.")
lock_option = click.option(
    "--lock-timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for another apply."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(package_name="kuploy-reconciler")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Reconcile the kuploy-cloud plan catalog with cloud_plans and Stripe."""
    ctx.obj = {"debug": debug}
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, stream=sys.stderr)


@cli.command()
@catalog_argument
def validate(catalog: Path) -> int:
    """Check a catalog (schema and invariants). Reads the catalog only."""
    loaded = load_catalog(catalog)
    click.echo(f"{catalog}: valid, {len(loaded.plans)} plan(s)")
    return 0


@cli.command("plan")
@catalog_argument
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 with no changes, 2 with changes, 1 on error.")
@live_option
@click.pass_context
def plan_command(ctx: click.Context, catalog: Path, output: str, detailed_exitcode: bool, live: bool) -> int:
    """Show what apply would change. Writes nothing."""
    desired = load_catalog(catalog)
    planned = api.plan(_settings(ctx, live=live), desired)
    click.echo(_render(planned, output), nl=False)
    return 2 if detailed_exitcode and planned.has_changes else 0


def _render(planned: Plan, output: str) -> str:
    if output == "json":
        return render_json(planned)
    return render_text(planned, color=_color(sys.stdout))


@cli.command("apply")
@catalog_argument
@click.option("--auto-approve", is_flag=True, help="Apply without asking (CI).")
@live_option
@lock_option
@click.pass_context
def apply_command(
    ctx: click.Context, catalog: Path, auto_approve: bool, live: bool, lock_timeout: float
) -> int:
    """Make cloud_plans and Stripe match the catalog, after showing the plan."""
    desired = load_catalog(catalog)
    if not auto_approve and not sys.stdin.isatty():
        raise ConfigError("apply needs confirmation: run it on a terminal, or pass --auto-approve")
    settings = _settings(ctx, live=live, lock_timeout=lock_timeout)

    def confirm(planned: Plan) -> bool:
        click.echo(render_text(planned, color=_color(sys.stdout)), nl=False)
        if auto_approve:
            return True
        answer = click.prompt("Apply these changes? Only 'yes' is accepted", default="", show_default=False)
        return bool(answer.strip() == "yes")

    outcome = api.apply(settings, desired, confirm=confirm, on_op=_print_op)
    if not outcome.plan.has_changes:
        click.echo(render_text(outcome.plan), nl=False)
        return 0
    if not outcome.confirmed:
        raise KuployError("apply cancelled: nothing was changed")
    if outcome.migrations:
        click.echo(f"Migrations applied: {', '.join(outcome.migrations)}")
    click.echo(f"Apply complete: {outcome.operations} operation(s). {summary_line(outcome.plan)}")
    return 0


@cli.command()
@lock_option
@click.pass_context
def migrate(ctx: click.Context, lock_timeout: float) -> int:
    """Create or upgrade the tool's own cloud_* tables."""
    ran = api.migrate(_settings(ctx, lock_timeout=lock_timeout))
    click.echo(f"Migrations applied: {', '.join(ran)}" if ran else "Database is up to date.")
    return 0


@cli.command()
@lock_option
@click.pass_context
def seed(ctx: click.Context, lock_timeout: float) -> int:
    """Write the bootstrap plans, only into an empty cloud_plans (first boot)."""
    outcome = api.seed(_settings(ctx, lock_timeout=lock_timeout), on_op=_print_op)
    click.echo(f"Seeded {len(outcome.plan.changes)} bootstrap plan(s).")
    return 0


@cli.group()
def sandbox() -> None:
    """The local Stripe emulator (and embedded Postgres) for tests and local work."""


@sandbox.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=12111, show_default=True)
@click.option("--latency-ms", type=int, default=0, show_default=True, help="Delay every answer.")
@click.option("--state-file", type=click.Path(path_type=Path), default=None, help="Persist objects here.")
def sandbox_serve(host: str, port: int, latency_ms: int, state_file: Path | None) -> int:
    """Serve the Stripe emulator (Stripe's REST API for Products and Prices) until Ctrl-C."""
    from reconciler.sandbox.emulator import serve

    click.echo(f"Stripe emulator on http://{host}:{port} (STRIPE_API_BASE); Ctrl-C stops it", err=True)
    serve(host=host, port=port, state_file=state_file, latency_ms=latency_ms)
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
        if debug:
            raise
        click.echo(f"Error: unexpected {type(e).__name__}: {e} (re-run with --debug for details)", err=True)
        code = 1
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    sys.exit(code if isinstance(code, int) else 0)
