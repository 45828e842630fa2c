"""The commands that run the service beside kuploy-cloud: doctor, migrate, seed, listen."""

from __future__ import annotations

import os
import signal
from typing import Any

import click

from reconciler.cli.context import command_settings, print_op, read_only
from reconciler.cli.options import examples, live_option, lock_option, output_option
from reconciler.errors import ConfigError
from reconciler.model import WEBHOOK_PATH
from reconciler.render.doctor import render_checks_json, render_checks_text
from reconciler.settings import Settings


@click.command(epilog=examples("doctor", "doctor --live -o json"))
@output_option
@live_option
@click.pass_context
@read_only
def doctor(ctx: click.Context, output: str, live: bool) -> int:
    """The billing guide's troubleshooting list as checks, each with its fix. Exit 0 healthy, 1 not."""
    from reconciler.doctor import run_checks

    settings: Settings | None
    try:
        settings, error = command_settings(ctx, live=live, strict=False), None
    except ConfigError as e:
        settings, error = None, str(e)
    checks = run_checks(settings, os.environ, error)
    healthy = all(c.ok for c in checks)
    click.echo(render_checks_json(checks) if output == "json" else render_checks_text(checks), nl=False)
    return 0 if healthy else 1


@click.command(epilog=examples("migrate", "migrate --lock-timeout 300"))
@lock_option
@live_option
@click.pass_context
def migrate(ctx: click.Context, lock_timeout: float, live: bool) -> int:
    """Create or upgrade the tool's own cloud_* tables."""
    from reconciler import api

    ran = api.migrate(command_settings(ctx, live=live, lock_timeout=lock_timeout))
    click.echo(f"Migrations applied: {', '.join(ran)}" if ran else "Database is up to date.")
    return 0


@click.command(epilog=examples("seed"))
@lock_option
@live_option
@click.pass_context
def seed(ctx: click.Context, lock_timeout: float, live: bool) -> int:
    """Write the bootstrap plans, only into an empty cloud_plans (first boot)."""
    from reconciler import api

    outcome = api.seed(command_settings(ctx, live=live, lock_timeout=lock_timeout), on_op=print_op)
    click.echo(f"Seeded {len(outcome.plan.changes)} bootstrap plan(s).")
    return 0


def _exit_cleanly(signum: int, frame: Any) -> None:
    raise SystemExit(0)


@click.command(
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
    settings = command_settings(ctx, live=live)
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
