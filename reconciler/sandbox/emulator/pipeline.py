"""The one request pipeline of the Stripe routes, in order: fault draw (a fault before execution ends
the request here), form decoding, authentication (the key's mode), routing through the route table,
parameter checking, idempotency (replay or fingerprint check), expiry of due Checkout Sessions,
execution by the resource handler, events committed or discarded, state saved, request logged. Every
step reads and writes one explicit `Ctx`; nothing about a request is kept on the emulator."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import stripe

from . import events, versions
from .common import random_id
from .context import Ctx
from .delivery import Job
from .errors import (
    JSON,
    StripeError,
    api_error,
    param_error,
    rate_limited,
    unmodelled,
    unmodelled_endpoint,
    unrecognized,
)
from .params import MODELLED_PARAMS, PARAM_SPECS, decode_form, validate_params
from .registry import ROUTES, UNMODELLED_ENDPOINTS, Call, Route
from .resources.checkout import expire_due

if TYPE_CHECKING:
    from .app import Emulator

_KEY_RE = re.compile(r"^(sk|rk)_(test|live)_[A-Za-z0-9]{1,247}$")


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    close: bool = False
    hang_s: float = 0.0  # with `drop`: how long the connection hangs before it is closed
    drop: bool = False  # close the connection without any answer (a timeout fault)


def run(
    emu: Emulator, method: str, path: str, query: str, hdrs: Mapping[str, str], body: bytes
) -> tuple[Reply, list[Job]]:
    """One Stripe request, under the emulator's lock. Returns the answer and the deliveries to send."""
    ctx = Ctx(
        emu.store,
        request_id=random_id("req_", 14),
        host=hdrs.get("host"),
        version=hdrs.get("stripe-version"),
        fault=emu._draw_fault(),
    )
    ctx.log = {
        "request_id": ctx.request_id,
        "created": int(time.time()),
        "method": method,
        "path": path,
        "query": {},
        "form": {},
        "idempotency_key": hdrs.get("idempotency-key"),
        "status": 0,
        "response": None,
        "stripe_version": hdrs.get("stripe-version"),
        "fault": ctx.fault,
    }
    idem_key = hdrs.get("idempotency-key")
    if idem_key is not None and method in ("POST", "DELETE"):
        ctx.headers["Idempotency-Key"] = idem_key
    if ctx.fault is not None and ctx.fault != "error_after_write":
        return _fault_before_execution(emu, ctx, method, query, body), []
    jobs: list[Job] = []
    with emu.store.transaction():
        status, payload, saved_500 = _execute(emu, ctx, method, path, query, hdrs, body, jobs)
        if ctx.dirty:
            emu.store.save()
    if status >= 500 and (saved_500 or "Idempotent-Replayed" in ctx.headers):
        # A retry with this key would replay the same 500: tell the SDK not to retry.
        ctx.headers["Stripe-Should-Retry"] = "false"
    return _answer(emu, ctx, hdrs, status, payload), jobs


def request_log_url(host: str | None, request_id: str) -> str:
    """Where an error's request can be read back: the emulator's own request log, as Stripe's errors
    point at the Dashboard's (`https://dashboard.stripe.com/test/logs/req_…`)."""
    return f"http://{host or '127.0.0.1'}/_emulator/requests/{request_id}"


def _with_log_url(ctx: Ctx, payload: Any) -> Any:
    """An error body gets `request_log_url`, as every Stripe error does; a replay keeps the original's."""
    if not (isinstance(payload, dict) and isinstance(payload.get("error"), dict)):
        return payload
    if "request_log_url" in payload["error"]:
        return payload
    request_id = ctx.headers.get("Original-Request", str(ctx.request_id))
    return {"error": {**payload["error"], "request_log_url": request_log_url(ctx.host, request_id)}}


def _answer(emu: Emulator, ctx: Ctx, hdrs: Mapping[str, str], status: int, payload: Any) -> Reply:
    payload = _with_log_url(ctx, payload)
    headers = {"Request-Id": str(ctx.request_id), **ctx.headers}
    headers["Stripe-Version"] = ctx.version or hdrs.get("stripe-version") or stripe.api_version
    ctx.log["status"] = status
    ctx.log["response"] = payload
    emu.requests.append(json.loads(json.dumps(ctx.log, default=str)))
    return Reply(status, payload, headers, delay_s=emu.fault_state.current.latency_ms / 1000)


