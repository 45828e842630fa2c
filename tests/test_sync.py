"""License sync: the catalog fetched from a real local HTTP server standing in for kuploy.app.

Every failure exits 1, writes nothing (no row, no Stripe call, no cache) and never shows the key.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from reconciler.sandbox.emulator import RunningEmulator

from conftest import kuploy_plan, standard_plans, stripe_writes
from test_cli import run

LICENSE_KEY = "kuploy_lic_SuperSecret0123456789"


@dataclass
class Answer:
    status: int = 200
    body: bytes | str | dict[str, Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drip: float = 0.0
    """Seconds between 40-byte pieces of the body (a server sending its answer very slowly)."""
    cut: int | None = None
    """Send only this many bytes of the body, with the Content-Length of all of it, then close."""


@dataclass
class KuployApp:
    """Serves `catalog` with an ETag (304 on a match), unless `script` has answers queued first."""

    url: str = ""
    catalog: dict[str, Any] = field(default_factory=lambda: {"plans": standard_plans()})
    script: list[Answer] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)

    def etag(self) -> str:
        return '"' + str(abs(hash(json.dumps(self.catalog, sort_keys=True)))) + '"'

    def answer(self, headers: dict[str, str]) -> Answer:
        self.requests.append(headers)
        if self.script:
            return self.script.pop(0)
        if headers.get("authorization") != f"Bearer {LICENSE_KEY}":
            return Answer(401, {"error": "invalid license"})
        if headers.get("if-none-match") == self.etag():
            return Answer(304, b"", {"ETag": self.etag()})
        return Answer(200, self.catalog, {"ETag": self.etag()})


@pytest.fixture
def kuploy_app() -> Iterator[KuployApp]:
    app = KuployApp()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer = app.answer({k.lower(): v for k, v in self.headers.items()})
            time.sleep(answer.delay)
            body = answer.body
            if isinstance(body, dict):
                body = json.dumps(body)
            data = body.encode() if isinstance(body, str) else body
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.headers.pop("Content-Type", "application/json"))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if answer.cut is not None:
                    data = data[: answer.cut]
                for start in range(0, len(data), 40 if answer.drip else max(len(data), 1)):
                    self.wfile.write(data[start : start + 40] if answer.drip else data)
                    self.wfile.flush()
                    time.sleep(answer.drip)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and left

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    app.url = f"http://127.0.0.1:{server.server_address[1]}/api/v1/license/catalog"
    yield app
    server.shutdown()
    server.server_close()


@pytest.fixture
def env(cli_env: dict[str, str], kuploy_app: KuployApp, tmp_path: Path) -> dict[str, str]:
    return {
        **cli_env,
        "KUPLOY_CATALOG_URL": kuploy_app.url,
        "KUPLOY_LICENSE_KEY": LICENSE_KEY,
        "KUPLOY_STATE_DIR": str(tmp_path / "state"),
        "KUPLOY_CATALOG_TIMEOUT": "2",
    }


def assert_clean_failure(result: Any) -> None:
    """Exit 1, no traceback, the reason on an `Error:` line of stderr (after any progress lines)."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert "\nError: " in "\n" + result.stderr, result.stderr


def no_key(result: Any) -> None:
    assert LICENSE_KEY not in result.stdout + result.stderr


def rows(db: psycopg.Connection) -> list[tuple[Any, ...]]:
    if db.execute("SELECT to_regclass('cloud_plans')").fetchone() == (None,):
        return []
    return db.execute('SELECT "planId", "isActive" FROM cloud_plans ORDER BY "planId"').fetchall()


def assert_nothing_written(
    result: Any, db: psycopg.Connection, emulator: RunningEmulator, tmp_path: Path, *, rows_before: Any = ()
) -> None:
    assert_clean_failure(result)
    no_key(result)
    assert rows(db) == list(rows_before)
    if not rows_before:
        assert stripe_writes(emulator) == []
        assert not (tmp_path / "state" / "catalog-cache").exists()


