"""Secrets never show: with real-looking values in every variable, every command, on success and
failure paths, in every output format, with `--debug`, and the listener's logs, prints none of them,
and no file, table row or Stripe request the tool produces holds one.

The commands come from `reconciler.cli.cli` itself, so a new command is run (at least `--help` and a
bare invocation) without this file changing; known commands get real scenarios.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import http.server
import io
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import psycopg
import pytest
from test_hostile import run_in_process
from test_listener import first_answer

from reconciler.cli import cli
from reconciler.listener import uvicorn_log_config
from reconciler.sandbox.emulator import RunningEmulator

from conftest import kuploy_plan, standard_plans, write_catalog

# Real-looking values, each with a distinctive body. The secret key is alphanumeric after sk_test_,
# so the emulator accepts it as a (test-mode) key.
SECRET_KEY = "sk_test_51QkUpLoYsEcReTkEy7fGh2JkL9mNpQrStUvWxYz0123"
PUBLISHABLE_KEY = "pk_test_51QkUpLoYpUbLiShAbLe4aBcDeFgHiJkLmNoPqRsT"
WEBHOOK_SECRET = "whsec_kUpLoYwEbHoOkSiGnInG5eCrEt0a1B2c3D4e5F6g7"
LICENSE_KEY = "kuploy_lic_9Zx8Yw7Vu6Ts5Rq4Po3Nm2Lk1Ji0HgFeDcBa"
DB_PASSWORD = "Pg-S3cr3t/pa55+w0rd&Zq"
REVOKED_KEY = "sk_test_ReVoKeD-kEy.9f8e7d6c5b4a3928171615"  # not [A-Za-z0-9]: the emulator answers 401
LIVE_KEY = "sk_live_51QkUpLoYlIvEkEy3aZbYcXdWeVfUgThSiRj"
WRONG_LICENSE = "kuploy_lic_WrOnGlIcEnSe1a2b3c4d5e6f7g8h9i0"

ALL_SECRETS: tuple[str, ...] = (
    SECRET_KEY,
    PUBLISHABLE_KEY,
    WEBHOOK_SECRET,
    LICENSE_KEY,
    DB_PASSWORD,
    quote(DB_PASSWORD, safe=""),
    REVOKED_KEY,
    LIVE_KEY,
    WRONG_LICENSE,
)
WINDOW = 12
"""A leak is any 12 characters in a row of a secret's body (what follows sk_test_, whsec_...):
a truncated or partly masked secret is still a leak; Stripe-style `sk_test_****...0123` is not."""

SKIPPED = {("sandbox", "serve")}
"""Long-running servers not started here (the listener is: see `test_listener_logs_hold_no_secret`)."""


def _body(secret: str) -> str:
    for prefix in ("sk_test_", "sk_live_", "pk_test_", "whsec_", "kuploy_lic_"):
        if secret.startswith(prefix):
            return secret[len(prefix) :]
    return secret


def leaks(text: str, extra: tuple[str, ...] = ()) -> list[str]:
    """The secrets `text` shows (whole, or any WINDOW-long piece of their body)."""
    found = []
    for secret in (*ALL_SECRETS, *extra):
        body = _body(secret)
        pieces = {body[i : i + WINDOW] for i in range(max(1, len(body) - WINDOW + 1))}
        if secret in text or any(piece in text for piece in pieces):
            found.append(secret)
    return found


@dataclass
class Transcript:
    """Everything the tool said, per run, for one scan at the end (and for the failure message)."""

    runs: list[tuple[str, str]] = field(default_factory=list)
    commands_run: set[tuple[str, ...]] = field(default_factory=set)
    made: list[str] = field(default_factory=list)
    """Secrets Stripe made during the run (a webhook endpoint's signing secret): Stripe's answer holds
    them, nothing else may."""

    def add(self, label: str, text: str) -> None:
        self.runs.append((label, text))

    def assert_clean(self) -> None:
        dirty = {
            label: found
            for label, text in self.runs
            if (found := leaks(text, () if label == STRIPE_LABEL else tuple(self.made)))
        }
        assert not dirty, f"secrets shown: {dirty}"


def command_paths(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        if isinstance(command, click.Group):
            paths.extend(command_paths(command, path))
        else:
            paths.append(path)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def url_with_password(database_url: str) -> str:
    """This test's database as a URL with a password in it (the test server trusts local logins,
    so the password is accepted and ignored)."""
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    host = quote(str(info.get("host", "127.0.0.1")), safe="")  # may be a socket folder: /tmp/...
    return (
        f"postgresql://{info.get('user', 'postgres')}:{quote(DB_PASSWORD, safe='')}@{host}:"
        f"{info.get('port', '5432')}/{info['dbname']}"
    )


@pytest.fixture
def secret_env(cli_env: dict[str, str], database_url: str, tmp_path: Path) -> dict[str, str]:
    url = url_with_password(database_url)
    with psycopg.connect(url) as conn:  # the password is in the URL, and it still connects
        assert conn.execute("SELECT 1").fetchone() == (1,)
    return {
        **cli_env,
        "DATABASE_URL": url,
        "STRIPE_SECRET_KEY": SECRET_KEY,
        "STRIPE_PUBLISHABLE_KEY": PUBLISHABLE_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "KUPLOY_LICENSE_KEY": LICENSE_KEY,
        "KUPLOY_SANDBOX_DIR": str(tmp_path / "work" / ".kuploy-sandbox"),
        "KUPLOY_STATE_DIR": str(tmp_path / "work" / ".kuploy-state"),
        "KUPLOY_CATALOG_RETRIES": "0",
        "KUPLOY_CATALOG_TIMEOUT": "5",
    }


def cli_run(
    args: tuple[str, ...], env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-m", "reconciler", *args],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:  # a server-like command: its output so far still counts
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or ""
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else e.stderr or ""
        return subprocess.CompletedProcess(args, -1, out, err)


# --- a stand-in for kuploy.app's catalog endpoint (license sync) ----------------------------------


@dataclass
class CatalogServer:
    url: str
    status: int = 200
    body: bytes = b""
    seen_tokens: list[str] = field(default_factory=list)


@pytest.fixture
def catalog_server() -> Iterator[CatalogServer]:
    port = free_port()
    state = CatalogServer(url=f"http://127.0.0.1:{port}/api/catalog")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            auth = self.headers.get("Authorization", "")
            state.seen_tokens.append(auth.removeprefix("Bearer "))
            status = state.status if auth == f"Bearer {LICENSE_KEY}" else 401
            body = state.body if status == 200 else b'{"error": "unauthorized"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


# --- the scan ------------------------------------------------------------------------------------


def scan_files(root: Path, transcript: Transcript) -> int:
    """Every file under `root` (saved plans, exports, state and cache folders, anything else)."""
    count = 0
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            transcript.add(f"file {path.relative_to(root)}", path.read_bytes().decode("utf-8", "replace"))
            count += 1
    return count


def scan_database(db: psycopg.Connection, transcript: Transcript) -> None:
    """Every row of every table the tool made (cloud_*): what it recorded about each apply too."""
    tables = [
        r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
    ]
    assert any(t == "cloud_plans" for t in tables), tables
    for table in tables:
        rows = db.execute(f'SELECT t::text FROM "{table}" t').fetchall()
        transcript.add(f"table {table}", "\n".join(r[0] for r in rows))


STRIPE_LABEL = "stripe requests"


def scan_stripe(emulator: RunningEmulator, transcript: Transcript) -> None:
    """What was sent to Stripe (parameters, metadata, idempotency keys) and what Stripe holds."""
    transcript.add(STRIPE_LABEL, json.dumps(emulator.emulator.requests, default=str))


def test_the_scan_finds_a_secret_whole_or_in_part() -> None:
    """The scanner itself: whole, percent-encoded and truncated secrets are found; a Stripe-style
    mask (prefix and last four) and the variable names are not leaks."""
    assert leaks(f"STRIPE_SECRET_KEY={SECRET_KEY}") == [SECRET_KEY]
    assert leaks(f"postgresql://kuploy:{quote(DB_PASSWORD, safe='')}@db/kuploy")
    assert leaks(f"key {SECRET_KEY[:22]}...") == [SECRET_KEY]
    assert leaks(f"Bearer {LICENSE_KEY[3:30]}") == [LICENSE_KEY]
    assert leaks(f"Invalid API Key provided: sk_test_{'*' * 30}{REVOKED_KEY[-4:]}") == []
    assert leaks("DATABASE_URL postgresql://kuploy:***@db/kuploy STRIPE_WEBHOOK_SECRET whsec_…") == []


# --- the commands --------------------------------------------------------------------------------


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_no_command_shows_a_secret(
    debug: bool,
    secret_env: dict[str, str],
    tmp_path: Path,
    emulator: RunningEmulator,
    db: psycopg.Connection,
    catalog_server: CatalogServer,
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    transcript = Transcript()
    env = secret_env

    good = write_catalog(work, standard_plans(), name="catalog.json")
    changed = write_catalog(
        work,
        [kuploy_plan("free", None), kuploy_plan("pro", 2500), kuploy_plan("team", 19900, currency="usd")],
        name="changed.json",
    )
    bad = write_catalog(work, [kuploy_plan("pro", priceCents="20")], name="bad.json")
    catalog_server.body = json.dumps({"plans": standard_plans()}).encode()
    paths = {path for path in command_paths() if path not in SKIPPED}

    Job = tuple[tuple[str, ...], int | None, dict[str, str]]

    def record(job: Job, result: subprocess.CompletedProcess[str]) -> None:
        args, expect, _ = job
        transcript.add(" ".join(args), result.stdout + "\n" + result.stderr)
        words = [a for a in args if not a.startswith("-")]
        if "--help" not in args:
            transcript.commands_run.update(p for p in paths if tuple(words[: len(p)]) == p)
        if expect is not None:
            assert result.returncode == expect, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr or "--debug" in args, (args, result.stderr)

    def debugged(args: tuple[str, ...]) -> tuple[str, ...]:
        """With `debug`, every command runs with --debug (what people turn on in CI logs)."""
        return ("--debug", *args) if debug and "--debug" not in args else args

    def step(*args: str, expect: int | None = None, run_env: dict[str, str] | None = None) -> None:
        job = (debugged(args), expect, run_env or env)
        record(job, cli_run(job[0], job[2], work))

    def together(*jobs: tuple[Any, ...]) -> None:
        """Runs that cannot write (reads, refusals, help): concurrently. (args, expect[, env])."""
        full: list[Job] = [(debugged(j[0]), j[1], j[2] if len(j) > 2 else env) for j in jobs]
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda job: cli_run(job[0], job[2], work), full))
        for job, result in zip(full, results, strict=True):
            record(job, result)

    sync_env = {**env, "KUPLOY_CATALOG_URL": catalog_server.url}
    wrong_license = {**sync_env, "KUPLOY_LICENSE_KEY": WRONG_LICENSE}
    closed = free_port()
    unreachable_db = {
        **env,
        "DATABASE_URL": f"postgresql://kuploy:{quote(DB_PASSWORD, safe='')}@127.0.0.1:{closed}/kuploy",
    }
    keyvalue_db = {
        **env,
        "DATABASE_URL": f"host=127.0.0.1 port={closed} user=kuploy password={DB_PASSWORD} dbname=kuploy",
    }
    revoked = {**env, "STRIPE_SECRET_KEY": REVOKED_KEY}
    live_publishable = {**env, "STRIPE_PUBLISHABLE_KEY": "pk_live_" + _body(PUBLISHABLE_KEY)}

    # Success and failure paths, in an order that builds real state; every secret set throughout.
    together(
        (("doctor",), 1),  # nothing migrated yet: FAILs, each with its fix
        (("doctor", "-o", "json"), 1),
        (("validate", str(good)), 0),
        (("validate", str(bad)), 1),
        (("--debug", "validate", str(bad)), 1),
        (("plan", str(bad)), 1),
        (("apply", str(good)), 1),  # no terminal and no --auto-approve
    )
    step("migrate", expect=0)
    step("seed", expect=0)
    together(
        (("plan", str(good)), 0),
        (("plan", "-o", "json", str(good)), 0),
        (("plan", "-o", "markdown", str(good)), 0),
        (("plan", "--detailed-exitcode", "--out", "saved-plan.json", str(good)), 2),
        (("seed",), 1),  # cloud_plans is not empty any more
    )
    step("apply", "saved-plan.json", expect=0)
    step("apply", "--auto-approve", str(changed), expect=0)  # price changes: new Prices, old archived
    together((("drift",), 0), (("apply", "saved-plan.json"), 1))  # a saved plan applies once
    db.execute("UPDATE cloud_plans SET name = 'Edited by hand' WHERE \"planId\" = 'pro'")
    together((("drift",), 2), (("drift", "-o", "json", str(changed)), 2))
    step("apply", "--auto-approve", str(changed), expect=0)  # heals the drift
    # The webhook endpoint: Stripe answers its signing secret once; it goes to the file, and only there.
    secret_file = tmp_path / "whsec"
    webhook = ("--webhook-url", "https://kuploy.example/api/webhooks/stripe", "--webhook-secret-file")
    step("apply", "--auto-approve", *webhook, str(secret_file), str(changed), expect=0)
    made = secret_file.read_text()
    assert made.startswith("whsec_") and made != WEBHOOK_SECRET
    transcript.made.append(made)
    secret_file.unlink()  # the one place it belongs; every other file is scanned
    together(
        (("export",), 0),
        (("export", "--out", "exported.yaml"), 0),
        (("doctor", "-o", "json"), None),
        (("doctor",), None),
    )
    if ("sync",) in paths:
        step("sync", "--dry-run", run_env=sync_env, expect=0)
        step("sync", run_env=sync_env, expect=0)
        assert LICENSE_KEY in catalog_server.seen_tokens  # the license key was really sent
        catalog_server.status = 500
    together(
        (("validate", "exported.yaml"), 0),
        (("plan", str(good)), 1, unreachable_db),
        (("--debug", "plan", str(good)), 1, unreachable_db),
        (("--debug", "apply", "--auto-approve", str(good)), 1, unreachable_db),
        (("doctor",), 1, unreachable_db),
        (("doctor", "-o", "json"), 1, unreachable_db),
        (("export",), 1, unreachable_db),
        (("--debug", "drift"), 1, keyvalue_db),
        (("migrate",), 1, keyvalue_db),
        (("plan", "-o", "json", str(good)), 1, revoked),
        (("--debug", "apply", "--auto-approve", str(good)), 1, revoked),
        (("--debug", "doctor", "-o", "json"), 1, revoked),
        (("--debug", "plan", str(good)), 1, {**env, "STRIPE_API_BASE": f"http://127.0.0.1:{closed}"}),
        (("plan", str(good)), 1, {**env, "STRIPE_SECRET_KEY": LIVE_KEY}),  # live key without --live
        (("plan", "--live", str(good)), 1),  # --live with a test key
        (("plan", str(good)), 1, live_publishable),
        (("--debug", "doctor"), 1, live_publishable),
        *(
            [
                (("sync",), 1, wrong_license),  # kuploy.app answers 401
                (("--debug", "sync"), 1, wrong_license),
                (("--debug", "sync", "--dry-run"), 1, sync_env),  # kuploy.app answers 500
            ]
            if ("sync",) in paths
            else []
        ),
    )
    for path in sorted(paths):  # every command's help, in-process (no interpreter start-up each)
        code, out, err = run_in_process(*path, "--help", env=env)
        transcript.add(f"{' '.join(path)} --help", out + err)
        assert code == 0, (path, out, err)

    # A command without a scenario above (added since this was written): its default path, bare.
    for path in sorted(paths - transcript.commands_run - {("listen",)}):
        record((path, None, env), cli_run(path, env, work, timeout=20))  # whatever it does, bounded
    assert transcript.commands_run >= paths - {("listen",)}

    assert len(transcript.runs) >= 40, [label for label, _ in transcript.runs]
    scanned = scan_files(tmp_path, transcript)
    assert scanned >= 4  # the catalogs, the saved plan, the export at least
    assert (work / "saved-plan.json").exists() and (work / "exported.yaml").exists()
    scan_database(db, transcript)
    scan_stripe(emulator, transcript)
    transcript.assert_clean()


def test_stripe_log_goes_through_the_redacting_logs(
    secret_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator
) -> None:
    """`STRIPE_LOG=debug` made the SDK print() its request lines to stderr, outside logging, response
    bodies included (a webhook endpoint's signing secret). Now the tool takes it out of the
    environment and logs the SDK's lines at that level through its redacting handler."""
    work = tmp_path / "work"
    work.mkdir()
    env = {**secret_env, "STRIPE_LOG": "debug"}
    catalog = str(write_catalog(work, standard_plans()))
    transcript = Transcript()
    planned = cli_run(("plan", catalog), env, work)
    assert planned.returncode == 0, planned.stderr
    assert "INFO:stripe:message='Request to Stripe api' method=get url=" in planned.stderr
    assert "DEBUG:stripe:message='API response body' (body not logged)" in planned.stderr
    secret_file = tmp_path / "whsec"
    webhook = ("--webhook-url", "https://kuploy.example/api/webhooks/stripe", "--webhook-secret-file")
    applied = cli_run(("apply", "--auto-approve", *webhook, str(secret_file), catalog), env, work)
    assert applied.returncode == 0, applied.stderr
    assert "DEBUG:stripe:message='Post details' (body not logged)" in applied.stderr
    transcript.made.append(secret_file.read_text())
    for label, result in (("plan", planned), ("apply", applied)):
        transcript.add(f"STRIPE_LOG=debug {label}", result.stdout + "\n" + result.stderr)
    transcript.assert_clean()


# --- the webhook listener ------------------------------------------------------------------------


def _sign(body: bytes, secret: str) -> str:
    ts = int(time.time())
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def _event(event_type: str, obj: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex[:24]}",
            "object": "event",
            "api_version": "2024-06-20",
            "created": int(time.time()),
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
    ).encode()


