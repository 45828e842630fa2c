"""The `/_emulator/*` routes: request log, stats, fault settings, webhook secrets and deliveries, the
hosted Checkout page, and the actions that stand in for what happens outside the API (a customer paying
on the payment page, 3-D Secure, renewals). Never subject to faults. Actions run like a request: under
the lock, in a transaction, events delivered after the lock is released."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import unquote

from . import events
from .cards import TEST_CARDS
from .context import Ctx
from .errors import JSON, EmulatorConfigError, StripeError, admin_error, no_such, unrecognized
from .pipeline import Reply
from .registry import KINDS
from .rendering import render
from .resources.checkout import expire_due
from .resources.invoices import hosted_page
from .resources.payment_pages import authenticate_payment, authenticate_setup, complete_checkout
from .resources.renewals import admin_cancel, pay_invoice, renew

if TYPE_CHECKING:
    from .app import Emulator

MAX_FLUSH_SECONDS = 120.0
Action = Callable[[Ctx, JSON, JSON], JSON]
# (first path segment, last path segment) -> (kind of the object in the middle, action)
ACTIONS: dict[tuple[str, str], tuple[str, Action]] = {
    ("checkout", "complete"): ("checkout_session", complete_checkout),
    ("payment_intents", "authenticate"): ("payment_intent", authenticate_payment),
    ("setup_intents", "authenticate"): ("setup_intent", authenticate_setup),
    ("invoices", "pay"): ("invoice", pay_invoice),
    ("subscriptions", "renew"): ("subscription", renew),
    ("subscriptions", "cancel"): ("subscription", admin_cancel),
}


def handle(emu: Emulator, method: str, path: str, body: bytes, hdrs: Mapping[str, str]) -> Reply:
    flow = _flows(emu, method, path, body, hdrs)
    if flow is not None:
        return flow
    read_or_set = _INSPECTION.get((method, path))
    if read_or_set is not None:
        return read_or_set(emu, body)
    if method == "GET" and path.startswith("/_emulator/requests/"):
        return _logged_request(emu, unquote(path.rsplit("/", 1)[1]))
    return Reply(404, unrecognized(method, path).body())


def _logged_request(emu: Emulator, request_id: str) -> Reply:
    for entry in reversed(emu.request_log()):
        if entry.get("request_id") == request_id:
            return Reply(200, entry)
    missing = StripeError(404, f"No such request: '{request_id}'", code="resource_missing")
    return Reply(404, missing.body())


def _set_faults(emu: Emulator, body: bytes) -> Reply:
    try:
        settings = json.loads(body.decode("utf-8") or "{}")
        if not isinstance(settings, dict):
            raise EmulatorConfigError("the body must be a JSON object of fault settings")
        return Reply(200, emu.set_faults(**settings))
    except ValueError as exc:  # EmulatorConfigError and JSON errors
        return Reply(400, StripeError(400, f"Invalid fault settings: {exc}").body())


def _reset_log(emu: Emulator, body: bytes) -> Reply:
    emu.reset_log()
    return Reply(200, {"ok": True})


# The log, stats, fault settings and webhook secrets: (method, path) -> answer from (emulator, body).
_INSPECTION: dict[tuple[str, str], Callable[[Emulator, bytes], Reply]] = {
    ("GET", "/_emulator/requests"): lambda emu, _body: Reply(200, emu.request_log()),
    ("GET", "/_emulator/stats"): lambda emu, _body: Reply(200, emu.stats()),
    ("GET", "/_emulator/faults"): lambda emu, _body: Reply(200, emu.faults()),
    ("POST", "/_emulator/faults"): _set_faults,
    ("GET", "/_emulator/webhook_secrets"): lambda emu, _body: Reply(200, emu.webhook_secrets()),
    ("POST", "/_emulator/reset-log"): _reset_log,
}


def _find(emu: Emulator, kind: str, obj_id: str) -> tuple[Ctx, JSON] | None:
    for mode in emu.store.accounts:
        obj = emu.store.get(mode, kind, obj_id)
        if obj is not None:
            return Ctx(emu.store, mode=mode), obj
    return None


def _run_action(
    emu: Emulator, kind: str, obj_id: str, body: bytes, hdrs: Mapping[str, str], action: Action
) -> Reply:
    try:
        args = json.loads(body.decode("utf-8") or "{}")
    except (UnicodeDecodeError, ValueError):
        args = None
    if not isinstance(args, dict):
        return Reply(400, admin_error("The body must be a JSON object.").body())
    with emu._lock, emu.store.transaction():
        found = _find(emu, kind, obj_id)
        if found is None:
            return Reply(404, no_such(KINDS[kind].noun, obj_id, "id").body())
        ctx, obj = found
        ctx.host = hdrs.get("host")
        expire_due(ctx)
        jobs = events.commit(ctx)
        try:
            result = action(ctx, obj, args)
        except StripeError as exc:
            events.discard(ctx)
            emu.store.save()
            return Reply(exc.status, exc.body())
        jobs.extend(events.commit(ctx))
        emu.store.save()
    emu.send(jobs)
    return Reply(200, result)


def _flows(emu: Emulator, method: str, path: str, body: bytes, hdrs: Mapping[str, str]) -> Reply | None:
    parts = path.split("/")[2:]  # after "/_emulator/"
    if method == "GET" and path == "/_emulator/deliveries":
        return Reply(200, {"attempts": emu.deliveries(), "pending": emu.deliverer.pending()})
    if method == "POST" and path == "/_emulator/deliveries/flush":
        try:
            args = json.loads(body.decode("utf-8") or "{}")
            timeout = float(args.get("timeout", 10.0)) if isinstance(args, dict) else -1.0
        except (UnicodeDecodeError, ValueError, TypeError):
            timeout = -1.0
        if not 0 <= timeout <= MAX_FLUSH_SECONDS:
            return Reply(400, admin_error(f'"timeout" must be between 0 and {MAX_FLUSH_SECONDS:g}.').body())
        idle = emu.flush_deliveries(timeout)
        return Reply(200, {"idle": idle, "pending": emu.deliverer.pending()})
    if len(parts) == 2 and parts[0] == "checkout" and method == "GET":
        with emu._lock, emu.store.transaction():
            found = _find(emu, "checkout_session", parts[1])
            if found is None:
                return Reply(404, no_such("checkout.session", parts[1], "id").body())
            ctx, session = found
            return Reply(
                200,
                {
                    "checkout_session": render(ctx, "checkout_session", session, ["line_items"]),
                    "complete_with": f"POST /_emulator/checkout/{session['id']}/complete "
                    '{"card": "4242424242424242"}',
                    "test_cards": {number: outcome for number, (outcome, _code) in TEST_CARDS.items()},
                },
            )
    if len(parts) == 2 and parts[0] == "invoices" and method == "GET":  # an invoice's hosted_invoice_url
        with emu._lock, emu.store.transaction():
            found = _find(emu, "invoice", unquote(parts[1]))
            if found is None:
                return Reply(404, no_such("invoice", parts[1], "id").body())
            ctx, invoice = found
            return Reply(200, hosted_page(ctx, invoice))
    if method != "POST" or len(parts) != 3:
        return None
    found_action = ACTIONS.get((parts[0], parts[2]))
    if found_action is None:
        return None
    kind, action = found_action
    return _run_action(emu, kind, unquote(parts[1]), body, hdrs, action)
