"""Concurrent runs and Stripe faults: the final state is exact and nothing is duplicated."""

from __future__ import annotations

import dataclasses
import http.client
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import stripe

from reconciler import api
from reconciler.catalog import load_catalog
from reconciler.sandbox.emulator import RunningEmulator
from reconciler.settings import Settings

from conftest import kuploy_plan, standard_plans, write_catalog
from test_crash import assert_exact_state


def start_apply(catalog: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply", "--auto-approve", *extra, str(catalog)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_three_concurrent_applies_never_interleave(
    settings: Settings,
    cli_env: dict[str, str],
    tmp_path: Path,
    db: psycopg.Connection,
    emulator: RunningEmulator,
    stripe_client: stripe.StripeClient,
) -> None:
    emulator.emulator.set_faults(latency_ms=20)
    plans = [kuploy_plan("free", None)] + [kuploy_plan(f"p{i:02d}", 100 + i) for i in range(30)]
    catalog = write_catalog(tmp_path, plans)
    processes = [start_apply(catalog, cli_env, "--lock-timeout", "120") for _ in range(3)]
    results = [p.communicate(timeout=180) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], [err for _, err in results]
    outputs = [out for out, _ in results]
    assert sum("Apply complete" in out for out in outputs) == 1
    assert sum("No changes" in out for out in outputs) == 2
    emulator.emulator.set_faults(latency_ms=0)
    assert_exact_state(settings, catalog, db, stripe_client)


def test_migrate_and_apply_at_once(
    settings: Settings,
    cli_env: dict[str, str],
    tmp_path: Path,
    db: psycopg.Connection,
    stripe_client: stripe.StripeClient,
) -> None:
    catalog = write_catalog(tmp_path, standard_plans())
    migrate = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "migrate"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    apply = start_apply(catalog, cli_env)
    _, apply_err = apply.communicate(timeout=120)
    _, migrate_err = migrate.communicate(timeout=120)
    assert (apply.returncode, migrate.returncode) == (0, 0), apply_err + migrate_err
    assert_exact_state(settings, catalog, db, stripe_client)
    versions = db.execute(
        "SELECT count(*), count(DISTINCT version) FROM cloud_reconciler_migrations"
    ).fetchone()
    assert versions is not None and versions[0] == versions[1]


