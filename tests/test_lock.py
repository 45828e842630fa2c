"""The apply lock waits in Postgres (`lock_timeout` on one statement), against a real server."""

from __future__ import annotations

import threading

import psycopg
import pytest

from reconciler.errors import LockTimeout
from reconciler.lock import LOCK_KEY, advisory_lock


def test_waits_for_a_holder_that_finishes_and_leaves_the_session_as_it_was(database_url: str) -> None:
    with (
        psycopg.connect(database_url, autocommit=True) as holder,
        psycopg.connect(database_url, autocommit=True) as conn,
    ):
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        waiting = threading.Event()

        def release_once_waited_for() -> None:
            # Release only once `conn` is seen waiting on the lock in pg_locks: no sleeps.
            while not waiting.is_set():
                row = holder.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                ).fetchone()
                if row and row[0]:
                    waiting.set()
            holder.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))

        releaser = threading.Thread(target=release_once_waited_for)
        releaser.start()
        with advisory_lock(conn, timeout=30):
            assert waiting.is_set()  # it waited, then got the lock
            row = conn.execute("SHOW lock_timeout").fetchone()
            assert row is not None and row[0] == "0"  # the wait's limit did not stay on the session
        releaser.join()
        row = holder.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
        assert row is not None and row[0] is True  # released at the end of the block


def test_gives_up_after_the_timeout_naming_the_holder(database_url: str) -> None:
    with (
        psycopg.connect(database_url, autocommit=True) as holder,
        psycopg.connect(database_url, autocommit=True) as conn,
    ):
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        with (
            pytest.raises(LockTimeout, match=r"holds the lock \(backend pid \d+"),
            advisory_lock(conn, timeout=0.2),
        ):
            pass
        row = conn.execute("SELECT 1").fetchone()  # the connection is still usable
        assert row == (1,)
