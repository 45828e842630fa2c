"""Webhook endpoints: create (the only answer with the signing `secret`), retrieve, update, delete, list."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from .. import versions
from ..common import merge_metadata, random_id
from ..context import Ctx
from ..errors import JSON, StripeError, empty, missing, param_error
from ..listing import standard_routes
from ..registry import Call, Kind, register_kind, route
from ..rendering import ordered, render


def check_webhook_url(ctx: Ctx, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise param_error(
            f"Invalid URL: {url}. The URL must be absolute and start with https:// (or http:// in test "
            "mode).",
            "url",
            "url_invalid",
        )
    if ctx.mode == "live" and parts.scheme != "https":
        raise param_error(
            f"Invalid URL: {url}. Webhook endpoints in live mode must use https://.", "url", "url_invalid"
        )


def create_webhook_endpoint(ctx: Ctx, p: JSON) -> JSON:
    if len(ctx.acct.webhook_endpoints) >= MAX_WEBHOOK_ENDPOINTS:
        raise StripeError(
            400,
            f"You have reached the maximum of {MAX_WEBHOOK_ENDPOINTS} webhook endpoints for this "
            f"account in {ctx.mode} mode.",
        )
    check_webhook_url(ctx, p["url"])
    if not p["enabled_events"]:
        raise missing("enabled_events")
    endpoint: JSON = {
        "id": ctx.fresh_id("we_", 24),
        "object": "webhook_endpoint",
        "api_version": versions.requested(p["api_version"]) if p.get("api_version") else None,
        "application": None,
        "created": int(time.time()),
        "description": p.get("description") or None,
        "enabled_events": list(dict.fromkeys(p["enabled_events"])),
        "livemode": ctx.mode == "live",
        "metadata": merge_metadata({}, p.get("metadata"), "metadata"),
        "secret": random_id("whsec_", 32),
        "status": "enabled",
        "url": p["url"],
    }
    ctx.put("webhook_endpoint", endpoint)
    return endpoint


def update_webhook_endpoint(ctx: Ctx, endpoint: JSON, p: JSON) -> None:
    changes: JSON = {}
    if "url" in p:
        check_webhook_url(ctx, p["url"])
        changes["url"] = p["url"]
    if "enabled_events" in p:
        if not p["enabled_events"]:
            raise empty("enabled_events")
        changes["enabled_events"] = list(dict.fromkeys(p["enabled_events"]))
    if "disabled" in p:
        changes["status"] = "disabled" if p["disabled"] else "enabled"
    if "description" in p:
        changes["description"] = p["description"] or None
    if "metadata" in p:
        changes["metadata"] = merge_metadata(endpoint["metadata"], p["metadata"], "metadata")
    endpoint.update(changes)


MAX_WEBHOOK_ENDPOINTS = 16


def _render(ctx: Ctx, obj: JSON, out: JSON, groups: dict[str, list[str]], depth: int) -> dict[str, list[str]]:
    out.pop("secret", None)  # Stripe returns the signing secret only when creating the endpoint
    return groups


register_kind(
    Kind(
        "webhook_endpoint",
        "webhook_endpoints",
        noun="webhook endpoint",
        path="/v1/webhook_endpoints",
        render=_render,
    )
)
standard_routes("webhook_endpoint")


@route("POST", "/v1/webhook_endpoints", "webhook_endpoint.create")
def _create(ctx: Ctx, call: Call) -> JSON:
    endpoint = create_webhook_endpoint(ctx, call.params)
    out = render(ctx, "webhook_endpoint", endpoint, call.expand)
    out["secret"] = endpoint["secret"]
    return ordered(out)


# Alike in shape to invoicing's `_pay`; not `update_route`: Stripe sends no webhook_endpoint.updated event.
@route("POST", "/v1/webhook_endpoints/{id}", "webhook_endpoint.update")
def _update(ctx: Ctx, call: Call) -> JSON:
    endpoint = ctx.need("webhook_endpoint", call.ids[0])
    update_webhook_endpoint(ctx, endpoint, call.params)
    return render(ctx, "webhook_endpoint", endpoint, call.expand)


@route("DELETE", "/v1/webhook_endpoints/{id}", "webhook_endpoint.delete")
def _delete(ctx: Ctx, call: Call) -> JSON:
    obj_id = call.ids[0]
    ctx.need("webhook_endpoint", obj_id)
    ctx.delete("webhook_endpoint", obj_id)
    return {"id": obj_id, "object": "webhook_endpoint", "deleted": True}
