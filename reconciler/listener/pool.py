"""The listener's database connections: a `psycopg_pool.AsyncConnectionPool` of `size` async
autocommit connections, each with a 30 s lock timeout, opened and closed with the app's lifespan (so
each `listen --workers N` process has its own). A broken connection drains the idle ones; an exhausted
pool answers `Unavailable` (503) after `wait` seconds. While the pool cannot reach the database, an
event tries one connection of its own after `DOWN_WAIT`: 503 at once if the database is still down,
served at once if it is back (the pool itself reconnects only after its back-off)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from reconciler.listener.verification import Unavailable
from reconciler.settings import Secret

DOWN_WAIT = 0.5
"""Seconds an event waits for a connection when none is free and the pool's last attempt to connect
failed: the database is down, and waiting the full `wait` would only answer 503 later."""


class ConnectionPool:
    """`size` autocommit connections, from psycopg's own pool.

    Asynchronous: events are processed on the event loop, no thread per event (a thread hop and the
    GIL passed back and forth on every statement cost more CPU than the statements themselves).
    Checking out costs no statement: no ping (`check=None`) and no reset. Dead connections are found
    by use instead: the pool replaces a returned broken one, and this drains the idle ones with it."""

    def __init__(self, dsn: Secret, *, size: int = 8, wait: float = 10.0, connect_timeout: int = 5) -> None:
        self._kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": connect_timeout}
        """How every connection is opened: the pool's and `_connect_now`'s."""
        self._pool = AsyncConnectionPool(
            dsn.reveal,  # revealed at each connect, never kept in the clear on the pool
            kwargs=self._kwargs,
            min_size=size,
            max_size=size,
            open=False,
            configure=self._configure,
            check=None,
            timeout=wait,
            name="listener",
        )
        self._dsn = dsn
        self._own = asyncio.Semaphore(size)
        """Connections of its own while the pool reconnects: no more than the pool's size."""
        self._wait = wait
        self._errors_when_connected = 0
        """The pool's count of failed connection attempts at its last successful one."""

    async def _configure(self, conn: psycopg.AsyncConnection) -> None:
        """Once per new connection of the pool: the lock timeout, and the pool's count of failed
        attempts at this success."""
        await _set_lock_timeout(conn)
        self._errors_when_connected = self._pool.get_stats().get("connections_errors", 0)

    def _reconnecting_fails(self) -> bool:
        return self._pool.get_stats().get("connections_errors", 0) > self._errors_when_connected

    async def open(self) -> None:
        """Start filling the pool in the background; events wait for their connection (a database
        down at start-up does not stop the listener: /readyz says so)."""
        await self._pool.open()

    async def close(self) -> None:
        await self._pool.close()

    async def _getconn(self) -> psycopg.AsyncConnection | None:
        """A free connection of the pool. Waiting for one, a pool whose last attempt to connect failed
        gives up after `DOWN_WAIT` with None (the database was down: `_connect_now` tells whether it
        still is); else after `wait` (all busy)."""
        try:
            return await self._pool.getconn(timeout=min(DOWN_WAIT, self._wait))
        except PoolTimeout:
            if self._reconnecting_fails():
                return None
        try:
            return await self._pool.getconn(timeout=max(self._wait - DOWN_WAIT, 0.0))
        except PoolTimeout:
            raise Unavailable("no database connection free") from None

    @contextlib.asynccontextmanager
    async def _connect_now(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """One connection of its own, closed after use. psycopg_pool retries a failed connection after
        a back-off (1 s, doubling): without this, events would keep answering 503 for seconds after the
        database came back."""
        if self._own.locked():
            raise Unavailable("database unavailable")
        async with self._own:
            try:
                conn = await psycopg.AsyncConnection.connect(self._dsn.reveal(), **self._kwargs)
            except psycopg.OperationalError:
                raise Unavailable("database unavailable") from None
            async with conn:
                await _set_lock_timeout(conn)
                yield conn

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        conn = await self._getconn()
        if conn is None:
            async with self._connect_now() as own:
                yield own
            return
        try:
            yield conn
        finally:
            broken = conn.broken
            await self._pool.putconn(conn)  # a broken one is replaced, an open transaction rolled back
            if broken:
                # The server probably went away: the idle ones are dead too. Closing them costs no
                # round trip (a check would ping each one while this request waits).
                await self._pool.drain()


async def _set_lock_timeout(conn: psycopg.AsyncConnection) -> None:
    """Per session, like apply's advisory lock: DATABASE_URL must not be a transaction-mode pooler. A
    stuck peer answers 503, and Stripe retries."""
    await conn.execute("SET lock_timeout = '30s'")
