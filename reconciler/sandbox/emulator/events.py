"""Emitting Events: `emit` records one (stored at once, in creation order, with the request that made
it), `emit_update` records `<kind>.updated` with `previous_attributes`; when the request ends, `commit`
turns its events (and the redeliveries it asked for: `POST /v1/events/{id}/retry`) into signed-delivery
jobs for the matching endpoints and `stripe listen` sessions, or `discard` forgets them."""

from __future__ import annotations

import json
import time

import stripe

from . import versions
from .context import Ctx
from .delivery import Job
from .errors import JSON
from .registry import KINDS
from .rendering import snapshot

WEBHOOKS_FEATURE = "webhooks"  # the websocket feature of the `stripe listen` sessions events go to


def emit(
    ctx: Ctx,
    type_: str,
    kind: str,
    obj: JSON,
    previous: JSON | None = None,
    *,
    frozen: JSON | None = None,
) -> JSON:
    """Record one Event (delivered when the request commits). `frozen`: the `data.object` to use."""
    data: JSON = {"object": frozen if frozen is not None else snapshot(ctx, kind, obj)}
    if previous is not None:
        data["previous_attributes"] = previous
    event: JSON = {
        "id": ctx.fresh_id("evt_", 24),
        "object": "event",
        "api_version": stripe.api_version,
        "created": int(time.time()),
        "data": data,
        "livemode": ctx.livemode,
        "pending_webhooks": 0,
        "request": ctx.request_ref(),
        "type": type_,
    }
    ctx.put("event", event)
    ctx.emitted.append(event)
    return event


def emit_update(ctx: Ctx, kind: str, obj: JSON, before: JSON, incidental: tuple[str, ...] = ()) -> None:
    """`<kind>.updated` with `previous_attributes`, if a field changed. An `incidental` field (a
    product's `updated` time) is no change on its own, but is reported beside a real one, as Stripe
    does (`{"metadata": {"k": null}, "updated": 1714547546}`)."""
    after = snapshot(ctx, kind, obj)
    previous = previous_attributes(before, after)
    if any(k not in incidental for k in previous):
        emit(ctx, f"{KINDS[kind].event_prefix}.updated", kind, obj, previous, frozen=after)


def previous_attributes(before: JSON, after: JSON) -> JSON:
    """The values before the change of what changed, as Stripe words it: a hash (`metadata`,
    `invoice_settings`, ...) holds only its changed keys, `None` for a key that was added; any other
    field, an array included, holds its whole old value."""
    previous: JSON = {}
    for k in sorted(set(before) | set(after)):
        old, new = before.get(k), after.get(k)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            previous[k] = previous_attributes(old, new)
        else:
            previous[k] = old
    return previous


def in_version(ctx: Ctx, event: JSON, version: str | None) -> JSON:
    """The event as an endpoint pinned to `version` receives it: its object in that version's shape."""
    if version is None or version == event["api_version"]:
        return event
    obj = json.loads(json.dumps(event["data"]["object"]))
    kind = str(obj.get("object", "")).replace(".", "_")
    if kind in KINDS:
        obj = versions.shape(ctx, kind, obj, version)
    return {**event, "api_version": version, "data": {**event["data"], "object": obj}}


def discard(ctx: Ctx) -> None:
    """The request failed: the events it made never happened."""
    for event in ctx.emitted:
        ctx.delete("event", event["id"])
    ctx.emitted = []
    ctx.redeliveries = []


def _body(event: JSON) -> bytes:
    return (json.dumps(event, indent=2) + "\n").encode("utf-8")


def endpoint_job(ctx: Ctx, event: JSON, endpoint: JSON) -> Job:
    """The delivery of `event` to a webhook endpoint: in the endpoint's API version, signed with its
    secret at each attempt."""
    body = _body(in_version(ctx, event, endpoint["api_version"]))
    return Job(
        ctx.mode, event["id"], event["type"], endpoint["id"], endpoint["url"], str(endpoint["secret"]), body
    )


def listener_jobs(ctx: Ctx, event: JSON) -> list[Job]:
    """The pushes of `event` to every `stripe listen` session of the mode (the CLI applies `--events`
    itself), in the account's default version (the CLI's `--latest` asks for the same one here:
    listen_sessions)."""
    sessions = [
        s
        for s in ctx.acct.stripecli_sessions.values()
        if WEBHOOKS_FEATURE in s.get("features", [WEBHOOKS_FEATURE])
    ]
    body = _body(event) if sessions else b""
    return [
        Job(ctx.mode, event["id"], event["type"], s["id"], "", str(s["secret"]), body, listener=True)
        for s in sessions
    ]


def subscribed(endpoint: JSON, event: JSON) -> bool:
    """Whether `endpoint` is sent events of `event`'s type."""
    return "*" in endpoint["enabled_events"] or event["type"] in endpoint["enabled_events"]


def commit(ctx: Ctx) -> list[Job]:
    """A delivery job per matching enabled endpoint and per `stripe listen` session, for each event of
    the request, then the redeliveries it asked for (sent by the caller once the lock is released)."""
    jobs: list[Job] = []
    acct = ctx.acct
    for event in ctx.emitted:
        endpoints = [
            we
            for _id, we in sorted(acct.webhook_endpoints.items(), key=lambda kv: acct.order.get(kv[0], 0))
            if we["status"] == "enabled" and subscribed(we, event)
        ]
        event["pending_webhooks"] = len(endpoints)
        jobs.extend(endpoint_job(ctx, event, we) for we in endpoints)
        jobs.extend(listener_jobs(ctx, event))
    if ctx.emitted:
        ctx.dirty = True
    ctx.emitted = []
    jobs.extend(ctx.redeliveries)
    ctx.redeliveries = []
    return jobs
