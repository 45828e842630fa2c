"""The commands that reconcile a catalog: validate, plan, apply, sync, drift, export.

`api` is imported inside the commands: it brings stripe, psycopg and deepdiff (~0.3 s), which
`--version` and `validate` do not need (start-up in BENCHMARKS.md)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from reconciler.catalog import dump_catalog
from reconciler.cli.context import command_settings, load_desired, progress, read_only, use_color
from reconciler.cli.options import (
    WriteFlags,
    adopt_option,
    catalog_argument,
    examples,
    live_option,
    optional_catalog_argument,
    output_option,
    webhook_url_option,
    write_options,
)
from reconciler.errors import ConfigError, KuployError
from reconciler.fetch import is_url, url_label
from reconciler.files import write_atomically
from reconciler.model import Catalog
from reconciler.plan import Plan
from reconciler.render.drift import render_drift_json, render_drift_text
from reconciler.render.json import render_json
from reconciler.render.markdown import render_markdown
from reconciler.render.outcome import mass_archive_warning, render_applied, render_stripe_calls
from reconciler.render.text import render_text
from reconciler.results import ApplyOutcome
from reconciler.settings import Settings

if TYPE_CHECKING:
    from reconciler import api


@click.command(epilog=examples("validate examples/", "validate catalog.yaml"))
@catalog_argument
@read_only
def validate(catalog: str) -> int:
    """Check a catalog (schema and invariants): a file, a folder or an https:// URL.
    Reads the catalog only."""
    loaded = load_desired(catalog)
    shown = url_label(catalog) if is_url(catalog) else catalog
    click.echo(f"{shown}: valid, {len(loaded.plans)} plan(s)")
    return 0


@click.command(
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
@read_only
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

    desired = load_desired(catalog, webhook_url=webhook_url)
    outcome = api.plan_outcome(command_settings(ctx, live=live), desired, adopt=adopt, out=out)
    planned = outcome.plan
    _warn_mass_archive(outcome)
    if output == "json":
        click.echo(render_json(planned), nl=False)
    elif output == "markdown":
        click.echo(render_markdown(planned), nl=False)
    else:
        _show_plan(planned)
    if out is not None:
        click.echo(f"Plan saved to {out}: apply it with `kuploy-reconciler apply {out}`.", err=True)
    return 2 if detailed_exitcode and planned.has_changes else 0


@click.command(
    "apply",
    epilog=examples(
        "apply examples/", "apply plan.json", "apply catalog/ --auto-approve --webhook-secret-file ./whsec"
    ),
)
@click.argument("target", metavar="[CATALOG|PLANFILE]", required=False, type=click.Path())
@click.option("--auto-approve", is_flag=True, help="Apply without asking (CI).")
@adopt_option
@write_options
@click.pass_context
def apply_command(
    ctx: click.Context, target: str | None, auto_approve: bool, adopt: bool, write: WriteFlags
) -> int:
    """Make cloud_plans and Stripe match CATALOG (a file, a folder or an https:// URL; default
    KUPLOY_CATALOG_URL), after showing the plan; or apply a saved PLANFILE exactly (no prompt;
    refused, with nothing written, if the state changed since it was made)."""
    from reconciler.savedplan import is_saved_plan

    saved = target is not None and not is_url(target) and is_saved_plan(Path(target))
    if saved and (adopt or write.webhook_url):
        raise ConfigError(
            "--adopt and --webhook-url are decided at plan time: run plan with them and --out FILE, "
            "then apply FILE"
        )
    if not saved and not auto_approve and not sys.stdin.isatty():
        raise ConfigError("apply needs confirmation: run it on a terminal, or pass --auto-approve")

    def confirm(planned: Plan) -> bool:
        _show_plan(planned)
        if auto_approve or saved:
            return True
        answer = click.prompt("Apply these changes? Only 'yes' is accepted", default="", show_default=False)
        return bool(answer.strip() == "yes")

    if saved:
        assert target is not None
        return _apply(ctx, Path(target), write, confirm=confirm)
    desired = load_desired(target, write_cache=True, webhook_url=write.webhook_url)
    return _apply(ctx, desired, write, confirm=confirm, adopt=adopt)


@click.command("sync", epilog=examples("sync --dry-run", "sync --live"))
@optional_catalog_argument
@click.option(
    "--dry-run", is_flag=True, help="Fetch and show the plan; write nothing at all (not even the cache)."
)
@write_options
@click.pass_context
def sync_command(ctx: click.Context, catalog: str | None, dry_run: bool, write: WriteFlags) -> int:
    """The license sync, unattended: fetch the kuploy.app catalog (KUPLOY_CATALOG_URL with the bearer
    KUPLOY_LICENSE_KEY, or CATALOG), print the plan, apply it without a prompt. Exit 0 done or nothing
    to do, 1 on any failure (an unreachable or invalid catalog writes nothing)."""
    from reconciler import api

    desired = load_desired(catalog, write_cache=not dry_run, webhook_url=write.webhook_url)
    if dry_run:
        preview = api.plan_outcome(_write_settings(ctx, write), desired)
        _warn_mass_archive(preview)
        _show_plan(preview.plan)
        click.echo("Dry run: nothing was written.", err=True)
        return 0

    def show(planned: Plan) -> bool:
        _show_plan(planned)
        return True

    return _apply(ctx, desired, write, confirm=show)


def _apply(
    ctx: click.Context,
    target: Catalog | Path,
    write: WriteFlags,
    *,
    confirm: Callable[[Plan], bool],
    adopt: bool = False,
) -> int:
    """`apply` and `sync`: apply a catalog, or a saved plan's file, one line per operation; report."""
    from reconciler import api

    guard = api.ArchiveGuard(max_share=write.max_archive_share, allow=write.allow_mass_archive)
    show_secret = click.echo if write.print_webhook_secret else None
    secrets = api.WebhookSecretDestination(file=write.webhook_secret_file, show=show_secret)
    settings = _write_settings(ctx, write)
    with progress(ctx) as on_op:
        if isinstance(target, Path):
            outcome = api.apply_saved(
                settings, target, confirm=confirm, on_op=on_op, guard=guard, secrets=secrets
            )
        else:
            outcome = api.apply(
                settings, target, confirm=confirm, on_op=on_op, adopt=adopt, guard=guard, secrets=secrets
            )
    return _report(outcome)