def _post(port: int, body: bytes, signature: str | None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    try:
        conn.request("POST", "/api/webhooks/stripe", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.mark.skipif(("listen",) not in command_paths(), reason="this version has no `listen` command")
@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_listener_logs_hold_no_secret(
    debug: bool, secret_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator, db: psycopg.Connection
) -> None:
    """`listen` as deployed: a signed event it records, one it re-fetches from Stripe (unknown
    subscription), a bad signature and an unsigned request; then its whole log is scanned."""
    work = tmp_path / "work"
    work.mkdir()
    assert cli_run(("migrate",), secret_env, work).returncode == 0
    port = free_port()
    args = [*(["--debug"] if debug else []), "listen", "--port", str(port)]
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args],
        env=secret_env,
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert first_answer(process, f"http://127.0.0.1:{port}", "/healthz").status == 200
        product = {"id": "prod_Handmade000001", "object": "product", "name": "Handmade", "metadata": {}}
        body = _event("product.created", product)
        assert _post(port, body, _sign(body, WEBHOOK_SECRET)) == 200
        subscription = {
            "id": "sub_Unknown00000000001",
            "object": "subscription",
            "status": "active",
            "metadata": {"organizationId": "org_1"},
            "items": {"object": "list", "data": []},
        }
        body = _event("customer.subscription.updated", subscription)
        assert _post(port, body, _sign(body, WEBHOOK_SECRET)) in (200, 503)
        assert _post(port, body, _sign(body, "whsec_" + "not-the-secret" * 3)) == 400
        assert _post(port, b"{}", None) == 400
    finally:
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
    transcript = Transcript()
    transcript.add(" ".join(args), out + "\n" + err)
    assert "rejected" in err, err  # the log really has the requests in it
    scan_files(tmp_path, transcript)
    scan_database(db, transcript)
    transcript.assert_clean()


# --- known leaks ---------------------------------------------------------------------------------

LEAKY_URLS = {
    "bad-scheme": f"mysql://kuploy:{quote(DB_PASSWORD, safe='')}@127.0.0.1:3306/kuploy",
    "bad-percent-encoding": "postgresql://kuploy:Pg-S3cr3t%zzpa55+w0rd&Zq@127.0.0.1:5432/kuploy",
    "unclosed-bracket-debug": f"postgresql://kuploy:{quote(DB_PASSWORD, safe='')}@[::1/kuploy",
}


@pytest.mark.parametrize("case", sorted(LEAKY_URLS))
def test_a_malformed_database_url_does_not_print_its_password(
    case: str, secret_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**secret_env, "DATABASE_URL": LEAKY_URLS[case]}
    catalog = str(write_catalog(tmp_path, standard_plans()))
    commands = [("plan", catalog), ("doctor",)]
    if case.endswith("-debug"):
        commands = [("--debug", "plan", catalog)]
    for args in commands:
        result = cli_run(args, env, tmp_path)
        assert result.returncode == 1
        shown = result.stdout + result.stderr
        assert "S3cr3t" not in shown, (args, shown)


# --- every form a database password takes in a DSN ------------------------------------------------

SPACED_PASSWORD = "Pg-S3cr3t pa55/w0rd&Zq 'x'"
"""A space (needs quoting in a key/value DSN), a quote, '/', '&' (need percent-encoding in a URL)."""


def _dsn_forms(database_url: str, port: int | None = None) -> dict[str, str]:
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    host, user, dbname = str(info.get("host", "127.0.0.1")), str(info.get("user", "postgres")), info["dbname"]
    port = port or int(info.get("port") or 5432)
    encoded, url_host = quote(SPACED_PASSWORD, safe=""), quote(host, safe="")
    keyvalue = psycopg.conninfo.make_conninfo(
        "", host=host, port=port, user=user, dbname=dbname, password=SPACED_PASSWORD
    )
    return {
        "url-userinfo": f"postgresql://{user}:{encoded}@{url_host}:{port}/{dbname}",
        "url-query": f"postgresql://{user}@{url_host}:{port}/{dbname}?sslmode=disable&password={encoded}",
        "url-query-first": f"postgresql://{user}@{url_host}:{port}/{dbname}?password={encoded}",
        "keyvalue-quoted": keyvalue,
        "keyvalue-plain": f"host={host} port={port} user={user} dbname={dbname} password=Pg-S3cr3t-pa55",
    }


def _shows_password(text: str) -> bool:
    body = SPACED_PASSWORD
    pieces = {body[i : i + 6] for i in range(len(body) - 5)} | {quote(body, safe="")[:12], "S3cr3t"}
    return any(piece in text for piece in pieces)


@pytest.mark.parametrize("reachable", [True, False], ids=["reachable", "unreachable"])
def test_no_password_form_in_a_dsn_is_shown(
    reachable: bool, cli_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    """plan, --debug plan, doctor and doctor -o json, with the password in the URL's userinfo, in
    its `?password=` parameter, and in a key/value DSN (quoted, with a space): never shown."""
    forms = _dsn_forms(database_url, None if reachable else free_port())
    if reachable:
        for dsn in forms.values():  # each form really is a working DSN (the server trusts local logins)
            with psycopg.connect(dsn) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
    catalog = str(write_catalog(tmp_path, standard_plans()))
    jobs = [
        (form, args)
        for form in forms
        for args in (("plan", catalog), ("--debug", "plan", catalog), ("doctor",), ("doctor", "-o", "json"))
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(
            pool.map(lambda job: cli_run(job[1], {**cli_env, "DATABASE_URL": forms[job[0]]}, tmp_path), jobs)
        )
    shown = {
        f"{form} {' '.join(args)}": result.stdout + result.stderr
        for (form, args), result in zip(jobs, results, strict=True)
        if _shows_password(result.stdout + result.stderr)
    }
    assert not shown, shown
    if reachable:
        doctor = [r for (_, args), r in zip(jobs, results, strict=True) if args == ("doctor",)]
        assert all("password=***" in r.stdout for r in doctor), [r.stdout for r in doctor]
    else:
        assert all(r.returncode == 1 for r in results)


# --- keys that cannot be sent as they are -------------------------------------------------------

BROKEN_KEY_TAILS = {
    "newline": "\nX-Evil: 1",
    "carriage-return": "\rtail",
    "curly-quote": "\u201d",
    "space": " tail",
    "tab": "\ttail",
    "non-ascii": "\u00e9t\u00e9",
    "nbsp": "\u00a0",
    "control": "\x1b[2J",
}


@pytest.mark.parametrize("variable", ["KUPLOY_LICENSE_KEY", "STRIPE_SECRET_KEY"])
def test_a_key_that_cannot_be_sent_is_refused_naming_the_variable_not_the_value(
    variable: str,
    secret_env: dict[str, str],
    tmp_path: Path,
    emulator: RunningEmulator,
    catalog_server: CatalogServer,
) -> None:
    """A license key with a newline was `unexpected ValueError` (and with --debug a traceback quoting
    it); a curly quote `unexpected UnicodeEncodeError`; a Stripe key with a newline was "Stripe is
    unreachable" after 6 tries. Each is one Error line naming the variable, sent nowhere."""
    catalog_server.body = json.dumps({"plans": standard_plans()}).encode()
    base = LICENSE_KEY if variable == "KUPLOY_LICENSE_KEY" else SECRET_KEY
    catalog = str(write_catalog(tmp_path, standard_plans()))
    command = ("sync", "--dry-run") if variable == "KUPLOY_LICENSE_KEY" else ("plan", catalog)
    jobs = [
        (case, debug, {**secret_env, "KUPLOY_CATALOG_URL": catalog_server.url, variable: base + tail})
        for case, tail in BROKEN_KEY_TAILS.items()
        for debug in (False, True)
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda job: cli_run(("--debug",) * job[1] + command, job[2], tmp_path), jobs))
    for (case, debug, _), result in zip(jobs, results, strict=True):
        shown = result.stdout + result.stderr
        label = (case, debug, shown)
        assert result.returncode == 1, label
        assert f"Error: {variable} contains " in result.stderr, label
        assert "Traceback" not in shown and "unexpected" not in shown and "unreachable" not in shown, label
        assert not leaks(shown), label
    assert catalog_server.seen_tokens == []  # the key went nowhere
    assert emulator.emulator.requests == []
    # A final newline (a key kept in a file) is no part of a license key: still accepted.
    env = {**secret_env, "KUPLOY_CATALOG_URL": catalog_server.url, "KUPLOY_LICENSE_KEY": LICENSE_KEY + "\n"}
    assert cli_run(("validate", catalog_server.url), env, tmp_path).returncode == 0
    assert catalog_server.seen_tokens == [LICENSE_KEY]


def test_every_logger_the_tools_handlers_print_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The handlers the CLI and `listen` set up (root's, and uvicorn's own) redact every record, from
    any library, at any level, tracebacks included: the stripe SDK's body lines are dropped, and keys,
    signing secrets, bearer tokens and DSN passwords are masked, known from the environment or not."""
    monkeypatch.setenv("KUPLOY_LICENSE_KEY", LICENSE_KEY)
    monkeypatch.setenv("DATABASE_URL", f"host=db password='{DB_PASSWORD} x' dbname=k")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    config = uvicorn_log_config()
    assert all(h.get("filters") == ["redact"] for h in config["handlers"].values())
    handler.addFilter(config["filters"]["redact"]["()"]())
    records = {
        "stripe": f"message='API response body' body='{{\"secret\": \"{WEBHOOK_SECRET}\"}}'",
        "stripe.x": f"message='Post details' post_data=metadata[k]={LICENSE_KEY}",
        # As the SDK writes it (logfmt, keys sorted): a customer's data in a body, no secret to mask.
        "stripe._util": "body='{\"email\": \"jane@customer.example\"}' message='API response body'",
        "urllib3.connectionpool": f'http://x "GET /v1/x?key={SECRET_KEY} HTTP/1.1" 200',
        "psycopg": f"connection failed: postgresql://u:{quote(DB_PASSWORD, safe='')}@db/k",
        "uvicorn.error": f"Authorization: Bearer {LICENSE_KEY}; password='{DB_PASSWORD} x'",
        "reconciler": f"made whsec_Zz9{WEBHOOK_SECRET[-20:]} with {LIVE_KEY}",
    }
    for name, message in records.items():
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        propagate, level = logger.propagate, logger.level
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        try:
            logger.warning("%s", message)
            try:
                raise ValueError(f"Invalid header value b'Bearer {LICENSE_KEY}\\nX: {PUBLISHABLE_KEY}'")
            except ValueError:
                logger.exception("failed")
        finally:
            logger.removeHandler(handler)
            logger.propagate = propagate
            logger.setLevel(level)
    shown = stream.getvalue()
    assert "(body not logged)" in shown and shown.count("Traceback") == len(records)
    assert "jane@customer.example" not in shown
    assert not leaks(shown), shown
