"""Exact call counts: Stripe requests from the emulator's own log, SQL statements from psycopg itself.

No timing here (STYLE.md §7: speed is measured in `tests/benchmarks/`, never asserted). What is asserted
is what makes the speed: `plan` and `drift` read Stripe with list calls only, 100 a page, every page once,
and never one retrieve per object; a converged `apply` writes nothing; and the SQL of `plan` is a fixed
handful of statements whatever the number of plans.

N is the number of paid plans, each one Stripe Product with one Price; every catalog also carries the
free default plan the schema requires (it has no Stripe object). So at N = 100 the last page is exactly
full and at N = 101 one object spills onto a second page of each list.

How SQL statements are counted, exactly: `psycopg.Cursor.execute` (which `Connection.execute` also goes
through), `psycopg.Cursor.executemany` (one statement, however many parameter rows it pipelines; the rows
are counted apart) and the connection's `_exec_command` (BEGIN / COMMIT / ROLLBACK / SAVEPOINT of
`conn.transaction()`) are wrapped for the duration of one call, in this process only, by wrappers that add
one to a counter and call the original with the same arguments. Behaviour does not change. Server-side
counters (`pg_stat_database.xact_commit`) were rejected: they are flushed lazily and include other
sessions, so they are not exact.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import sql

from reconciler import api
from reconciler.catalog import load_catalog
from reconciler.model import Catalog
from reconciler.sandbox.emulator import RunningEmulator, start_in_thread
from reconciler.settings import Secret, Settings

from conftest import TEST_KEY, kuploy_plan, write_catalog

T = TypeVar("T")

PAGE = 100
PLAN_SQL_STATEMENTS = 7
"""`plan` on an up-to-date database: the shape check of cloud_plans (3: to_regclass, its columns, its
unique index on "planId"), the migration ledger (2: to_regclass, its versions), the rows (2: to_regclass,
one SELECT). None of it depends on the number of plans."""
DRIFT_SQL_STATEMENTS = PLAN_SQL_STATEMENTS + 6
"""`drift` with no catalog: the plan's 7, the last applied catalog (2: its column check, one SELECT) and
the out-of-band events the listener recorded (4: two column checks, the last apply time, one SELECT)."""


def pages(objects: int) -> int:
    """List calls to read `objects` objects 100 a page (an empty list is still one call)."""
    return max(1, math.ceil(objects / PAGE))


def read_floor(n: int) -> int:
    """The issue's bound on `plan`'s Stripe calls over n plans."""
    return 2 * math.ceil(n / PAGE) + 2


def catalog_plans(n: int, *, changed_every: int = 0) -> list[dict[str, Any]]:
    """The free default plan and n paid plans; with `changed_every`, every such plan gets a new price."""
    plans = [kuploy_plan("free", None)]
    for i in range(n):
        price = 1000 + i
        if changed_every and i % changed_every == 0:
            price += 1
        plans.append(kuploy_plan(f"plan-{i:05d}", price))
    return plans


# --- counting --------------------------------------------------------------------------------------


@dataclass
class Counts:
    gets: list[dict[str, Any]]
    writes: list[dict[str, Any]]
    sql: Counter[str]


def _counting(counter: Counter[str], name: str, original: Callable[..., T]) -> Callable[..., T]:
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> T:
        counter[name] += 1
        if name == "executemany" and len(args) > 1:
            args = (args[0], list(args[1]), *args[2:])
            counter["executemany_rows"] += len(args[1])
        return original(self, *args, **kwargs)

    return wrapper


def count_calls(
    running: RunningEmulator, monkeypatch: pytest.MonkeyPatch, action: Callable[[], T]
) -> tuple[T, Counts]:
    """Run `action`; return its result and exactly the Stripe requests and SQL statements it made."""
    counter: Counter[str] = Counter()
    with monkeypatch.context() as patch:
        patch.setattr(psycopg.Cursor, "execute", _counting(counter, "execute", psycopg.Cursor.execute))
        patch.setattr(
            psycopg.Cursor, "executemany", _counting(counter, "executemany", psycopg.Cursor.executemany)
        )
        patch.setattr(
            psycopg.Connection,
            "_exec_command",
            _counting(counter, "transaction", psycopg.Connection._exec_command),
        )
        start = len(running.emulator.requests)
        result = action()
        log = running.emulator.requests[start:]
    counts = Counts(
        gets=[r for r in log if r["method"] == "GET"],
        writes=[r for r in log if r["method"] in ("POST", "DELETE")],
        sql=counter,
    )
    return result, counts


def statements(counts: Counts) -> int:
    return counts.sql["execute"] + counts.sql["executemany"] + counts.sql["transaction"]


# --- one converged setup per N ---------------------------------------------------------------------


@dataclass
class Converged:
    n: int
    settings: Settings
    running: RunningEmulator
    catalog: Catalog
    directory: Path
    first_apply: Counts


@pytest.fixture(scope="module", params=[1, 100, 101, 1000], ids=lambda n: f"N={n}")
def converged(request: pytest.FixtureRequest, admin_dsn: str) -> Iterator[Converged]:
    """A fresh database and emulator with n paid plans applied once through `api.apply`.

    1,000 plans are 2,000 writes to the in-thread emulator without latency or rate limit: a few
    seconds here, so the real apply is used rather than seeding the state by hand."""
    n: int = request.param
    name = f"kuploy_counts_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    directory = Path(tempfile.mkdtemp(prefix="kuploy-counts-"))
    running = start_in_thread()
    try:
        settings = Settings(
            database_url=Secret(psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)),
            stripe_secret_key=Secret(TEST_KEY),
            stripe_api_base=running.url,
            lock_timeout=5,
            max_rps=1000,
        )
        catalog = load_catalog(write_catalog(directory, catalog_plans(n)))
        with pytest.MonkeyPatch.context() as monkeypatch:
            outcome, counts = count_calls(
                running, monkeypatch, lambda: api.apply(settings, catalog, confirm=lambda plan: True)
            )
        assert outcome.stats is not None
        assert outcome.stats.retries == 0
        yield Converged(n, settings, running, catalog, directory, counts)
    finally:
        running.stop()
        shutil.rmtree(directory, ignore_errors=True)
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def assert_list_reads_only(gets: list[dict[str, Any]], n: int, *, extra_lists: tuple[str, ...] = ()) -> None:
    """Exactly one pass over each list, 100 a page, no retrieve of a single object."""
    by_path = Counter(r["path"] for r in gets)
    expected = Counter({"/v1/products": pages(n), "/v1/prices": pages(n)})
    for path in extra_lists:
        expected[path] += 1
    assert by_path == expected, by_path
    assert all(str(r["query"].get("limit")) == str(PAGE) for r in gets), [r["query"] for r in gets]
    assert all(r["status"] == 200 and r["fault"] is None for r in gets)
    assert len(gets) <= read_floor(n) + len(extra_lists)


# --- the counts ------------------------------------------------------------------------------------


def test_first_apply_writes_two_calls_per_new_plan(converged: Converged) -> None:
    """CreateProduct (with its default Price inline) and SetLookupKey; rows in one executemany."""
    counts = converged.first_apply
    assert len(counts.writes) == 2 * converged.n
    assert [r["path"] for r in counts.writes].count("/v1/products") == converged.n
    assert sum(1 for r in counts.writes if r["path"].startswith("/v1/prices/")) == converged.n
    assert all(r["status"] == 200 for r in counts.writes)
    assert counts.sql["executemany"] == 1
    assert counts.sql["executemany_rows"] == converged.n + 1


def test_plan_reads_with_list_calls_only(converged: Converged, monkeypatch: pytest.MonkeyPatch) -> None:
    planned, counts = count_calls(
        converged.running, monkeypatch, lambda: api.plan(converged.settings, converged.catalog)
    )
    assert not planned.has_changes
    assert_list_reads_only(counts.gets, converged.n)
    assert len(counts.gets) == 2 * pages(converged.n)
    assert counts.writes == []


def test_plan_sql_statements_are_a_constant(converged: Converged, monkeypatch: pytest.MonkeyPatch) -> None:
    _, counts = count_calls(
        converged.running, monkeypatch, lambda: api.plan(converged.settings, converged.catalog)
    )
    assert statements(counts) == PLAN_SQL_STATEMENTS, counts.sql
    assert counts.sql["executemany"] == 0


def test_drift_reads_with_list_calls_only(converged: Converged, monkeypatch: pytest.MonkeyPatch) -> None:
    report, counts = count_calls(converged.running, monkeypatch, lambda: api.drift(converged.settings))
    assert not report.has_drift
    assert_list_reads_only(counts.gets, converged.n)
    assert counts.writes == []
    assert counts.sql["executemany"] == 0
    assert statements(counts) == DRIFT_SQL_STATEMENTS, counts.sql


def test_second_apply_writes_nothing(converged: Converged, monkeypatch: pytest.MonkeyPatch) -> None:
    outcome, counts = count_calls(
        converged.running,
        monkeypatch,
        lambda: api.apply(converged.settings, converged.catalog, confirm=lambda plan: True),
    )
    assert outcome.operations == 0
    assert not outcome.plan.has_changes
    assert counts.writes == []
    assert_list_reads_only(counts.gets, converged.n)
    assert counts.sql["executemany"] == 0


def test_plan_of_price_changes_adds_one_subscription_listing(
    converged: Converged, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changing 10% of the prices archives Prices: plan lists the active subscriptions once more."""
    changed = load_catalog(
        write_catalog(converged.directory, catalog_plans(converged.n, changed_every=10), "changed.json")
    )
    planned, counts = count_calls(
        converged.running, monkeypatch, lambda: api.plan(converged.settings, changed)
    )
    assert len(planned.changes) == math.ceil(converged.n / 10)
    assert_list_reads_only(counts.gets, converged.n, extra_lists=("/v1/subscriptions",))
    assert len(counts.gets) <= read_floor(converged.n)
    assert statements(counts) == PLAN_SQL_STATEMENTS


HEAVY_MODULES = ("stripe", "psycopg", "deepdiff", "jsonschema", "starlette", "uvicorn")


@pytest.mark.parametrize("argv", [["--version"], ["validate", "examples/catalog.yaml"]])
def test_start_up_and_validate_import_no_heavy_module(argv: list[str]) -> None:
    """`--version` and `validate` of a valid catalog import none of the libraries only the other
    commands use (a third of a second of start-up together): counted in a fresh interpreter."""
    root = Path(__file__).resolve().parents[1]
    script = (
        "import sys\n"
        "from reconciler.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "STRIPE_SECRET_KEY")}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"
