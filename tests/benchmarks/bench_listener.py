"""Benchmark of `kuploy-reconciler listen`: throughput, latency and exactly-once under concurrent load.

A script, not a test (pytest collects only `test_*.py`):

    python tests/benchmarks/bench_listener.py [--events 2000] [--threads 4] [--subscriptions 50]

It starts a real PostgreSQL (`TEST_DATABASE_URL`, else an embedded one in a temporary folder) with
a fresh database, the Stripe emulator in this process, and the listener as its own process (the
real command line), then sends N events signed as Stripe signs them — a mix of the six handled
types plus ignored ones, with a few duplicates — from several client threads over keep-alive
connections. It prints events/s and p50/p99 latency, then checks exactly-once: one
`cloud_stripe_events` row per distinct event id, every duplicate answered as one, and exactly one
Stripe re-read per processed subscription/invoice/checkout event (subscription events from a later
second than the stored state need none).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import stripe
from psycopg import sql

from reconciler import migrations
from reconciler.listener import WEBHOOK_PATH
from reconciler.model import ownership_metadata
from reconciler.sandbox.emulator import start_in_thread
from reconciler.sandbox.postgres import start_embedded_postgres, stop_embedded_postgres

SECRET = "whsec_kuployBenchmark000000000000000"
KEY = "sk_test_kuployBenchmark0000000000000"
REFETCHING = ("checkout.session.completed", "customer.subscription.", "invoice.")


def sign(body: bytes, timestamp: int) -> str:
    mac = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def event(event_type: str, obj: dict[str, Any], created: int) -> bytes:
    payload = {
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": stripe.api_version,
        "created": created,
        "data": {"object": obj},
        "livemode": False,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
    return json.dumps(payload, default=str).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_events(client: stripe.StripeClient, count: int, subscriptions: int, dup_rate: float) -> list[bytes]:
    product = client.v1.products.create(params={"name": "Pro", "metadata": ownership_metadata("pro")})
    price = client.v1.prices.create(
        params={
            "product": product.id,
            "unit_amount": 2000,
            "currency": "cad",
            "recurring": {"interval": "month"},
            "metadata": ownership_metadata("pro"),
        }
    )
    subs = []
    for n in range(subscriptions):
        customer = client.v1.customers.create(params={"email": f"bench{n}@example.com"})
        subs.append(
            client.v1.subscriptions.create(
                params={
                    "customer": customer.id,
                    "items": [{"price": price.id}],
                    "metadata": {"organizationId": f"org_{n}"},
                }
            ).to_dict()
        )
    rng = random.Random(7)
    now = int(time.time())
    bodies: list[bytes] = []
    kinds = [
        ("customer.subscription.created", 2),
        ("customer.subscription.updated", 3),
        ("checkout.session.completed", 1),
        ("invoice.paid", 2),
        ("invoice.payment_failed", 1),
        ("payment_intent.succeeded", 1),
    ]
    population = [k for k, weight in kinds for _ in range(weight)]
    unique = int(count / (1 + dup_rate))
    for n in range(unique):
        kind = rng.choice(population)
        sub = rng.choice(subs)
        obj: dict[str, Any]
        if kind.startswith("customer.subscription."):
            obj = sub
        elif kind == "checkout.session.completed":
            obj = {
                "id": f"cs_test_{n}",
                "object": "checkout.session",
                "mode": "subscription",
                "client_reference_id": sub["metadata"]["organizationId"],
                "customer": sub["customer"],
                "subscription": sub["id"],
            }
        elif kind.startswith("invoice."):
            obj = {
                "id": f"in_{n:08d}",
                "object": "invoice",
                "created": now - rng.randrange(3),  # several in the same second
                "parent": {"subscription_details": {"subscription": sub["id"]}},
            }
        else:
            obj = {"id": f"pi_{n}", "object": "payment_intent"}
        bodies.append(event(kind, obj, now))
    bodies += [rng.choice(bodies) for _ in range(count - unique)]
    rng.shuffle(bodies)
    return bodies


def send_all(url: str, bodies: list[bytes], threads: int) -> tuple[list[float], Counter[str], float]:
    host, port = url.removeprefix("http://").split(":")
    local = threading.local()
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def send(body: bytes) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(host, int(port), timeout=120)
        started = time.perf_counter()
        headers = {"Stripe-Signature": sign(body, int(time.time())), "Content-Type": "application/json"}
        conn.request("POST", WEBHOOK_PATH, body=body, headers=headers)
        response = conn.getresponse()
        reply = json.loads(response.read())
        elapsed = time.perf_counter() - started
        outcome = "duplicate" if reply.get("duplicate") else str(reply.get("outcome", response.status))
        with lock:
            latencies.append(elapsed)
            outcomes[outcome if response.status == 200 else f"http {response.status}"] += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(send, bodies))
    return latencies, outcomes, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--subscriptions", type=int, default=50)
    parser.add_argument("--duplicates", type=float, default=0.05, help="share of extra copies")
    parser.add_argument(
        "--max-rps",
        type=float,
        default=1000.0,
        help="the listener's client-side Stripe rate (KUPLOY_STRIPE_MAX_RPS); the default without it "
        "is Stripe's test-mode 25/s, which caps a listener's re-reads",
    )
    args = parser.parse_args()

    data_dir: Path | None = None
    admin = os.environ.get("TEST_DATABASE_URL")
    if admin is None:
        data_dir = Path(tempfile.mkdtemp(prefix="kuploy-bench-pg-"))
        admin = start_embedded_postgres(data_dir)
    name = f"kuploy_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(admin, dbname=name)
    emulator = start_in_thread()
    proc: subprocess.Popen[bytes] | None = None
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in the finally below)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrations.migrate(conn)
            connect_ms = []
            for _ in range(20):
                t0 = time.perf_counter()
                psycopg.connect(dsn).close()
                connect_ms.append((time.perf_counter() - t0) * 1000)
        client = stripe.StripeClient(KEY, base_addresses={"api": emulator.url})
        bodies = build_events(client, args.events, args.subscriptions, args.duplicates)
        with psycopg.connect(dsn, autocommit=True) as conn:
            price = client.v1.prices.list(params={"limit": 1}).data[0]
            conn.execute(
                'INSERT INTO cloud_plans ("planId", name, "stripePriceId", price, currency, "billingCycle") '
                "VALUES ('pro', 'Pro', %s, 2000, 'cad', 'monthly')",
                (price.id,),
            )
        emulator.emulator.reset_log()

        port = free_port()
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DATABASE_URL", "KUPLOY_"))
        }
        env.update(
            DATABASE_URL=dsn,
            STRIPE_SECRET_KEY=KEY,
            STRIPE_API_BASE=emulator.url,
            STRIPE_WEBHOOK_SECRET=SECRET,
            KUPLOY_STRIPE_MAX_RPS=str(args.max_rps),
        )
        command = [sys.executable, "-m", "reconciler", "listen", "--port", str(port)]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                probe = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                probe.request("GET", "/readyz")
                if probe.getresponse().status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the listener did not become ready")
            time.sleep(0.1)

        latencies, outcomes, elapsed = send_all(url, bodies, args.threads)

        unique_ids = {json.loads(b)["id"] for b in bodies}
        parsed = [json.loads(b) for b in bodies]
        refetching = {e["id"] for e in parsed if e["type"].startswith(REFETCHING)}
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT count(*), count(DISTINCT id) FROM cloud_stripe_events").fetchone()
            subs = conn.execute("SELECT count(*) FROM cloud_subscriptions").fetchone()
        reads = sum(
            1
            for r in emulator.emulator.requests
            if r["method"] == "GET" and str(r["path"]).startswith("/v1/subscriptions/")
        )
        ms = sorted(x * 1000 for x in latencies)
        p = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
        print(
            f"listener benchmark: {len(bodies)} events ({len(unique_ids)} distinct), {args.threads} threads"
        )
        print(f"  {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'mean ms':>8}  elapsed")
        print(
            f"  {len(bodies) / elapsed:>10.1f} {p(0.50):>8.1f} {p(0.99):>8.1f} {ms[-1]:>8.1f} "
            f"{statistics.fmean(ms):>8.1f}  {elapsed:.2f}s"
        )
        print(f"  outcomes: {dict(sorted(outcomes.items()))}")
        print(
            f"  postgres connect (for comparison with the pool): p50 {statistics.median(connect_ms):.1f} ms"
        )
        assert rows is not None and subs is not None
        checks = {
            "every answer 200": all(not k.startswith("http") for k in outcomes),
            "one row per distinct event": rows[0] == rows[1] == len(unique_ids),
            "duplicates answered as duplicates": outcomes["duplicate"] == len(bodies) - len(unique_ids),
            # Subscription events from a later second than the stored state need no re-read; checkout
            # and invoice events, and same-second ties, do: at most one per processed event.
            "at most one Stripe re-read per processed event": reads <= len(refetching),
        }
        proc.terminate()
        proc.wait(timeout=30)
        log.seek(0)
        lines = [line for line in log.read().decode().splitlines() if "stripe_event id=" in line]
        checks["one log line per event"] = len(lines) == len(bodies)
        for check, ok in checks.items():
            print(f"  exactly-once: {check}: {'OK' if ok else 'FAILED'}")
        if not all(checks.values()):
            print(f"  (rows {rows}, re-reads {reads} for {len(refetching)} events)")
            return 1
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
        log.close()
        emulator.stop()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if data_dir is not None:
            stop_embedded_postgres(data_dir)
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
