"""The Stripe CLI's private session API, as `stripe listen` calls it (stripe-cli pkg/stripeauth):
`POST /v1/stripecli/sessions` with `device_name`, `websocket_features[]` and the `forward_*_url`s it
was given; the answer names the websocket to connect to (`websocket_url`, `websocket_id`,
`websocket_authorized_feature`), how often to reconnect (`reconnect_delay`, seconds), the API versions
(`default_version`, `latest_version`) and the signing `secret` of the events it will be pushed. The
secret belongs to the account, not the session: every session of a mode gets the same one, as on
Stripe, so `stripe listen --print-secret` prints what a later `stripe listen` signs with.

Features: `webhooks` (snapshot events, what the emulator emits), for `stripe listen`, beside which
`v2_events` (thin events, which the CLI 1.5x asks for unless `--all-snapshot` or `--events` says
otherwise) is accepted and never used, as the emulator emits no thin event; or `request_logs` alone,
for `stripe logs tail` (with its `filters`: `..request_logs`), which is sent the account's requests
instead. Anything else is refused as not modelled. `websocket_authorized_feature` echoes the features
asked for, comma-separated (the CLI only passes it back in the websocket's query string;
Stripe's exact value is not known).

A session is kept (in the state file too) until MAX_SESSIONS newer ones of its mode exist; a CLI
whose session was dropped is answered "Unknown WebSocket ID." at its next connection and asks for a
new session, as when a Stripe session expires. `listen_sessions` serves the websocket."""

from __future__ import annotations

import secrets
import time

import stripe

from ..context import Ctx
from ..errors import JSON, param_error
from ..events import WEBHOOKS_FEATURE
from ..params import PARAM_SPECS, Spec
from ..registry import Call, Kind, register_kind, route
from ..request_logs import REQUEST_LOGS_FEATURE, parse_filters

WEBSOCKET_PATH = "/stripecli/websocket"
WEBHOOK_FEATURES = frozenset({WEBHOOKS_FEATURE, "v2_events"})
RECONNECT_DELAY_S = 60  # the CLI closes and reopens its websocket this often (its own default too)
MAX_SESSIONS = 20  # per mode
_SECRET_ROW = "stripecli"  # the account's side-table row holding the CLI signing secret

register_kind(Kind("stripecli_session", "stripecli_sessions", noun="stripecli session"))

_STR = Spec("str")
PARAM_SPECS["stripecli_session.create"] = Spec(
    "object",
    fields={
        "device_name": _STR,
        "websocket_features": Spec("list", item=_STR),
        "filters": _STR,
        "forward_to_url": _STR,
        "forward_connect_to_url": _STR,
        "forward_thin_to_url": _STR,
        "forward_thin_connect_to_url": _STR,
    },
)


def account_secret(ctx: Ctx) -> str:
    """The mode's CLI signing secret (`whsec_` and 64 hex digits, as Stripe's), made on first use."""
    row = ctx.internal(_SECRET_ROW)
    if "secret" not in row:
        row["secret"] = "whsec_" + secrets.token_hex(32)
    return str(row["secret"])


def _drop_oldest_sessions(ctx: Ctx) -> None:
    sessions = ctx.acct.stripecli_sessions
    by_age = sorted(sessions, key=lambda session_id: ctx.acct.order.get(session_id, 0))
    for session_id in by_age[: max(0, len(by_age) - MAX_SESSIONS + 1)]:
        ctx.delete("stripecli_session", session_id)


def _check_features(features: list[str]) -> None:
    """`webhooks` (with `v2_events` or not: `stripe listen`) or `request_logs` alone (`stripe logs tail`)."""
    if features == [REQUEST_LOGS_FEATURE] or (
        WEBHOOKS_FEATURE in features and set(features) <= WEBHOOK_FEATURES
    ):
        return
    raise param_error(
        f"The websocket features {features} are valid for Stripe, but this Stripe emulator models only "
        f"`{WEBHOOKS_FEATURE}` (`stripe listen` of snapshot events, beside which `v2_events` is accepted "
        f"and never used) and `{REQUEST_LOGS_FEATURE}` alone (`stripe logs tail`): not thin events alone.",
        "websocket_features",
    )


@route("POST", "/v1/stripecli/sessions", "stripecli_session.create")
def create_session(ctx: Ctx, call: Call) -> JSON:
    features = [str(f) for f in call.params.get("websocket_features") or []]
    _check_features(features)
    filters: JSON = {}
    connect_warning = False
    if features == [REQUEST_LOGS_FEATURE]:
        filters, connect_warning = parse_filters(call.params.get("filters"))
    _drop_oldest_sessions(ctx)
    session: JSON = {
        "id": ctx.fresh_id("cliws_", 24),
        "webhook_id": ctx.fresh_id("we_", 24),
        "created": int(time.time()),
        "device_name": call.params.get("device_name"),
        "secret": account_secret(ctx),
        "features": features,
        "filters": filters,
    }
    ctx.put("stripecli_session", session)
    return {
        "default_version": stripe.api_version,
        "display_connect_filter_warning": connect_warning,
        "latest_version": stripe.api_version,
        "reconnect_delay": RECONNECT_DELAY_S,
        "secret": session["secret"],
        "websocket_authorized_feature": ",".join(features),
        "websocket_id": session["id"],
        "websocket_url": f"ws://{ctx.host or '127.0.0.1'}{WEBSOCKET_PATH}",
    }
