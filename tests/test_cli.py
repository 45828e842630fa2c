"""The command line as an operator types it: a subprocess, exit codes, stdout vs stderr."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import psycopg
import pytest

from reconciler.sandbox.emulator import RunningEmulator
from reconciler.sandbox.postgres import stop_embedded_postgres

from conftest import TEST_KEY, kuploy_plan, standard_plans, stripe_writes, write_catalog

ROOT = Path(__file__).resolve().parents[1]


def run(
    *args: str, env: dict[str, str], cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_clean_failure(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.startswith("Error: "), result.stderr


def test_plan_apply_plan_exit_codes_and_streams(
    cli_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator
) -> None:
    catalog = write_catalog(tmp_path, standard_plans())
    first = run("plan", "--detailed-exitcode", str(catalog), env=cli_env)
    assert first.returncode == 2, first.stderr
    assert "+ plan.pro" in first.stdout and "Plan: 3 to create." in first.stdout
    assert "\033[" not in first.stdout  # not a terminal: no colour

    applied = run("apply", "--auto-approve", str(catalog), env=cli_env)
    assert applied.returncode == 0, applied.stderr
    assert "Apply complete" in applied.stdout
    assert "done: create Stripe Product 'Pro'" in applied.stderr  # progress goes to stderr

    writes = len(stripe_writes(emulator))
    again = run("apply", "--auto-approve", str(catalog), env=cli_env)
    assert again.returncode == 0 and "No changes" in again.stdout
    assert len(stripe_writes(emulator)) == writes

    last = run("plan", "--detailed-exitcode", str(catalog), env=cli_env)
    assert last.returncode == 0, last.stdout + last.stderr
    assert "No changes" in last.stdout


def test_plan_json_matches_its_schema(cli_env: dict[str, str], tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path, standard_plans())
    result = run("plan", "-o", "json", str(catalog), env=cli_env)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    schema = json.loads((ROOT / "schemas" / "plan.schema.json").read_text())
    jsonschema.validate(document, schema)
    assert document["format_version"] == "1"
    assert [c["address"] for c in document["changes"]] == ["plan.free", "plan.pro", "plan.team"]
    assert document["summary"]["create"] == 3

    run("apply", "--auto-approve", str(catalog), env=cli_env)
    empty = json.loads(run("plan", "-o", "json", str(catalog), env=cli_env).stdout)
    jsonschema.validate(empty, schema)
    assert empty["changes"] == [] and empty["summary"]["total"] == 0


def test_apply_without_terminal_or_auto_approve_refuses(
    cli_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator
) -> None:
    result = run("apply", str(write_catalog(tmp_path, standard_plans())), env=cli_env, stdin="yes\n")
    assert_clean_failure(result)
    assert "--auto-approve" in result.stderr
    assert stripe_writes(emulator) == []


BAD_CATALOGS = {
    "syntax.json": '{"plans": [',
    "empty.json": "",
    "toplevel.json": "[1, 2]",
    "string_price.json": json.dumps(
        {"plans": [kuploy_plan("free", None), kuploy_plan("pro", priceCents="20")]}
    ),
    "negative_limit.json": json.dumps(
        {
            "plans": [
                kuploy_plan("free", None),
                kuploy_plan("pro", limits={**kuploy_plan("x")["limits"], "maxApps": -3}),
            ]
        }
    ),
    "two_defaults.json": json.dumps({"plans": [kuploy_plan("free", None), kuploy_plan("basic", None)]}),
    "no_default.json": json.dumps({"plans": [kuploy_plan("pro")]}),
    "default_with_price.json": json.dumps({"plans": [kuploy_plan("free", None, priceCents=500)]}),
    "duplicate_slug.json": json.dumps(
        {"plans": [kuploy_plan("free", None), kuploy_plan("pro"), kuploy_plan("pro")]}
    ),
    "bad_currency.json": json.dumps(
        {"plans": [kuploy_plan("free", None), kuploy_plan("pro", currency="xyz")]}
    ),
    "zero_price.json": json.dumps({"plans": [kuploy_plan("free", None), kuploy_plan("pro", 0)]}),
    "no_cycle.json": json.dumps(
        {"plans": [kuploy_plan("free", None), kuploy_plan("pro", billingCycle=None)]}
    ),
    "syntax.yaml": "plans:\n  - slug: [unclosed\n",
}


@pytest.mark.parametrize("name", sorted(BAD_CATALOGS))
def test_bad_catalogs_are_refused_everywhere_and_nothing_is_written(
    name: str, cli_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator, db: psycopg.Connection
) -> None:
    path = tmp_path / name
    path.write_text(BAD_CATALOGS[name])
    for command in (["validate"], ["plan"], ["apply", "--auto-approve"]):
        result = run(*command, str(path), env=cli_env)
        assert_clean_failure(result)
        assert name in result.stderr, result.stderr  # the message names the file
    assert emulator.emulator.requests == []
    assert db.execute("SELECT to_regclass('cloud_plans')").fetchone() == (None,)


def test_validate_names_file_plan_and_field(cli_env: dict[str, str], tmp_path: Path) -> None:
    path = write_catalog(tmp_path, [kuploy_plan("free", None), kuploy_plan("pro", priceCents="20")])
    result = run("validate", str(path), env=cli_env)
    assert_clean_failure(result)
    assert "catalog.json" in result.stderr and "priceCents" in result.stderr and "plans[1]" in result.stderr


def test_only_one_of_database_url_and_stripe_key_is_an_error(cli_env: dict[str, str], tmp_path: Path) -> None:
    catalog = str(write_catalog(tmp_path, standard_plans()))
    env = dict(cli_env)
    del env["STRIPE_SECRET_KEY"]
    result = run("plan", catalog, env=env)
    assert_clean_failure(result)
    assert "DATABASE_URL is set but STRIPE_SECRET_KEY is not" in result.stderr


def test_live_key_needs_live_flag_and_secrets_are_never_printed(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    catalog = str(write_catalog(tmp_path, standard_plans()))
    live_key = "sk_live_" + "S3cretS3cretS3cret0000"
    result = run("plan", catalog, env={**cli_env, "STRIPE_SECRET_KEY": live_key})
    assert_clean_failure(result)
    assert result.stderr == "Error: STRIPE_SECRET_KEY is a live key: pass --live to change real billing\n"
    assert live_key not in result.stderr + result.stdout

    mismatch = run("plan", "--live", catalog, env=cli_env)
    assert_clean_failure(mismatch)
    assert mismatch.stderr == (
        "Error: --live was given but STRIPE_SECRET_KEY is a test-mode key: refusing the mismatch\n"
    )
    assert TEST_KEY not in mismatch.stderr


def test_wrong_stripe_key_is_one_line_without_the_key(cli_env: dict[str, str], tmp_path: Path) -> None:
    catalog = str(write_catalog(tmp_path, standard_plans()))
    bad = "sk_test_" + "not-a-valid-key-!!"
    result = run("plan", catalog, env={**cli_env, "STRIPE_SECRET_KEY": bad})
    assert_clean_failure(result)
    assert bad not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreachable_database_names_it_without_the_password(cli_env: dict[str, str], tmp_path: Path) -> None:
    catalog = str(write_catalog(tmp_path, standard_plans()))
    url = "postgresql://kuploy:hunter2secret@127.0.0.1:1/nowhere"
    result = run("plan", catalog, env={**cli_env, "DATABASE_URL": url})
    assert_clean_failure(result)
    assert "hunter2secret" not in result.stderr and "127.0.0.1" in result.stderr


def test_usage_errors_exit_1(cli_env: dict[str, str]) -> None:
    result = run("plan", "--no-such-flag", env=cli_env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr


def test_advisory_lock_makes_a_second_apply_fail_naming_the_holder(
    cli_env: dict[str, str], database_url: str, tmp_path: Path, emulator: RunningEmulator
) -> None:
    from reconciler.lock import LOCK_KEY

    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        result = run(
            "apply",
            "--auto-approve",
            "--lock-timeout",
            "0.5",
            str(write_catalog(tmp_path, standard_plans())),
            env=cli_env,
        )
    assert_clean_failure(result)
    assert "holds the lock" in result.stderr and "pid" in result.stderr
    assert stripe_writes(emulator) == []


def test_sandbox_default_on_examples(request: pytest.FixtureRequest) -> None:
    """No DATABASE_URL, no STRIPE_SECRET_KEY: embedded Postgres + emulator, state kept between commands."""
    # Outside pytest's basetemp, which pytest keeps at 0700: the server runs as its own user.
    work = Path(tempfile.mkdtemp(prefix="kuploy-sandbox-test-"))
    request.addfinalizer(lambda: shutil.rmtree(work, ignore_errors=True))
    shutil.copytree(ROOT / "examples", work / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DATABASE_URL", "KUPLOY_"))}
    env["NO_COLOR"] = "1"
    request.addfinalizer(lambda: stop_embedded_postgres(work / ".kuploy-sandbox" / "postgres"))
    first = run("plan", "--detailed-exitcode", "examples/", env=env, cwd=work)
    assert first.returncode == 2, first.stderr
    assert "sandbox mode" in first.stderr
    applied = run("apply", "--auto-approve", "examples/", env=env, cwd=work)
    assert applied.returncode == 0, applied.stderr
    last = run("plan", "--detailed-exitcode", "examples/", env=env, cwd=work)
    assert last.returncode == 0, last.stdout + last.stderr
    assert (work / ".kuploy-sandbox" / "stripe.json").exists()


ROOT_IGNORES_MODES = pytest.mark.skipif(
    os.geteuid() == 0, reason="root writes into read-only folders: file modes do not stop it"
)


def unwritable(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A path no command can write, and the reason the error must give. Both kinds fail the same
    way in the code (an OSError on write); the first also fails as root."""
    if kind == "under a file":
        (tmp_path / "a-file").write_text("")
        return tmp_path / "a-file" / "out", "Not a directory"
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder / "out", "Permission denied"


