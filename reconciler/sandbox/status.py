"""`sandbox status` and `sandbox start` → the lines that say what the sandbox runs and where its state
is. No I/O here.

It sits in the sandbox, above `postgres` whose values it shows, not in `render`: the core never
imports the sandbox."""

from __future__ import annotations

from reconciler.sandbox.postgres import DatabaseStatus, SandboxStatus


def render_database_line(status: DatabaseStatus) -> str:
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


def render_sandbox_status(status: SandboxStatus) -> str:
    database = status.database
    lines = [f"state dir: {status.state_dir}/\n", render_database_line(database)]
    if database.running:
        lines.append(f"  connect: psql '{database.uri}'\n")
        if status.in_use:
            lines.append("  in use by a running kuploy-reconciler command\n")
    objects = "no objects yet" if status.emulator_objects is None else f"objects in {status.emulator_objects}"
    lines.append(f"Stripe emulator: not a server, it runs inside each command; {objects}\n")
    return "".join(lines)
