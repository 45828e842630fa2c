"""Benchmark of `kuploy-reconciler listen`: throughput, latency, CPU and exactly-once under concurrent load.

A script, not a test (pytest collects only `test_*.py`):

    python tests/benchmarks/bench_listener.py [--workload lifecycle|storm] [--events N]
        [--subscriptions N] [--threads 4] [--rate R] [--warmup 200] [--workers 1]
        [--duplicates 0.05] [--window 200] [--seed 7] [--max-rps 1000] [--no-metrics]
    python tests/benchmarks/bench_listener.py --metrics-cost

It starts a real PostgreSQL (`TEST_DATABASE_URL`, else an embedded one in a temporary folder) with
a fresh database, the Stripe emulator in this process, and the listener as its own process (the
real command line, plus `--workers N` when N > 1), then sends events signed as Stripe signs them
(`Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256 of "<ts>.<body>">`), a `--duplicates` share of
them twice (extra copies at random places).

Workloads:

- `lifecycle` (default; 5,000 events, 300 subscriptions): realistic Stripe traffic. Each
  subscription (made in the emulator: customer, subscription on the owned price, `organizationId`
  metadata) lives a scenario whose steps are 2 to 8 seconds apart, starting about an hour ago,
  the events of one step in the same second, as Stripe sends them. Checkout:
  `customer.subscription.created` (incomplete), `.updated` (active), `invoice.paid`,
  `checkout.session.completed` (`client_reference_id` = the organization) and an ignored
  `payment_intent.succeeded` or `charge.succeeded`. Renewals: `.updated` (a period later) with
  `invoice.paid` of a new invoice; or, recovered, `invoice.payment_failed` with `.updated`
  past_due, then `invoice.paid` of the same invoice with `.updated` active. Scenarios: `active`,
  `recovered` (at least one recovered renewal), `canceled` (`.updated` with
  cancel_at_period_end, then `.deleted`) and `unpaid` (a failed renewal with past_due, then
  `.deleted`); renewals go to random subscriptions until `--events` is reached. Payloads are the
  subscription as the SDK returned it with status, cancel_at_period_end and period edited, the
  last step's equal to the final state; the emulator's subscription is left in that final state
  (`subscriptions.update` with cancel_at_period_end, `subscriptions.cancel`), since a same-second
  tie makes the listener re-read it and store what it says now. The events are sorted by
  `created`, then shuffled within windows of `--window` events (0: the whole list), so one
  subscription's events arrive in any order, concurrently. At the end every `cloud_subscriptions`
  row must hold its scenario's final state (status, `cancelAtPeriodEnd`, `currentPeriodEnd`,
  `organizationId`, latest invoice id and status, plan `pro`). A re-read is as of now, later than
  every event, so every later-arriving subscription event of that subscription is `stale`.
- `storm` (2,000 events, 50 subscriptions): the worst case for same-second ties. Every event is
  created in the same second, a random mix over the subscriptions of five of the six handled
  types (not `.deleted`) and an ignored one, invoices of random ids created within 3 seconds,
  shuffled.

The load generator is cheap, as it shares the machine with the listener and Postgres: every
request (request line, Host, Content-Type, Content-Length, a signature made at the start — the
listener's tolerance is 300 s — and body) is built as bytes before the clock starts; `--threads`
threads send them over one persistent keep-alive socket each and read each answer with a minimal
parser (status line, Content-Length, body); the JSON answers are decoded after the clock stops.
(An asyncio client over the same sockets cost more CPU per event here, with or without uvloop.)
Latency is from sending a request to the last byte of its answer. By default the loop is closed
(each thread sends its next event when the last is answered): events/s is the listener's capacity
at that concurrency, the latencies those at that rate. `--rate R` opens it, to test a rate such as
the goal's (>= 1,000 events/s with p99 < 50 ms): event i is due at start + i / R and its latency
counts from then, so a queue building up when the listener is slower than R shows in the
latencies (no coordinated omission); give it enough threads (R × latency). With several workers,
connections are reopened until each worker holds as many (a worker keeps the connections it
accepted). The first `--warmup` events are sent before the clock starts (pools fill, code paths
warm up): their max latency is printed, they count in the checks, not in the figures.

It prints events/s, p50/p99/max/mean latency and elapsed time, the outcomes, the Stripe re-reads
(the emulator's log of GET /v1/subscriptions/…), and the CPU per measured event by process, from
`/proc/<pid>/stat` (user + system, plus that of reaped children): this process (client threads
and emulator; the client threads alone by `time.thread_time`), the listener's process tree, and
PostgreSQL (the postmaster of the server used, found as a backend's parent, and its children;
else every process named `postgres`); then the cores these kept busy beside the whole machine's
(`/proc/stat`: when the machine was busier, other processes disturbed the figures). Then the
checks: every answer 200, one `cloud_stripe_events` row per distinct event, every duplicate
answered as one, at most one Stripe re-read per checkout/invoice/subscription event, one log line
per event, and (lifecycle) every subscription in its final state; with metrics on (the default;
`--no-metrics` runs the listener without them, to compare CPU per event), `/metrics` scraped after
the clock stops counts every event once and every Stripe re-read. Exit status 1 when one fails.

`--metrics-cost` measures only what recording the metrics costs per event, alone and precisely
(an A/B of whole runs moves by more than that on a shared machine): `ListenerMetrics.observe`
200,000 times in a fresh process, CPU by `time.thread_time`, the median of 5 runs, in one process
and in the multi-process mode of `--workers N`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import hashlib
import hmac
import http.client
import itertools
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
from collections.abc import Iterator
from dataclasses import dataclass, field
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
MONTH = 30 * 86400
DEFAULTS = {"lifecycle": (5000, 300), "storm": (2000, 50)}  # --events, --subscriptions
SCENARIOS = {"active": 5, "recovered": 2, "canceled": 2, "unpaid": 1}  # weights
RECOVERED_SHARE = 0.15
"""Share of the extra renewals that fail first (payment_failed, past_due), then are paid."""


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    created: int
    body: bytes


def event(event_type: str, obj: dict[str, Any], created: int) -> Event:
    event_id = f"evt_{uuid.uuid4().hex[:24]}"
    payload = {
        "id": event_id,
        "object": "event",
        "api_version": stripe.api_version,
        "created": created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
    return Event(event_id, event_type, created, json.dumps(payload, default=str).encode())


def sign(body: bytes, timestamp: int) -> str:
    mac = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def raw_request(body: bytes, port: int, timestamp: int) -> bytes:
    head = (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nStripe-Signature: {sign(body, timestamp)}\r\n\r\n"
    )
    return head.encode() + body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_duplicates(events: list[Event], count: int, rng: random.Random) -> list[Event]:
    """`events` plus copies of random ones up to `count`, each at a random place."""
    out = list(events)
    for copy_of in [rng.choice(events) for _ in range(count - len(events))]:
        out.insert(rng.randrange(len(out) + 1), copy_of)
    return out


# --- the emulator's objects ----------------------------------------------------------------------


def make_price(client: stripe.StripeClient) -> str:
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
    return str(price.id)


def make_subscriptions(client: stripe.StripeClient, price: str, count: int) -> list[dict[str, Any]]:
    subs = []
    for n in range(count):
        customer = client.v1.customers.create(
            params={  # a card on file: the subscription is paid and active, as the listener expects
                "email": f"bench{n}@example.com",
                "payment_method": "pm_card_visa",
                "invoice_settings": {"default_payment_method": "pm_card_visa"},
            }
        )
        sub = client.v1.subscriptions.create(
            params={
                "customer": customer.id,
                "items": [{"price": price}],
                "metadata": {"organizationId": f"org_{n}"},
            }
        )
        subs.append(sub.to_dict())
    return subs


# --- storm: every event in the same second ---------------------------------------------------------


def storm_events(subs: list[dict[str, Any]], count: int, dup_rate: float, rng: random.Random) -> list[Event]:
    now = int(time.time())
    kinds = [
        ("customer.subscription.created", 2),
        ("customer.subscription.updated", 3),
        ("checkout.session.completed", 1),
        ("invoice.paid", 2),
        ("invoice.payment_failed", 1),
        ("payment_intent.succeeded", 1),
    ]
    population = [k for k, weight in kinds for _ in range(weight)]
    events: list[Event] = []
    for n in range(int(count / (1 + dup_rate))):
        kind = rng.choice(population)
        sub = rng.choice(subs)
        obj: dict[str, Any]
        if kind.startswith("customer.subscription."):
            obj = sub
        elif kind == "checkout.session.completed":
            obj = checkout_session(sub, f"cs_test_{n}")
        elif kind.startswith("invoice."):
            obj = invoice(sub, f"in_{n:08d}", now - rng.randrange(3))  # several in the same second
        else:
            obj = {"id": f"pi_{n}", "object": "payment_intent"}
        events.append(event(kind, obj, now))
    out = with_duplicates(events, count, rng)
    rng.shuffle(out)
    return out


def checkout_session(sub: dict[str, Any], session_id: str) -> dict[str, Any]:
    return {
        "id": session_id,
        "object": "checkout.session",
        "mode": "subscription",
        "status": "complete",
        "payment_status": "paid",
        "client_reference_id": sub["metadata"]["organizationId"],
        "customer": sub["customer"],
        "subscription": sub["id"],
    }


def invoice(sub: dict[str, Any], invoice_id: str, created: int, status: str = "paid") -> dict[str, Any]:
    return {
        "id": invoice_id,
        "object": "invoice",
        "created": created,
        "customer": sub["customer"],
        "status": status,
        "parent": {"type": "subscription_details", "subscription_details": {"subscription": sub["id"]}},
    }


# --- lifecycle: realistic traffic --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Final:
    """What a subscription's row must hold once every event of its scenario is in."""

    status: str
    cancel_at_period_end: bool
    period_end: int
    organization: str
    invoice_id: str
    invoice_status: str
    plan: str = "pro"


