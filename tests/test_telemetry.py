"""The listener as an operable service: Prometheus `/metrics` scraped over HTTP after signed events
(in one process, and summed over `listen --workers 2`), and `--log-format json` lines."""

# ruff: noqa: F811  (the listener tests' fixtures are imported by name: the tests' arguments)

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import stripe
from prometheus_client.parser import text_string_to_metric_families
from test_listener import (
    SECRET,
    Catalog,
    Listener,
    catalog,  # noqa: F401  (a fixture)
    child_pids,
    first_answer,
    listener,  # noqa: F401  (a fixture)
    make_event,
    migrated,  # noqa: F401  (a fixture)
    new_subscription,
    request,
    serve,
    sign,
    subscription_reads,
)

from reconciler.listener import create_app
from reconciler.model import WEBHOOK_PATH
from reconciler.sandbox.emulator import RunningEmulator
from reconciler.settings import Secret, Settings

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """GET /metrics on a new connection, parsed by prometheus-client's own parser."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        text = response.read().decode()
    finally:
        conn.close()
    assert response.status == 200 and response.getheader("Content-Type", "").startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def events(samples: Samples) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["type"], dict(labels)["outcome"]): v
        for (name, labels), v in samples.items()
        if name == "kuploy_listener_events_total"
    }


def test_metrics_count_events_by_type_and_outcome(
    listener: Listener, stripe_client: stripe.StripeClient, catalog: Catalog, emulator: RunningEmulator
) -> None:
    sub = new_subscription(stripe_client, catalog)
    created = make_event("customer.subscription.created", sub)
    assert listener.post(created).body == {"received": True, "outcome": "processed"}
    assert listener.post(created).body == {"received": True, "duplicate": True}
    other = new_subscription(stripe_client, catalog, org="org_2")
    session = {"id": "cs_test_m", "object": "checkout.session", "subscription": other["id"]}
    checkout = make_event("checkout.session.completed", session)  # no row yet: re-read from Stripe
    assert listener.post(checkout).body == {"received": True, "outcome": "processed"}
    for n in range(3):
        ignored = make_event("payment_intent.succeeded", {"id": f"pi_{n}", "object": "payment_intent"})
        assert listener.post(ignored).body["outcome"] == "ignored"
    assert listener.post(created, secret="whsec_notTheRightOne000000000000").status == 400

    samples = scrape(listener.url)
    assert events(samples) == {
        ("customer.subscription.created", "processed"): 1,
        ("customer.subscription.created", "duplicate"): 1,
        ("checkout.session.completed", "processed"): 1,
        ("payment_intent.succeeded", "ignored"): 3,
    }
    assert value(samples, "kuploy_listener_event_duration_seconds_count") == 6
    assert value(samples, "kuploy_listener_event_duration_seconds_bucket", le="+Inf") == 6
    assert value(samples, "kuploy_listener_rejected_requests_total") == 1
    rereads = subscription_reads(emulator, sub["id"]) + subscription_reads(emulator, other["id"])
    assert rereads == 1 and value(samples, "kuploy_listener_stripe_rereads_total") == rereads
    assert value(samples, "kuploy_listener_database_errors_total") == 0
    assert not [key for key in samples if key[0] == "kuploy_listener_unavailable_total"]
    assert value(samples, "process_cpu_seconds_total") > 0  # one process: its own collector too


def test_database_errors_and_503s_are_counted_by_cause(
    settings: Settings,
    catalog: Catalog,
    stripe_client: stripe.StripeClient,
    admin_dsn: str,
    database_url: str,
) -> None:
    sub = new_subscription(stripe_client, catalog)
    session = {"id": "cs_test_d", "object": "checkout.session", "subscription": sub["id"]}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    broken = dataclasses.replace(settings, stripe_api_base=dead, stripe_timeout=2.0)
    with serve(create_app(broken, webhook_secret=Secret(SECRET))) as running:
        assert running.post(make_event("checkout.session.completed", session)).status == 503
        with psycopg.connect(admin_dsn, autocommit=True) as admin:  # the database goes away
            name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            try:
                assert running.post(make_event("customer.subscription.created", sub)).status == 503
            finally:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        samples = scrape(running.url)
    assert events(samples) == {
        ("checkout.session.completed", "retry"): 1,
        ("customer.subscription.created", "retry"): 1,
    }
    assert value(samples, "kuploy_listener_unavailable_total", cause="stripe") == 1
    assert value(samples, "kuploy_listener_unavailable_total", cause="database") == 1
    assert value(samples, "kuploy_listener_database_errors_total") == 1
    assert value(samples, "kuploy_listener_stripe_rereads_total") >= 1  # attempts, retries included


def test_no_metrics_serves_no_metrics_route(settings: Settings, catalog: Catalog) -> None:
    with serve(create_app(settings, webhook_secret=Secret(SECRET), metrics=False)) as running:
        body = make_event("payment_intent.succeeded", {"id": "pi_1", "object": "payment_intent"})
        assert running.post(body).body["outcome"] == "ignored"
        assert request(running.url, "GET", "/healthz").status == 200
        conn = http.client.HTTPConnection("127.0.0.1", int(running.url.rsplit(":", 1)[1]), timeout=60)
        conn.request("GET", "/metrics")
        assert conn.getresponse().status == 404
        conn.close()


def _multiprocess_dir(pids: set[int]) -> Path | None:
    for pid in pids:
        with contextlib.suppress(OSError):
            for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                if entry.startswith(b"PROMETHEUS_MULTIPROC_DIR="):
                    return Path(entry.split(b"=", 1)[1].decode())
    return None


def test_listen_with_two_workers_sums_their_metrics_and_logs_json_lines(
    cli_env: dict[str, str], catalog: Catalog, stripe_client: stripe.StripeClient
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "reconciler", "listen", "--port", str(port), "--workers", "2"]
    proc = subprocess.Popen(
        [*command, "--log-format", "json"],
        env={**cli_env, "STRIPE_WEBHOOK_SECRET": SECRET},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()

    def event_lines() -> list[dict[str, Any]]:
        return [line for line in map(json.loads, list(lines)) if "event_id" in line]

    def post(body: bytes) -> int:
        return request(url, "POST", WEBHOOK_PATH, body, {"Stripe-Signature": sign(body)}).status

    sent = 0
    try:
        assert first_answer(proc, url, "/readyz").status == 200
        sub = new_subscription(stripe_client, catalog)
        subscribed = make_event("customer.subscription.created", sub)
        assert post(subscribed) == 200 and post(subscribed) == 200  # processed, then a duplicate
        # New connections, several at once, until both workers have answered some.
        for _ in range(20):
            bodies = [
                make_event("payment_intent.succeeded", {"id": f"pi_{sent + n}", "object": "payment_intent"})
                for n in range(16)
            ]
            with ThreadPoolExecutor(8) as pool:
                assert set(pool.map(post, bodies)) == {200}
            sent += len(bodies)
            deadline = time.monotonic() + 30
            while len(event_lines()) < sent + 2:  # the log lines of the answered events
                assert time.monotonic() < deadline, lines
                time.sleep(0.05)
            if len({line["pid"] for line in event_lines()}) == 2:
                break
        assert len({line["pid"] for line in event_lines()}) == 2, "one worker answered everything"
        metrics_dir = _multiprocess_dir(child_pids(proc.pid))
        assert metrics_dir is not None and metrics_dir.is_dir()
        # Each scrape is answered by one worker, and each counts every worker's events.
        for _ in range(6):
            samples = scrape(url)
            assert events(samples) == {
                ("payment_intent.succeeded", "ignored"): sent,
                ("customer.subscription.created", "processed"): 1,
                ("customer.subscription.created", "duplicate"): 1,
            }
            assert value(samples, "kuploy_listener_event_duration_seconds_count") == sent + 2
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        reader.join(timeout=30)
        proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode in (0, -15), lines
    assert not metrics_dir.exists()  # listen made it and deleted it

    parsed = [json.loads(line) for line in lines]  # every line is JSON
    assert all({"time", "level", "logger", "pid", "message"} <= set(line) for line in parsed)
    assert any(line["message"].startswith("Webhook listener on") for line in parsed)
    by_id = {line["event_id"]: line for line in event_lines()}
    first = by_id[json.loads(subscribed)["id"]]
    assert first["type"] == "customer.subscription.created" and first["subscription"] == sub["id"]
    assert [line["outcome"] for line in event_lines() if line["subscription"] == sub["id"]] == [
        "processed",
        "duplicate",
    ]
    assert isinstance(first["ms"], float) and first["ms"] >= 0
    ignored = [line for line in event_lines() if line["type"] == "payment_intent.succeeded"]
    assert len(ignored) == sent and all(line["subscription"] is None for line in ignored)
    text = "".join(lines)
    assert SECRET not in text and cli_env["DATABASE_URL"] not in text
    assert sub["customer"] not in text and "org_1" not in text  # nothing from the payloads
