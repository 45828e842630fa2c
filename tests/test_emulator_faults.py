"""Fault injection in the Stripe emulator (429s, 500s before/after the write, hanging connections),
driven through the real `stripe` SDK over HTTP. No timed assertions: the rate limiter runs on a fake
clock, and hangs end as soon as the client's short read timeout fires (or the server stops)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import stripe
import stripe._http_client
from click.testing import CliRunner

from reconciler.cli import cli
from reconciler.sandbox import emulator as emulator_module
from reconciler.sandbox.emulator import (
    FAULTS,
    Emulator,
    EmulatorConfigError,
    FaultSettings,
    RunningEmulator,
    start_in_thread,
)

KEY = "sk_test_faults"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def fast_sdk_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK sleeps at least 0.5 s between retries; the tests only care about what is retried."""
    monkeypatch.setattr(stripe._http_client.HTTPClient, "INITIAL_DELAY", 0.001)
    monkeypatch.setattr(stripe._http_client.HTTPClient, "MAX_DELAY", 0.002)


@pytest.fixture
def running() -> Iterator[RunningEmulator]:
    with start_in_thread(faults=FaultSettings(hang_seconds=2)) as run:
        yield run


def make_client(url: str, retries: int = 0, timeout: float | None = None) -> stripe.StripeClient:
    http_client = stripe.RequestsClient(timeout=timeout) if timeout is not None else None
    return stripe.StripeClient(
        KEY, base_addresses={"api": url}, max_network_retries=retries, http_client=http_client
    )


