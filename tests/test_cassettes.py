"""The recording machinery, proven without the internet, and the cassettes compared with the emulator.

A tiny `http.server` stands in for Stripe: it answers in Stripe's shapes, echoes a fake key in an
error, puts a `whsec_` secret and an `acct_` id in a webhook endpoint. The real recording code
records it into a temporary folder (never `tests/cassettes/`, which only holds real Stripe), and the
cassette is checked for secrets, id normalisation and its header, then replayed offline.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import psycopg
import pytest
import requests
import stripe
import vcr.errors
import yaml

from reconciler import api
from reconciler.catalog import load_catalog
from reconciler.sandbox.emulator import start_in_thread
from reconciler.settings import Secret, Settings

from conftest import kuploy_plan, write_catalog
from realstripe import (
    CASSETTE_DIR,
    EMULATOR_KEY,
    HEADER_KEY,
    RECORD_HINT,
    EmulatorAnswerRefused,
    Recorder,
    compare_with_emulator,
    guard_client,
    guarded_backend,
    read_header,
    recorded_cassettes,
)

FAKE_KEY = "sk_test_51FakeKeyForTheFilterTest0000000000000000"
WRONG_KEY = "sk_test_51WrongKeyEchoedInTheError000000000000000"
FAKE_ACCOUNT = "acct_1FakeAccount00000"
FAKE_SECRET = "whsec_FakeSigningSecret0000000000000000"


def _id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


class StandIn:
    """Answers like Stripe for the few routes the filter tests use. One deliberate deviation from
    Stripe (and the emulator): a product's `description` is never stored, so a comparison has
    something to find."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qsl(self.rfile.read(length).decode() if length else "")
                status, body = stand_in.answer(self.command, self.path, dict(form), self.headers)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Request-Id", _id("req_"))
                self.send_header("Stripe-Version", self.headers.get("Stripe-Version", stripe.api_version))
                self.send_header("Stripe-Account", FAKE_ACCOUNT)
                self.send_header("Set-Cookie", f"machine_identifier={FAKE_ACCOUNT}")
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, method: str, target: str, form: dict[str, str], headers: Any) -> tuple[int, Any]:
        key = str(headers.get("Authorization", "")).removeprefix("Bearer ")
        if key != FAKE_KEY:
            return 401, {
                "error": {"message": f"Invalid API Key provided: {key}", "type": "invalid_request_error"}
            }
        split = urlsplit(target)
        query = dict(parse_qsl(split.query))
        parts = split.path.strip("/").split("/")
        metadata = {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")}
        if method == "POST" and parts == ["v1", "products"]:
            obj = {"id": _id("prod_"), "object": "product", "active": True, "default_price": None}
            obj |= {"description": None, "metadata": metadata, "name": form["name"]}
        elif method == "POST" and parts == ["v1", "prices"]:
            obj = {"id": _id("price_"), "object": "price", "active": True, "currency": form["currency"]}
            obj |= {"lookup_key": None, "metadata": metadata, "product": form["product"]}
            obj |= {
                "recurring": {"interval": form["recurring[interval]"]},
                "unit_amount": int(form["unit_amount"]),
            }
        elif method == "POST" and parts == ["v1", "webhook_endpoints"]:
            obj = {"id": _id("we_"), "object": "webhook_endpoint", "application": None, "secret": FAKE_SECRET}
            obj |= {"url": form["url"], "enabled_events": [form["enabled_events[0]"]], "metadata": metadata}
            obj |= {"description": f"events of {FAKE_ACCOUNT}", "status": "enabled"}
        elif method == "GET" and len(parts) == 3 and parts[2] in self.objects:
            return 200, self.objects[parts[2]]
        elif method == "GET" and parts == ["v1", "prices"]:
            data = [
                o
                for o in self.objects.values()
                if o["object"] == "price" and o["product"] == query["product"]
            ]
            return 200, {"object": "list", "data": data, "has_more": False, "url": "/v1/prices"}
        else:
            return 404, {
                "error": {
                    "message": f"Unrecognized request URL ({method}: {split.path}).",
                    "type": "invalid_request_error",
                }
            }
        self.objects[str(obj["id"])] = obj
        return 200, obj


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    server = StandIn()
    yield server
    server.stop()


def conversation(base: str, key: str = FAKE_KEY) -> dict[str, Any]:
    """What the filter tests ask "Stripe", through the real SDK on `http.client` (the library the
    recorder patches); returns what it answered."""
    client = stripe.StripeClient(key, base_addresses={"api": base}, http_client=stripe.UrllibClient())
    product = client.v1.products.create(
        params={"name": "Pro", "description": "For teams", "metadata": {"kuploy_plan": "pro"}}
    )
    again = client.v1.products.retrieve(product.id)
    price = client.v1.prices.create(
        params={
            "product": product.id,
            "unit_amount": 2000,
            "currency": "cad",
            "recurring": {"interval": "month"},
        }
    )
    prices = client.v1.prices.list(params={"product": product.id})
    endpoint = client.v1.webhook_endpoints.create(
        params={"url": "https://example.com/hook", "enabled_events": ["checkout.session.completed"]}
    )
    wrong = stripe.StripeClient(WRONG_KEY, base_addresses={"api": base}, http_client=stripe.UrllibClient())
    with pytest.raises(stripe.AuthenticationError) as refused:
        wrong.v1.products.retrieve(product.id)
    return {
        "product": product.id,
        "same": again.id == product.id,
        "price": price.id,
        "price_product": price.product,
        "listed": [p.id for p in prices.data],
        "endpoint": endpoint.id,
        "secret": endpoint.secret,
        "error": str(refused.value.user_message),
    }


def record(stand_in: StandIn, directory: Path) -> tuple[dict[str, Any], Path]:
    recorder = Recorder(directory, record=True, upstream=stand_in.url, run_id="filters")
    with recorder.use("stand_in"):
        answers = conversation(stand_in.url)
    return answers, directory / "stand_in.yaml"


def test_a_recording_holds_no_secret_and_only_normalised_ids(stand_in: StandIn, tmp_path: Path) -> None:
    answers, path = record(stand_in, tmp_path)
    text = path.read_text(encoding="utf-8")
    real_ids = [answers["product"], answers["price"], answers["endpoint"]]
    assert answers["secret"] == FAKE_SECRET and WRONG_KEY in answers["error"]  # the client saw them
    for leaked in [FAKE_KEY, WRONG_KEY, FAKE_SECRET, FAKE_ACCOUNT, *real_ids]:
        assert leaked not in text
    assert not re.search(r"(sk|rk|pk)_(test|live)_[A-Za-z0-9]", text)
    assert not re.search(r"whsec_[A-Za-z0-9]|acct_[A-Za-z0-9]", text)
    assert not re.search(r"(?i)authorization|x-stripe-client-user-agent|set-cookie|stripe-account", text)
    assert not re.search(r"\breq_[A-Za-z0-9]{10,}", text)
    assert "Invalid API Key provided: sk_test_[REDACTED]" in text
    assert "whsec_[REDACTED]" in text and "acct_[REDACTED]" in text

    data = yaml.safe_load(text)
    uris = [i["request"]["uri"] for i in data["interactions"]]
    assert f"{stand_in.url}/v1/products/prod_0001" in uris  # the same id in paths ...
    assert f"{stand_in.url}/v1/prices?product=prod_0001" in uris
    price_create = next(i for i in data["interactions"] if i["request"]["uri"].endswith("/v1/prices"))
    assert "product=prod_0001" in price_create["request"]["body"]  # ... in request bodies ...
    assert json.loads(price_create["response"]["body"]["string"])["product"] == "prod_0001"  # ... answers
    assert json.loads(price_create["response"]["body"]["string"])["id"] == "price_0001"

    header = read_header(path)
    assert text.startswith("# Recorded by tests/realstripe.py")
    assert next(iter(data)) == HEADER_KEY
    assert header["stripe_version"] == stripe.api_version == header["stripe_version_answered"]
    assert header["recorded_from"] == stand_in.url and header["run_id"] == "filters"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", header["recorded_at"])
    assert header["interactions"] == len(data["interactions"]) == 6


def test_a_recording_replays_offline_and_nothing_else(stand_in: StandIn, tmp_path: Path) -> None:
    _, path = record(stand_in, tmp_path)
    before = path.read_text(encoding="utf-8")
    stand_in.stop()  # nothing answers any more: only the cassette can
    replay = Recorder(tmp_path, record=False)
    with replay.use("stand_in"):
        answers = conversation(stand_in.url, key="sk_test_anyKeyWorksOnReplay0000")
        assert answers["product"] == "prod_0001" and answers["same"]
        assert (answers["price"], answers["price_product"], answers["listed"]) == (
            "price_0001",
            "prod_0001",
            ["price_0001"],
        )
        assert answers["secret"] == "whsec_[REDACTED]"
        with pytest.raises(vcr.errors.CannotOverwriteExistingCassetteException):
            urllib.request.urlopen(f"{stand_in.url}/v1/products/prod_0002", timeout=5)
    assert path.read_text(encoding="utf-8") == before  # record_mode "none" never writes


def test_the_emulator_is_never_recorded(tmp_path: Path) -> None:
    with pytest.raises(EmulatorAnswerRefused):
        Recorder(CASSETTE_DIR, record=True, upstream="http://127.0.0.1:12111")
    with start_in_thread() as emulator:
        recorder = Recorder(tmp_path, record=True, upstream=emulator.url)
        with pytest.raises(EmulatorAnswerRefused), recorder.use("emulator"):
            urllib.request.urlopen(
                urllib.request.Request(
                    f"{emulator.url}/v1/products", headers={"Authorization": f"Bearer {EMULATOR_KEY}"}
                ),
                timeout=5,
            )
    assert not (tmp_path / "emulator.yaml").exists()


class Relay:
    """Forwards to the emulator without its `Server` header: a stand-in for api.stripe.com that can
    answer a whole reconciler run, for this test's temporary cassette only."""

    def __init__(self, target: str) -> None:
        session = requests.Session()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                answer = session.request(
                    self.command,
                    target + self.path,
                    headers=dict(self.headers.items()),
                    data=body,
                    timeout=30,
                )
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in ("server", "date", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        # "localhost", not 127.0.0.1: once stopped, its port may go to the replay's RunGuard, whose
        # 127.0.0.1 address is passed through unrecorded; the names keep the two apart.
        self.url = f"http://localhost:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _scenario(settings: Settings, client: stripe.StripeClient, tmp_path: Path, run_id: str) -> list[Any]:
    """Create, then a price change, through the reconciler; what it leaves in Stripe."""
    plans = [kuploy_plan(f"free-{run_id}", None), kuploy_plan(f"pro-{run_id}", 2000)]
    path = write_catalog(tmp_path, plans)
    api.apply(settings, load_catalog(path), confirm=lambda plan: True)
    plans[1]["priceCents"] = 2500
    write_catalog(tmp_path, plans)
    api.apply(settings, load_catalog(path), confirm=lambda plan: True)
    assert not api.plan(settings, load_catalog(path)).has_changes
    (product,) = client.v1.products.list(params={"limit": 100}).data
    prices = client.v1.prices.list(params={"product": product.id, "limit": 100}).data
    return [product.id, product.default_price, sorted((p.unit_amount, p.active, p.id) for p in prices)]


def test_a_recorded_reconciler_run_replays_request_by_request(
    database_url: str, db: psycopg.Connection, tmp_path: Path
) -> None:
    """The whole real-Stripe path (guard, recorder, normalised ids, run id from the header) recorded
    from a stand-in, then replayed against nothing, on a fresh database, to the same end state."""
    run_id = "e2e00001"

    def settings(base: str) -> Settings:
        return Settings(
            database_url=Secret(database_url),
            stripe_secret_key=Secret(EMULATOR_KEY),
            stripe_api_base=base,
            lock_timeout=5,
            max_rps=1000,
            concurrency=1,
        )

    with start_in_thread() as emulator:
        relay = Relay(emulator.url)
        recorder = Recorder(tmp_path, record=True, upstream=relay.url, run_id=run_id)
        with guarded_backend(relay.url, EMULATOR_KEY, run_id, "recording", recorder, "run") as backend:
            recorded = _scenario(
                settings(backend.api_base or ""), guard_client(backend.guard, EMULATOR_KEY), tmp_path, run_id
            )
        relay.stop()

    db.execute("DROP SCHEMA public CASCADE")
    db.execute("CREATE SCHEMA public")
    assert read_header(tmp_path / "run.yaml")["run_id"] == run_id
    replay = Recorder(tmp_path, record=False, run_id=run_id)
    with guarded_backend(relay.url, EMULATOR_KEY, run_id, "replay", replay, "run") as backend:
        replayed = _scenario(
            settings(backend.api_base or ""), guard_client(backend.guard, EMULATOR_KEY), tmp_path, run_id
        )
    assert replayed[0] == "prod_0001"
    assert [p[:2] for p in replayed[2]] == [p[:2] for p in recorded[2]] == [(2000, False), (2500, True)]


# --- emulator vs recording ---------------------------------------------------------------------------


def test_the_comparison_reports_every_difference(
    stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, path = record(stand_in, tmp_path)
    differences = compare_with_emulator(path)
    assert differences == [
        "stand_in.yaml #0 POST /v1/products: product.description: stripe=None emulator='For teams'",
        "stand_in.yaml #1 GET /v1/products/prod_0001: product.description: stripe=None emulator='For teams'",
    ]
    monkeypatch.setitem(
        __import__("realstripe").ACCEPTED_DIFFERENCES, "product.description", "the stand-in drops it"
    )
    assert compare_with_emulator(path) == []


@pytest.mark.parametrize("cassette", recorded_cassettes() or [None], ids=lambda p: p.stem if p else "none")
def test_emulator_answers_like_recorded_stripe(cassette: Path | None) -> None:
    if cassette is None:
        pytest.skip(f"no cassettes recorded yet: {RECORD_HINT}")
    header = read_header(cassette)
    assert header["recorded_from"] == "https://api.stripe.com", "tests/cassettes/ only holds real Stripe"
    differences = compare_with_emulator(cassette)
    assert not differences, "\n".join(differences)
