"""The Postgres advisory lock that keeps the writing commands (apply, migrate, seed) from interleaving."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg.errors

from reconciler.errors import LockTimeout

LOCK_KEY = 0x6B75706C6F79  # "kuploy": one session-level lock for the whole database


@contextmanager
def advisory_lock(conn: psycopg.Connection, *, timeout: float) -> Iterator[None]:
    """Hold the reconciler lock on `conn` (an autocommit connection) for the block; Postgres waits up
    to `timeout` seconds for it (`lock_timeout`, set for this one statement)."""
    try:
        conn.execute(
            "SELECT set_config('lock_timeout', %s, true), pg_advisory_lock(%s)",
            (f"{max(1, round(timeout * 1000))}ms", LOCK_KEY),
        )
    except psycopg.errors.LockNotAvailable:
        raise LockTimeout(
            f"another kuploy-reconciler apply, migrate or seed holds the lock ({_holder(conn)}); "
            f"waited {timeout:g}s. Retry when it has finished."
        ) from None
    try:
        yield
    finally:
        # A lost connection has released the lock with its session; nothing to undo then.
        with contextlib.suppress(psycopg.Error):
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


def _holder(conn: psycopg.Connection) -> str:
    row = conn.execute(
        """
        SELECT a.pid, a.client_addr::text, a.backend_start
          FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted
           AND l.classid = (%s >> 32)::oid AND l.objid = (%s & 4294967295)::oid
         LIMIT 1
        """,
        (LOCK_KEY, LOCK_KEY),
    ).fetchone()
    if row is None:
        return "holder unknown"
    pid, addr, started = row
    return f"backend pid {pid} from {addr or 'local socket'}, connected {started:%Y-%m-%d %H:%M:%S %Z}"