def test_apply_under_rate_limit_and_server_errors_is_exact(
    settings: Settings,
    cli_env: dict[str, str],
    tmp_path: Path,
    db: psycopg.Connection,
    emulator: RunningEmulator,
    stripe_client: stripe.StripeClient,
) -> None:
    """200 plans with Stripe at 25 requests/s and 5% of requests failing with a 500, half of them
    after the write was made (and replayed under the same key)."""
    plans = [kuploy_plan("free", None)] + [kuploy_plan(f"p{i:03d}", 100 + i) for i in range(199)]
    catalog = write_catalog(tmp_path, plans)
    emulator.emulator.set_faults(rate_limit=25, error_rate=0.05, seed=7)
    result = subprocess.run(
        [sys.executable, "-m", "reconciler", "apply", "--auto-approve", str(catalog)],
        env={**cli_env, "KUPLOY_STRIPE_MAX_RPS": "25"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stats = emulator.emulator.stats()
    assert stats["by_fault"].get("error_after_write", 0) > 0, stats  # the scenario did what it says
    assert "retried" in result.stderr
    emulator.emulator.set_faults(rate_limit=None, error_rate=0.0)
    assert_exact_state(settings, catalog, db, stripe_client)


# --- 429s and hung connections, through the whole tool ---------------------------------------------


@dataclass
class Passed:
    at: float
    method: str
    path: str
    idempotency_key: str | None
    status: int


class RetryAfterProxy:
    """An HTTP proxy in front of the emulator that adds `Retry-After: <seconds>` to each 429 (Stripe
    does not document the header, so the emulator does not send it; the tool must honour it when
    present) and notes when each request passed, for the gaps between a 429 and its retry."""

    def __init__(self, upstream: str, retry_after: int) -> None:
        self.log: list[Passed] = []
        target = urlsplit(upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                finally:
                    conn.close()
                key = self.headers.get("Idempotency-Key")
                proxy.log.append(Passed(time.monotonic(), self.command, self.path, key, answer.status))
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in (
                        "content-length",
                        "connection",
                        "transfer-encoding",
                        "date",
                        "server",
                    ):
                        self.send_header(name, value)
                if answer.status == 429:
                    self.send_header("Retry-After", str(retry_after))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_apply_against_a_rate_limit_below_its_own_backs_off_honouring_retry_after_and_converges(
    settings: Settings,
    cli_env: dict[str, str],
    tmp_path: Path,
    db: psycopg.Connection,
    emulator: RunningEmulator,
    stripe_client: stripe.StripeClient,
) -> None:
    """Stripe (the emulator) allows 4 requests/s, the tool is told 20/s: it meets 429s, waits the
    Retry-After each one carries before retrying that request, slows down, and converges."""
    plans = [kuploy_plan("free", None)] + [kuploy_plan(f"p{i:02d}", 100 + i) for i in range(12)]
    catalog = write_catalog(tmp_path, plans)
    emulator.emulator.set_faults(rate_limit=4)
    proxy = RetryAfterProxy(emulator.url, retry_after=1)
    try:
        env = {**cli_env, "STRIPE_API_BASE": proxy.url, "KUPLOY_STRIPE_MAX_RPS": "20"}
        result = subprocess.run(
            [sys.executable, "-m", "reconciler", "apply", "--auto-approve", str(catalog)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr[-3000:]
    limited = [p for p in proxy.log if p.status == 429]
    assert limited and emulator.emulator.stats()["by_fault"]["rate_limited"] == len(limited)
    assert f"({len(limited)} rate-limited)" in result.stderr, result.stderr[-500:]
    # Each rate-limited write was retried (same idempotency key) no sooner than its Retry-After.
    writes = [p for p in limited if p.idempotency_key]
    assert writes, "no write met a 429: the scenario did not test what it says"
    for refused in writes:
        retry = next(
            p for p in proxy.log if p.idempotency_key == refused.idempotency_key and p.at > refused.at
        )
        assert retry.at - refused.at >= 1.0, (refused, retry)
    emulator.emulator.set_faults(rate_limit=None)
    assert_exact_state(settings, catalog, db, stripe_client)
    writes_before = len([r for r in emulator.emulator.requests if r["method"] == "POST"])
    again = subprocess.run(
        [sys.executable, "-m", "reconciler", "apply", "--auto-approve", str(catalog)],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and "No changes" in again.stdout, again.stderr
    assert len([r for r in emulator.emulator.requests if r["method"] == "POST"]) == writes_before


def test_apply_through_hung_connections_retries_them_and_converges(
    settings: Settings,
    tmp_path: Path,
    db: psycopg.Connection,
    emulator: RunningEmulator,
    stripe_client: stripe.StripeClient,
) -> None:
    """A fifth of Stripe's connections hang (nothing runs) past the client's 1 s read timeout: each
    is retried under the same idempotency key, or (a write whose every attempt hung) left unanswered
    for the next round, and the apply converges without a duplicate."""
    plans = [kuploy_plan("free", None)] + [kuploy_plan(f"p{i:02d}", 100 + i) for i in range(12)]
    catalog = write_catalog(tmp_path, plans)
    emulator.emulator.set_faults(timeout_rate=0.2, hang_seconds=5, seed=11)
    impatient = dataclasses.replace(settings, stripe_timeout=1.0)
    outcome = api.apply(impatient, load_catalog(catalog), confirm=lambda plan: True)
    hung = emulator.emulator.stats()["by_fault"].get("timeout", 0)
    assert hung > 0, "no connection hung: the scenario did not test what it says"
    # Which request hangs is seeded, but not which write it belongs to (8 plans run at once): one
    # write may draw a hang on every attempt; its last one is then unanswered, not retried.
    assert outcome.stats is not None and outcome.stats.retries + outcome.stats.unanswered >= hung
    emulator.emulator.set_faults(timeout_rate=0.0)
    assert_exact_state(settings, catalog, db, stripe_client)
