"""`kuploy-reconciler`: click commands, exit codes and streams. No logic, SQL or Stripe calls here.

Exit codes: 0 ok · 1 any error (user, usage, failed apply) · 2 only for "changes present" with
`plan --detailed-exitcode` and for "drift found", as Terraform does.

The group and `main` (one `Error:` line per failure) are here; the commands are in `reconciliation`
(validate, plan, apply, sync, drift, export), `service` (doctor, migrate, seed, listen) and `sandbox`;
`options` holds the options they share, `context` their settings, catalog and progress lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback

import click

from reconciler.cli.options import examples
from reconciler.cli.reconciliation import (
    apply_command,
    drift_command,
    export,
    plan_command,
    sync_command,
    validate,
)
from reconciler.cli.sandbox import sandbox
from reconciler.cli.service import doctor, listen, migrate, seed
from reconciler.errors import KuployError
from reconciler.settings import redact, redact_logging, secrets_in, stripe_log_through_logging


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
    stripe_log_through_logging()  # before any command imports stripe


for command in (
    validate,
    plan_command,
    apply_command,
    sync_command,
    drift_command,
    export,
    doctor,
    migrate,
    seed,
    listen,
    sandbox,
):
    cli.add_command(command)


def _aborted(abort: click.exceptions.Abort) -> str:
    """Ctrl-C at a prompt (click raises `Abort` from None): every prompt comes before the first
    write, so nothing was changed. During the work (`Abort() from KeyboardInterrupt`): the commands
    that know what they wrote said it in their own error (apply, sync, seed, migrate), and the
    read-only ones that nothing was (`context.read_only`); this is any other (sandbox start, stop,
    reset, checkout; listen before it serves), which may have done part of its work."""
    if abort.__cause__ is None:
        return "Aborted: nothing was changed."
    return "Error: interrupted (Ctrl-C) before the command finished; what it had done by then was not undone."


def main(argv: list[str] | None = None) -> None:
    """Entry point: maps every failure to one `Error:` line and exit 1 (tracebacks with --debug)."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        code = cli.main(args=args, prog_name="kuploy-reconciler", standalone_mode=False)
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.exceptions.Abort as e:
        click.echo(_aborted(e), err=True)
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
