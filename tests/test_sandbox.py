"""The sandbox's embedded PostgreSQL through the command line: what runs, who stops it, nothing left
behind by surprise. Each test has its own state folder (KUPLOY_STATE_DIR) and servers."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.sandbox.postgres import stop_embedded_postgres

from test_cli import ROOT, assert_clean_failure, run

EXAMPLES = str(ROOT / "examples")


@pytest.fixture
def state() -> Iterator[Path]:
    """A state folder outside pytest's basetemp (kept 0700: the server runs as its own user)."""
    work = Path(tempfile.mkdtemp(prefix="kuploy-sandbox-state-"))
    try:
        yield work / "state"
    finally:
        with contextlib.suppress(Exception):
            stop_embedded_postgres(work / "state" / "postgres")
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DATABASE_URL", "KUPLOY_"))}
    return {**env, "KUPLOY_STATE_DIR": str(state), "NO_COLOR": "1"}


def postgres_pids(state: Path) -> set[int]:
    """Every live postgres process serving this state folder's data directory (Linux /proc)."""
    data_dir = str((state / "postgres").resolve())
    pids = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            argv = cmdline.read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"postgres") and data_dir.encode() in argv:
                pids.add(int(cmdline.parent.name))
    return pids


def postmaster_pid(state: Path) -> int | None:
    pid_file = state / "postgres" / "postmaster.pid"
    return int(pid_file.read_text().split()[0]) if pid_file.exists() else None


def test_a_one_off_command_leaves_nothing_running(env: dict[str, str], state: Path) -> None:
    before = run("sandbox", "status", env=env)
    assert before.returncode == 0, before.stderr
    assert "PostgreSQL: not running, no data yet" in before.stdout
    assert f"state dir: {state.resolve()}/" in before.stdout

    planned = run("plan", EXAMPLES, env=env)
    assert planned.returncode == 0, planned.stderr
    assert "for this command only (nothing stays running)" in planned.stderr
    assert planned.stderr.count("sandbox mode:") == 1
    assert postmaster_pid(state) is None and postgres_pids(state) == set()

    after = run("sandbox", "status", env=env)
    assert "PostgreSQL: not running, its data in" in after.stdout  # the data stays for the next one
    applied = run("apply", "--auto-approve", EXAMPLES, env=env)
    assert applied.returncode == 0, applied.stderr
    again = run("plan", "--detailed-exitcode", EXAMPLES, env=env)
    assert again.returncode == 0, again.stdout + again.stderr  # state kept between commands
    assert postgres_pids(state) == set()


def test_start_keeps_it_running_for_commands_until_stop(env: dict[str, str], state: Path) -> None:
    started = run("sandbox", "start", env=env)
    assert started.returncode == 0, started.stderr
    pid = postmaster_pid(state)
    assert pid is not None and pid in postgres_pids(state)
    status = run("sandbox", "status", env=env)
    assert f"PostgreSQL: running, pid {pid}, port 5432" in status.stdout
    assert "kept running until `kuploy-reconciler sandbox stop`" in status.stdout
    assert f"connect: psql 'postgresql://postgres@/postgres?host={(state / 'postgres').resolve()}" in (
        status.stdout
    )

    planned = run("plan", EXAMPLES, env=env)
    assert planned.returncode == 0, planned.stderr
    assert f"kept running, pid {pid}: `kuploy-reconciler sandbox stop` stops it" in planned.stderr
    assert postmaster_pid(state) == pid and pid in postgres_pids(state)  # reused, left running

    stopped = run("sandbox", "stop", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert f"Stopped the sandbox PostgreSQL (pid {pid})" in stopped.stdout
    assert postgres_pids(state) == set()
    assert "PostgreSQL: not running, its data in" in run("sandbox", "status", env=env).stdout
    assert "not running: nothing to stop" in run("sandbox", "stop", env=env).stdout


def test_reset_asks_and_drops_the_state(env: dict[str, str], state: Path) -> None:
    assert run("apply", "--auto-approve", EXAMPLES, env=env).returncode == 0
    assert run("sandbox", "start", env=env).returncode == 0
    assert (state / "stripe.json").exists() and postgres_pids(state)

    refused = run("sandbox", "reset", env=env, stdin="yes\n")  # stdin is not a terminal
    assert_clean_failure(refused)
    assert "--yes" in refused.stderr
    assert (state / "postgres" / "PG_VERSION").exists() and postgres_pids(state)  # nothing touched

    reset = run("sandbox", "reset", "--yes", env=env)
    assert reset.returncode == 0, reset.stderr
    assert postgres_pids(state) == set()
    assert not (state / "postgres").exists() and not (state / "stripe.json").exists()
    assert "PostgreSQL: not running, no data yet" in run("sandbox", "status", env=env).stdout
    fresh = run("plan", "--detailed-exitcode", EXAMPLES, env=env)
    assert fresh.returncode == 2, fresh.stderr  # an empty sandbox again: everything to create


def _healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def test_a_database_shared_by_running_commands_stops_with_the_last(env: dict[str, str], state: Path) -> None:
    """`listen` started the server for itself; a `plan` meanwhile reuses it and leaves it to listen;
    stop and reset refuse while listen runs; when listen ends, nothing is left running."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listen_env = {**env, "STRIPE_WEBHOOK_SECRET": "whsec_kuploySandboxTests0000000000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "listen", "--port", str(port)],
        env=listen_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _healthy(port):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "listen did not start"
            time.sleep(0.05)
        pid = postmaster_pid(state)
        assert pid is not None and pid in postgres_pids(state)
        assert "in use by a running kuploy-reconciler command" in run("sandbox", "status", env=env).stdout

        planned = run("plan", EXAMPLES, env=env)
        assert planned.returncode == 0, planned.stderr
        assert postmaster_pid(state) == pid and pid in postgres_pids(state)  # listen still uses it

        for command in (("sandbox", "stop"), ("sandbox", "reset", "--yes")):
            refused = run(*command, env=env)
            assert_clean_failure(refused)
            assert "in use by a running kuploy-reconciler command" in refused.stderr
        assert pid in postgres_pids(state)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert re.search(r"sandbox mode: .*nothing stays running", err)
    assert postmaster_pid(state) is None and postgres_pids(state) == set()
