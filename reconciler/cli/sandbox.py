"""`sandbox`: the embedded PostgreSQL (status, start, stop, reset), the Stripe emulator (serve) and a
test checkout."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from reconciler.cli.context import command_settings, read_only
from reconciler.cli.options import examples
from reconciler.errors import ConfigError, KuployError
from reconciler.settings import state_dir


@click.group(
    epilog=examples(
        "sandbox status", "sandbox stop", "sandbox serve --port 12111", "sandbox checkout --plan pro"
    )
)
def sandbox() -> None:
    """The local sandbox: the embedded PostgreSQL (status, start, stop, reset), the Stripe emulator
    (serve) and a test checkout."""


@sandbox.command("status", epilog=examples("sandbox status"))
@read_only
def sandbox_status() -> int:
    """Show what the sandbox runs and where its state is (KUPLOY_STATE_DIR, default .kuploy-sandbox/).
    Starts or stops nothing."""
    from reconciler.sandbox import postgres
    from reconciler.sandbox.status import render_sandbox_status

    click.echo(render_sandbox_status(postgres.sandbox_status(state_dir())), nl=False)
    return 0


@sandbox.command("start", epilog=examples("sandbox start"))
def sandbox_start() -> int:
    """Start the sandbox PostgreSQL and keep it running between commands (each command then skips its
    start) until `sandbox stop`. Without it, a command starts it for itself and stops it at its end."""
    from reconciler.sandbox.postgres import keep_sandbox_database
    from reconciler.sandbox.status import render_database_line

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
    from reconciler.sandbox.checkout import render_checkout, run_checkout

    report = run_checkout(
        command_settings(ctx),
        plan=plan_slug,
        organization=organization,
        card=card,
        authenticate=not no_authenticate,
    )
    for step in report.steps:
        click.echo(f"  {step}", err=True)
    click.echo(render_checkout(report, card=card), nl=False)
    return 0 if report.consistent else 1


def _fault_share(flag: str, help: str) -> Callable[[Any], Any]:
    """A fault of `sandbox serve` given as the share of requests it hits: 0 to 1, none by default."""
    return click.option(flag, type=click.FloatRange(0, 1), default=0.0, show_default=True, help=help)


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
@_fault_share("--error-rate", "Share of requests answered 500 api_error (half before, half after the write).")
@_fault_share("--timeout-rate", "Share of requests whose connection hangs, then closes without an answer.")
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
        # One keyword a line, as DatabaseStatus(...) in sandbox/postgres.py: alike in shape, nothing shared.
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
