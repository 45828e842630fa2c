"""Verification: everything checked before a write. The body read with a cap, the `Stripe-Signature`
checked over it, the JSON parsed into an `Event` whose ids and times Postgres can store, and its mode
matched to the Stripe key's. Any failure is `Rejected` (400) with a short reason; `Unavailable` (503,
Stripe retries) is the other refusal, raised later by the pool and the handlers."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import stripe
from starlette.requests import Request

from reconciler.settings import Secret

MAX_BODY = 1024 * 1024
"""Largest accepted body (Stripe's events are far smaller)."""
DRAIN_FACTOR = 16
"""An oversized body is read and discarded up to 16 × the cap, so the client sees the 400, not a reset."""
TOLERANCE = 300
MAX_TIMESTAMP = 253402300799
"""9999-12-31T23:59:59Z, the last second both Python and Postgres hold. An event or object time
outside 0..MAX_TIMESTAMP is refused (400): Postgres would fail on it, on every retry."""


class Rejected(Exception):
    """A request refused before any write: 400 with this short reason."""


class Unavailable(Exception):
    """A dependency failed (database, Stripe): 503, nothing written, Stripe retries."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """The parts of a verified Stripe event the listener uses."""

    id: str
    type: str
    created: int
    livemode: bool
    object: Mapping[str, Any]
    idempotency_key: str | None

    @property
    def object_id(self) -> str | None:
        value = self.object.get("id")
        return value if isinstance(value, str) else None


def items_of(state: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A subscription's items (the list, or its `data` when it is a Stripe list object)."""
    items = state.get("items")
    data = items.get("data") if isinstance(items, Mapping) else items
    return [i for i in data or () if isinstance(i, Mapping)]


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The raw body, refused past `limit` bytes (counted on the stream, whatever Content-Length says)."""
    drain = DRAIN_FACTOR * limit
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > drain:
        raise Rejected(f"payload too large (limit {limit} bytes)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > drain:
            break
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise Rejected(f"payload too large (limit {limit} bytes)")
    return b"".join(chunks)


def verify_event(body: bytes, signature: str | None, secret: Secret, tolerance: int = TOLERANCE) -> Event:
    """Check the signature over the raw body, then parse it. Raises `Rejected` with a short reason."""
    if not signature:
        raise Rejected("missing Stripe-Signature header")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Rejected("body is not UTF-8") from e
    try:
        stripe.WebhookSignature.verify_header(text, signature, secret.reveal(), tolerance)
    except stripe.SignatureVerificationError as e:
        reason = str(e.user_message or "signature verification failed").rstrip(".")
        raise Rejected(f"bad signature: {reason[:100]}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise Rejected("body is not JSON") from e
    # JSON can carry a NUL or a lone surrogate only as an escape (\u0000, \ud800); Postgres cannot
    # store either, so every retry would fail the same way.
    if _UNSTORABLE_ESCAPE.search(text) and _unstorable(data):
        raise Rejected("event holds a NUL or an unpaired surrogate")
    return _event(data)


_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_UNSTORABLE_CHAR = re.compile("[\x00\ud800-\udfff]")


def _unstorable(value: Any) -> bool:
    if isinstance(value, str):
        return _UNSTORABLE_CHAR.search(value) is not None
    if isinstance(value, dict):
        return any(_unstorable(k) or _unstorable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_unstorable(v) for v in value)
    return False


def _in_range(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TIMESTAMP


def _event(data: Any) -> Event:
    if not isinstance(data, dict):
        raise Rejected("body is not a Stripe event")
    event_id, event_type, created = data.get("id"), data.get("type"), data.get("created")
    obj = (data.get("data") or {}).get("object") if isinstance(data.get("data"), dict) else None
    if not (isinstance(event_id, str) and 0 < len(event_id) <= 255):
        raise Rejected("event has no valid id")
    if not (isinstance(event_type, str) and 0 < len(event_type) <= 255):
        raise Rejected("event has no valid type")
    if not (isinstance(created, int) and _in_range(created)):
        raise Rejected("event has no valid created time")
    if not isinstance(obj, dict):
        raise Rejected("event has no data.object")
    if not isinstance(data.get("livemode"), bool):
        raise Rejected("event has no valid livemode")
    # The object's times the listener stores (an invoice's `created`, a period end).
    items = items_of(obj)
    times = [obj.get("created"), obj.get("current_period_end"), *(i.get("current_period_end") for i in items)]
    if any(isinstance(t, int) and not _in_range(t) for t in times):
        raise Rejected("event has a time out of range")
    request = data.get("request")
    key = request.get("idempotency_key") if isinstance(request, dict) else None
    return Event(
        id=event_id,
        type=event_type,
        created=created,
        livemode=data["livemode"],
        object=obj,
        idempotency_key=key if isinstance(key, str) else None,
    )


def check_mode(event: Event, *, live: bool) -> None:
    """Refuse an event of the other mode than the listener's Stripe key: a live endpoint's secret
    paired with a test key (or the reverse) would otherwise record live customers from a re-read
    that cannot see them, or test events as real ones."""
    if event.livemode != live:
        mode, key = ("live", "test") if event.livemode else ("test", "live")
        raise Rejected(f"{mode}-mode event {event.id[:40]}, but STRIPE_SECRET_KEY is a {key}-mode key")
