"""The guards an operator relies on when something upstream is wrong: numbers read from flags and
the environment, the mass-archive guard, and what an interrupted apply or migrate says it did."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from test_hostile import nothing_written, run_in_process

from reconciler.sandbox.emulator import RunningEmulator

from conftest import kuploy_plan, standard_plans, stripe_writes, write_catalog
from test_cli import ROOT, run

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


# --- the mass-archive guard ---------------------------------------------------------------------


@pytest.fixture
def other_database(admin_dsn: str) -> Iterator[str]:
    """A second, empty database on the same server: another DATABASE_URL for the same Stripe account."""
    name = f"kuploy_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_the_guard_counts_the_plans_stripe_sells_when_the_database_is_empty(
    cli_env: dict[str, str], other_database: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    """A wrong DATABASE_URL, a restored backup or a new install pointed at a live account: cloud_plans
    is empty, Stripe sells five plans, and a catalog with only the free plan would archive all five.
    Counted in Stripe too, it is refused (nothing written, the plans named) and `plan` warns."""
    applied = run("apply", "--auto-approve", str(ROOT / "examples" / "catalog.yaml"), env=cli_env)
    assert applied.returncode == 0, applied.stderr
    paid = ["business", "pro", "pro-cad", "starter", "starter-annual"]
    writes = len(stripe_writes(emulator))
    env_b = {**cli_env, "DATABASE_URL": other_database}
    free_only = str(write_catalog(tmp_path, [kuploy_plan("free", None)]))

    planned = run("plan", "--out", str(tmp_path / "saved.json"), free_only, env=env_b)
    assert planned.returncode == 0, planned.stderr
    warning = "Warning: this plan archives 5 of 5 active paid plan(s) ("
    assert warning in planned.stderr and "0 in cloud_plans, 5 on sale in Stripe" in planned.stderr
    assert "is DATABASE_URL the database this Stripe account was applied with?" in planned.stderr

    for args in (("apply", "--auto-approve", free_only), ("apply", str(tmp_path / "saved.json"))):
        refused = run(*args, env=env_b)
        assert refused.returncode == 1, (args, refused.stdout, refused.stderr)
        assert "Error: refusing to archive 5 of 5 active paid plan(s)" in refused.stderr, refused.stderr
        assert all(slug in refused.stderr for slug in paid), refused.stderr
        assert "Traceback" not in refused.stderr
    assert len(stripe_writes(emulator)) == writes
    with psycopg.connect(other_database) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)

    allowed = run("apply", "--auto-approve", "--allow-mass-archive", free_only, env=env_b)
    assert allowed.returncode == 0, allowed.stderr  # the explicit override still works


# --- an apply stopped half-way says what it did --------------------------------------------------

DONE = re.compile(
    r"Done before it stopped: (\d+) Stripe write\(s\) made(?: \((\d+) more got no clear answer)?"
)


def _many_paid_plans(folder: Path, count: int = 12) -> Path:
    return write_catalog(
        folder, [kuploy_plan("free", None)] + [kuploy_plan(f"p{i}", 1000 + i) for i in range(count)]
    )


def _made(emulator: RunningEmulator) -> int:
    """Writes the emulator answered with success."""
    return sum(1 for r in stripe_writes(emulator) if r.get("status") == 200)


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the command never got that far"
        time.sleep(0.01)


def _interruptible() -> None:
    """In the child: Ctrl-C as on a terminal. A suite started in the background (`cmd &` in a script)
    inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_apply(catalog: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return _start(env, "apply", "--auto-approve", str(catalog))


def _start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_interruptible,
    )


