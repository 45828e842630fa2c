"""The emulator's side of `stripe listen`, without the CLI: `POST /v1/stripecli/sessions` and the
websocket, driven as the CLI drives them (stripe-cli pkg/stripeauth, pkg/websocket) with the
`websockets` client. tests/test_stripe_cli_listen.py runs the real CLI against the same code."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import requests
import stripe
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from reconciler.sandbox.emulator import RunningEmulator, start_in_thread

from conftest import TEST_KEY

LIVE_KEY = "sk_live_kuployTests000000000000000000"
SUBPROTOCOL = Subprotocol("stripecli-devproxy-v1")


def new_session(
    url: str, key: str = TEST_KEY, features: tuple[str, ...] = ("webhooks",)
) -> requests.Response:
    form = [("device_name", "test-device"), *(("websocket_features[]", f) for f in features)]
    return requests.post(f"{url}/v1/stripecli/sessions", data=form, auth=(key, ""), timeout=30)


def session_of(url: str, key: str = TEST_KEY) -> dict[str, Any]:
    answer = new_session(url, key)
    assert answer.status_code == 200, answer.text
    return cast(dict[str, Any], answer.json())


@contextmanager
def websocket(session: dict[str, Any]) -> Iterator[ClientConnection]:
    """The websocket as the CLI opens it: `?websocket_feature=`, `Websocket-Id`, its subprotocol."""
    target = f"{session['websocket_url']}?websocket_feature={session['websocket_authorized_feature']}"
    headers = {"Websocket-Id": session["websocket_id"]}
    with connect(target, additional_headers=headers, subprotocols=[SUBPROTOCOL], open_timeout=30) as ws:
        yield ws


def next_event(ws: ClientConnection) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(ws.recv(timeout=30)))


def test_a_session_names_its_websocket_and_the_accounts_secret(emulator: RunningEmulator) -> None:
    first, second = session_of(emulator.url), session_of(emulator.url)
    assert first["websocket_url"] == emulator.url.replace("http://", "ws://") + "/stripecli/websocket"
    assert first["websocket_id"] != second["websocket_id"]
    assert re.fullmatch(r"whsec_[0-9a-f]{64}", first["secret"])
    assert second["secret"] == first["secret"]  # the account's, whatever the session
    assert session_of(emulator.url, LIVE_KEY)["secret"] != first["secret"]  # each mode has its own
    assert first["default_version"] == first["latest_version"] == stripe.api_version
    assert (first["websocket_authorized_feature"], first["reconnect_delay"]) == ("webhooks", 60)
    assert first["display_connect_filter_warning"] is False


def test_the_secret_survives_a_restart_with_a_state_file(tmp_path: Path) -> None:
    state = tmp_path / "stripe.json"
    with start_in_thread(state_file=state) as running:
        before = session_of(running.url)["secret"]
    with start_in_thread(state_file=state) as running:
        assert session_of(running.url)["secret"] == before


def test_a_session_needs_a_key_and_the_webhooks_or_request_logs_feature(emulator: RunningEmulator) -> None:
    assert requests.post(f"{emulator.url}/v1/stripecli/sessions", timeout=30).status_code == 401
    assert new_session(emulator.url, features=("webhooks", "v2_events")).status_code == 200
    assert new_session(emulator.url, features=("request_logs",)).status_code == 200
    for features in ((), ("v2_events",), ("webhooks", "request_logs")):
        refused = new_session(emulator.url, features=features)
        assert refused.status_code == 400, features
        assert refused.json()["error"]["param"] == "websocket_features"


def test_each_event_is_pushed_twice_signed_with_the_secret(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    """Once for the account's default version (`endpoint.api_version` null), once for the latest: the
    CLI keeps one of them, depending on `--latest`."""
    session = session_of(emulator.url)
    with websocket(session) as ws:
        assert ws.subprotocol == SUBPROTOCOL
        product = stripe_client.v1.products.create(params={"name": "Pushed"})
        default, latest = next_event(ws), next_event(ws)
        ws.send(json.dumps({"type": "event_ack", "event_id": "evt_x", "webhook_conversation_id": "wc_x"}))
    assert default["endpoint"] == {"api_version": None}
    assert latest["endpoint"] == {"api_version": stripe.api_version}
    for message in (default, latest):
        assert message["type"] == "webhook_event"
        assert message["webhook_id"].startswith("we_") and message["webhook_conversation_id"].startswith(
            "wc_"
        )
        headers = message["http_headers"]
        event = stripe.Webhook.construct_event(
            message["event_payload"], headers["Stripe-Signature"], session["secret"]
        )
        assert (event.type, event.data.object.id) == ("product.created", product.id)
        assert headers["Content-Type"] == "application/json; charset=utf-8"
        assert "Content-Length" not in headers  # the CLI's HTTP client sets its own
    assert default["webhook_conversation_id"] != latest["webhook_conversation_id"]


def test_an_unknown_websocket_id_is_refused_as_stripe_words_it(emulator: RunningEmulator) -> None:
    """The CLI reads this message to ask for a new session (pkg/websocket ErrUnknownID)."""
    session = {**session_of(emulator.url), "websocket_id": "cliws_unknown"}
    with pytest.raises(InvalidStatus) as refused, websocket(session):
        pass
    assert refused.value.response.status_code == 400
    assert json.loads(refused.value.response.body) == {"error": {"message": "Unknown WebSocket ID."}}


def test_events_made_while_the_cli_reconnects_are_sent_when_it_is_back(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    session = session_of(emulator.url)
    with websocket(session):
        pass  # connected once, then closed, as the CLI does every `reconnect_delay` seconds
    stripe_client.v1.customers.create(params={"email": "away@example.com"})
    with websocket(session) as ws:
        assert json.loads(next_event(ws)["event_payload"])["type"] == "customer.created"


def test_events_before_a_session_ever_connected_are_not_kept(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    """`stripe listen --print-secret` makes a session that never connects: nothing piles up for it."""
    session = session_of(emulator.url)
    stripe_client.v1.customers.create(params={"email": "early@example.com"})
    with websocket(session) as ws:
        stripe_client.v1.products.create(params={"name": "Later"})
        assert json.loads(next_event(ws)["event_payload"])["type"] == "product.created"


def test_stopping_the_emulator_closes_the_websocket() -> None:
    running = start_in_thread()
    try:
        ws_context = websocket(session_of(running.url))
        ws = ws_context.__enter__()
    finally:
        running.stop()
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    ws_context.__exit__(None, None, None)


def logs_session(url: str, filters: dict[str, list[str]] | None = None) -> requests.Response:
    """A session as `stripe logs tail` asks for it: the `request_logs` feature, its filters as JSON."""
    form = [
        ("device_name", "test-device"),
        ("websocket_features[]", "request_logs"),
        ("filters", json.dumps(filters or {})),
    ]
    return requests.post(f"{url}/v1/stripecli/sessions", data=form, auth=(TEST_KEY, ""), timeout=30)


def test_a_request_logs_session_is_sent_each_request_of_its_mode(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    session = logs_session(emulator.url).json()
    assert session["websocket_authorized_feature"] == "request_logs"
    with websocket(session) as ws:
        requests.get(f"{emulator.url}/v1/products", auth=(LIVE_KEY, ""), timeout=30)  # another mode's
        requests.get(f"{emulator.url}/v1/products", auth=("sk_bad", ""), timeout=30)  # nobody's
        product = stripe_client.v1.products.create(params={"name": "Logged"})
        with pytest.raises(stripe.InvalidRequestError) as missing:
            stripe_client.v1.products.retrieve("prod_missing")
        created, failed = next_event(ws), next_event(ws)
        stripe_client.v1.products.create(params={"name": "Pushed to no webhook session"})
        assert next_event(ws)["type"] == "request_log_event"  # no webhook_event on this session
    assert created["type"] == "request_log_event" and created["request_log_id"].startswith("resp_")
    logged = json.loads(created["event_payload"])
    assert product.last_response is not None
    assert logged == {
        "created_at": logged["created_at"],
        "livemode": False,
        "method": "POST",
        "request_id": product.last_response.request_id,
        "status": 200,
        "url": "/v1/products",
    }
    error = json.loads(failed["event_payload"])
    assert (error["status"], error["url"]) == (404, "/v1/products/prod_missing")
    assert error["request_id"] == missing.value.request_id
    assert error["error"] == {
        "code": "resource_missing",
        "message": "No such product: 'prod_missing'",
        "param": "id",
        "type": "invalid_request_error",
    }


def test_a_request_logs_session_applies_the_clis_filters(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    filters = {"filter_http_method": ["GET"], "filter_status_code_type": ["400"], "filter_account": []}
    session = logs_session(emulator.url, filters).json()
    assert session["display_connect_filter_warning"] is False
    with websocket(session) as ws:
        stripe_client.v1.products.create(params={"name": "A POST"})
        stripe_client.v1.products.list()  # a GET answered 200
        with pytest.raises(stripe.InvalidRequestError):
            stripe_client.v1.products.retrieve("prod_missing")
        logged = json.loads(next_event(ws)["event_payload"])  # not the POST nor the GET before it
    assert (logged["method"], logged["status"]) == ("GET", 404)
    by_path = logs_session(emulator.url, {"filter_request_path": ["/v1/customers*"]}).json()
    with websocket(by_path) as ws:
        stripe_client.v1.products.list()
        stripe_client.v1.customers.list()
        assert json.loads(next_event(ws)["event_payload"])["url"] == "/v1/customers"
    connect = logs_session(emulator.url, {"filter_account": ["connect_in"]}).json()
    assert connect["display_connect_filter_warning"] is True  # not applied, as for a non-Connect account
    refused = logs_session(emulator.url, {"filter_ip_address": ["127.0.0.1"]})
    assert refused.status_code == 400 and "does not model" in refused.json()["error"]["message"]
