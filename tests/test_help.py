"""What a new user reads first: every command's --help shows examples that the CLI accepts, and
shell completion (click's own) works as the README says."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from reconciler.cli import cli

ROOT = Path(__file__).resolve().parents[1]
PROG = "kuploy-reconciler"


def commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name)


def resolve(argv: list[str]) -> tuple[str, ...]:
    """Parse `argv` as click would run it (raises click.UsageError); the command path it reaches."""
    command: click.Command = cli
    ctx = cli.make_context(PROG, argv[:1])
    path: list[str] = []
    while isinstance(command, click.Group):
        if not argv or argv[0] not in command.commands:
            raise click.UsageError(f"no subcommand of {' '.join((PROG, *path))} in {argv}")
        name, *argv = argv
        command = command.commands[name]
        path.append(name)
        ctx = command.make_context(name, argv[:1] if isinstance(command, click.Group) else argv, parent=ctx)
    return tuple(path)


@pytest.mark.parametrize("path", list(commands()), ids=lambda p: " ".join(p) or PROG)
def test_every_help_shows_examples_the_cli_accepts(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name=PROG)
    assert result.exit_code == 0, result.output
    assert "\n  Examples:\n" in result.output, f"`{' '.join((PROG, *path))} --help` shows no example"
    shown = re.findall(rf"^    \$ {PROG} (.*)$", result.output, flags=re.M)
    assert shown, result.output
    for line in shown:
        reached = resolve(shlex.split(line))
        assert reached[: len(path)] == path, f"{line!r} is not an example of {path}"


def test_an_example_that_the_cli_would_refuse_is_caught() -> None:
    with pytest.raises(click.UsageError):
        resolve(shlex.split("plan examples/ -o yaml"))


def complete(words: str, env: dict[str, str] | None = None) -> list[str]:
    """What bash completion offers for `words` (the last one being typed), as `type,value` lines."""
    parts = shlex.split(words)
    cword = len(parts) - (0 if words.endswith(" ") else 1)
    result = subprocess.run(
        [sys.executable, "-m", "reconciler"],
        env={
            **(env or os.environ),
            "_KUPLOY_RECONCILER_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(cword),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_completion_offers_commands_choices_and_files() -> None:
    assert complete(f"{PROG} pl") == ["plain,plan"]
    assert complete(f"{PROG} sandbox se") == ["plain,serve"]
    assert complete(f"{PROG} sandbox st") == ["plain,start", "plain,status", "plain,stop"]
    assert complete(f"{PROG} plan -o ") == ["plain,text", "plain,json", "plain,markdown"]
    assert complete(f"{PROG} plan ex") == ["file,ex"]  # the shell lists the files itself
    assert complete(f"{PROG} apply ex") == ["file,ex"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_completion_scripts_the_readme_documents(shell: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"_KUPLOY_RECONCILER_COMPLETE={shell}_source {PROG}" in readme
    result = subprocess.run(
        [sys.executable, "-m", "reconciler"],
        env={**os.environ, "_KUPLOY_RECONCILER_COMPLETE": f"{shell}_source"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "_kuploy_reconciler_completion" in result.stdout, result.stderr
