"""Benchmark of the reconciler's commands: Stripe calls, SQL statements, wall time and peak RSS.

    /work/venv/bin/python tests/benchmarks/bench_reconciler.py            # N = 10, 100, 1,000
    /work/venv/bin/python tests/benchmarks/bench_reconciler.py --big      # and N = 10,000

Not part of the test suite (the name does not match test_*.py) and it asserts nothing: it prints one
Markdown table, the baseline ratio and the scaling exponents, for BENCHMARKS.md.

For each N: a fresh database (on an embedded PostgreSQL started in a temporary folder, or on
TEST_DATABASE_URL's server when set) and a fresh in-thread Stripe emulator answering every request
after `--latency-ms` (20) and rate-limiting all Stripe routes to `--rate-limit` (100) requests a second.
The CLI runs at that limit (`KUPLOY_STRIPE_MAX_RPS`, `apply --max-rps`). N counts the paid plans (one
Product and one Price each); every catalog also has the free default plan the schema requires. At
N = 10,000 the catalog is at its cap of 10,000 plans, so it holds 9,999 paid plans and the free one.

Every measured command is a separate process of the real CLI (`reconciler.cli.main`), so wall time
includes interpreter start-up and imports, and peak RSS (VmHWM of that process) is per command.
Stripe calls are counted exactly from the emulator's own request log between the start and the end of
the command: GET = reads, POST/DELETE = writes, 429 = rate-limited answers (each is retried), "failed" =
any other answer that is not 2xx. SQL statements are counted inside the child process by wrapping
`psycopg.Cursor.execute`/`executemany` and `Connection._exec_command` (BEGIN/COMMIT) with counters that
call the originals unchanged; executemany's pipelined parameter rows are shown after a "+".

Start-up is measured three ways beside a bare `python -c pass`: `--version`, and `validate` of the
small example catalog (`examples/catalog.yaml`). Every CLI row also shows the CPU time (user + sys) of
its process, which the load of a shared machine moves less than the wall time.

The peer: the same N plans created the imperative way with the official Stripe CLI (`stripe fixtures
FILE --api-key ... --api-base URL`: one Product and one Price per plan, the Price's product given by
reference, as `apply` writes them) against a fresh emulator with the same latency and rate limit.
The CLI is found through the STRIPE_CLI environment variable or on PATH (`npm install
@stripe/cli@1.52.0` puts it in node_modules/.bin/stripe); without it the row is skipped, saying so.

The baseline reads the same N plans the way the Terraform provider refreshes state: one
`products.retrieve` and one `prices.retrieve` per plan (ids from cloud_plans), ten at a time (Terraform's
default -parallelism), through the same client, throttle and retries at the same rate, beside the
reconciler's own list-based read (`state.from_stripe.read_stripe`). Both run in this process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TEST_KEY = "sk_test_kuployBench000000000000000000"


# --- the child: one CLI command, counted -------------------------------------------------------------


def peak_rss_kb() -> int:
    """This process's peak RSS: VmHWM, the high-water mark of its own address space.

    Not `getrusage(RUSAGE_SELF).ru_maxrss`: on Linux that survives fork + exec, so a child reports at
    least its parent's RSS at the fork (here the benchmark process, whose emulator keeps every request)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def run_child(out: Path, argv: list[str]) -> None:
    """Run the CLI in this process with SQL counters installed; write the counts to `out`."""
    import psycopg

    counter: Counter[str] = Counter()

    def counting(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            counter[name] += 1
            if name == "executemany" and len(args) > 1:
                args = (args[0], list(args[1]), *args[2:])
                counter["rows"] += len(args[1])
            return original(self, *args, **kwargs)

        return wrapper

    psycopg.Cursor.execute = counting("execute", psycopg.Cursor.execute)  # type: ignore[method-assign]
    psycopg.Cursor.executemany = counting("executemany", psycopg.Cursor.executemany)  # type: ignore[method-assign]
    psycopg.Connection._exec_command = counting("tx", psycopg.Connection._exec_command)  # type: ignore[method-assign]

    from reconciler.cli import main

    start = time.perf_counter()
    code: Any = 0
    try:
        main(argv)
    except SystemExit as e:
        code = e.code
    elapsed = time.perf_counter() - start
    out.write_text(
        json.dumps(
            {
                "exit": code if isinstance(code, int) else 1,
                "in_process_s": elapsed,
                "maxrss_kb": peak_rss_kb(),
                "sql": dict(counter),
            }
        )
    )


# --- measurements ------------------------------------------------------------------------------------


@dataclass
class Row:
    n: int
    rate: float
    operation: str
    reads: int = 0
    writes: int = 0
    rate_limited: int = 0
    failed: int = 0
    sql: str = "–"
    wall_s: float = 0.0
    rss_mb: float | None = None
    floor_s: float | None = None
    exit: int = 0
    load: float = field(default_factory=lambda: os.getloadavg()[0])
    """1-minute load average when the row was measured: other work on the machine slows wall times."""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return self.wall_s / self.floor_s if self.floor_s else None


@dataclass
class Stand:
    """One database and one emulator for one N."""

    database_url: str
    emulator: Any
    env: dict[str, str]
    directory: Path
    rate: float


def log_slice(stand: Stand, start: int) -> list[dict[str, Any]]:
    return list(stand.emulator.emulator.requests[start:])


class Counts(TypedDict):
    reads: int
    writes: int
    rate_limited: int
    failed: int


def tally(entries: list[dict[str, Any]]) -> Counts:
    reads = sum(1 for e in entries if e["method"] == "GET")
    writes = sum(1 for e in entries if e["method"] in ("POST", "DELETE"))
    limited = sum(1 for e in entries if e.get("fault") == "rate_limited")
    failed = sum(
        1
        for e in entries
        if e.get("fault") != "rate_limited"
        and not (isinstance(e["status"], int) and 200 <= e["status"] < 300)
    )
    return {"reads": reads, "writes": writes, "rate_limited": limited, "failed": failed}


def run_cli(
    stand: Stand, n: int, operation: str, argv: list[str], *, floor_writes: bool = False, repeat: int = 1
) -> Row:
    """Run one CLI command `repeat` times (read-only commands only): the median wall time, the highest
    peak RSS; the counts are the same every time (checked)."""
    runs = [run_cli_once(stand, n, operation, argv, floor_writes=floor_writes) for _ in range(repeat)]
    row = sorted(runs, key=lambda r: r.wall_s)[len(runs) // 2]
    rss = [r.rss_mb for r in runs if r.rss_mb is not None]
    row.rss_mb = max(rss) if rss else None
    if repeat > 1:
        row.note = f"median of {repeat}"
    counted = {(r.reads, r.writes, r.rate_limited, r.failed, r.sql, r.exit) for r in runs}
    if len(counted) > 1:  # never seen so far; shown rather than hidden
        row.note += f"; runs counted differently: {sorted(counted)}"
    return row


def run_cli_once(stand: Stand, n: int, operation: str, argv: list[str], *, floor_writes: bool) -> Row:
    out = stand.directory / f"child-{uuid.uuid4().hex[:8]}.json"
    start_index = len(stand.emulator.emulator.requests)
    cpu_before = cpu_children()
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(out), "--", *argv],
        env=stand.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    cpu = cpu_children() - cpu_before
    counts = tally(log_slice(stand, start_index))
    child: dict[str, Any] = (
        json.loads(out.read_text()) if out.exists() else {"exit": proc.returncode, "sql": {}}
    )
    sql_counts = child.get("sql", {})
    statements = sql_counts.get("execute", 0) + sql_counts.get("executemany", 0) + sql_counts.get("tx", 0)
    sql = f"{statements}" + (f" +{sql_counts['rows']} rows" if sql_counts.get("rows") else "")
    row = Row(
        n=n,
        rate=stand.rate,
        operation=operation,
        sql=sql,
        wall_s=wall,
        rss_mb=child["maxrss_kb"] / 1024 if "maxrss_kb" in child else None,
        exit=int(child.get("exit", proc.returncode) or 0),
        extra={
            "in_process_s": child.get("in_process_s"),
            "cpu_s": cpu,
            "stderr_tail": proc.stderr.strip().splitlines()[-2:],
        },
        **counts,
    )
    if floor_writes:
        row.floor_s = counts["writes"] / stand.rate if counts["writes"] else None
    if (
        match := re.search(r"Stripe: (\d+) read\(s\), (\d+) write\(s\), (\d+) retried", proc.stderr)
    ) is not None:
        row.extra["cli_stats"] = tuple(int(g) for g in match.groups())
    if row.exit not in (0, 2):
        print(f"  ! {operation} at N={n} exited {row.exit}: {proc.stderr.strip()[-800:]}", file=sys.stderr)
    return row


def cpu_children() -> float:
    """User + system CPU seconds of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read_stripe_rows(stand: Stand, n: int) -> tuple[Row, Row]:
    """The reconciler's list-based read and the Terraform-style per-object read, side by side."""
    import psycopg
    import stripe

    from reconciler.state.from_stripe import read_stripe
    from reconciler.throttle import StripeCalls, Throttle

    def calls() -> StripeCalls:
        client = stripe.StripeClient(
            TEST_KEY,
            base_addresses={"api": stand.emulator.url},
            max_network_retries=0,
            http_client=stripe.RequestsClient(timeout=30),
        )
        return StripeCalls(client=client, throttle=Throttle(stand.rate))

    with psycopg.connect(stand.database_url, autocommit=True) as conn:
        ids = conn.execute(
            'SELECT "stripeProductId", "stripePriceId" FROM cloud_plans '
            'WHERE "stripeProductId" IS NOT NULL ORDER BY "planId"'
        ).fetchall()

    def measure(operation: str, action: Callable[[], Any]) -> Row:
        start_index = len(stand.emulator.emulator.requests)
        started = time.perf_counter()
        action()
        wall = time.perf_counter() - started
        return Row(
            n=n, rate=stand.rate, operation=operation, wall_s=wall, **tally(log_slice(stand, start_index))
        )

    listed = measure("read: list, 100 a page (plan's read)", lambda: read_stripe(calls()))

    def per_object() -> None:
        baseline = calls()

        def one(pair: tuple[str, str]) -> None:
            product_id, price_id = pair
            baseline.read(lambda c: c.v1.products.retrieve(product_id))
            baseline.read(lambda c: c.v1.prices.retrieve(price_id))

        with ThreadPoolExecutor(max_workers=10) as pool:
            list(pool.map(one, ids))

    retrieved = measure("read: retrieve per object (Terraform-style baseline)", per_object)
    retrieved.extra["objects"] = 2 * len(ids)
    return listed, retrieved


RAW: Path | None = None


def save(row: Row) -> None:
    """Append the row to the --raw file as it is measured, so a long run that stops keeps its rows."""
    if RAW is not None:
        with RAW.open("a") as fh:
            fh.write(json.dumps({**row.__dict__, "ratio": row.ratio}, default=str) + "\n")


# --- setup -------------------------------------------------------------------------------------------


def paid_plans(n: int) -> int:
    """The paid plans of an N-plan benchmark: N, except at the catalog's cap (10,000 plans, the free
    one included), where the free plan takes one place: N = 10,000 is 9,999 paid plans and the free."""
    from reconciler.catalog.sources import MAX_PLANS

    return min(n, MAX_PLANS - 1)


def kuploy_plan(slug: str, price: int | None) -> dict[str, Any]:
    """The test suite's kuploy.app plan template (tests/conftest.py), so both measure the same plans."""
    if str(REPO / "tests") not in sys.path:
        sys.path.insert(0, str(REPO / "tests"))
    from conftest import kuploy_plan as template

    plan: dict[str, Any] = template(slug, price)
    return plan


def write_catalog(path: Path, n: int, *, changed_every: int = 0) -> Path:
    plans = [kuploy_plan("free", None)]
    for i in range(paid_plans(n)):
        price = 1000 + i
        if changed_every and i % changed_every == 0:
            price += 1
        plans.append(kuploy_plan(f"plan-{i:05d}", price))
    path.write_text(json.dumps({"plans": plans}))
    return path


@contextlib.contextmanager
def postgres_server(scratch: Path) -> Iterator[str]:
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    from reconciler.sandbox.postgres import start_embedded_postgres, stop_embedded_postgres

    data_dir = scratch / "postgres"
    try:
        yield start_embedded_postgres(data_dir)
    finally:
        stop_embedded_postgres(data_dir)


@contextlib.contextmanager
def stand(admin_dsn: str, scratch: Path, *, latency_ms: int, rate: float) -> Iterator[Stand]:
    import psycopg
    from psycopg import sql

    from reconciler.sandbox.emulator import FaultSettings, start_in_thread

    name = f"kuploy_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database_url = psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)
    directory = Path(tempfile.mkdtemp(prefix="stand-", dir=scratch))
    running = start_in_thread(faults=FaultSettings(latency_ms=latency_ms, rate_limit=rate, seed=0))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DATABASE_URL", "KUPLOY_"))}
    env.update(
        DATABASE_URL=database_url,
        STRIPE_SECRET_KEY=TEST_KEY,
        STRIPE_API_BASE=running.url,
        KUPLOY_STRIPE_MAX_RPS=f"{rate:g}",
        NO_COLOR="1",
        PYTHONPATH=str(REPO),
    )
    try:
        yield Stand(database_url, running, env, directory, rate)
    finally:
        running.stop()
        shutil.rmtree(directory, ignore_errors=True)
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# --- the run -----------------------------------------------------------------------------------------


def bench_size(
    admin_dsn: str, scratch: Path, n: int, *, latency_ms: int, rate: float, baseline_max_n: int
) -> list[Row]:
    rows: list[Row] = []
    repeat = 3 if n <= 1000 else 1  # read-only commands: the median of three, except at 10,000

    def add(row: Row) -> None:
        rows.append(row)
        save(row)
        print(f"  N={n:>6} @{rate:g}/s {row.operation:<48} {row.wall_s:8.2f}s", file=sys.stderr, flush=True)

    with stand(admin_dsn, scratch, latency_ms=latency_ms, rate=rate) as s:
        base = write_catalog(s.directory / "catalog.json", n)
        changed = write_catalog(s.directory / "changed.json", n, changed_every=10)
        max_rps = ["--max-rps", f"{rate:g}"]
        add(run_cli(s, n, "plan (empty state)", ["plan", str(base)], repeat=repeat))
        add(run_cli(s, n, "apply (new)", ["apply", str(base), "--auto-approve", *max_rps], floor_writes=True))
        add(run_cli(s, n, "plan (converged)", ["plan", str(base)], repeat=repeat))
        add(run_cli(s, n, "drift", ["drift"], repeat=repeat))
        if n <= baseline_max_n:
            for row in read_stripe_rows(s, n):
                add(row)
        add(run_cli(s, n, "plan (10% price changes)", ["plan", str(changed)], repeat=repeat))
        add(
            run_cli(
                s,
                n,
                "apply (10% price changes)",
                ["apply", str(changed), "--auto-approve", *max_rps],
                floor_writes=True,
            )
        )
    return rows


def bench_apply_only(admin_dsn: str, scratch: Path, n: int, *, latency_ms: int, rate: float) -> list[Row]:
    rows = []
    with stand(admin_dsn, scratch, latency_ms=latency_ms, rate=rate) as s:
        base = write_catalog(s.directory / "catalog.json", n)
        changed = write_catalog(s.directory / "changed.json", n, changed_every=10)
        max_rps = ["--max-rps", f"{rate:g}"]
        for operation, path in (("apply (new)", base), ("apply (10% price changes)", changed)):
            row = run_cli(
                s, n, operation, ["apply", str(path), "--auto-approve", *max_rps], floor_writes=True
            )
            rows.append(row)
            save(row)
            print(f"  N={n:>6} @{rate:g}/s {operation:<48} {row.wall_s:8.2f}s", file=sys.stderr, flush=True)
    return rows


def startup_rows(repeat: int = 5) -> list[Row]:
    """Interpreter start-up and imports: a bare interpreter, then the real entry point (not the
    counting child, which imports psycopg first) with `--version` and with `validate` of a small
    catalog: the fixed part of every command's cost. Each the median of `repeat`."""
    small = REPO / "examples" / "catalog.yaml"
    commands = {
        "bare interpreter (`python -c pass`)": ["-c", "pass"],
        "start-up only (`--version`)": ["-m", "reconciler", "--version"],
        "`validate` of examples/catalog.yaml": ["-m", "reconciler", "validate", str(small)],
    }
    rows = []
    for operation, args in commands.items():
        runs = []
        for _ in range(repeat):
            cpu_before = cpu_children()
            started = time.perf_counter()
            subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, cwd=REPO)
            runs.append((time.perf_counter() - started, cpu_children() - cpu_before))
        wall, cpu = sorted(runs)[len(runs) // 2]
        rows.append(
            Row(
                n=0,
                rate=0,
                operation=operation,
                wall_s=wall,
                note=f"median of {repeat}",
                extra={"cpu_s": cpu},
            )
        )
    return rows


def stripe_cli() -> str | None:
    """The official Stripe CLI: $STRIPE_CLI, else `stripe` on PATH."""
    return os.environ.get("STRIPE_CLI") or shutil.which("stripe")


def write_fixtures(path: Path, n: int) -> Path:
    """`stripe fixtures` input creating the benchmark's N paid plans: a Product, then its Price."""
    fixtures: list[dict[str, Any]] = []
    for i in range(paid_plans(n)):
        slug = f"plan-{i:05d}"
        fixtures.append(
            {
                "name": f"prod_{i}",
                "path": "/v1/products",
                "method": "post",
                "params": {"name": f"Plan {slug}", "metadata": {"kuploy_bench": slug}},
            }
        )
        fixtures.append(
            {
                "name": f"price_{i}",
                "path": "/v1/prices",
                "method": "post",
                "params": {
                    "product": f"${{prod_{i}:id}}",
                    "unit_amount": 1000 + i,
                    "currency": "usd",
                    "recurring": {"interval": "month"},
                    "lookup_key": f"bench_{slug}",
                    "metadata": {"kuploy_bench": slug},
                },
            }
        )
    path.write_text(json.dumps({"_meta": {"template_version": 0}, "fixtures": fixtures}))
    return path


def stripe_cli_row(admin_dsn: str, scratch: Path, n: int, *, latency_ms: int, rate: float) -> Row | None:
    """The same N plans created with `stripe fixtures`, on a fresh emulator at the same latency and limit."""
    cli = stripe_cli()
    if cli is None:
        print("  (no Stripe CLI: set STRIPE_CLI or put `stripe` on PATH; row skipped)", file=sys.stderr)
        return None
    with stand(admin_dsn, scratch, latency_ms=latency_ms, rate=rate) as s:
        fixtures = write_fixtures(s.directory / "fixtures.json", n)
        start_index = len(s.emulator.emulator.requests)
        cpu_before = cpu_children()
        started = time.perf_counter()
        proc = subprocess.run(
            [cli, "fixtures", str(fixtures), "--api-key", TEST_KEY, "--api-base", s.emulator.url],
            env={**s.env, "STRIPE_CLI_TELEMETRY_OPTOUT": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - started
        counts = tally(log_slice(s, start_index))
    row = Row(
        n=n,
        rate=rate,
        operation="Stripe CLI `stripe fixtures` (new, peer)",
        wall_s=wall,
        exit=proc.returncode,
        extra={"cpu_s": cpu_children() - cpu_before, "stderr_tail": proc.stderr.strip().splitlines()[-2:]},
        **counts,
    )
    row.floor_s = counts["writes"] / rate if counts["writes"] else None
    if proc.returncode:
        print(f"  ! stripe fixtures exited {proc.returncode}: {proc.stderr.strip()[-800:]}", file=sys.stderr)
    return row


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(y) on log(x)."""
    pts = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    den = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / den if den else None


def fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def table(rows: list[Row]) -> str:
    lines = [
        "| N | limit | operation | Stripe reads | Stripe writes | 429s (retried) | failed | SQL stmts "
        "| wall s | of which in main() s | CPU s "
        "| peak RSS MB | floor s (writes/limit) | wall/floor | load |",
        "|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.n:,} | {r.rate:g}/s | {r.operation}{' (exit ' + str(r.exit) + ')' if r.exit else ''}"
            f"{' (' + r.note + ')' if r.note else ''} "
            f"| {r.reads:,} | {r.writes:,} | {r.rate_limited:,} | {r.failed:,} | {r.sql} | {r.wall_s:.2f} "
            f"| {fmt(r.extra.get('in_process_s'), '.2f')} | {fmt(r.extra.get('cpu_s'), '.2f')} "
            f"| {fmt(r.rss_mb, '.0f')} | {fmt(r.floor_s, '.2f')} | {fmt(r.ratio, '.3f')} | {r.load:.1f} |"
        )
    return "\n".join(lines)


def machine() -> list[str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024**2:.1f} GiB"
    return [f"CPU: {cpu}, {os.cpu_count()} logical CPUs; memory {mem}", f"Python {platform.python_version()}"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--big", action="store_true", help="also N = 10,000")
    parser.add_argument("--sizes", help="comma-separated N (overrides the default 10,100,1000)")
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--rate-limit", type=float, default=100.0)
    parser.add_argument("--slow-rate-limit", type=float, default=25.0, help="second apply run at N = 1,000")
    parser.add_argument("--no-slow", action="store_true", help="skip the second-limit apply run")
    parser.add_argument(
        "--baseline-max-n", type=int, default=1000, help="run the per-object baseline up to this N"
    )
    parser.add_argument("--raw", type=Path, help="append each row as a JSON line here as it is measured")
    parser.add_argument(
        "--peer-n", type=int, default=1000, help="N for the Stripe CLI side-by-side (0: skip it)"
    )
    args = parser.parse_args()
    global RAW
    RAW = args.raw

    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [10, 100, 1000]
    if args.big and 10_000 not in sizes:
        sizes.append(10_000)

    import psycopg

    scratch = Path(tempfile.mkdtemp(prefix="kuploy-bench-"))
    rows: list[Row] = []
    try:
        with postgres_server(scratch) as admin_dsn:
            with psycopg.connect(admin_dsn, autocommit=True) as conn:
                server_version = conn.execute("SHOW server_version").fetchone()
            for row in startup_rows():
                rows.append(row)
                save(row)
            for n in sizes:
                rows += bench_size(
                    admin_dsn,
                    scratch,
                    n,
                    latency_ms=args.latency_ms,
                    rate=args.rate_limit,
                    baseline_max_n=args.baseline_max_n,
                )
                if n == args.peer_n and (
                    peer := stripe_cli_row(
                        admin_dsn, scratch, n, latency_ms=args.latency_ms, rate=args.rate_limit
                    )
                ):
                    rows.append(peer)
                    save(peer)
            if not args.no_slow and 1000 in sizes:
                rows += bench_apply_only(
                    admin_dsn, scratch, 1000, latency_ms=args.latency_ms, rate=args.slow_rate_limit
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print("## Machine\n")
    for line in [*machine(), f"PostgreSQL {server_version[0] if server_version else '?'}"]:
        print(f"- {line}")
    print(
        f"- emulator latency {args.latency_ms} ms; Stripe rate limit {args.rate_limit:g}/s, CLI at the limit"
    )
    print("\n## Results\n")
    print(table(rows))

    print("\n## Baseline: list reads vs one retrieve per object\n")
    by = {(r.n, r.rate, r.operation): r for r in rows}
    for n in sizes:
        listed = by.get((n, args.rate_limit, "read: list, 100 a page (plan's read)"))
        retrieved = by.get((n, args.rate_limit, "read: retrieve per object (Terraform-style baseline)"))
        if listed and retrieved and listed.reads and listed.wall_s:
            print(
                f"- N={n:,}: {retrieved.reads:,} calls vs {listed.reads:,} "
                f"({retrieved.reads / listed.reads:.1f}x); {retrieved.wall_s:.2f}s vs {listed.wall_s:.2f}s "
                f"({retrieved.wall_s / listed.wall_s:.1f}x)"
            )

    print("\n## Scaling exponents (log-log slope vs N)\n")
    fitted = [n for n in sizes if n >= 100] if len([n for n in sizes if n >= 100]) >= 2 else sizes
    print(f"Fitted over N = {', '.join(f'{n:,}' for n in fitted)} at {args.rate_limit:g}/s.\n")
    print("| operation | wall-time exponent | peak-RSS exponent | RSS growth MB per 1,000 plans |")
    print("|---|---:|---:|---:|")
    operations = dict.fromkeys(r.operation for r in rows if r.n in fitted)
    for op in operations:
        points = [by[(n, args.rate_limit, op)] for n in fitted if (n, args.rate_limit, op) in by]
        wall = slope([(p.n, p.wall_s) for p in points])
        rss = slope([(p.n, p.rss_mb) for p in points if p.rss_mb])
        growth = None
        if len(points) >= 2 and points[0].rss_mb and points[-1].rss_mb:
            growth = (points[-1].rss_mb - points[0].rss_mb) / (points[-1].n - points[0].n) * 1000
        print(f"| {op} | {fmt(wall, '.2f')} | {fmt(rss, '.2f')} | {fmt(growth, '.1f')} |")

    print("\n```json")
    print(json.dumps([{**r.__dict__, "ratio": r.ratio} for r in rows], default=str))
    print("```")


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--child" and sys.argv[3] == "--":
        run_child(Path(sys.argv[2]), sys.argv[4:])
    else:
        main()