KINDS = [pytest.param("under a file"), pytest.param("read-only folder", marks=ROOT_IGNORES_MODES)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", ["plan", "export"])
def test_out_to_an_unwritable_path_names_it_and_why_and_writes_nothing(
    cli_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator, command: str, kind: str
) -> None:
    catalog = write_catalog(tmp_path, standard_plans())
    if command == "export":
        assert run("apply", "--auto-approve", str(catalog), env=cli_env).returncode == 0
    out, reason = unwritable(tmp_path, kind)
    args = ("plan", str(catalog)) if command == "plan" else ("export",)
    result = run(*args, "--out", str(out), env=cli_env)
    assert_clean_failure(result)
    assert result.stderr.count("\n") == 1 and "unexpected" not in result.stderr
    assert str(out) in result.stderr and reason in result.stderr, result.stderr
    assert not out.exists() and list(tmp_path.rglob("*.tmp")) == []  # no temporary file left


def test_out_over_a_read_only_file_leaves_it_alone(cli_env: dict[str, str], tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path, standard_plans())
    out = tmp_path / "kept.json"
    out.write_text("an earlier plan\n")
    out.chmod(0o444)
    result = run("plan", str(catalog), "--out", str(out), env=cli_env)
    assert_clean_failure(result)
    assert f"{out}: the file is read-only" in result.stderr, result.stderr
    assert out.read_text() == "an earlier plan\n"


@pytest.mark.parametrize("kind", KINDS)
def test_an_unwritable_sandbox_state_folder_names_it_and_why(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    state, reason = unwritable(tmp_path, kind)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DATABASE_URL", "KUPLOY_"))}
    env.update(NO_COLOR="1", KUPLOY_STATE_DIR=str(state))
    request.addfinalizer(lambda: stop_embedded_postgres(state / "postgres"))
    result = run("plan", str(ROOT / "examples"), env=env)
    assert_clean_failure(result)
    assert "unexpected" not in result.stderr and str(state) in result.stderr and reason in result.stderr
    assert "KUPLOY_STATE_DIR" in result.stderr, result.stderr


def test_sandbox_checkout_prints_both_sides_and_exits_by_agreement(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """`sandbox checkout` as typed: the side-by-side table on stdout, the steps on stderr, exit 0 when
    kuploy-cloud and Stripe agree; a declined card records nothing on either side, which also agrees."""
    catalog = write_catalog(tmp_path, standard_plans())
    assert run("apply", "--auto-approve", str(catalog), env=cli_env).returncode == 0

    paid = run("sandbox", "checkout", "--plan", "pro", "--org", "org_cli", env=cli_env)
    assert paid.returncode == 0, paid.stderr
    lines = paid.stdout.splitlines()
    assert lines[0].split() == ["field", "kuploy-cloud", "(cloud_subscriptions)", "Stripe"]
    assert lines[-1] == "Result: consistent (succeeded)"
    (plan_row,) = [line.split() for line in lines if line.startswith("planId ")]
    assert plan_row == ["planId", "pro", "pro"]

    declined = run("sandbox", "checkout", "--plan", "pro", "--card", "4000 0000 0000 0002", env=cli_env)
    assert declined.returncode == 0, declined.stderr
    assert declined.stdout.splitlines() == [
        f"{'field':<22} {'kuploy-cloud (cloud_subscriptions)':<40} Stripe",
        "no subscription: the card 4000 0000 0000 0002 was declined, nothing was recorded on either side",
        "Result: consistent (declined)",
    ]
