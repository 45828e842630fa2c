"""The emulator's state: per key mode (test, live) a table of Stripe objects per kind, their creation
order, side tables of internal facts (never rendered), and the idempotency results.

API: `get`/`put`/`delete`/`list` on (mode, kind, id), `internal(mode, id)` for an object's side-table row,
and `transaction()` around every request. Today the tables live in memory and persist to one JSON file
(atomic rename), shared between processes under an `fcntl` lock; objects are mutated in place inside a
transaction and written back when it commits, so a row store (sqlite3) can replace this class without
touching the resources."""

from __future__ import annotations

import bisect
import builtins
import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import JSON, EmulatorConfigError

STATE_FORMAT = "kuploy-stripe-emulator/1"
# kind -> table name (the name in the state file); each resource module registers its kinds.
TABLES: dict[str, str] = {}


class Account:
    """One key mode's objects (test and live never see each other's)."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, JSON]] = {}
        self.order: dict[str, int] = {}  # creation sequence, breaks `created` ties
        self.internal: dict[str, JSON] = {}  # object id -> internal facts (side table)

    def table(self, kind: str) -> dict[str, JSON]:
        return self.tables.setdefault(TABLES[kind], {})

    def __getattr__(self, name: str) -> dict[str, JSON]:
        """`acct.products`, `acct.checkout_sessions`, ...: a table by its name."""
        if name.startswith("__") or name not in TABLES.values():
            raise AttributeError(name)
        return self.tables.setdefault(name, {})


class Store:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.accounts: dict[str, Account] = {"test": Account(), "live": Account()}
        self.idempotency: dict[str, dict[str, JSON]] = {}
        self.seq = 0
        self._seen: tuple[int, int, int] | None = None  # state file signature last loaded or written
        # (mode, kind) -> its objects' (created, creation seq, id), ascending; built on first use
        self._index: dict[tuple[str, str], builtins.list[tuple[int, int, str]]] = {}
        if path is not None and path.exists():
            self._load(path)
            self._seen = _signature(path)

    # ------------------------------------------------------------------ objects

    def get(self, mode: str, kind: str, obj_id: str) -> JSON | None:
        return self.accounts[mode].table(kind).get(obj_id)

    def put(self, mode: str, kind: str, obj: JSON) -> None:
        """Store a new object (it takes the next creation sequence number)."""
        acct = self.accounts[mode]
        acct.table(kind)[obj["id"]] = obj
        acct.order[obj["id"]] = self.next_seq()
        index = self._index.get((mode, kind))
        if index is not None:
            bisect.insort(index, self._key(mode, obj))

    def delete(self, mode: str, kind: str, obj_id: str) -> None:
        acct = self.accounts[mode]
        obj = acct.table(kind).get(obj_id)
        index = self._index.get((mode, kind))
        if obj is not None and index is not None:
            key = self._key(mode, obj)
            at = bisect.bisect_left(index, key)
            if at < len(index) and index[at] == key:
                del index[at]
        acct.table(kind).pop(obj_id, None)
        acct.order.pop(obj_id, None)
        acct.internal.pop(obj_id, None)

    def rank(self, mode: str, obj: JSON) -> tuple[int, int]:
        """Where an object sorts in lists: `created` (an invoice item's is `date`), then creation order."""
        created = obj["created"] if "created" in obj else obj["date"]
        return int(created), self.accounts[mode].order.get(obj["id"], 0)

    def list(self, mode: str, kind: str) -> builtins.list[JSON]:
        """A kind's objects, newest first (`created`, then creation order)."""
        table = self.accounts[mode].table(kind)
        return [table[key[2]] for key in reversed(self._ordered(mode, kind))]

    def page(
        self,
        mode: str,
        kind: str,
        *,
        limit: int,
        after: tuple[int, int] | None = None,
        before: tuple[int, int] | None = None,
        matches: Callable[[JSON], bool] = lambda _obj: True,
    ) -> tuple[builtins.list[JSON], bool]:
        """One list page, newest first, and whether more match beyond it. `after`: only objects ranked
        below it (`starting_after`); `before`: only those above it, the `limit` nearest (`ending_before`).
        Walks the kind's ordered index from the cursor and stops after `limit + 1` matches."""
        index = self._ordered(mode, kind)
        table = self.accounts[mode].table(kind)
        found: builtins.list[JSON] = []
        if before is not None:
            start = bisect.bisect_left(index, (before[0], before[1] + 1))
            positions: range = range(start, len(index))
        else:
            end = len(index) if after is None else bisect.bisect_left(index, after)
            positions = range(end - 1, -1, -1)
        for at in positions:
            obj = table[index[at][2]]
            if matches(obj):
                found.append(obj)
                if len(found) > limit:
                    break
        page = found[:limit]
        if before is not None:
            page.reverse()
        return page, len(found) > limit

    def _key(self, mode: str, obj: JSON) -> tuple[int, int, str]:
        return (*self.rank(mode, obj), str(obj["id"]))

    def _ordered(self, mode: str, kind: str) -> builtins.list[tuple[int, int, str]]:
        index = self._index.get((mode, kind))
        if index is None:
            index = sorted(self._key(mode, o) for o in self.accounts[mode].table(kind).values())
            self._index[(mode, kind)] = index
        return index

    def internal(self, mode: str, obj_id: str) -> JSON:
        """The side-table row of an object: facts Stripe does not show (created on first use)."""
        return self.accounts[mode].internal.setdefault(obj_id, {})

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    # ------------------------------------------------------------------ transactions

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Several processes may serve one state file (each sandbox command runs its own emulator):
        hold an exclusive file lock and reload the file when another process wrote it. Call `save()`
        inside to commit what changed."""
        if self.path is None:
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if self.path.exists() and _signature(self.path) != self._seen:
                    self._load(self.path)
                    self._seen = _signature(self.path)
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self, path: Path) -> None:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("format") != STATE_FORMAT:
                raise ValueError(f"format is {raw.get('format')!r}, expected {STATE_FORMAT!r}")
            self.seq = int(raw["seq"])
            self._index = {}
            for mode in ("test", "live"):
                given = raw["accounts"][mode]
                acct = Account()
                # Tables absent from state files written before their resources existed are empty.
                for name, table in given.items():
                    if name not in ("order", "internal"):
                        acct.tables[name] = dict(table)
                acct.order = dict(given["order"])
                acct.internal = {k: dict(v) for k, v in given.get("internal", {}).items()}
                _move_private_keys(acct)
                self.accounts[mode] = acct
            self.idempotency = {k: dict(v) for k, v in raw["idempotency"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise EmulatorConfigError(f"Stripe emulator state file {path} cannot be read: {exc}") from exc

    def save(self) -> None:
        if self.path is None:
            return
        data = {
            "format": STATE_FORMAT,
            "seq": self.seq,
            "accounts": {
                mode: {
                    **{name: a.tables.get(name, {}) for name in TABLES.values()},
                    **a.tables,
                    "order": a.order,
                    "internal": a.internal,
                }
                for mode, a in self.accounts.items()
            },
            "idempotency": self.idempotency,
        }
        target = self.path
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, separators=(",", ":"), default=str)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            self._seen = _signature(target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _move_private_keys(acct: Account) -> None:
    """State files written before the side tables kept internal facts as `_`-prefixed keys inside the
    objects: move them out."""
    for table in acct.tables.values():
        for obj_id, obj in table.items():
            private = [k for k in obj if k.startswith("_")]
            if private:
                row = acct.internal.setdefault(obj_id, {})
                for key in private:
                    row[key[1:]] = obj.pop(key)


def _signature(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_mtime_ns, st.st_size, st.st_ino)
