"""The explicit context of one request (or admin action): who asked (mode, key), how (request id,
idempotency key, Host, Stripe-Version, fault), what it did (the events it emitted, whether state
changed) and the request-log entry it fills. Resource code reads and writes the store through it."""

from __future__ import annotations

from dataclasses import dataclass, field

from .common import random_id
from .delivery import Job
from .errors import JSON, no_such
from .store import Account, Store


@dataclass
class Ctx:
    store: Store
    mode: str = "test"
    request_id: str | None = None
    idempotency_key: str | None = None
    host: str | None = None  # the Host the client used (for the URLs of new objects)
    version: str | None = None  # its Stripe-Version header
    fault: str | None = None
    acting: bool = False  # the API call itself is running (its events name it in `request`)
    emitted: list[JSON] = field(default_factory=list)  # events made by this request, in order
    redeliveries: list[Job] = field(default_factory=list)  # events it sends again (a retry)
    dirty: bool = False  # state changed: save when the request ends
    log: JSON = field(default_factory=dict)  # the request-log entry
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers

    @property
    def acct(self) -> Account:
        return self.store.accounts[self.mode]

    @property
    def livemode(self) -> bool:
        return self.mode == "live"

    def request_ref(self) -> JSON:
        """An event's `request` (null id and key for automatic events)."""
        if not self.acting:
            return {"id": None, "idempotency_key": None}
        return {"id": self.request_id, "idempotency_key": self.idempotency_key}

    def get(self, kind: str, obj_id: str) -> JSON | None:
        return self.store.get(self.mode, kind, obj_id)

    def need(self, kind: str, obj_id: str, param: str = "id", status: int = 404) -> JSON:
        """The object, or Stripe's "No such ..." error."""
        from .registry import KINDS

        obj = self.get(kind, obj_id)
        if obj is None:
            raise no_such(KINDS[kind].noun, obj_id, param, status)
        return obj

    def put(self, kind: str, obj: JSON) -> None:
        self.store.put(self.mode, kind, obj)

    def delete(self, kind: str, obj_id: str) -> None:
        self.store.delete(self.mode, kind, obj_id)

    def internal(self, obj_id: str) -> JSON:
        return self.store.internal(self.mode, obj_id)

    def fresh_id(self, prefix: str, length: int) -> str:
        acct = self.acct
        while True:
            candidate = random_id(prefix, length)
            if not any(candidate in table for table in acct.tables.values()) and not any(
                item["id"] == candidate for sub in acct.subscriptions.values() for item in sub["items"]
            ):
                return candidate
