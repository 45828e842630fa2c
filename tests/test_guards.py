"""The guards an operator relies on when something upstream is wrong: numbers read from flags and
the environment, the mass-archive guard, and what an interrupted apply says it did."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from test_hostile import nothing_written, run_in_process

from reconciler.sandbox.emulator import RunningEmulator

from conftest import standard_plans, write_catalog

BAD_NUMBERS = ("nan", "NaN", "inf", "-inf", "1e308", "1e999", "-5", "²", "٣", "0x10", "1_0", "", " ")


@pytest.mark.parametrize(
    ("where", "name", "bad"),
    [
        ("flag", "--max-archive-share", (*BAD_NUMBERS, "1.5")),
        ("flag", "--lock-timeout", BAD_NUMBERS),
        ("flag", "--max-rps", (*BAD_NUMBERS, "0")),
        ("env", "KUPLOY_STRIPE_MAX_RPS", (*BAD_NUMBERS[:-2], "0")),
        ("env", "KUPLOY_CATALOG_TIMEOUT", (*BAD_NUMBERS[:-2], "0")),
        ("env", "KUPLOY_CATALOG_RETRIES", (*BAD_NUMBERS[:-2], "1.5", "11", "３")),
    ],
)
def test_a_number_that_is_not_one_is_refused_naming_the_flag_or_variable(
    where: str,
    name: str,
    bad: tuple[str, ...],
    cli_env: dict[str, str],
    tmp_path: Path,
    emulator: RunningEmulator,
    db: psycopg.Connection,
) -> None:
    """nan passes every range check (it compares false), inf and 1e308 overflow later as deadlines,
    '²' passes str.isdigit: each is one `Error:` line naming where it came from, nothing written."""
    catalog = str(write_catalog(tmp_path, standard_plans()))
    for value in bad:
        if where == "flag":
            command = "apply" if name != "--lock-timeout" else "migrate"
            args = [command, name, value]
            if command == "apply":
                args += ["--auto-approve", catalog]
            env = cli_env
        else:
            args = ["apply", "--auto-approve", "https://kuploy.invalid/catalog"]
            if name == "KUPLOY_STRIPE_MAX_RPS":
                args[-1] = catalog
            env = {**cli_env, name: value, "KUPLOY_CATALOG_URL": "https://kuploy.invalid/catalog"}
        code, out, err = run_in_process(*args, env=env)
        if where == "env" and not value.strip():
            assert code != 1 or name not in err  # unset (empty) means the default
            continue
        assert code == 1, (name, value, out, err)
        errors = [line for line in err.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1 and errors[0].startswith(f"Error: {name} must be "), (name, value, err)
        assert "unexpected" not in err and "Traceback" not in err, (name, value, err)
    nothing_written(emulator, db)


def test_good_numbers_are_still_accepted(cli_env: dict[str, str], tmp_path: Path) -> None:
    catalog = str(write_catalog(tmp_path, standard_plans()))
    env = {**cli_env, "KUPLOY_STRIPE_MAX_RPS": "50", "KUPLOY_CATALOG_TIMEOUT": "2.5"}
    code, out, err = run_in_process(
        "apply", "--auto-approve", "--max-archive-share", "0.25", "--lock-timeout", "0",
        "--max-rps", "1e3", catalog, env=env,
    )  # fmt: skip
    assert code == 0, (out, err)
