"""Events as a resource: retrieve and list (`type` with `*` wildcards, `types[]`), and retry (`stripe
events resend`: the same event sent again to one webhook endpoint or to the `stripe listen` sessions).
Emitting them is `..events`; delivering them, `..delivery`."""

from __future__ import annotations

import re
import time

from ..context import Ctx
from ..delivery import Job
from ..errors import JSON, StripeError, param_error
from ..events import endpoint_job, listener_jobs, subscribed
from ..listing import list_objects, standard_routes
from ..params import MODELLED_PARAMS, PARAM_SPECS, Spec
from ..registry import Call, Kind, register_kind, route
from ..rendering import render


def _matches(obj: JSON, p: JSON) -> bool:
    if "types" in p and obj["type"] not in p["types"]:
        return False
    wanted = p.get("type")
    return wanted is None or re.fullmatch(re.escape(wanted).replace(r"\*", ".*"), obj["type"]) is not None


register_kind(Kind("event", "events", path="/v1/events", matches=_matches))
standard_routes("event", listing=False)


@route("GET", "/v1/events", "event.list")
def _list(ctx: Ctx, call: Call) -> JSON:
    if "type" in call.params and "types" in call.params:
        raise param_error(
            "You may only specify one of these parameters: type, types.", "types", "parameters_exclusive"
        )
    return list_objects(ctx, "event", call.params, call.expand)


# `stripe events resend` (stripe-cli pkg/cmd/resource/events_resend.go): `POST /v1/events/{id}/retry`
# with `webhook_endpoint=we_…`, or `for_stripecli=true` when no endpoint is named; `account` only for
# Connect (refused: not modelled). Stripe has no SDK method for it, so its parameters are listed here.
_STR = Spec("str")
PARAM_SPECS["event.retry"] = Spec(
    "object",
    fields={
        "webhook_endpoint": _STR,
        "for_stripecli": Spec("bool"),
        "account": _STR,
        "expand": Spec("list", item=_STR),
    },
)
MODELLED_PARAMS["event.retry"] = frozenset({"webhook_endpoint", "for_stripecli", "expand"})
RESEND_WINDOW_S = 30 * 86400  # "You can only resend events that have been created within the last 30 days."


@route("POST", "/v1/events/{id}/retry", "event.retry")
def _retry(ctx: Ctx, call: Call) -> JSON:
    """Send the event again, the same id and payload, to one webhook endpoint (in its API version,
    signed anew with its secret) or to the `stripe listen` sessions; the answer is the event."""
    event = ctx.get("event", call.ids[0])
    if event is None or event["created"] < time.time() - RESEND_WINDOW_S:
        # Stripe's words for an unknown event and for one too old to resend (stripe-cli issue #923).
        raise StripeError(404, f"No such notification: '{call.ids[0]}'", code="resource_missing", param="id")
    endpoint_id = call.params.get("webhook_endpoint")
    if endpoint_id is not None and call.params.get("for_stripecli"):
        raise param_error(
            "You may only specify one of these parameters: webhook_endpoint, for_stripecli.",
            "for_stripecli",
            "parameters_exclusive",
        )
    if endpoint_id is not None:
        ctx.redeliveries.append(_endpoint_redelivery(ctx, event, str(endpoint_id)))
    elif call.params.get("for_stripecli"):
        ctx.redeliveries.extend(listener_jobs(ctx, event))
    else:
        raise param_error(
            "Name the destination: `webhook_endpoint` (a webhook endpoint's id) or `for_stripecli=true` "
            "(the running `stripe listen` sessions).",
            "webhook_endpoint",
            "parameter_missing",
        )
    return render(ctx, "event", event, call.expand)


def _endpoint_redelivery(ctx: Ctx, event: JSON, endpoint_id: str) -> Job:
    """The redelivery of `event` to the endpoint, which must exist, be enabled and take its type."""
    endpoint = ctx.need("webhook_endpoint", endpoint_id, "webhook_endpoint")
    if endpoint["status"] != "enabled":
        raise param_error(
            f"The webhook endpoint {endpoint_id} is disabled: enable it to resend events to it.",
            "webhook_endpoint",
        )
    if not subscribed(endpoint, event):
        raise param_error(
            f"The webhook endpoint {endpoint_id} is not enabled for `{event['type']}` events: "
            "an event is resent only to an endpoint that receives its type.",
            "webhook_endpoint",
        )
    return endpoint_job(ctx, event, endpoint)
