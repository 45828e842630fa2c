"""What the commands need around the core: their settings (the sandbox's when nothing is configured),
the desired catalog from a SOURCE, one line per applied operation, colour only on a terminal."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from reconciler.catalog import load_catalog, webhook_endpoint_from_flag
from reconciler.errors import ConfigError, Interrupted
from reconciler.fetch import fetch_catalog, is_url, url_label
from reconciler.model import Catalog
from reconciler.plan import Op
from reconciler.settings import CatalogFetch, Environment, Settings

P = ParamSpec("P")
R = TypeVar("R")


def read_only(command: Callable[P, R]) -> Callable[P, R]:
    """A command that writes nothing to Postgres or Stripe: Ctrl-C during it says so. (`main` sees
    only click's `Abort` and cannot tell which command it stopped; the writing ones say what they
    wrote, or else that what they did is not undone.)"""

    @functools.wraps(command)
    def interruptible(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            name = " ".join(click.get_current_context().command_path.split()[1:])
            raise Interrupted(
                f"{name} interrupted (Ctrl-C); it writes nothing to Postgres or Stripe: nothing was "
                "changed there"
            ) from None

    return interruptible


def use_color(stream: Any) -> bool:
    return "NO_COLOR" not in os.environ and hasattr(stream, "isatty") and stream.isatty()


def command_settings(
    ctx: click.Context,
    *,
    live: bool = False,
    lock_timeout: float = 60.0,
    strict: bool = True,
    max_rps: float | None = None,
) -> Settings:
    """Settings from the environment; with neither DATABASE_URL nor STRIPE_SECRET_KEY, the sandbox,
    started for this command and stopped at its end."""
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


def print_op(op: Op) -> None:
    click.echo(f"  done: {op.describe()} [plan {op.slug}]", err=True)


@contextlib.contextmanager
def progress(ctx: click.Context) -> Iterator[Callable[[Op], None]]:
    """One line per operation in logs and CI; a progress bar on a terminal (stderr), unless --debug."""
    if not sys.stderr.isatty() or ctx.find_root().params.get("debug"):
        yield print_op
        return
    with click.progressbar(length=1, label="applying", file=sys.stderr, show_pos=True) as bar:

        def tick(op: Op) -> None:
            bar.label = f"{op.describe()[:48]:<48}"
            bar.update(1)

        yield tick


def load_desired(
    source: str | None,
    *,
    write_cache: bool = False,
    webhook_url: str | None = None,
) -> Catalog:
    """The desired catalog from a file, a folder or an https:// URL; with no SOURCE, from
    KUPLOY_CATALOG_URL. `--webhook-url` declares (or replaces) the catalog's webhook endpoint."""
    if source is None:
        config = CatalogFetch.read()
        if config.url is None:
            raise click.UsageError("give a CATALOG (file, folder or https:// URL) or set KUPLOY_CATALOG_URL")
        source = config.url
    if is_url(source):
        fetched = fetch_catalog(source, CatalogFetch.read(), write_cache=write_cache)
        how = "unchanged since the last fetch (304), cached copy" if fetched.not_modified else "fetched"
        click.echo(f"catalog: {url_label(source)}: {how}, {len(fetched.catalog.plans)} plan(s)", err=True)
        catalog = fetched.catalog
    else:
        catalog = load_catalog(Path(source))
    if webhook_url is not None:
        catalog = dataclasses.replace(catalog, webhook_endpoint=webhook_endpoint_from_flag(webhook_url))
    return catalog
