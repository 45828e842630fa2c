"""`sandbox status` and `sandbox start` → the lines that say what the sandbox runs and where its state
is. No I/O here."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Protocol


class DatabaseState(Protocol):
    """The sandbox PostgreSQL (`sandbox.postgres.DatabaseStatus`; render never imports the sandbox)."""

    @property
    def running(self) -> bool: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def port(self) -> int | None: ...
    @property
    def socket_dir(self) -> Path | None: ...
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def kept(self) -> bool: ...
    @property
    def data_dir(self) -> Path: ...
    @property
    def has_data(self) -> bool: ...
    @property
    def uri(self) -> str | None: ...


class SandboxState(Protocol):
    """The whole sandbox (`sandbox.postgres.SandboxStatus`)."""

    @property
    def state_dir(self) -> Path: ...
    @property
    def database(self) -> DatabaseState: ...
    @property
    def in_use(self) -> bool: ...
    @property
    def emulator_objects(self) -> Path | None: ...


def render_database_line(status: DatabaseState) -> str:
    if not status.running:
        data = f"its data in {status.data_dir}/" if status.has_data else "no data yet"
        return f"PostgreSQL: not running, {data}\n"
    how = (
        "kept running until `kuploy-reconciler sandbox stop`"
        if status.kept
        else "started by a command, stopped when no command uses it"
    )
    return (
        f"PostgreSQL: running, pid {status.pid}, port {status.port} on the Unix socket in "
        f"{status.socket_dir} (no TCP), since {status.started_at:%Y-%m-%d %H:%M:%S} UTC; {how}\n"
    )


def render_sandbox_status(status: SandboxState) -> str:
    database = status.database
    lines = [f"state dir: {status.state_dir}/\n", render_database_line(database)]
    if database.running:
        lines.append(f"  connect: psql '{database.uri}'\n")
        if status.in_use:
            lines.append("  in use by a running kuploy-reconciler command\n")
    objects = "no objects yet" if status.emulator_objects is None else f"objects in {status.emulator_objects}"
    lines.append(f"Stripe emulator: not a server, it runs inside each command; {objects}\n")
    return "".join(lines)