def test_ctrl_c_after_stripe_writes_says_exactly_what_was_written(
    cli_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator, db: psycopg.Connection
) -> None:
    """SIGINT after some Stripe writes printed "Aborted: nothing was changed." Now: no operation
    starts after it, those in flight end, and the error counts the writes Stripe made (exactly what
    the emulator answered), says Postgres was not written (beyond migrations), and that re-running
    converges, which it does."""
    catalog = _many_paid_plans(tmp_path)
    emulator.emulator.set_faults(latency_ms=300)  # slow answers: the interrupt lands with writes in flight
    process = _start_apply(catalog, cli_env)
    _wait_for(lambda: _made(emulator) >= 3, process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1, (out, err)
    assert "nothing was changed" not in err.lower() and "Traceback" not in err, err
    (line,) = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert line.startswith("Error: apply interrupted (Ctrl-C). Done before it stopped: "), err
    found = DONE.search(line)
    assert found is not None and found.group(2) is None, line
    assert int(found.group(1)) == _made(emulator) >= 3, (line, _made(emulator))
    assert "migrations 0001_cloud_plans" in line and "row(s) written" not in line, line
    assert "Re-running apply is safe: it adopts what was done and finishes the rest." in line
    assert db.execute("SELECT count(*) FROM cloud_plans").fetchone() == (0,)

    emulator.emulator.set_faults(latency_ms=0)
    rerun = run("apply", "--auto-approve", str(catalog), env=cli_env)
    assert rerun.returncode == 0, rerun.stderr
    assert run("plan", "--detailed-exitcode", str(catalog), env=cli_env).returncode == 0
    owned = [r for r in stripe_writes(emulator) if r["path"] == "/v1/products" and r.get("status") == 200]
    assert len({r["response"]["id"] for r in owned}) == 12  # one Product per plan: no duplicate


def test_stripe_gone_mid_apply_says_exactly_what_was_written(
    cli_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator, db: psycopg.Connection
) -> None:
    """Stripe stopped answering after some writes (every connection closed without an answer, the
    emulator's timeout fault): the apply printed "...; nothing was changed". Now the error says how
    many writes Stripe made (exactly what the emulator answered) and how many got no answer, and a
    re-run, once Stripe is back, converges."""
    catalog = _many_paid_plans(tmp_path)
    emulator.emulator.set_faults(latency_ms=100)
    process = _start_apply(catalog, cli_env)
    _wait_for(lambda: _made(emulator) >= 6, process)
    emulator.emulator.set_faults(timeout_rate=1.0, hang_seconds=0)  # Stripe gone: no answer at all
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1, (out, err)
    assert "nothing was changed" not in err.lower() and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Stripe is unreachable" in errors[0], err
    found = DONE.search(errors[0])
    assert found is not None and found.group(2) is not None, errors
    assert int(found.group(1)) == _made(emulator) >= 6, (errors, _made(emulator))
    assert "Re-running apply is safe" in errors[0]

    emulator.emulator.set_faults(timeout_rate=0.0, latency_ms=0)
    rerun = run("apply", "--auto-approve", str(catalog), env=cli_env)
    assert rerun.returncode == 0, rerun.stderr
    assert run("plan", "--detailed-exitcode", str(catalog), env=cli_env).returncode == 0
    assert db.execute('SELECT count(*) FROM cloud_plans WHERE "isActive"').fetchone() == (13,)


# --- a migrate stopped half-way says what it applied ---------------------------------------------


def _ledger(db: psycopg.Connection) -> set[int]:
    return {version for (version,) in db.execute("SELECT version FROM cloud_reconciler_migrations")}


def _column_exists(db: psycopg.Connection, table: str, column: str) -> bool:
    found = db.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_name = %s AND column_name = %s", (table, column)
    ).fetchone()
    return found is not None


def _waiting_on_a_lock(db: psycopg.Connection) -> bool:
    found = db.execute(
        "SELECT 1 FROM pg_stat_activity "
        "WHERE application_name = 'kuploy-reconciler' AND wait_event_type = 'Lock'"
    ).fetchone()
    return found is not None


def _interrupt_while_0008_waits(
    env: dict[str, str], database_url: str, db: psycopg.Connection, *args: str
) -> tuple[int, str, str]:
    """Migrate fully, un-apply 0007 and 0008 (both `ADD COLUMN IF NOT EXISTS`), hold a lock 0008
    waits for, run the command, and send SIGINT once 0007 is committed and 0008 waits."""
    assert run("migrate", env=env).returncode == 0
    db.execute('ALTER TABLE cloud_subscriptions DROP COLUMN "stateRead"')
    db.execute("ALTER TABLE cloud_stripe_events DROP COLUMN plan")
    db.execute("DELETE FROM cloud_reconciler_migrations WHERE version IN (7, 8)")
    with psycopg.connect(database_url) as holder:  # a transaction, open until the rollback below
        holder.execute("LOCK TABLE cloud_stripe_events IN ACCESS EXCLUSIVE MODE")
        process = _start(env, *args)
        _wait_for(lambda: 7 in _ledger(db) and _waiting_on_a_lock(db), process)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        holder.rollback()
    assert process.returncode == 1, (out, err)
    assert "nothing was changed" not in err.lower() and "Traceback" not in err, err
    assert 8 not in _ledger(db) and not _column_exists(db, "cloud_stripe_events", "plan")  # rolled back
    assert _column_exists(db, "cloud_subscriptions", "stateRead")
    return process.returncode, out, err


