"""The listener's database connections: at most `size` async autocommit connections, each with a
30 s lock timeout; a broken one dropped with the idle ones; an exhausted pool answers `Unavailable`
(503) after `wait` seconds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psycopg

from reconciler.listener.verification import Unavailable
from reconciler.settings import Secret


class ConnectionPool:
    """At most `size` autocommit connections, reused LIFO; a failed one is closed with the idle ones.

    Asynchronous: events are processed on the event loop, no thread per event (a thread hop and the
    GIL passed back and forth on every statement cost more CPU than the statements themselves)."""

    def __init__(self, dsn: Secret, *, size: int = 8, wait: float = 10.0, connect_timeout: int = 5) -> None:
        self._dsn = dsn
        self._slots = asyncio.Semaphore(size)
        self._idle: list[psycopg.AsyncConnection] = []
        self._wait = wait
        self._connect_timeout = connect_timeout

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        try:
            async with asyncio.timeout(self._wait):
                await self._slots.acquire()
        except TimeoutError:
            raise Unavailable("no database connection free") from None
        try:
            conn = await self._take()
            try:
                yield conn
            except psycopg.OperationalError:
                if conn.broken or conn.closed:
                    await conn.close()
                    await self.clear()  # the server probably went away: the idle ones are dead too
                else:
                    await self._give_back(conn)  # a lock timeout or a cancelled query: still healthy
                raise
            except BaseException:
                await self._give_back(conn)
                raise
            else:
                await self._give_back(conn)
        finally:
            self._slots.release()

    async def _take(self) -> psycopg.AsyncConnection:
        while self._idle:
            conn = self._idle.pop()
            if not (conn.closed or conn.broken):
                return conn
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._dsn.reveal(), autocommit=True, connect_timeout=self._connect_timeout
            )
        except psycopg.Error as e:
            raise Unavailable("database unreachable") from e
        try:
            # Per session, like apply's advisory lock: DATABASE_URL must not be a transaction-mode
            # pooler. A stuck peer answers 503, and Stripe retries.
            await conn.execute("SET lock_timeout = '30s'")
        except BaseException as e:
            await conn.close()
            if isinstance(e, psycopg.Error):
                raise Unavailable("database unreachable") from e
            raise
        return conn

    async def _give_back(self, conn: psycopg.AsyncConnection) -> None:
        healthy = not (conn.closed or conn.broken)
        if healthy and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            self._idle.append(conn)
        else:
            await conn.close()

    async def clear(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()
