"""The options several commands share, their types, and the `--help` examples every command shows."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from reconciler.errors import ConfigError
from reconciler.settings import ARCHIVE_SHARE, LOCK_TIMEOUT, MAX_RPS, NumberRange


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


def examples(*command_lines: str) -> str:
    """A command's --help epilog: example command lines, kept as written (`\b` stops click re-wrapping)."""
    return "\b\nExamples:\n" + "\n".join(f"  $ kuploy-reconciler {line}" for line in command_lines)


def with_options(options: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    """Declare `options` on a command, in this order in its --help."""

    def decorate(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


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
max_rps_option = click.option(
    "--max-rps",
    type=Number(MAX_RPS),
    help="Stripe requests per second (default: 25 with a test key, 90 with a live key; "
    "env KUPLOY_STRIPE_MAX_RPS).",
)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WriteFlags:
    """The flags `apply` and `sync` share: both write through `api.apply`."""

    webhook_url: str | None
    webhook_secret_file: Path | None
    print_webhook_secret: bool
    max_archive_share: float
    allow_mass_archive: bool
    live: bool
    lock_timeout: float
    max_rps: float | None


_write_options = [
    webhook_url_option,
    *secret_options,
    *guard_options,
    live_option,
    lock_option,
    max_rps_option,
]


def write_options(command: Callable[..., int]) -> Callable[..., int]:
    """Declare the `WriteFlags` options on `command`, which gets their values as one `write` argument."""
    names = [field.name for field in dataclasses.fields(WriteFlags)]

    @functools.wraps(command)
    def with_write_flags(*args: Any, **kwargs: Any) -> int:
        write = WriteFlags(**{name: kwargs.pop(name) for name in names})
        return command(*args, write=write, **kwargs)

    decorated: Callable[..., int] = with_options(_write_options)(with_write_flags)
    return decorated