def raw(
    url: str,
    method: str,
    path: str,
    body: str = "",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=5)
    try:
        hdrs = {"Authorization": f"Bearer {KEY}", **(headers or {})}
        if method == "POST":
            hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
        conn.request(method, path, body=body.encode() if method != "GET" else None, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(resp.read())
    finally:
        conn.close()


def error_of(exc: stripe.StripeError) -> dict[str, Any]:
    body = exc.json_body
    assert isinstance(body, dict) and isinstance(body["error"], dict)
    return body["error"]


def admin_faults(url: str, **settings: Any) -> tuple[int, Any]:
    status, _, body = raw(url, "POST", "/_emulator/faults", json.dumps(settings))
    return status, body


def products_in(run: RunningEmulator) -> list[str]:
    """Names of the test-mode products, sorted, read from the state (no request, so no fault or log)."""
    with run.emulator._lock:
        return sorted(p["name"] for p in run.emulator._accounts["test"].products.values())


def faults_of(run: RunningEmulator) -> list[str | None]:
    return [entry["fault"] for entry in run.emulator.request_log()]


def predicted(n: int, **settings: Any) -> list[str | None]:
    """The fault sequence a fresh emulator with these settings draws (no rate limit involved)."""
    emu = Emulator(faults=FaultSettings(**settings))
    with emu._lock:
        return [emu._draw_fault() for _ in range(n)]


def seed_giving(pattern: list[str | None], **settings: Any) -> int:
    return next(s for s in range(10_000) if predicted(len(pattern), seed=s, **settings) == pattern)


# ------------------------------------------------------------------------------------ rate limit


def test_beyond_the_rate_limit_stripe_429_and_no_write(running: RunningEmulator) -> None:
    clock = FakeClock()
    running.emulator._clock = clock
    running.emulator.set_faults(rate_limit=2)  # refills the bucket on the fake clock
    client = make_client(running.url, retries=3)
    client.v1.products.create(params={"name": "one"})
    client.v1.products.create(params={"name": "two"})
    with pytest.raises(stripe.RateLimitError) as caught:
        client.v1.products.create(params={"name": "three"}, options={"idempotency_key": "k-3"})
    exc = caught.value
    assert exc.http_status == 429
    assert exc.json_body == {
        "error": {
            "code": "rate_limit",
            "doc_url": "https://stripe.com/docs/error-codes/rate-limit",
            "message": "Request rate limit exceeded. You can learn more about rate limits here "
            "https://stripe.com/docs/rate-limits.",
            "request_log_url": f"{running.url}/_emulator/requests/{exc.request_id}",
            "type": "invalid_request_error",
        }
    }
    headers = {k.lower() for k in (exc.headers or {})}
    assert "stripe-should-retry" not in headers and "retry-after" not in headers
    # The SDK does not retry a real rate limit, even with retries configured: one request, logged.
    assert faults_of(running) == [None, None, "rate_limited"]
    assert products_in(running) == ["one", "two"]

    # Nothing was saved under the key: once the bucket refills, the same key executes.
    clock.now += 0.5  # one token at 2/s
    made = client.v1.products.create(params={"name": "three"}, options={"idempotency_key": "k-3"})
    assert made.name == "three"
    assert running.emulator.request_log()[-1]["status"] == 200
    assert products_in(running) == ["one", "three", "two"]


def test_the_rate_limit_refills_and_spares_admin_routes(running: RunningEmulator) -> None:
    clock = FakeClock()
    running.emulator._clock = clock
    running.emulator.set_faults(rate_limit=1)
    assert raw(running.url, "GET", "/v1/products")[0] == 200
    assert raw(running.url, "GET", "/v1/products")[0] == 429
    assert raw(running.url, "GET", "/v1/prices")[0] == 429  # one bucket for all Stripe routes
    for _ in range(5):
        assert raw(running.url, "GET", "/_emulator/requests")[0] == 200
        assert raw(running.url, "GET", "/_emulator/stats")[0] == 200
    clock.now += 1.0
    assert raw(running.url, "GET", "/v1/prices")[0] == 200
    assert faults_of(running) == [None, "rate_limited", "rate_limited", None]


# ------------------------------------------------------------------------------------ 500s


def test_error_after_write_with_sdk_retries_leaves_exactly_one_object(running: RunningEmulator) -> None:
    running.emulator.set_faults(error_rate=1.0, after_write_share=1.0)
    client = make_client(running.url, retries=3)
    with pytest.raises(stripe.APIError) as caught:
        client.v1.products.create(params={"name": "Once"}, options={"idempotency_key": "once"})
    assert caught.value.http_status == 500
    err = error_of(caught.value)
    assert err["type"] == "api_error" and "request ID req_" in err["message"]
    # The 500 is saved under the key, so Stripe tells the SDK a retry is pointless.
    assert (caught.value.headers or {})["stripe-should-retry"] == "false"
    assert faults_of(running) == ["error_after_write"]
    assert products_in(running) == ["Once"]  # the write happened

    # Retrying with the same key (faults off) replays the saved 500 and creates nothing.
    running.emulator.set_faults(error_rate=0.0)
    with pytest.raises(stripe.APIError) as again:
        client.v1.products.create(params={"name": "Once"}, options={"idempotency_key": "once"})
    replay_headers = again.value.headers or {}
    assert replay_headers["idempotent-replayed"] == "true"
    assert replay_headers["stripe-should-retry"] == "false"
    assert products_in(running) == ["Once"]


def test_error_before_write_without_retries_raises_and_creates_nothing(running: RunningEmulator) -> None:
    running.emulator.set_faults(error_rate=1.0, after_write_share=0.0)
    client = make_client(running.url, retries=0)
    with pytest.raises(stripe.APIError) as caught:
        client.v1.products.create(params={"name": "Never"}, options={"idempotency_key": "early"})
    assert caught.value.http_status == 500
    assert error_of(caught.value)["type"] == "api_error"
    assert "stripe-should-retry" not in {k.lower() for k in (caught.value.headers or {})}
    assert faults_of(running) == ["error_before_write"]
    assert products_in(running) == []
    # Execution never began, so no result was saved: the same key now executes.
    running.emulator.set_faults(error_rate=0.0)
    assert client.v1.products.create(params={"name": "Never"}, options={"idempotency_key": "early"})
    assert products_in(running) == ["Never"]


def test_sdk_retries_through_errors_before_the_write_create_one_object(running: RunningEmulator) -> None:
    pattern: list[str | None] = ["error_before_write", "error_before_write", None]
    seed = seed_giving(pattern, error_rate=0.5)
    running.emulator.set_faults(error_rate=0.5, seed=seed)
    made = make_client(running.url, retries=3).v1.products.create(params={"name": "Retried"})
    assert made.name == "Retried"
    log = running.emulator.request_log()
    assert [e["fault"] for e in log] == pattern
    assert len({e["idempotency_key"] for e in log}) == 1  # the SDK retried with one key
    assert products_in(running) == ["Retried"]


def test_every_sdk_retry_is_counted(running: RunningEmulator) -> None:
    running.emulator.set_faults(error_rate=1.0, after_write_share=0.0)
    with pytest.raises(stripe.APIError):
        make_client(running.url, retries=2).v1.products.create(params={"name": "x"})
    stats = raw(running.url, "GET", "/_emulator/stats")[2]
    assert stats["total"] == 3 and stats["by_fault"]["error_before_write"] == 3
    assert stats["by_method"]["POST"]["total"] == 3 and stats["by_status"] == {"500": 3}


# ------------------------------------------------------------------------------------ timeouts


def test_timeout_makes_the_sdk_raise_a_connection_error_and_creates_nothing(
    running: RunningEmulator,
) -> None:
    running.emulator.set_faults(timeout_rate=1.0)
    client = make_client(running.url, retries=0, timeout=0.5)
    with pytest.raises(stripe.APIConnectionError):
        client.v1.products.create(params={"name": "Lost"})
    [entry] = running.emulator.request_log()
    assert entry["fault"] == "timeout" and entry["status"] is None and entry["response"] is None
    assert products_in(running) == []


def test_a_timeout_closes_the_connection_without_an_answer() -> None:
    with start_in_thread(faults=FaultSettings(timeout_rate=1.0, hang_seconds=0)) as run:
        with pytest.raises(http.client.RemoteDisconnected):
            raw(run.url, "GET", "/v1/products")
        assert faults_of(run) == ["timeout"]


def test_sdk_retries_through_a_timeout_create_one_object(running: RunningEmulator) -> None:
    pattern: list[str | None] = ["timeout", None]
    seed = seed_giving(pattern, timeout_rate=0.5)
    running.emulator.set_faults(timeout_rate=0.5, seed=seed)
    made = make_client(running.url, retries=2, timeout=0.5).v1.products.create(params={"name": "Late"})
    assert made.name == "Late" and faults_of(running) == pattern
    assert products_in(running) == ["Late"]


# ------------------------------------------------------------------------ reproducibility


def _fault_run(seed: int) -> list[str | None]:
    with start_in_thread(faults=FaultSettings(seed=seed, error_rate=0.3, timeout_rate=0.0)) as run:
        for _ in range(30):
            raw(run.url, "GET", "/v1/products")
        return faults_of(run)


def test_one_seed_gives_one_fault_sequence() -> None:
    first = _fault_run(7)
    assert first == _fault_run(7) == predicted(30, seed=7, error_rate=0.3)
    assert {"error_before_write", "error_after_write", None} <= set(first)
    assert first != _fault_run(8)


def test_reseeding_at_runtime_restarts_the_sequence(running: RunningEmulator) -> None:
    assert admin_faults(running.url, seed=11, error_rate=0.5)[0] == 200
    for _ in range(10):
        raw(running.url, "GET", "/v1/products")
    admin_faults(running.url, seed=11)
    for _ in range(10):
        raw(running.url, "GET", "/v1/products")
    log = faults_of(running)
    assert log[:10] == log[10:] == predicted(10, seed=11, error_rate=0.5)


# ------------------------------------------------------------------------ runtime control


def test_fault_settings_at_runtime_through_the_admin_endpoint(running: RunningEmulator) -> None:
    status, _, body = raw(running.url, "GET", "/_emulator/faults")
    assert status == 200 and body == {
        "rate_limit": None,
        "error_rate": 0.0,
        "timeout_rate": 0.0,
        "seed": None,
        "latency_ms": 0,
        "hang_seconds": 2.0,
        "after_write_share": 0.5,
    }
    status, body = admin_faults(running.url, error_rate=1, after_write_share=0, latency_ms=1)
    assert status == 200
    assert body["error_rate"] == 1.0 and body["after_write_share"] == 0.0 and body["latency_ms"] == 1
    assert body["seed"] is None and body["timeout_rate"] == 0.0  # partial update: the rest is kept
    assert raw(running.url, "GET", "/v1/products")[0] == 500
    assert raw(running.url, "GET", "/_emulator/requests")[0] == 200  # admin routes never fault

    for bad in (
        {"error_rate": 1.5},
        {"error_rate": "0.5"},
        {"timeout_rate": 0.5},  # with error_rate 1: more than 1 in all
        {"rate_limit": 0},
        {"seed": "abc"},
        {"latency_ms": -1},
        {"hang_seconds": 10_000},
        {"unknown": 1},
    ):
        status, body = admin_faults(running.url, **bad)
        assert status == 400, bad
        assert body["error"]["message"].startswith("Invalid fault settings:")
    status, _, body = raw(running.url, "POST", "/_emulator/faults", "[1, 2]")
    assert status == 400
    status, _, body = raw(running.url, "POST", "/_emulator/faults", "{not json")
    assert status == 400
    assert raw(running.url, "GET", "/_emulator/faults")[2]["error_rate"] == 1.0  # unchanged

    assert admin_faults(running.url, error_rate=0)[0] == 200
    assert raw(running.url, "GET", "/v1/products")[0] == 200


def test_python_settings_are_checked() -> None:
    for bad in (
        {"error_rate": -0.1},
        {"timeout_rate": 2},
        {"rate_limit": -1},
        {"latency_ms": -5},
        {"hang_seconds": -1},
        {"after_write_share": 1.1},
        {"error_rate": 0.6, "timeout_rate": 0.6},
    ):
        with pytest.raises(EmulatorConfigError):
            Emulator(faults=FaultSettings(**bad))
    emu = Emulator(
        faults=FaultSettings(rate_limit=10, error_rate=0.1, timeout_rate=0.2, seed=3, hang_seconds=1.5)
    )
    assert emu.faults()["rate_limit"] == 10.0 and emu.faults()["seed"] == 3
    with pytest.raises(EmulatorConfigError, match="Unknown"):
        emu.set_faults(retry_rate=0.1)
    assert emu.set_faults(rate_limit=None)["rate_limit"] is None


# ------------------------------------------------------------------------------------ stats


def test_stats_count_per_fault_method_and_status(running: RunningEmulator) -> None:
    client = make_client(running.url)
    client.v1.products.create(params={"name": "ok"})
    running.emulator.set_faults(error_rate=1.0, after_write_share=1.0)
    with pytest.raises(stripe.APIError):
        client.v1.products.create(params={"name": "after"})
    running.emulator.set_faults(after_write_share=0.0)
    with pytest.raises(stripe.APIError):
        client.v1.products.list()
    clock = FakeClock()
    running.emulator._clock = clock
    running.emulator.set_faults(error_rate=0.0, rate_limit=1)
    client.v1.products.list()
    with pytest.raises(stripe.RateLimitError):
        client.v1.products.list()

    status, _, stats = raw(running.url, "GET", "/_emulator/stats")
    assert status == 200
    assert stats == running.emulator.stats()
    assert stats["total"] == 5
    assert stats["by_fault"] == {
        "none": 2,
        "rate_limited": 1,
        "error_before_write": 1,
        "error_after_write": 1,
        "timeout": 0,
    }
    assert stats["by_method"]["POST"] == {
        "total": 2,
        "none": 1,
        "error_after_write": 1,
        **{f: 0 for f in FAULTS if f != "error_after_write"},
    }
    assert stats["by_method"]["GET"]["total"] == 3 and stats["by_method"]["GET"]["rate_limited"] == 1
    assert stats["by_status"] == {"200": 2, "429": 1, "500": 2}
    assert raw(running.url, "POST", "/_emulator/reset-log")[0] == 200
    assert running.emulator.stats()["total"] == 0


# ------------------------------------------------------------------------------------ CLI


def test_sandbox_serve_passes_the_fault_options(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(emulator_module, "serve", lambda **kw: seen.update(kw))
    result = CliRunner().invoke(
        cli,
        [
            "sandbox",
            "serve",
            "--port",
            "0",
            "--rate-limit",
            "25",
            "--error-rate",
            "0.1",
            "--timeout-rate",
            "0.05",
            "--seed",
            "42",
            "--hang-seconds",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    faults = seen["faults"]
    assert faults.rate_limit == 25.0 and faults.error_rate == 0.1 and faults.timeout_rate == 0.05
    assert faults.seed == 42 and faults.hang_seconds == 3.0
    assert CliRunner().invoke(cli, ["sandbox", "serve", "--error-rate", "2"]).exit_code != 0