def test_sync_applies_then_a_second_sync_writes_nothing(
    env: dict[str, str], kuploy_app: KuployApp, db: psycopg.Connection, emulator: RunningEmulator
) -> None:
    first = run("sync", env=env)
    assert first.returncode == 0, first.stderr
    no_key(first)
    assert "+ plan.pro" in first.stdout and "Apply complete" in first.stdout
    assert "fetched, 3 plan(s)" in first.stderr
    assert kuploy_app.requests[0]["authorization"] == f"Bearer {LICENSE_KEY}"
    assert rows(db) == [("free", True), ("pro", True), ("team", True)]

    writes = len(stripe_writes(emulator))
    second = run("sync", env=env)
    assert second.returncode == 0, second.stderr
    assert "304" in second.stderr and "No changes" in second.stdout
    assert kuploy_app.requests[1]["if-none-match"] == kuploy_app.etag()
    assert len(stripe_writes(emulator)) == writes
    no_key(second)

    # drift with no argument compares with what sync applied (the last applied catalog)
    drift = run("drift", env=env)
    assert drift.returncode == 0, drift.stdout + drift.stderr
    assert "last applied catalog" in drift.stdout


def test_sync_a_changed_catalog_applies_the_change(
    env: dict[str, str], kuploy_app: KuployApp, db: psycopg.Connection
) -> None:
    assert run("sync", env=env).returncode == 0
    kuploy_app.catalog["plans"][1]["name"] = "Pro Plus"
    result = run("sync", env=env)
    assert result.returncode == 0, result.stderr
    assert '"Pro" → "Pro Plus"' in result.stdout
    assert db.execute("SELECT name FROM cloud_plans WHERE \"planId\" = 'pro'").fetchone() == ("Pro Plus",)


def test_unauthorised_stops_with_nothing_written(
    env: dict[str, str], db: psycopg.Connection, emulator: RunningEmulator, tmp_path: Path
) -> None:
    result = run("sync", env={**env, "KUPLOY_LICENSE_KEY": LICENSE_KEY + "x"})
    assert_nothing_written(result, db, emulator, tmp_path)
    assert "refused the license key (HTTP 401)" in result.stderr and "KUPLOY_LICENSE_KEY" in result.stderr
    assert LICENSE_KEY + "x" not in result.stdout + result.stderr


def test_missing_license_key_is_a_clear_error(
    env: dict[str, str], db: psycopg.Connection, emulator: RunningEmulator, tmp_path: Path
) -> None:
    result = run("sync", env={k: v for k, v in env.items() if k != "KUPLOY_LICENSE_KEY"})
    assert_nothing_written(result, db, emulator, tmp_path)
    assert "KUPLOY_LICENSE_KEY is not set" in result.stderr


def test_a_5xx_is_retried(env: dict[str, str], kuploy_app: KuployApp, db: psycopg.Connection) -> None:
    kuploy_app.script = [Answer(500, "oops"), Answer(503, "busy", {"Retry-After": "0"})]
    result = run("sync", env=env)
    assert result.returncode == 0, result.stderr
    assert len(kuploy_app.requests) == 3
    assert rows(db) == [("free", True), ("pro", True), ("team", True)]


def test_5xx_every_time_gives_up(
    env: dict[str, str],
    kuploy_app: KuployApp,
    db: psycopg.Connection,
    emulator: RunningEmulator,
    tmp_path: Path,
) -> None:
    kuploy_app.script = [Answer(502, "bad gateway")] * 3
    result = run("sync", env={**env, "KUPLOY_CATALOG_RETRIES": "2"})
    assert_nothing_written(result, db, emulator, tmp_path)
    assert "HTTP 502" in result.stderr and "3 attempts" in result.stderr
    assert len(kuploy_app.requests) == 3


def test_a_4xx_is_not_retried(
    env: dict[str, str],
    kuploy_app: KuployApp,
    db: psycopg.Connection,
    emulator: RunningEmulator,
    tmp_path: Path,
) -> None:
    kuploy_app.script = [Answer(404, "no")]
    result = run("sync", env=env)
    assert_nothing_written(result, db, emulator, tmp_path)
    assert "HTTP 404" in result.stderr and len(kuploy_app.requests) == 1