@dataclass(slots=True)
class Life:
    """One subscription's scenario: the renewals it gets ("paid" or "recovered") and how it ends."""

    sub: dict[str, Any]
    scenario: str
    renewals: list[str] = field(default_factory=list)

    def size(self) -> int:
        ending = {"canceled": 2, "unpaid": 3}.get(self.scenario, 0)  # unpaid: a failed renewal, deleted
        return 5 + sum(2 if r == "paid" else 4 for r in self.renewals) + ending

    def events(self, start: int, rng: random.Random) -> tuple[list[Event], Final]:
        sub, scenario = self.sub, self.scenario
        final_end = max(int(i["current_period_end"]) for i in sub["items"]["data"])
        periods = len(self.renewals) + (scenario == "unpaid")
        out: list[Event] = []
        t = start
        # The scenario's last invoice is the one the emulator names as the subscription's
        # latest_invoice (its first, made with it), so a tie's re-read agrees with the events.
        last = 1 + len(self.renewals) + (scenario == "unpaid")
        invoice_ids = (
            str(sub["latest_invoice"]) if n == last else f"in_{sub['id'].removeprefix('sub_')}_{n}"
            for n in itertools.count(1)
        )

        def snapshot(status: str, period: int, *, cancel: bool = False) -> dict[str, Any]:
            end = final_end - (periods - period) * MONTH
            obj = copy.deepcopy(sub)
            obj.update(status=status, cancel_at_period_end=cancel, cancel_at=end if cancel else None)
            for item in obj["items"]["data"]:
                item.update(current_period_start=end - MONTH, current_period_end=end)
            return obj

        def emit(kind: str, obj: dict[str, Any]) -> None:
            out.append(event(kind, obj, t))

        def later() -> int:
            return t + rng.randint(2, 8)

        # Checkout: all in one second.
        first = next(invoice_ids)
        emit("customer.subscription.created", snapshot("incomplete", 0))
        emit("customer.subscription.updated", snapshot("active", 0))
        emit("invoice.paid", invoice(sub, first, t))
        emit("checkout.session.completed", checkout_session(sub, f"cs_test_{sub['id'].removeprefix('sub_')}"))
        ignored = rng.choice(["payment_intent.succeeded", "charge.succeeded"])
        emit(ignored, {"id": f"{ignored[:2]}_{uuid.uuid4().hex[:24]}", "object": ignored.split(".")[0]})
        latest, latest_status = first, "paid"
        for period, renewal in enumerate(self.renewals, start=1):
            t = later()
            latest = next(invoice_ids)
            if renewal == "recovered":
                emit("invoice.payment_failed", invoice(sub, latest, t, "open"))
                emit("customer.subscription.updated", snapshot("past_due", period))
                failed_at, t = t, later()
                emit("invoice.paid", invoice(sub, latest, failed_at))
            else:
                emit("invoice.paid", invoice(sub, latest, t))
            emit("customer.subscription.updated", snapshot("active", period))
        status, cancel = "active", False
        if scenario == "canceled":
            t = later()
            emit("customer.subscription.updated", snapshot("active", periods, cancel=True))
            t = later()
            emit("customer.subscription.deleted", snapshot("canceled", periods, cancel=True))
            status, cancel = "canceled", True
        elif scenario == "unpaid":
            t = later()
            latest, latest_status = next(invoice_ids), "payment_failed"
            emit("invoice.payment_failed", invoice(sub, latest, t, "open"))
            emit("customer.subscription.updated", snapshot("past_due", periods))
            t = later()
            emit("customer.subscription.deleted", snapshot("canceled", periods))
            status = "canceled"
        organization = sub["metadata"]["organizationId"]
        return out, Final(status, cancel, final_end, organization, latest, latest_status)