def test_ctrl_c_during_migrate_names_what_was_applied_and_what_was_not(
    cli_env: dict[str, str], database_url: str, db: psycopg.Connection
) -> None:
    """SIGINT during migrate printed "Aborted: nothing was changed." though the migrations before it
    were committed (each is its own transaction). Now: 0007 is named applied, 0008 (blocked on a
    lock when interrupted) not applied, and it really was rolled back; re-running migrate applies it."""
    _code, _out, err = _interrupt_while_0008_waits(cli_env, database_url, db, "migrate")
    (line,) = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert line == (
        "Error: migrate interrupted (Ctrl-C); applied before it stopped: 0007_subscription_state_read; "
        "not applied: 0008_stripe_event_plan (the one in progress was rolled back). "
        "Re-running migrate applies the rest."
    ), err

    rerun = run("migrate", env=cli_env)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout == "Migrations applied: 0008_stripe_event_plan\n"
    assert _column_exists(db, "cloud_stripe_events", "plan") and 8 in _ledger(db)
    assert run("migrate", env=cli_env).stdout == "Database is up to date.\n"


def test_ctrl_c_while_apply_migrates_names_the_migrations_applied(
    cli_env: dict[str, str],
    database_url: str,
    db: psycopg.Connection,
    emulator: RunningEmulator,
    tmp_path: Path,
) -> None:
    """An apply migrates first: interrupted there, it said "Nothing was changed." (the migrations it
    had committed were not counted). Now it names them, and Stripe untouched."""
    catalog = str(write_catalog(tmp_path, standard_plans()))
    _code, _out, err = _interrupt_while_0008_waits(
        cli_env, database_url, db, "apply", "--auto-approve", catalog
    )
    (line,) = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert line == (
        "Error: apply interrupted (Ctrl-C) while migrating. Done before it stopped: Stripe untouched; "
        "migrations 0007_subscription_state_read applied. Re-running apply is safe: it adopts what was "
        "done and finishes the rest."
    ), err
    assert stripe_writes(emulator) == []
    assert run("apply", "--auto-approve", catalog, env=cli_env).returncode == 0
    assert 8 in _ledger(db)


# --- what Ctrl-C says elsewhere ------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_ctrl_c_at_a_prompt_says_nothing_was_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At a prompt (here end of input, which click handles as Ctrl-C: `Abort` from None) nothing
    was done yet: the sandbox's state is still there."""
    (tmp_path / "postgres").mkdir()
    monkeypatch.setattr(sys, "stdin", _Terminal(""))
    code, out, err = run_in_process("sandbox", "reset", env={"KUPLOY_STATE_DIR": str(tmp_path)})
    assert code == 1 and out.startswith("Delete the sandbox database"), (out, err)
    assert err == "Aborted: nothing was changed.\n", err
    assert (tmp_path / "postgres").is_dir()


def test_ctrl_c_while_a_command_works_does_not_claim_nothing_was_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During the work (`Abort() from KeyboardInterrupt`), a command that does not say what it did
    (sandbox reset: it may have deleted part of the state) says that what it did is not undone."""

    def interrupted(state_dir: Path) -> list[Path]:
        raise KeyboardInterrupt

    monkeypatch.setattr("reconciler.sandbox.postgres.reset_sandbox", interrupted)
    code, out, err = run_in_process("sandbox", "reset", "--yes", env={"KUPLOY_STATE_DIR": str(tmp_path)})
    assert (code, out) == (1, ""), err
    assert "nothing was changed" not in err.lower() and "Traceback" not in err, err
    assert err.strip() == (
        "Error: interrupted (Ctrl-C) before the command finished; what it had done by then was not undone."
    )


def test_ctrl_c_during_a_read_only_command_says_it_wrote_nothing(
    cli_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator, db: psycopg.Connection
) -> None:
    catalog = str(write_catalog(tmp_path, standard_plans()))
    emulator.emulator.set_faults(latency_ms=300)
    process = _start(cli_env, "plan", catalog)
    _wait_for(lambda: len(emulator.emulator.requests) >= 1, process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1, (out, err)
    (line,) = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert line == (
        "Error: plan interrupted (Ctrl-C); it writes nothing to Postgres or Stripe: nothing was changed there"
    ), err
    assert "Traceback" not in err and stripe_writes(emulator) == []