def test_timeout(
    env: dict[str, str],
    kuploy_app: KuployApp,
    db: psycopg.Connection,
    emulator: RunningEmulator,
    tmp_path: Path,
) -> None:
    kuploy_app.script = [Answer(200, {"plans": standard_plans()}, delay=3)] * 2
    started = time.monotonic()
    result = run("sync", env={**env, "KUPLOY_CATALOG_TIMEOUT": "0.3", "KUPLOY_CATALOG_RETRIES": "1"})
    assert time.monotonic() - started < 30
    assert_nothing_written(result, db, emulator, tmp_path)
    assert "timed out" in result.stderr and "2 attempts" in result.stderr


def test_unreachable(
    env: dict[str, str], db: psycopg.Connection, emulator: RunningEmulator, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    result = run(
        "sync",
        env={**env, "KUPLOY_CATALOG_URL": f"http://127.0.0.1:{port}/catalog", "KUPLOY_CATALOG_RETRIES": "1"},
    )
    assert_nothing_written(result, db, emulator, tmp_path)
    assert "cannot connect" in result.stderr


def test_a_slow_drip_is_cut_off_by_the_deadline_and_retried(
    env: dict[str, str],
    kuploy_app: KuployApp,
    db: psycopg.Connection,
    emulator: RunningEmulator,
    tmp_path: Path,
) -> None:
    """40 bytes every 0.2 s never trips a 1 s read timeout, and used to hold the fetch until the whole
    catalog had trickled in (37 s for a 3 s timeout). The whole answer must arrive within the timeout."""
    dripping = Answer(200, {"plans": standard_plans()}, drip=0.2)  # about 1.5 KB: 8 s in all
    kuploy_app.script = [dripping, dripping]
    slow = {**env, "KUPLOY_CATALOG_TIMEOUT": "1", "KUPLOY_CATALOG_RETRIES": "1"}
    result = run("sync", env=slow)
    assert_nothing_written(result, db, emulator, tmp_path)
    assert "did not arrive whole within 1 s (KUPLOY_CATALOG_TIMEOUT)" in result.stderr, result.stderr
    assert "2 attempts" in result.stderr and len(kuploy_app.requests) == 2
    kuploy_app.script = [dripping]  # then a prompt answer: the retry gets the catalog
    result = run("sync", env=slow)
    assert result.returncode == 0, result.stderr
    assert rows(db) == [("free", True), ("pro", True), ("team", True)]


def test_a_body_cut_short_is_reported_and_retried(
    env: dict[str, str],
    kuploy_app: KuployApp,
    db: psycopg.Connection,
    emulator: RunningEmulator,
    tmp_path: Path,
) -> None:
    cut = Answer(200, {"plans": standard_plans()}, cut=100)
    kuploy_app.script = [cut, cut]
    result = run("sync", env={**env, "KUPLOY_CATALOG_RETRIES": "1"})
    assert_nothing_written(result, db, emulator, tmp_path)
    size = len(json.dumps({"plans": standard_plans()}))
    assert f"the answer was cut short (100 of {size} bytes)" in result.stderr, result.stderr
    assert "2 attempts" in result.stderr and "not JSON" not in result.stderr
    kuploy_app.script = [cut]
    result = run("sync", env=env)
    assert result.returncode == 0, result.stderr
    assert len(kuploy_app.requests) == 4


def test_a_json_body_starting_with_a_bom_is_accepted(
    env: dict[str, str], kuploy_app: KuployApp, db: psycopg.Connection
) -> None:
    """As a catalog file with a UTF-8 byte order mark is."""
    kuploy_app.script = [Answer(200, "\ufeff" + json.dumps({"plans": standard_plans()}))]
    result = run("sync", env=env)
    assert result.returncode == 0, result.stderr
    assert rows(db) == [("free", True), ("pro", True), ("team", True)]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (Answer(200, "<html>maintenance</html>", {"Content-Type": "text/html"}), "not JSON (text/html)"),
        (Answer(200, b""), "empty body"),
        (Answer(200, {"plans": []}), "empty catalog"),
        (Answer(200, {"plans": [kuploy_plan("pro", -5)]}), "the fetched catalog is invalid"),
        (Answer(301, "", {"Location": "https://elsewhere.example/"}), "redirect"),
    ],
    ids=["html", "empty-body", "no-plans", "invalid", "redirect"],
)
def test_bad_answers_write_nothing(
    env: dict[str, str],
    kuploy_app: KuployApp,
    db: psycopg.Connection,
    emulator: RunningEmulator,
    tmp_path: Path,
    answer: Answer,
    message: str,
) -> None:
    kuploy_app.script = [answer]
    result = run("sync", env=env)
    assert_nothing_written(result, db, emulator, tmp_path)
    assert message in result.stderr, result.stderr


