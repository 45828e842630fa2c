"""`stripe logs tail` against the emulator: its request log, as the CLI's `request_logs` websocket
feature carries it (stripe-cli pkg/logtailing, pkg/websocket/request_log_messages.go).

* The session (`POST /v1/stripecli/sessions`, `websocket_features[]=request_logs`) carries the CLI's
  filters as one JSON string, `filters`: `filter_http_method`, `filter_request_path`,
  `filter_status_code`, `filter_status_code_type` (the start of the range: "200", "400", "500"),
  `filter_request_status` (`SUCCEEDED`: 200, 201, 202; `FAILED`: the others), `filter_source` (`API`,
  `DASHBOARD`: every request here came through the API), `filter_account` (Connect: not applied, with
  `display_connect_filter_warning`, as Stripe answers an account without Connect) and
  `filter_ip_address` (refused: the emulator does not record it). A filter lists the values accepted;
  the filters all apply.
* Each request of the session's mode is a text message `{"type": "request_log_event",
  "request_log_id": "resp_…", "event_payload": <JSON: created_at, livemode, method, request_id, status,
  url (the path), and for an error its `error` (type, code, decline_code, message, param, charge)>}`;
  the CLI answers `event_ack` (dropped) and prints `<time> [<status>] <method> <url> [<request id>]`.
* Only requests that were authenticated are an account's: a refused key, a request cut short by an
  injected fault before it ran, or an admin route (`/_emulator/…`) is never tailed."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from .common import random_id
from .errors import JSON, param_error, unmodelled

REQUEST_LOGS_FEATURE = "request_logs"
SUCCEEDED = frozenset({200, 201, 202})
_ERROR_FIELDS = ("type", "charge", "code", "decline_code", "message", "param")


def _status_type(entry: JSON) -> str:
    return f"{int(entry['status']) // 100}00"


def _request_status(entry: JSON) -> str:
    return "SUCCEEDED" if entry["status"] in SUCCEEDED else "FAILED"


def _path_matches(entry: JSON, patterns: list[str]) -> bool:
    return any(re.fullmatch(re.escape(p).replace(r"\*", ".*"), str(entry["path"])) for p in patterns)


# What each filter reads of a request-log entry, upper-cased where the CLI's values are.
_FIELDS: Mapping[str, Callable[[JSON], str]] = {
    "filter_http_method": lambda entry: str(entry["method"]).upper(),
    "filter_status_code": lambda entry: str(entry["status"]),
    "filter_status_code_type": _status_type,
    "filter_request_status": _request_status,
    "filter_source": lambda entry: "API",
}
_IGNORED = frozenset({"filter_account"})  # Connect: not applied (display_connect_filter_warning)


def parse_filters(raw: str | None) -> tuple[JSON, bool]:
    """The session's filters (each a list of strings), and whether to warn that the Connect account
    filter is not applied; a filter the emulator cannot apply is refused."""
    try:
        filters = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise param_error(f"Invalid filters: {exc}", "filters") from exc
    if not isinstance(filters, dict):
        raise param_error("Invalid filters: a JSON object is expected.", "filters")
    known = {*_FIELDS, *_IGNORED, "filter_request_path"}
    for name, values in filters.items():
        if name not in known and name != "filter_ip_address":
            raise param_error(f"Invalid filters: unknown filter {name}.", "filters")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise param_error(f"Invalid filters: {name} must be a list of strings.", "filters")
    if filters.get("filter_ip_address"):
        raise unmodelled("filters[filter_ip_address]")
    warn = bool(filters.get("filter_account"))
    return {k: [str(v) for v in vs] for k, vs in filters.items() if vs and k not in _IGNORED}, warn


def tailed(entry: JSON, livemode: bool, filters: JSON) -> bool:
    """Whether a session of that mode with those filters is sent the request-log entry."""
    if entry.get("livemode") is not livemode or not entry.get("status"):
        return False
    for name, accepted in filters.items():
        if name == "filter_request_path":
            if not _path_matches(entry, accepted):
                return False
        elif _FIELDS[name](entry) not in {a.upper() for a in accepted}:
            return False
    return True


def message(entry: JSON) -> str:
    """The `request_log_event` text message of one request-log entry."""
    payload: dict[str, Any] = {
        "created_at": int(entry["created"]),
        "livemode": entry["livemode"],
        "method": entry["method"],
        "request_id": entry["request_id"],
        "status": entry["status"],
        "url": entry["path"],
    }
    response = entry.get("response")
    error = response.get("error") if isinstance(response, dict) else None
    if isinstance(error, dict):
        payload["error"] = {k: str(error[k]) for k in _ERROR_FIELDS if error.get(k) is not None}
    return json.dumps(
        {
            "type": "request_log_event",
            "request_log_id": random_id("resp_", 24),
            "event_payload": json.dumps(payload),
        }
    )