def _fault_before_execution(emu: Emulator, ctx: Ctx, method: str, query: str, body: bytes) -> Reply:
    """A rate limit, an error or a hang before the request runs: no state is read or written and no
    idempotent result is saved (a retry with the same key executes)."""
    with contextlib.suppress(StripeError, UnicodeDecodeError):  # best effort: only for the log
        ctx.log["query"] = decode_form(query)
        if method == "POST" and body:
            ctx.log["form"] = decode_form(body.decode("utf-8"))
    if ctx.fault == "timeout":
        ctx.log["status"] = None
        emu.requests.append(json.loads(json.dumps(ctx.log, default=str)))
        return Reply(0, None, drop=True, hang_s=emu.fault_state.current.hang_seconds)
    error = rate_limited() if ctx.fault == "rate_limited" else api_error(str(ctx.request_id))
    headers = {"Request-Id": str(ctx.request_id), **ctx.headers}
    headers["Stripe-Version"] = str(ctx.log["stripe_version"] or stripe.api_version)
    body = _with_log_url(ctx, error.body())
    ctx.log["status"], ctx.log["response"] = error.status, body
    emu.requests.append(json.loads(json.dumps(ctx.log, default=str)))
    return Reply(error.status, body, headers, delay_s=emu.fault_state.current.latency_ms / 1000)


@dataclass(frozen=True)
class _Request:
    """A Stripe request decoded, authenticated and routed: what its handler and its idempotent result
    need."""

    method: str
    path: str
    route: Route
    ids: tuple[str, ...]
    params: JSON
    scope: str  # whose idempotency keys: a hash of the API key
    key: str | None  # the Idempotency-Key header
    fingerprint: str  # of method, path and params, when the request is idempotent; else ""

    @property
    def idempotent(self) -> bool:
        """Whether its result is saved under its key (only POST and DELETE, as Stripe)."""
        return self.key is not None and self.method in ("POST", "DELETE")


def _execute(
    emu: Emulator,
    ctx: Ctx,
    method: str,
    path: str,
    query: str,
    hdrs: Mapping[str, str],
    body: bytes,
    jobs: list[Job],
) -> tuple[int, Any, bool]:
    """Run the request; returns the status, the body and whether a 5xx was saved as the idempotent
    result. A fault here is None or "error_after_write": the request runs (and any write is
    kept), then the client gets a 500 that is saved under the idempotency key, as Stripe does."""
    try:
        request = _prepare(ctx, method, path, query, hdrs, body)
        replay = _saved_result(emu, request)
        if replay is not None:
            return *_replayed(ctx, replay), False
        status, payload = _run_handler(ctx, request, jobs)
        return status, payload, _save_result(emu, ctx, request, status, payload)
    except StripeError as exc:
        if exc.status == 401:
            ctx.headers["WWW-Authenticate"] = 'Basic realm="Stripe"'
        # It failed before executing: there is no write for an error to come after. The client gets
        # the real error, and the log says no fault was applied.
        ctx.log["fault"] = None
        return exc.status, exc.body(), False
    except Exception as exc:  # never a traceback to the client
        events.discard(ctx)
        return (
            500,
            StripeError(
                500,
                f"An unknown error occurred in the Stripe emulator: {type(exc).__name__}: {exc}",
                type_="api_error",
            ).body(),
            False,
        )


def _prepare(ctx: Ctx, method: str, path: str, query: str, hdrs: Mapping[str, str], body: bytes) -> _Request:
    """Decode the query and form (into the log), authenticate, read the version, route, and
    fingerprint an idempotent request; each step's error is the request's answer."""
    ctx.log["query"] = decode_form(query)
    if method == "POST" and body:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise param_error("Invalid request: the body is not valid UTF-8.", None) from exc
        ctx.log["form"] = decode_form(text)
    api_key = authenticate(hdrs)
    ctx.mode = "live" if "_live_" in api_key else "test"
    ctx.log["livemode"] = ctx.livemode  # whose request it is (`stripe logs tail`: request_logs)
    ctx.version = versions.requested(ctx.version)
    found, ids = match_route(method, path)
    params = {**ctx.log["query"], **ctx.log["form"]} if method == "POST" else dict(ctx.log["query"])
    scope = hashlib.sha256(api_key.encode()).hexdigest()[:24]
    request = _Request(method, path, found, ids, params, scope, hdrs.get("idempotency-key"), "")
    if not request.idempotent:
        return request
    assert request.key is not None
    if len(request.key) > 255:
        raise param_error("Idempotency keys cannot be longer than 255 characters.", None)
    fingerprint = hashlib.sha256(json.dumps([method, path, params], sort_keys=True).encode()).hexdigest()
    return replace(request, fingerprint=fingerprint)


def _saved_result(emu: Emulator, request: _Request) -> JSON | None:
    """The result saved under the request's idempotency key, if any; a key first used on another
    endpoint or with other parameters is refused."""
    if not request.idempotent:
        return None
    assert request.key is not None
    replay = emu.store.idempotency.get(request.scope, {}).get(request.key)
    if replay is None:
        return None
    first_path = replay.get("path", request.path)
    if first_path != request.path:
        raise StripeError(
            400,
            "Keys for idempotent requests can only be used for the same endpoint they were first "
            f"used for ('{first_path}' vs '{request.path}'). Try using a key other than '{request.key}' if "
            "you meant to execute a different request.",
            type_="idempotency_error",
            cacheable=False,
        )
    if replay["fingerprint"] != request.fingerprint:
        raise StripeError(
            400,
            "Keys for idempotent requests can only be used with the same parameters they were "
            f"first used with. Try using a key other than '{request.key}' if you meant to execute "
            "a different request.",
            type_="idempotency_error",
            cacheable=False,
        )
    return replay