def test_a_catalog_removing_every_paid_plan_is_refused(
    env: dict[str, str], kuploy_app: KuployApp, db: psycopg.Connection, emulator: RunningEmulator
) -> None:
    assert run("sync", env=env).returncode == 0
    before, writes = rows(db), len(stripe_writes(emulator))
    kuploy_app.catalog = {"plans": [kuploy_plan("free", None)]}

    result = run("sync", env=env)
    assert_clean_failure(result)
    assert "refusing to archive 2 of 2 active paid plan(s)" in result.stderr
    assert "--allow-mass-archive" in result.stderr
    assert rows(db) == before and len(stripe_writes(emulator)) == writes

    planned = run("plan", env=env)  # plan shows it, and warns
    assert planned.returncode == 0 and "Warning: this plan archives 2 of 2" in planned.stderr

    half = run("sync", "--max-archive-share", "1", env=env)
    assert half.returncode == 0, half.stderr
    assert rows(db) == [("free", True), ("pro", False), ("team", False)]


def test_the_guard_applies_to_apply_of_a_file_too(
    cli_env: dict[str, str], tmp_path: Path, db: psycopg.Connection
) -> None:
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"plans": standard_plans()}))
    assert run("apply", "--auto-approve", str(catalog), env=cli_env).returncode == 0
    catalog.write_text(json.dumps({"plans": standard_plans()[:2]}))  # drops team: 1 of 2 = 50%, allowed
    assert run("apply", "--auto-approve", str(catalog), env=cli_env).returncode == 0
    catalog.write_text(json.dumps({"plans": standard_plans()[:1]}))  # drops pro: 1 of 1
    refused = run("apply", "--auto-approve", str(catalog), env=cli_env)
    assert_clean_failure(refused)
    allowed = run("apply", "--auto-approve", "--allow-mass-archive", str(catalog), env=cli_env)
    assert allowed.returncode == 0, allowed.stderr


def test_dry_run_writes_nothing_at_all(
    env: dict[str, str], db: psycopg.Connection, emulator: RunningEmulator, tmp_path: Path
) -> None:
    result = run("sync", "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert "+ plan.pro" in result.stdout and "Dry run: nothing was written" in result.stderr
    assert rows(db) == [] and stripe_writes(emulator) == []
    assert not (tmp_path / "state" / "catalog-cache").exists()
    no_key(result)


def test_plain_http_is_only_for_this_machine(env: dict[str, str]) -> None:
    result = run("sync", env={**env, "KUPLOY_CATALOG_URL": "http://kuploy.example/catalog"})
    assert_clean_failure(result)
    assert "plain http" in result.stderr


def test_a_url_argument_works_wherever_a_catalog_path_does(
    env: dict[str, str], kuploy_app: KuployApp
) -> None:
    assert run("validate", kuploy_app.url, env=env).stdout.endswith("valid, 3 plan(s)\n")
    planned = run("plan", "--detailed-exitcode", kuploy_app.url, env=env)
    assert planned.returncode == 2 and "+ plan.pro" in planned.stdout
    no_key(planned)


def test_no_catalog_and_no_url_is_a_usage_error(cli_env: dict[str, str]) -> None:
    result = run("plan", env=cli_env)
    assert result.returncode == 1 and "KUPLOY_CATALOG_URL" in result.stderr