def plan_lifecycles(subs: list[dict[str, Any]], unique: int, rng: random.Random) -> list[Life]:
    """A scenario per subscription, then extra renewals on random ones until about `unique` events."""
    names = list(SCENARIOS)
    lives = [Life(sub, rng.choices(names, weights=list(SCENARIOS.values()))[0]) for sub in subs]
    for life in lives:
        if life.scenario == "recovered":
            life.renewals.append("recovered")
    total = sum(life.size() for life in lives)
    while unique - total >= 2:
        life = rng.choice(lives)
        renewal = "recovered" if unique - total >= 4 and rng.random() < RECOVERED_SHARE else "paid"
        life.renewals.append(renewal)
        total += 2 if renewal == "paid" else 4
    for life in lives:
        rng.shuffle(life.renewals)
    return lives


def settle_in_emulator(client: stripe.StripeClient, lives: list[Life]) -> None:
    """Leave each emulator subscription in its scenario's final state: a tie makes the listener re-read it."""
    for life in lives:
        if life.scenario == "canceled":
            client.v1.subscriptions.update(life.sub["id"], params={"cancel_at_period_end": True})
        if life.scenario in ("canceled", "unpaid"):
            client.v1.subscriptions.cancel(life.sub["id"])


def lifecycle_events(
    lives: list[Life], count: int, window: int, rng: random.Random
) -> tuple[list[Event], dict[str, Final], int]:
    """Every subscription's events (an hour ago), with duplicates, in shuffled windows of `window`."""
    offsets = [rng.randrange(0, 900) for _ in lives]
    # Steps are at most 8 s apart: every `created` at least a minute ago, so a re-read (as of now) is
    # later than all of them.
    longest = max(
        offset + 8 * (4 + 2 * len(life.renewals)) for life, offset in zip(lives, offsets, strict=True)
    )
    base = min(int(time.time()) - 3600, int(time.time()) - 60 - longest)
    events: list[Event] = []
    finals: dict[str, Final] = {}
    for life, offset in zip(lives, offsets, strict=True):
        own, final = life.events(base + offset, rng)
        events += own
        finals[life.sub["id"]] = final
    events.sort(key=lambda e: e.created)
    span = events[-1].created - events[0].created
    events = with_duplicates(events, count, rng)
    if window <= 0:
        rng.shuffle(events)
    else:
        for at in range(0, len(events), window):
            chunk = events[at : at + window]
            rng.shuffle(chunk)
            events[at : at + window] = chunk
    return events, finals, span