def _replayed(ctx: Ctx, replay: JSON) -> tuple[int, Any]:
    """The saved answer again, marked as a replay (an after-write fault turns it into a 500)."""
    status, payload = int(replay["status"]), replay["response"]
    ctx.headers["Idempotent-Replayed"] = "true"
    ctx.headers["Original-Request"] = str(replay["request_id"])
    if ctx.fault == "error_after_write":
        status, payload = 500, api_error(str(ctx.request_id)).body()
    return status, payload


def _run_handler(ctx: Ctx, request: _Request, jobs: list[Job]) -> tuple[int, Any]:
    """Expire due sessions, run the route's handler and commit its events (or discard them with a
    failure that keeps nothing). A cacheable error is the answer; another is raised."""
    expire_due(ctx)  # sessions that expire just now: automatic events, kept whatever happens next
    jobs.extend(events.commit(ctx))
    ctx.idempotency_key = request.key
    ctx.acting = True
    try:
        status, payload = 200, dispatch(ctx, request.route, request.ids, request.params)
        ctx.dirty = ctx.dirty or request.method != "GET" or bool(ctx.emitted)
    except StripeError as exc:
        if exc.kept:  # a declined payment: what it created stays, its events are sent
            ctx.dirty = True
        else:
            events.discard(ctx)
        if not exc.cacheable:
            raise
        status, payload = exc.status, exc.body()
    finally:
        ctx.acting = False
    jobs.extend(events.commit(ctx))
    if ctx.fault == "error_after_write":  # executed (and kept); the answer is lost to a 500
        status, payload = 500, api_error(str(ctx.request_id)).body()
    return status, payload


def _save_result(emu: Emulator, ctx: Ctx, request: _Request, status: int, payload: Any) -> bool:
    """Save an idempotent request's answer under its key; returns whether a 5xx was saved."""
    if not request.idempotent:
        return False
    assert request.key is not None
    emu.store.idempotency.setdefault(request.scope, {})[request.key] = {
        "path": request.path,
        "fingerprint": request.fingerprint,
        "status": status,
        "response": payload,
        "request_id": ctx.request_id,
    }
    ctx.dirty = True
    return status >= 500


def match_route(method: str, path: str) -> tuple[Route, tuple[str, ...]]:
    """The route for `method path` and the ids in its path (unquoted), or Stripe's 404; a Stripe
    endpoint not modelled is refused (400), never taken for a modelled route's `{id}`."""
    if (method, path) in UNMODELLED_ENDPOINTS:
        raise unmodelled_endpoint(method, path)
    for candidate in ROUTES:
        if candidate.method != method:
            continue
        m = candidate.regex.match(path)
        if m is None:
            continue
        ids = tuple(unquote(g) for g in m.groups())
        if all(ids) and not any("/" in i for i in ids):
            return candidate, ids
    raise unrecognized(method, path)


def dispatch(ctx: Ctx, found: Route, ids: tuple[str, ...], raw: JSON) -> JSON:
    """Check the params against the route's spec and what is modelled, then run its handler."""
    params = validate_params(PARAM_SPECS[found.name], raw)
    modelled = MODELLED_PARAMS.get(found.name)
    if modelled is not None:
        for name in params:
            if name not in modelled:
                raise unmodelled(name)
    expand = [str(e) for e in params.pop("expand", None) or []]
    return found.handler(ctx, Call(ids, params, expand))


def authenticate(hdrs: Mapping[str, str]) -> str:
    auth = hdrs.get("authorization", "").strip()
    key = ""
    if auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    elif auth.lower().startswith("basic "):
        try:
            key = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8").split(":", 1)[0]
        except (ValueError, UnicodeDecodeError):
            key = ""
    elif auth:
        key = auth
    if not key:
        raise StripeError(
            401,
            "You did not provide an API key. You need to provide your API key in the Authorization "
            "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
            "https://stripe.com/docs/api#authentication for details, or we can help at "
            "https://support.stripe.com/.",
            cacheable=False,
        )
    if not _KEY_RE.match(key):
        raise StripeError(401, f"Invalid API Key provided: {_redact(key)}", cacheable=False)
    return key


def _redact(api_key: str) -> str:
    return api_key[:8] + "*" * max(len(api_key) - 12, 4) + api_key[-4:] if len(api_key) > 12 else api_key