def _write_settings(ctx: click.Context, write: WriteFlags) -> Settings:
    return command_settings(ctx, live=write.live, lock_timeout=write.lock_timeout, max_rps=write.max_rps)


def _report(outcome: ApplyOutcome) -> int:
    if not outcome.plan.has_changes:
        click.echo(render_text(outcome.plan), nl=False)
        return 0
    if not outcome.confirmed:
        raise KuployError("apply cancelled: nothing was changed")
    click.echo(render_applied(outcome), nl=False)
    if outcome.stats is not None:
        click.echo(render_stripe_calls(outcome.stats, rounds=outcome.rounds), err=True, nl=False)
    return 0


def _show_plan(planned: Plan) -> None:
    click.echo(render_text(planned, color=use_color(sys.stdout)), nl=False)


def _warn_mass_archive(outcome: api.PlanOutcome) -> None:
    if (warning := mass_archive_warning(outcome.mass_archive)) is not None:
        click.echo(warning, err=True, nl=False)


@click.command("drift", epilog=examples("drift", "drift catalog/ -o json"))
@optional_catalog_argument
@output_option
@live_option
@click.pass_context
@read_only
def drift_command(ctx: click.Context, catalog: str | None, output: str, live: bool) -> int:
    """Report changes made by hand in Stripe or cloud_plans, against CATALOG (a file, a folder or an
    https:// URL) or else the last applied catalog (also when KUPLOY_CATALOG_URL is set: sync records
    what it applied). Exit 0 no drift, 2 drift, 1 error."""
    from reconciler import api

    desired = load_desired(catalog) if catalog is not None else None
    report = api.drift(command_settings(ctx, live=live), desired)
    click.echo(render_drift_json(report) if output == "json" else render_drift_text(report), nl=False)
    return 2 if report.has_drift else 0


@click.command(epilog=examples("export --out catalog/plans.yaml"))
@click.option("--out", type=click.Path(path_type=Path), help="Write the catalog here instead of stdout.")
@live_option
@click.pass_context
@read_only
def export(ctx: click.Context, out: Path | None, live: bool) -> int:
    """Write the current cloud_plans as a YAML catalog (to adopt an existing instance into Git)."""
    from reconciler import api

    catalog = api.export(command_settings(ctx, live=live))
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