# --- the load generator ------------------------------------------------------------------------


@dataclass(slots=True)
class Results:
    latencies: list[float]
    statuses: list[int]  # 0: the connection was lost
    replies: list[bytes]
    elapsed: float
    client_cpu: float  # the sending threads' own CPU seconds


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def receive(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("the listener closed the connection")
    return chunk


def read_response(sock: socket.socket, buf: bytes) -> tuple[int, bytes, bytes]:
    """One response (with a Content-Length, as the listener's are) after the bytes already read in
    `buf`: (status, body, bytes read past it)."""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        buf += receive(sock)
    head = buf[:end].lower()
    at = head.find(b"\r\ncontent-length:")
    stop = head.find(b"\r\n", at + 2)
    length = int(head[at + 17 : stop if stop >= 0 else None]) if at >= 0 else 0
    total = end + 4 + length
    while len(buf) < total:
        buf += receive(sock)
    return int(buf[9:12]), buf[end + 4 : total], buf[total:]


def send_all(port: int, requests: list[bytes], sockets: list[socket.socket], rate: float = 0.0) -> Results:
    """Each thread takes the next request, sends it on its socket and waits for the answer. With a
    `rate`, request i is due at start + i / rate: not sent before, and its latency counts from then
    (a request the threads could not send in time waited too: no coordinated omission)."""
    n = len(requests)
    latencies, statuses, replies = [0.0] * n, [0] * n, [b""] * n
    cpu = [0.0] * len(sockets)
    counter = itertools.count()  # next() on it is atomic: the threads share it
    start = time.perf_counter() + 0.01  # every thread started

    def run(k: int) -> None:
        started_cpu = time.thread_time()
        sock, buf, clock = sockets[k], b"", time.perf_counter
        time.sleep(max(0.0, start - clock()))
        while (i := next(counter)) < n:
            started = clock()
            if rate:
                due = start + i / rate
                if due > started:
                    time.sleep(due - started)
                started = due
            try:
                sock.sendall(requests[i])
                statuses[i], replies[i], buf = read_response(sock, buf)
            except OSError as e:
                statuses[i], replies[i] = 0, str(e).encode()
                sock.close()
                sockets[k] = sock = connect(port)
                buf = b""
            latencies[i] = clock() - started
        cpu[k] = time.thread_time() - started_cpu

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(sockets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Results(latencies, statuses, replies, time.perf_counter() - start, sum(cpu))


def outcome_of(status: int, reply: bytes) -> str:
    if status != 200:
        return f"http {status}" if status else "connection lost"
    answer = json.loads(reply)
    return "duplicate" if answer.get("duplicate") else str(answer.get("outcome"))


# --- CPU by process ------------------------------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Proc:
    parent: int
    name: str
    ticks: int  # user + system, its own and its reaped children's


def processes() -> dict[int, Proc]:
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_bytes()
        except OSError:
            continue
        name = raw[raw.index(b"(") + 1 : raw.rindex(b")")].decode(errors="replace")
        fields = raw[raw.rindex(b")") + 2 :].split()
        table[int(entry.name)] = Proc(int(fields[1]), name, sum(int(f) for f in fields[11:15]))
    return table


def descendants(table: dict[int, Proc], root: int) -> list[int]:
    """`root` and its process tree. A child that exits is counted in its parent's reaped ticks, once."""
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.parent, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            out.append(pid)
            todo += children.get(pid, [])
    return out


def find_postmaster(admin: str) -> int | None:
    """The postmaster of the server at `admin`: a backend's parent, when it runs on this machine."""
    with psycopg.connect(admin, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        table = processes()
    backend = table.get(int(row[0]))
    if backend is None or backend.name != "postgres":
        return None
    postmaster = table.get(backend.parent)
    return backend.parent if postmaster is not None and postmaster.name == "postgres" else None


@dataclass(frozen=True, slots=True)
class Cpu:
    """CPU seconds used so far: this process (client threads and emulator), the listener, Postgres."""

    bench: float
    listener: float
    postgres: float

    @classmethod
    def sample(cls, listener: int, postmaster: int | None) -> Cpu:
        table = processes()
        own = os.times()
        if postmaster is not None:
            postgres = descendants(table, postmaster)
        else:  # not found from a backend: every process named postgres
            postgres = [pid for pid, proc in table.items() if proc.name == "postgres"]
        return cls(
            own.user + own.system,
            sum(table[pid].ticks for pid in descendants(table, listener)) / TICKS,
            sum(table[pid].ticks for pid in postgres) / TICKS,
        )


def wait_for_workers(listener: int, workers: int, timeout: float = 60.0) -> None:
    """Until the listener runs `workers` worker processes and they are idle (done starting): a worker
    still importing takes no connection, and the first ones would serve every keep-alive socket."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        table = processes()
        tree = descendants(table, listener)
        used = sum(table[pid].ticks for pid in tree)
        if len(tree) > workers and last is not None and used - last <= 2:
            return
        last = used
        time.sleep(0.5)
    raise SystemExit(f"the listener did not start {workers} workers")


def tcp_inodes(port: int, clients: set[int]) -> tuple[set[str], dict[str, int]]:
    """From /proc/net/tcp*: the listening socket(s) on `port`, and the accepted ones by client port."""
    listening, accepted = set(), {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                local, remote = int(parts[1].rsplit(":", 1)[1], 16), int(parts[2].rsplit(":", 1)[1], 16)
                if local == port and parts[3] == "0A":
                    listening.add(f"socket:[{parts[9]}]")
                elif local == port and remote in clients:
                    accepted[f"socket:[{parts[9]}]"] = remote
    return listening, accepted


def balance(listener: int, port: int, sockets: list[socket.socket]) -> list[int]:
    """Make the workers hold the client's connections evenly (each worker takes the connections it
    accepts, first come first served, and keeps them): reopen one of the busiest worker's until the
    counts differ by one at most. Returns the connections per worker."""
    counts: list[int] = []
    for _ in range(200):
        clients = {s.getsockname()[1]: k for k, s in enumerate(sockets)}
        listening, accepted = tcp_inodes(port, set(clients))
        workers, owner = set(), {}
        for pid in descendants(processes(), listener):
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        link = os.readlink(f"/proc/{pid}/fd/{fd}")
                        if link in accepted:
                            owner[clients[accepted[link]]] = pid
                        elif link in listening and pid != listener:
                            workers.add(pid)
        load = {pid: 0 for pid in workers} | Counter(owner.values())
        counts = sorted(load.values(), reverse=True)
        if len(owner) < len(sockets):  # not all accepted yet
            time.sleep(0.05)
            continue
        if counts[0] - counts[-1] <= 1:
            break
        busiest = max(load, key=lambda pid: load[pid])
        k = next(k for k, pid in owner.items() if pid == busiest)
        sockets[k].close()
        sockets[k] = connect(port)
    return counts


class Machine:
    """The whole machine's busy CPU seconds so far (/proc/stat: every process, ours or not) and iowait."""

    @staticmethod
    def sample() -> tuple[float, float]:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        user, nice, system, _idle, iowait, irq, softirq, steal = ticks
        return (user + nice + system + irq + softirq + steal) / TICKS, iowait / TICKS


# --- the run -------------------------------------------------------------------------------------


def start_listener(
    dsn: str, emulator_url: str, args: argparse.Namespace, log: Any
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DATABASE_URL", "KUPLOY_"))}
    env.update(
        DATABASE_URL=dsn,
        STRIPE_SECRET_KEY=KEY,
        STRIPE_API_BASE=emulator_url,
        STRIPE_WEBHOOK_SECRET=SECRET,
        KUPLOY_STRIPE_MAX_RPS=str(args.max_rps),
    )
    command = [sys.executable, "-m", "reconciler", "listen", "--port", str(port)]
    if args.workers > 1:
        command += ["--workers", str(args.workers)]
    if args.no_metrics:
        command += ["--no-metrics"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 60
    while True:
        probe = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            probe.request("GET", "/readyz")
            if probe.getresponse().status == 200:
                break
        except OSError:
            pass
        finally:
            probe.close()
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the listener did not become ready")
        time.sleep(0.1)
    if args.workers > 1:
        wait_for_workers(proc.pid, args.workers)
    return proc, port


def check_finals(dsn: str, finals: dict[str, Final], lives: list[Life]) -> list[str]:
    """One line per subscription whose row is not its scenario's final state."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            'SELECT "stripeSubscriptionId", status, "cancelAtPeriodEnd", '
            'extract(epoch FROM "currentPeriodEnd")::bigint, "organizationId", "latestInvoiceId", '
            '"latestInvoiceStatus", "planId" FROM cloud_subscriptions'
        ).fetchall()
    stored = {row[0]: Final(*row[1:]) for row in rows}
    scenario = {life.sub["id"]: f"{life.scenario}, {len(life.renewals)} renewals" for life in lives}
    wrong = []
    for sub_id, want in finals.items():
        got = stored.get(sub_id)
        if got is None:
            wrong.append(f"{sub_id} ({scenario[sub_id]}): no row")
        elif got != want:
            diff = [
                f"{name} {getattr(got, name)!r} (want {getattr(want, name)!r})"
                for name in (f.name for f in dataclasses.fields(Final))
                if getattr(got, name) != getattr(want, name)
            ]
            wrong.append(f"{sub_id} ({scenario[sub_id]}): {', '.join(diff)}")
    return wrong


def scrape_metrics(port: int) -> dict[tuple[str, str], float]:
    """The listener's `/metrics` (summed over its workers): each sample by name and labels."""
    from prometheus_client.parser import text_string_to_metric_families

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return {
        (sample.name, json.dumps(sample.labels, sort_keys=True)): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


METRICS_COST_CODE = """
import os, sys, time
from reconciler.telemetry import ListenerMetrics
metrics, n = ListenerMetrics(), int(sys.argv[1])
types = ["customer.subscription.updated", "invoice.paid", "checkout.session.completed"]
outcomes = ["processed", "stale", "duplicate"]
for i in range(2000):
    metrics.observe(types[i % 3], outcomes[i % 3], 0.003, None)
start = time.thread_time()
for i in range(n):
    metrics.observe(types[i % 3], outcomes[i % 3], 0.003, None)
print((time.thread_time() - start) / n * 1e6)
"""


def metrics_cost(n: int = 200_000) -> None:
    """`--metrics-cost`: the CPU the listener's metrics take per event, measured alone (the median
    of 5 runs, each a fresh process): `ListenerMetrics.observe` (the events counter by type and
    outcome, and the latency histogram) in one process and in the multi-process mode of
    `listen --workers N`."""
    for mode in ("one process", "multi-process (--workers N)"):
        runs = []
        for _ in range(5):
            env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
            with tempfile.TemporaryDirectory(prefix="kuploy-bench-metrics-") as path:
                if mode.startswith("multi"):
                    env["PROMETHEUS_MULTIPROC_DIR"] = path
                out = subprocess.run(
                    [sys.executable, "-c", METRICS_COST_CODE, str(n)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
            runs.append(float(out.stdout))
        print(
            f"  metrics per event, {mode}: {statistics.median(runs):.2f} µs of CPU "
            f"(runs {', '.join(f'{r:.2f}' for r in sorted(runs))})"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workload", choices=sorted(DEFAULTS), default="lifecycle")
    parser.add_argument("--events", type=int, help="events sent, duplicates included (5000; storm 2000)")
    parser.add_argument("--subscriptions", type=int, help="subscriptions (300; storm 50)")
    parser.add_argument("--threads", type=int, default=4, help="client threads, one connection each")
    parser.add_argument("--duplicates", type=float, default=0.05, help="share of extra copies")
    parser.add_argument(
        "--window", type=int, default=200, help="lifecycle: events shuffled per window (0: all at once)"
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="events/s to send at (open loop); 0: as fast as answered"
    )
    parser.add_argument(
        "--warmup", type=int, default=200, help="events sent first (as fast as answered), not measured"
    )
    parser.add_argument("--workers", type=int, default=1, help="the listener's worker processes")
    parser.add_argument(
        "--no-metrics", action="store_true", help="run the listener with --no-metrics (to compare)"
    )
    parser.add_argument(
        "--metrics-cost",
        action="store_true",
        help="only measure the CPU the metrics take per event, alone, and exit",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--max-rps",
        type=float,
        default=1000.0,
        help="the listener's client-side Stripe rate (KUPLOY_STRIPE_MAX_RPS); the default without it "
        "is Stripe's test-mode 25/s, which caps a listener's re-reads",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.metrics_cost:
        metrics_cost()
        return 0
    # Undone in reverse on the way out: sockets, listener, its log, emulator, database.
    with contextlib.ExitStack() as cleanup:
        admin, dsn = cleanup.enter_context(bench_database())
        emulator = start_in_thread()
        cleanup.callback(emulator.stop)
        log = cleanup.enter_context(tempfile.TemporaryFile())
        connect_ms = migrate_and_time_connects(dsn)
        client = stripe.StripeClient(KEY, base_addresses={"api": emulator.url})
        load = make_workload(args, client, dsn)
        postmaster = find_postmaster(admin)
        emulator.emulator.reset_log()

        proc, port = start_listener(dsn, emulator.url, args, log)
        cleanup.callback(stop_listener, proc)
        signed_at = int(time.time())  # the listener accepts signatures up to 300 s old
        requests = [raw_request(e.body, port, signed_at) for e in load.events]
        sockets = [connect(port) for _ in range(args.threads)]
        cleanup.callback(close_all, sockets)  # the list: `balance` may replace some
        spread = ""
        if args.workers > 1:
            spread = f"; connections per worker: {' + '.join(map(str, balance(proc.pid, port, sockets)))}"

        run = measure(args, proc.pid, postmaster, port, requests, sockets)
        tally = count_outcomes(dsn, load.events, run, emulator.emulator.requests)
        print_figures(args, load, run, tally, spread=spread, postgres_found=postmaster is not None)
        print(
            f"  postgres connect (for comparison with the pool): p50 {statistics.median(connect_ms):.1f} ms"
        )
        checks = exactly_once_checks(load, tally)
        if not args.no_metrics:
            checks.update(metrics_checks(port, len(load.events), tally.reads))
        wrong: list[str] = []
        if load.finals:
            wrong = check_finals(dsn, load.finals, load.lives)
            checks["never backwards: every subscription ends in its final state"] = not wrong
        stop_listener(proc)  # its log is complete once it has exited
        lines = logged_events(log)
        checks["exactly-once: one log line per event"] = len(lines) == len(load.events)
        print_checks(checks, wrong)
        if not all(checks.values()):
            print(
                f"  (rows {tally.rows}, re-reads {tally.reads} for {len(tally.refetching)} events, "
                f"log lines {len(lines)})"
            )
            return 1
        return 0


@contextlib.contextmanager
def bench_database() -> Iterator[tuple[str, str]]:
    """(admin DSN, DSN of a fresh database on it): on `TEST_DATABASE_URL`, else on an embedded
    PostgreSQL in a temporary folder; the database (and the embedded server) go at the end."""
    data_dir: Path | None = None
    admin = os.environ.get("TEST_DATABASE_URL")
    if admin is None:
        data_dir = Path(tempfile.mkdtemp(prefix="kuploy-bench-pg-"))
        admin = start_embedded_postgres(data_dir)
    name = f"kuploy_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield admin, psycopg.conninfo.make_conninfo(admin, dbname=name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if data_dir is not None:
            stop_embedded_postgres(data_dir)
            shutil.rmtree(data_dir, ignore_errors=True)


def migrate_and_time_connects(dsn: str) -> list[float]:
    """Migrate the database; returns the milliseconds 20 fresh connections took (to compare with the
    listener's pool)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrations.migrate(conn)
        connect_ms = []
        for _ in range(20):
            t0 = time.perf_counter()
            psycopg.connect(dsn).close()
            connect_ms.append((time.perf_counter() - t0) * 1000)
    return connect_ms


def stop_listener(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def logged_events(log: Any) -> list[str]:
    """The listener's log lines for an event."""
    log.seek(0)
    return [line for line in log.read().decode().splitlines() if "stripe_event id=" in line]


@dataclass(slots=True)
class Workload:
    subscriptions: int
    events: list[Event]
    description: str
    lives: list[Life] = field(default_factory=list)
    finals: dict[str, Final] = field(default_factory=dict)
    """lifecycle: each subscription's row as it must end."""


def make_workload(args: argparse.Namespace, client: stripe.StripeClient, dsn: str) -> Workload:
    """The owned price and its `pro` plan, the subscriptions, and the events of `--workload`."""
    default_events, default_subscriptions = DEFAULTS[args.workload]
    count = args.events or default_events
    rng = random.Random(args.seed)
    price = make_price(client)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            'INSERT INTO cloud_plans ("planId", name, "stripePriceId", price, currency, "billingCycle") '
            "VALUES ('pro', 'Pro', %s, 2000, 'cad', 'monthly')",
            (price,),
        )
    subs = make_subscriptions(client, price, args.subscriptions or default_subscriptions)
    if args.workload != "lifecycle":
        events = storm_events(subs, count, args.duplicates, rng)
        return Workload(len(subs), events, "every event in the same second, shuffled")
    lives = plan_lifecycles(subs, int(count / (1 + args.duplicates)), rng)
    settle_in_emulator(client, lives)
    events, finals, span = lifecycle_events(lives, count, args.window, rng)
    order = f"shuffled in windows of {args.window}" if args.window > 0 else "shuffled"
    scenarios = Counter(life.scenario for life in lives)
    description = (
        f"{', '.join(f'{k} {scenarios[k]}' for k in SCENARIOS)}; "
        f"{sum(len(life.renewals) for life in lives)} renewals over {span} s of Stripe time, {order}"
    )
    return Workload(len(subs), events, description, lives, finals)


@dataclass(frozen=True, slots=True)
class Run:
    """What sending the events measured: the warm-up apart, then the clock's part with the CPU
    and the machine's busy time sampled around it."""

    warmup: int
    cold: Results
    results: Results
    cpu: tuple[Cpu, Cpu]
    machine: tuple[tuple[float, float], tuple[float, float]]


def measure(
    args: argparse.Namespace,
    listener: int,
    postmaster: int | None,
    port: int,
    requests: list[bytes],
    sockets: list[socket.socket],
) -> Run:
    warmup = min(args.warmup, len(requests) // 2)  # the pools fill, code paths and statements warm up
    cold = send_all(port, requests[:warmup], sockets)
    before, machine_before = Cpu.sample(listener, postmaster), Machine.sample()
    results = send_all(port, requests[warmup:], sockets, args.rate)
    after, machine_after = Cpu.sample(listener, postmaster), Machine.sample()
    return Run(warmup, cold, results, (before, after), (machine_before, machine_after))


@dataclass(frozen=True, slots=True)
class Tally:
    """What came of the events: answers, stored rows, the emulator's re-reads."""

    statuses: list[int]
    outcomes: Counter[str]
    unique_ids: set[str]
    refetching: set[str]
    """Ids of the events that may need a Stripe re-read."""
    rows: tuple[int, int]
    """`cloud_stripe_events`: rows, distinct ids."""
    reads: int
    """GET /v1/subscriptions/… the emulator served."""


def count_outcomes(dsn: str, events: list[Event], run: Run, emulator_log: list[dict[str, Any]]) -> Tally:
    statuses, replies = run.cold.statuses + run.results.statuses, run.cold.replies + run.results.replies
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT count(*), count(DISTINCT id) FROM cloud_stripe_events").fetchone()
    assert rows is not None
    return Tally(
        statuses=statuses,
        outcomes=Counter(outcome_of(s, r) for s, r in zip(statuses, replies, strict=True)),
        unique_ids={e.id for e in events},
        refetching={e.id for e in events if e.type.startswith(REFETCHING)},
        rows=(rows[0], rows[1]),
        reads=sum(
            1
            for r in emulator_log
            if r["method"] == "GET" and str(r["path"]).startswith("/v1/subscriptions/")
        ),
    )


def print_figures(
    args: argparse.Namespace, load: Workload, run: Run, tally: Tally, *, spread: str, postgres_found: bool
) -> None:
    """The workload, then throughput, latency, outcomes, re-reads and CPU of the measured events."""
    results = run.results
    n = len(results.latencies)
    ms = sorted(x * 1000 for x in results.latencies)
    print(
        f"listener benchmark ({args.workload}): {len(load.events)} events ({len(tally.unique_ids)} distinct) "
        f"over {load.subscriptions} subscriptions, {args.threads} threads, "
        f"{args.workers} worker{'s' if args.workers > 1 else ''}{spread}"
        f"{', no metrics' if args.no_metrics else ', metrics on'}"
    )
    print(f"  {load.description}")
    pace = f"sent at {args.rate:g}/s" if args.rate else "each thread sends when answered"
    cold_ms = max(run.cold.latencies, default=0.0) * 1000
    print(f"  after {run.warmup} warm-up events (max {cold_ms:.1f} ms), {n} measured, {pace}:")
    print(f"  {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'mean ms':>8}  elapsed")
    print(
        f"  {n / results.elapsed:>10.1f} {percentile(ms, 0.50):>8.1f} {percentile(ms, 0.99):>8.1f} "
        f"{ms[-1]:>8.1f} {statistics.fmean(ms):>8.1f}  {results.elapsed:.2f}s"
    )
    print(f"  outcomes: {dict(sorted(tally.outcomes.items()))}")
    print(
        f"  Stripe re-reads (GET /v1/subscriptions/…): {tally.reads}, "
        f"for {len(tally.refetching)} checkout/invoice/subscription events"
    )
    print_cpu(run, postgres_found=postgres_found)


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def print_cpu(run: Run, *, postgres_found: bool) -> None:
    """CPU per measured event by process, and the cores these kept busy beside the machine's."""
    results, (before, after), (machine_before, machine_after) = run.results, run.cpu, run.machine
    n = len(results.latencies)
    used = {k: (getattr(after, k) - getattr(before, k)) * 1000 / n for k in ("bench", "listener", "postgres")}
    busy = sum(used.values()) * n / 1000 / results.elapsed
    machine = (machine_after[0] - machine_before[0]) / results.elapsed
    iowait = (machine_after[1] - machine_before[1]) / results.elapsed
    pg_label = "postgres" if postgres_found else "postgres (every process named postgres)"
    print(
        f"  cpu ms/event: bench+emulator {used['bench']:.3f}, listener {used['listener']:.3f}, "
        f"{pg_label} {used['postgres']:.3f}  (client threads alone {results.client_cpu * 1000 / n:.3f})"
    )
    others = machine - busy
    print(
        f"  cores busy: {busy:.2f} by these, {machine:.2f} on the machine ({os.cpu_count()} cores), "
        f"iowait {iowait:.2f}{'  (other processes: figures disturbed)' if others > 0.1 else ''}"
    )


def exactly_once_checks(load: Workload, tally: Tally) -> dict[str, bool]:
    unique = len(tally.unique_ids)
    return {
        "exactly-once: every answer 200": set(tally.statuses) == {200},
        "exactly-once: one row per distinct event": tally.rows[0] == tally.rows[1] == unique,
        "exactly-once: duplicates answered as duplicates": tally.outcomes["duplicate"]
        == len(load.events) - unique,
        # Subscription events from a later second than the stored state need no re-read; checkout
        # and invoice events (for a new subscription), and same-second ties, do: at most one each.
        "exactly-once: at most one Stripe re-read per processed event": tally.reads <= len(tally.refetching),
    }


def metrics_checks(port: int, events: int, reads: int) -> dict[str, bool]:
    """The listener's `/metrics` (scraped after the clock stops) counts every event and re-read."""
    samples = scrape_metrics(port)
    counted = sum(v for (k, _), v in samples.items() if k == "kuploy_listener_events_total")
    rereads = samples.get(("kuploy_listener_stripe_rereads_total", "{}"), 0.0)
    print(f"  /metrics: {counted:.0f} events counted, {rereads:.0f} Stripe re-reads")
    return {
        "metrics: every event counted once, every re-read counted": counted == events and rereads == reads
    }


def print_checks(checks: dict[str, bool], wrong: list[str]) -> None:
    for check, ok in checks.items():
        extra = f" ({len(wrong)} wrong)" if wrong and check.startswith("never") else ""
        print(f"  {check}: {'OK' if ok else 'FAILED'}{extra}")
    for line in wrong[:3]:
        print(f"    {line}")


if __name__ == "__main__":
    sys.exit(main())
