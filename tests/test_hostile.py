"""Hostile input: generated catalogs (valid and not), malformed and oversized files, symlink loops,
devices and FIFOs in a catalog folder, and a wrong database, Stripe key or Stripe address.

The promise under test: `validate` never crashes; a valid catalog plans and applies, and a second
apply writes nothing; anything else is `Error: ...` (one line per problem, naming the file) and
exit 1, with nothing written to Stripe or Postgres.

Hypothesis has two profiles (registered in `conftest.py`):

- `ci`, the default: derandomized and without its example database (nothing is written in the
  repo), so CI sees the same examples every time;
- `explore` (`KUPLOY_HYPOTHESIS_PROFILE=explore`): new random examples on every run, five times as
  many, each failure printed with `@reproduce_failure` so it can be replayed and pinned as a test.
  Run it now and then: `KUPLOY_HYPOTHESIS_PROFILE=explore pytest tests/test_hostile.py`.

Its first run (2026-12-03: about 3,000 new examples of the catalog properties and 100 new catalogs
applied) found nothing; `docs/reliability.md`, "Exploring with hypothesis", keeps the record.

What `tests/test_catalog.py` checks message by message is not repeated here; these tests look at
whole classes of input and at the command line's behaviour.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import psycopg
import pytest
import stripe
import yaml
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from reconciler import api, model
from reconciler.catalog import MAX_FILE_BYTES, PRESETS, STRIPE_CURRENCIES, load_catalog
from reconciler.cli import main
from reconciler.errors import CatalogError
from reconciler.sandbox.emulator import SUPPORTED_CURRENCIES, RunningEmulator
from reconciler.settings import Settings

from conftest import EXAMPLES_FACTOR, TEST_KEY, kuploy_plan, standard_plans, stripe_writes, write_catalog

LIMIT_KEYS = tuple(model.LIMIT_COLUMNS.values())
FEATURE_KEYS = tuple(model.FEATURE_KEYS.values())
CURRENCIES = sorted(STRIPE_CURRENCIES)
# What the emulator (as Stripe) takes for a Price. See test_every_currency_validate_accepts_can_be_priced.
PRICEABLE = sorted(STRIPE_CURRENCIES & SUPPORTED_CURRENCIES)

# Derandomized or exploring, and the database, come from the profile loaded in conftest.py.
PURE = hsettings(max_examples=120 * EXAMPLES_FACTOR, deadline=None)
CLI_PURE = hsettings(max_examples=50 * EXAMPLES_FACTOR, deadline=None)
AGAINST_DB = hsettings(
    max_examples=20 * EXAMPLES_FACTOR,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --- strategies: valid catalogs --------------------------------------------------------------------

SLUGS = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,11}\Z")
# Any Unicode a person might type in a name: letters of every script, emoji, combining marks, RTL
# script, punctuation, zero-width joiners. Not control characters (C0, DEL, C1), bidirectional
# overrides and isolates, lone surrogates: the catalog refuses them (test_controls_and_bidi_...).
BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
NAME_CHARS = st.characters(codec="utf-8", exclude_categories=["Cc"], exclude_characters=BIDI_CONTROLS)
NAMES = st.text(NAME_CHARS, min_size=1, max_size=40).filter(lambda s: re.search(r"\S", s) is not None)
# A description may span lines and hold tabs.
DESCRIPTIONS = st.one_of(st.none(), st.text(st.one_of(NAME_CHARS, st.sampled_from("\t\n")), max_size=80))
COUNTS = st.one_of(st.integers(0, 2**31 - 1), st.sampled_from([0, 1, 5, 100]), st.just("unlimited"))
SIZE_UNITS = ["", "B", "KiB", "MiB", "GiB", "TiB", "KB", "MB", "GB", "TB", "kib", "gb", "k", "Mi"]
SIZES = st.one_of(
    st.integers(0, 2**63 - 1),
    st.just("unlimited"),
    st.builds(
        lambda n, sp, unit: f"{n}{sp}{unit}",
        st.integers(0, 4096),
        st.sampled_from(["", " "]),
        st.sampled_from(SIZE_UNITS),
    ),
)


def limits_strategy(*, partial: bool) -> st.SearchStrategy[dict[str, Any]]:
    """All 11 limits, or (on top of a preset or copy_from) any subset of them."""
    fixed = {key: (SIZES if key == "maxStorageBytes" else COUNTS) for key in LIMIT_KEYS}
    if not partial:
        return st.fixed_dictionaries(fixed)
    return st.fixed_dictionaries({}, optional=fixed)


FEATURES = st.fixed_dictionaries({}, optional=dict.fromkeys(FEATURE_KEYS, st.booleans()))


@st.composite
def valid_catalogs(draw: st.DrawFn, currencies: list[str] = CURRENCIES, max_plans: int = 5) -> dict[str, Any]:
    """A catalog `load_catalog` must accept: unique slugs, one active default without a price,
    every other active plan priced in a Stripe currency with a cycle; presets, copy_from (only
    from an earlier plan, so never a cycle) and manual limits mixed."""
    count = draw(st.integers(1, max_plans))
    slugs = draw(st.lists(SLUGS, min_size=count, max_size=count, unique=True))
    default = draw(st.integers(0, count - 1))
    plans: list[dict[str, Any]] = []
    for index, slug in enumerate(slugs):
        plan: dict[str, Any] = {"slug": slug, "name": draw(NAMES)}
        if draw(st.booleans()):
            plan["description"] = draw(DESCRIPTIONS)
        base = _draw_limits(draw, plan, earlier=slugs[:index])
        if draw(st.booleans()):
            plan["features"] = draw(FEATURES)
        if index == default:
            _draw_default_terms(draw, plan, copied=base == "copy")
        else:
            _draw_paid_terms(draw, plan, currencies)
        plans.append(plan)
    catalog: dict[str, Any] = {"plans": plans}
    if draw(st.booleans()):
        catalog = {"version": 1, **catalog}
    return catalog


def _draw_limits(draw: st.DrawFn, plan: dict[str, Any], *, earlier: list[str]) -> str:
    """Where the plan's limits come from: stated ("manual"), a preset, or a copy of an earlier plan
    (so never a cycle), possibly with some stated on top. Returns which."""
    base = draw(st.sampled_from(["manual", "preset", "copy"] if earlier else ["manual", "preset"]))
    if base == "preset":
        plan["preset"] = draw(st.sampled_from(sorted(PRESETS)))
    elif base == "copy":
        plan["copy_from"] = draw(st.sampled_from(earlier))
    if base == "manual" or draw(st.booleans()):
        plan["limits"] = draw(limits_strategy(partial=base != "manual"))
    return base


def _draw_default_terms(draw: st.DrawFn, plan: dict[str, Any], *, copied: bool) -> None:
    """The default plan: active, and without a price."""
    plan["isDefault"] = True
    if draw(st.booleans()):
        plan["isActive"] = True
    # Copying from a paid plan would inherit its price: the default states its own "no price".
    if copied or draw(st.booleans()):
        plan["priceCents"] = draw(st.sampled_from([None, 0]))


def _draw_paid_terms(draw: st.DrawFn, plan: dict[str, Any], currencies: list[str]) -> None:
    """Any other plan: priced with a currency and a cycle when active, optionally when not."""
    if draw(st.booleans()):
        plan["isDefault"] = False
    active = draw(st.integers(0, 4)) > 0
    if not active:
        plan["isActive"] = False
    if active or draw(st.booleans()):
        plan["priceCents"] = draw(st.one_of(st.integers(1, 99_999_999), st.sampled_from([1, 99_999_999])))
        code = draw(st.sampled_from(currencies))
        plan["currency"] = draw(st.sampled_from([code, code.upper()]))
        plan["billingCycle"] = draw(st.sampled_from(["monthly", "annual"]))


# --- strategies: invalid catalogs ------------------------------------------------------------------

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
HOSTILE_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\n",
        "line\nbreak",
        "tab\there",
        "\u2028",
        "\x85",
        "\x1e",
        "\x0b",
        "\r",
        "\u202e",
        "\ufeff",
        "\U0001f4b8",
        "PRO",
        "pró",
        "ПРО",
        "-lead",
        "a" * 64,
        "x" * 300,
        "%s%n",
        "{0}",
        "'; DROP TABLE cloud_plans; --",
    ]
)
ANY_VALUE = st.one_of(JSONISH, HOSTILE_TEXT)


@dataclass(frozen=True)
class _Subject:
    """Where a mutation lands: the catalog, its plans, one plan drawn from them (and its index), and
    the active paid plans."""

    catalog: dict[str, Any]
    plans: list[Any]
    index: int
    plan: dict[str, Any]
    paid: list[dict[str, Any]]


Mutation = Callable[[st.DrawFn, _Subject], None]
"""Changes the subject's catalog, in place, so that it must be refused."""


def _missing_slug(draw: st.DrawFn, s: _Subject) -> None:
    del s.plan["slug"]


def _missing_name(draw: st.DrawFn, s: _Subject) -> None:
    del s.plan["name"]


def _wrong_type(draw: st.DrawFn, s: _Subject) -> None:
    key = draw(st.sampled_from(["slug", "name", "description", "priceCents", "isDefault", "isActive"]))
    value = draw(
        st.one_of(
            st.lists(st.integers(), max_size=2),
            st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
            st.just(True) if key not in ("isDefault", "isActive") else st.just("yes"),
            st.just(1.5),
        )
    )
    if key == "description":
        value = draw(st.one_of(st.lists(st.integers(), max_size=2), st.just(7), st.just(True)))
    s.plan[key] = value


def _negative_limit(draw: st.DrawFn, s: _Subject) -> None:
    s.plan.setdefault("limits", {})[draw(st.sampled_from(LIMIT_KEYS))] = draw(st.integers(max_value=-1))


def _huge_limit(draw: st.DrawFn, s: _Subject) -> None:
    key = draw(st.sampled_from(LIMIT_KEYS))
    low = 2**63 if key == "maxStorageBytes" else 2**31
    s.plan.setdefault("limits", {})[key] = draw(st.integers(min_value=low, max_value=10**40))


def _bad_currency(draw: st.DrawFn, s: _Subject) -> None:
    s.plan["currency"] = draw(st.sampled_from(["xyz", "us", "usdd", "€€€", "123", "hrk", "", " usd"]))


def _bad_slug(draw: st.DrawFn, s: _Subject) -> None:
    s.plan["slug"] = draw(st.one_of(HOSTILE_TEXT, st.just(""), st.just("Pro"), st.just("a b")))


def _duplicate_slug(draw: st.DrawFn, s: _Subject) -> None:
    """Another plan takes this one's slug, or a copy of this one is added."""
    other = draw(st.integers(0, len(s.plans)))
    if other < len(s.plans) and other != s.index:
        s.plans[other]["slug"] = s.plan["slug"]
    else:
        s.plans.append(dict(s.plan, isDefault=False, priceCents=100, currency="usd", billingCycle="monthly"))


def _no_default(draw: st.DrawFn, s: _Subject) -> None:
    for p in s.plans:
        p.pop("isDefault", None)


def _two_defaults(draw: st.DrawFn, s: _Subject) -> None:
    s.plans.append({"slug": "second-default-x", "name": "Another", "isDefault": True, "preset": "small"})


def _unknown_key(draw: st.DrawFn, s: _Subject) -> None:
    s.plan[draw(st.sampled_from(["price", "Slug", "limit", "default", "extra"]))] = draw(ANY_VALUE)


def _bad_cycle(draw: st.DrawFn, s: _Subject) -> None:
    s.plan["billingCycle"] = draw(st.sampled_from(["weekly", "Monthly", "month", "", 12]))


def _bad_preset(draw: st.DrawFn, s: _Subject) -> None:
    s.plan.pop("copy_from", None)
    s.plan["preset"] = draw(st.sampled_from(["huge", "Small", "", None, 1]))


def _preset_and_copy_from(draw: st.DrawFn, s: _Subject) -> None:
    s.plan["preset"], s.plan["copy_from"] = "small", s.plans[0]["slug"]


def _unknown_copy_from(draw: st.DrawFn, s: _Subject) -> None:
    s.plan.pop("preset", None)
    s.plan["copy_from"] = "no-such-plan-zz"


def _price_on_default(draw: st.DrawFn, s: _Subject) -> None:
    default = next(p for p in s.plans if p.get("isDefault"))
    default["priceCents"] = draw(st.integers(1, 99_999_999))


def _price_too_high(draw: st.DrawFn, s: _Subject) -> None:
    s.plan["priceCents"] = draw(st.integers(100_000_000, 10**30))


def _not_a_mapping(draw: st.DrawFn, s: _Subject) -> None:
    s.plans[s.index] = draw(
        st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2))
    )


def _top_level(draw: st.DrawFn, s: _Subject) -> None:
    """The whole catalog replaced by one whose top level is wrong."""
    replacement: dict[str, Any] = draw(
        st.sampled_from([{"plans": {}}, {"plans": None}, {"plan": s.plans}, {}])
    )
    s.catalog.clear()
    s.catalog.update(replacement)


def _bad_version(draw: st.DrawFn, s: _Subject) -> None:
    s.catalog["version"] = draw(st.sampled_from([0, 2, "1", None, 1.5]))


def _hostile_key(draw: st.DrawFn, s: _Subject) -> None:
    s.plan[draw(HOSTILE_TEXT)] = draw(ANY_VALUE)


def _bad_storage(draw: st.DrawFn, s: _Subject) -> None:
    s.plan.setdefault("limits", {})["maxStorageBytes"] = draw(
        st.sampled_from(["1.5B", "50 XB", "GiB", "-1GiB", "99999999999TiB", "0.0001KB", "1e3"])
    )


def _paid_price(cents: Any) -> Mutation:
    """A paid plan priced at `cents`, which is not a price."""

    def mutate(draw: st.DrawFn, s: _Subject) -> None:
        draw(st.sampled_from(s.paid))["priceCents"] = cents

    return mutate


def _no_cycle(draw: st.DrawFn, s: _Subject) -> None:
    draw(st.sampled_from(s.paid))["billingCycle"] = None


def _copy_from_cycle(draw: st.DrawFn, s: _Subject) -> None:
    """The first two plans copy from each other."""
    first, second = s.plans[0], s.plans[1]
    for p, source in ((first, second), (second, first)):
        p.pop("preset", None)
        p["copy_from"] = source["slug"]
    assume(first["slug"] != second["slug"])


MUTATIONS: dict[str, Mutation] = {
    "missing slug": _missing_slug,
    "missing name": _missing_name,
    "wrong type": _wrong_type,
    "negative limit": _negative_limit,
    "huge limit": _huge_limit,
    "bad currency": _bad_currency,
    "bad slug": _bad_slug,
    "duplicate slug": _duplicate_slug,
    "no default": _no_default,
    "two defaults": _two_defaults,
    "unknown key": _unknown_key,
    "bad cycle": _bad_cycle,
    "bad preset": _bad_preset,
    "preset and copy_from": _preset_and_copy_from,
    "unknown copy_from": _unknown_copy_from,
    "price on default": _price_on_default,
    "price too high": _price_too_high,
    "not a mapping": _not_a_mapping,
    "top level": _top_level,
    "bad version": _bad_version,
    "hostile key": _hostile_key,
    "bad storage": _bad_storage,
}
PAID_MUTATIONS: dict[str, Mutation] = {
    "zero price": _paid_price(0),
    "negative price": _paid_price(-1),
    "float price": _paid_price(20.5),
    "no cycle": _no_cycle,
}
"""For catalogs with an active paid plan."""
MULTI_PLAN_MUTATIONS: dict[str, Mutation] = {"copy_from cycle": _copy_from_cycle}
"""For catalogs with two plans or more."""


def _mutations(catalog: dict[str, Any], draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """One change that makes a valid catalog invalid, with a name for the failure report."""
    plans: list[dict[str, Any]] = catalog["plans"]
    index = draw(st.integers(0, len(plans) - 1))
    paid = [p for p in plans if not p.get("isDefault") and p.get("isActive", True)]
    subject = _Subject(catalog=catalog, plans=plans, index=index, plan=plans[index], paid=paid)
    table = {
        **MUTATIONS,
        **(PAID_MUTATIONS if paid else {}),
        **(MULTI_PLAN_MUTATIONS if len(plans) > 1 else {}),
    }
    what = draw(st.sampled_from(list(table)))
    table[what](draw, subject)
    return what, catalog


@st.composite
def invalid_catalogs(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A valid catalog with one change that must make it invalid."""
    return _mutations(draw(valid_catalogs()), draw)


@st.composite
def anything_catalogs(draw: st.DrawFn) -> dict[str, Any] | Any:
    """A valid catalog with random nodes replaced by arbitrary values: valid or not, who knows."""
    catalog = draw(valid_catalogs())
    for _ in range(draw(st.integers(1, 3))):
        plan = draw(st.sampled_from(catalog["plans"]))
        target = plan
        if draw(st.booleans()) and isinstance(plan.get("limits"), dict) and plan["limits"]:
            target = plan["limits"]
        key = draw(st.one_of(st.sampled_from(sorted(target) or ["slug"]), HOSTILE_TEXT))
        target[key] = draw(ANY_VALUE)
    return catalog


def serialize(data: Any, fmt: str, ascii_only: bool = False) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=ascii_only)
    return yaml.safe_dump(data, allow_unicode=not ascii_only, sort_keys=False)


@contextlib.contextmanager
def catalog_file(text: str | bytes, suffix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kuploy-hostile-") as folder:
        path = Path(folder) / f"catalog{suffix}"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
        yield path


def load_or_problems(path: Path, name: str | None = None) -> model.Catalog | tuple[str, ...]:
    """`load_catalog`, holding it to its contract: a Catalog, or a CatalogError whose every line
    (as the CLI prints them, `str.splitlines`) starts with the name of the file or folder."""
    try:
        return load_catalog(path)
    except CatalogError as e:
        lines = str(e).splitlines()
        assert lines, "a CatalogError with no problem"
        assert lines == list(e.problems), f"a problem spans several lines: {e.problems!r}"
        for line in lines:
            assert line.startswith(name or str(path)), f"a problem that does not name the file: {line!r}"
        return e.problems


# --- property A: load_catalog never raises anything but CatalogError ------------------------------


@PURE
@given(catalog=valid_catalogs(), fmt=st.sampled_from(["json", "yaml", "yml"]), ascii_only=st.booleans())
def test_generated_valid_catalogs_load(catalog: dict[str, Any], fmt: str, ascii_only: bool) -> None:
    with catalog_file(serialize(catalog, fmt, ascii_only), f".{fmt}") as path:
        loaded = load_or_problems(path)
    assert isinstance(loaded, model.Catalog), loaded
    assert [p.slug for p in loaded.plans] == [p["slug"] for p in catalog["plans"]]
    assert sum(p.is_default and p.is_active for p in loaded.plans) == 1


@PURE
@given(case=invalid_catalogs(), fmt=st.sampled_from(["json", "yaml"]))
def test_generated_invalid_catalogs_are_refused_naming_the_file(case: tuple[str, Any], fmt: str) -> None:
    what, catalog = case
    with catalog_file(serialize(catalog, fmt), f".{fmt}") as path:
        outcome = load_or_problems(path)
    assert isinstance(outcome, tuple), f"{what}: accepted {catalog!r}"


@PURE
@given(catalog=anything_catalogs(), fmt=st.sampled_from(["json", "yaml"]))
def test_arbitrary_values_anywhere_never_crash(catalog: Any, fmt: str) -> None:
    with catalog_file(serialize(catalog, fmt), f".{fmt}") as path:
        load_or_problems(path)


@st.composite
def mangled_texts(draw: st.DrawFn) -> tuple[str, str]:
    """Serialized catalogs with characters cut, repeated or inserted: mostly broken syntax."""
    fmt = draw(st.sampled_from(["json", "yaml"]))
    text = serialize(draw(valid_catalogs()), fmt)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["cut", "insert", "repeat"]))
        if action == "cut":
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
        elif action == "insert":
            junk = draw(
                st.one_of(
                    st.sampled_from(
                        [*list("{}[]:,-&*!|>'\"#%@`\t\n "), "<<: ", "!!python/name:os.system", "\\u"]
                    ),
                    st.text(max_size=4),
                )
            )
            text = text[:at] + junk + text[at:]
        else:
            text = text[:at] + text[max(0, at - 30) : at] + text[at:]
    return fmt, text


@PURE
@given(case=mangled_texts())
def test_mangled_syntax_never_crashes(case: tuple[str, str]) -> None:
    fmt, text = case
    with catalog_file(text, f".{fmt}") as path:
        load_or_problems(path)


@PURE
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".json", ".yaml"]))
def test_random_bytes_never_crash(data: bytes, suffix: str) -> None:
    with catalog_file(data, suffix) as path:
        load_or_problems(path)


@PURE
@given(text=st.text(max_size=300), suffix=st.sampled_from([".json", ".yaml"]))
def test_random_text_never_crashes(text: str, suffix: str) -> None:
    with catalog_file(text, suffix) as path:
        load_or_problems(path)


@hsettings(PURE, max_examples=60 * EXAMPLES_FACTOR)
@given(
    files=st.lists(
        st.tuples(
            st.sampled_from(["a.yaml", "b.yml", "c.json", "d.yaml"]), anything_catalogs() | valid_catalogs()
        ),
        min_size=1,
        max_size=3,
        unique_by=lambda f: f[0],
    )
)
def test_folders_of_generated_files_never_crash(files: list[tuple[str, Any]]) -> None:
    """Plans merge across files: duplicates, copy_from and defaults span them."""
    with tempfile.TemporaryDirectory(prefix="kuploy-hostile-") as folder:
        for name, catalog in files:
            fmt = "json" if name.endswith(".json") else "yaml"
            (Path(folder) / name).write_text(serialize(catalog, fmt), encoding="utf-8")
        load_or_problems(Path(folder))


# --- `validate` through the command line's own error handling, in-process ------------------------


def run_in_process(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`kuploy-reconciler ARGS` through `cli.main` (its error mapping included), output captured;
    with `env`, under exactly that environment. Not thread-safe: one at a time."""
    out, err = io.StringIO(), io.StringIO()
    environ = mock.patch.dict(os.environ, env, clear=True) if env is not None else contextlib.nullcontext()
    with environ, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        else:  # pragma: no cover - main always exits
            code = 0
    return code, out.getvalue(), err.getvalue()


@CLI_PURE
@given(
    case=st.one_of(invalid_catalogs().map(lambda c: c[1]), anything_catalogs(), valid_catalogs()),
    fmt=st.sampled_from(["json", "yaml"]),
)
def test_validate_never_crashes(case: Any, fmt: str) -> None:
    """Exit 0 with one line on stdout, or exit 1 with `Error: <file>...` lines only; never the
    catch-all `Error: unexpected ...` and never a traceback."""
    with catalog_file(serialize(case, fmt), f".{fmt}") as path:
        code, out, err = run_in_process("validate", str(path))
    if code == 0:
        assert err == "" and out.startswith(f"{path}: valid, ")
        return
    assert code == 1 and out == ""
    assert "Traceback" not in err and "unexpected" not in err, err
    for line in err.splitlines():
        assert line.startswith(f"Error: {path}"), err


# --- property B: a valid catalog applies, then nothing is left to do ------------------------------


def _snapshot(db: psycopg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every cloud_* table with its xmin: an UPDATE to the same values shows too."""
    tables = [
        r[0]
        for r in db.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'cloud%' "
            "ORDER BY tablename"
        )
    ]
    return {
        table: db.execute(f'SELECT xmin::text, t::text FROM "{table}" t ORDER BY 2').fetchall()
        for table in tables
    }


# Examples share one database: the next catalog may well drop every paid plan of the last one, which
# the mass-archive guard refuses by design. Here that is intended.
ALLOW_ANY_ARCHIVE = api.ArchiveGuard(allow=True)


@AGAINST_DB
@given(catalog=valid_catalogs(currencies=PRICEABLE, max_plans=4), fmt=st.sampled_from(["json", "yaml"]))
def test_valid_catalogs_apply_and_converge(
    catalog: dict[str, Any],
    fmt: str,
    settings: Settings,
    emulator: RunningEmulator,
    db: psycopg.Connection,
) -> None:
    """Valid for any prior state (examples share one database and emulator): whatever earlier
    examples applied, this catalog applies, the next plan is empty and a second apply writes
    nothing, in Stripe or Postgres."""
    with catalog_file(serialize(catalog, fmt), f".{fmt}") as path:
        desired = load_catalog(path)
    api.apply(settings, desired, confirm=lambda planned: True, guard=ALLOW_ANY_ARCHIVE)

    after = api.plan(settings, desired)
    assert not after.has_changes, [c for c in after.changes]

    writes, rows = len(stripe_writes(emulator)), _snapshot(db)
    again = api.apply(
        settings, desired, confirm=lambda planned: pytest.fail("nothing to confirm"), guard=ALLOW_ANY_ARCHIVE
    )
    assert not again.plan.has_changes
    assert len(stripe_writes(emulator)) == writes
    assert _snapshot(db) == rows

    table = {
        r[0]: (r[1], r[2], r[3])
        for r in db.execute('SELECT "planId", name, "isActive", "isDefault" FROM cloud_plans')
    }
    for plan in desired.plans:
        assert table[plan.slug] == (plan.name, plan.is_active, plan.is_default and plan.is_active)
    wanted = {p.slug for p in desired.plans if p.is_active}
    assert {slug for slug, (_, active, _) in table.items() if active} == wanted
    _assert_stored_as_resolved(
        desired, db, stripe.StripeClient(TEST_KEY, base_addresses={"api": emulator.url})
    )


def _assert_stored_as_resolved(
    desired: model.Catalog, db: psycopg.Connection, client: stripe.StripeClient
) -> None:
    """Every active plan's price, currency, cycle, limits and features in cloud_plans, and every
    paid plan's Price in Stripe (amount, currency, interval, the Product's default), as resolved."""
    cur = db.cursor(row_factory=psycopg.rows.dict_row)
    rows = {r["planId"]: r for r in cur.execute("SELECT * FROM cloud_plans")}
    for plan in (p for p in desired.plans if p.is_active):
        row = rows[plan.slug]
        assert {column: row[column] for column in LIMIT_KEYS} == plan.limits.as_columns(), plan.slug
        assert row["features"] == plan.features.as_json(), plan.slug
        assert row["description"] == plan.description, plan.slug
        if not plan.is_paid:
            assert row["stripePriceId"] is None, plan.slug
            continue
        cycle = plan.billing_cycle.value if plan.billing_cycle else None
        assert (row["price"], row["currency"], row["billingCycle"]) == (
            plan.price_cents,
            plan.currency,
            cycle,
        )
        price = client.v1.prices.retrieve(row["stripePriceId"])
        assert price.active and price.unit_amount == plan.price_cents and price.currency == plan.currency
        assert price.recurring is not None and plan.billing_cycle is not None
        assert price.recurring.interval == plan.billing_cycle.stripe_interval, plan.slug
        product = client.v1.products.retrieve(row["stripeProductId"])
        assert product.default_price == price.id and product.name == plan.name, plan.slug


# --- through the command line: refused, one line, nothing written ---------------------------------
#
# Every hostile input goes through `apply --auto-approve` as a real subprocess (the command that
# would write; concurrently within a test, since refused inputs write nothing) and through
# `validate`, `plan` and `drift` in-process via `cli.main`, which maps errors exactly as the
# subprocess does. Inputs that could block a process (FIFOs, devices) only ever run as subprocesses
# with a timeout.


def nothing_written(emulator: RunningEmulator, db: psycopg.Connection) -> None:
    assert [r for r in emulator.emulator.requests if r["method"] in ("POST", "DELETE")] == []
    tables = db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    assert tables == [], tables


def assert_refused(
    result: subprocess.CompletedProcess[str], *mentions: str, lines: int | None = 1, label: str = ""
) -> None:
    """Exit 1, no traceback, `Error: ` lines only; `lines` of them where the product promises it."""
    where = f"{label}: {result.args[3:] if isinstance(result.args, list) else result.args}"
    assert result.returncode == 1, (where, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, where
    errors = result.stderr.strip().splitlines()
    assert errors and all(line.startswith("Error: ") for line in errors), (where, result.stderr)
    assert "unexpected" not in result.stderr, (where, result.stderr)
    if lines is not None:
        assert len(errors) == lines, (where, result.stderr)
    for text in mentions:
        assert text in result.stderr, (where, text, result.stderr)


COMMANDS = (("validate",), ("plan",), ("apply", "--auto-approve"), ("drift",))
SUBPROCESS = (("apply", "--auto-approve"),)
"""The command run as a real subprocess for every case (the one that would write); the others run
in-process through `cli.main` (same error mapping, without an interpreter start-up each)."""


def run_cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`run` from test_cli, with a timeout of our own: a FIFO or /dev/zero would block for ever."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "reconciler", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`kuploy-reconciler {' '.join(args)}` did not end within {timeout} s")


def run_many(jobs: list[tuple[str, ...]], env: dict[str, str], timeout: float = 120) -> list[Any]:
    """Run every job (argv tuple) as a subprocess, concurrently; results in the same order."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: run_cli(*args, env=env, timeout=timeout), jobs))


def refused_everywhere(
    cases: Mapping[str, tuple[Path, Sequence[str]]],
    env: dict[str, str],
    *,
    lines: int | None = 1,
    in_process: bool = True,
    real: tuple[tuple[str, ...], ...] = SUBPROCESS,
    timeout: float = 120,
) -> None:
    """Each case (label → catalog path, expected texts): `apply --auto-approve` as a subprocess,
    and (unless the input could block a process for ever) `validate`, `plan` and `drift` in-process.
    Every one refused."""
    jobs = [(label, (*command, str(path))) for label, (path, _) in cases.items() for command in real]
    results = run_many([args for _, args in jobs], env, timeout)
    if in_process:
        for label, (path, _) in cases.items():
            for command in COMMANDS:
                if command not in real:
                    args = (*command, str(path))
                    code, out, err = run_in_process(*args, env=env)
                    jobs.append((label, args))
                    results.append(subprocess.CompletedProcess(["kuploy", "-", "-", *args], code, out, err))
    for (label, _args), result in zip(jobs, results, strict=True):
        _path, mentions = cases[label]
        assert_refused(result, *mentions, lines=lines, label=label)


def billion_laughs(levels: int = 9) -> str:
    text = 'lol: &l0 "lol"\n'
    for i in range(1, levels + 1):
        text += f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n"
    return text + f"plans: *l{levels}\n"


HOSTILE_YAML = {
    "billion_laughs.yaml": (billion_laughs(), "YAML aliases"),
    "merge_bomb.yaml": (
        "base: &b {slug: free, name: Free, isDefault: true, preset: small}\nplans:\n  - <<: *b\n",
        "YAML aliases",
    ),
    "deep.yaml": ("plans: " + "[" * 5_000 + "]" * 5_000 + "\n", "nested too deeply"),
    "python_tag.yaml": (
        "plans: !!python/object/apply:os.system ['touch /tmp/kuploy-pwned']\n",
        "invalid YAML",
    ),
    "duplicate_plans.yaml": (
        "plans:\n  - {slug: free, name: Free, isDefault: true, preset: small}\n"
        "plans:\n  - {slug: pro, name: Pro, preset: small, priceCents: 100, currency: usd, "
        "billingCycle: monthly}\n",
        "duplicate key (first given at line 1)",
    ),
    "duplicate_limit.yaml": (
        "plans:\n  - slug: free\n    name: Free\n    isDefault: true\n    preset: small\n"
        "    limits: {maxApps: 1, maxApps: 1000}\n",
        "plans[0] (free).limits.maxApps: duplicate key",
    ),
    "tabs.yaml": ("plans:\n\t- slug: free\n", "invalid YAML"),
    "multi_document.yaml": ("plans: []\n---\nplans: []\n", "invalid YAML"),
}


def test_hostile_yaml_is_one_error_line_and_nothing_is_written(
    cli_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator, db: psycopg.Connection
) -> None:
    """Alias bombs (billion laughs, merge keys), deep nesting, unsafe tags, duplicate keys (a second
    `plans:` would silently replace the first), tabs, several documents."""
    cases = {}
    for name, (text, mention) in HOSTILE_YAML.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        cases[name] = (path, (f"Error: {path}", mention))
    refused_everywhere(cases, cli_env)
    nothing_written(emulator, db)
    assert not Path("/tmp/kuploy-pwned").exists()


def _wait_with_rusage(args: list[str], env: dict[str, str]) -> tuple[int, str, str, int]:
    """Run the CLI and return (exit code, stdout, stderr, peak RSS in KiB) of that process alone."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", *args], env=env, stdout=out, stderr=err
        )
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            process.returncode = 0  # reaped by wait4: keep Popen from waiting again
        out.seek(0)
        err.seek(0)
        return os.waitstatus_to_exitcode(status), out.read().decode(), err.read().decode(), usage.ru_maxrss


def test_a_50_mb_catalog_is_refused_before_parsing(
    cli_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator, db: psycopg.Connection
) -> None:
    """A real 50 MB YAML file (a valid catalog, then comments) and a sparse 50 MB file in a folder:
    refused for their size, reading only the first 10 MiB; the process stays small (its own peak
    RSS, from wait4; no timing assertion)."""
    path = tmp_path / "huge.yaml"
    with path.open("w", encoding="utf-8") as f:
        f.write(serialize({"plans": standard_plans()}, "yaml"))
        chunk = "# padding padding padding padding padding padding padding padding padding\n" * 14_000
        while f.tell() < 50 * 1024 * 1024:
            f.write(chunk)
    assert path.stat().st_size > 5 * MAX_FILE_BYTES
    folder = tmp_path / "folder"
    folder.mkdir()
    write_catalog(folder, standard_plans(), name="10-plans.json")
    with (folder / "20-huge.json").open("wb") as sparse:
        sparse.truncate(50 * 1024 * 1024)

    def one(args: tuple[str, ...]) -> tuple[tuple[str, ...], int, str, str, int]:
        return (args, *_wait_with_rusage(list(args), cli_env))

    jobs = [(*command, str(target)) for command in COMMANDS for target in (path, folder)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for args, code, out, err, peak_kib in pool.map(one, jobs):
            result = subprocess.CompletedProcess([sys.executable, "-m", "reconciler", *args], code, out, err)
            assert_refused(result, ": larger than 10 MiB", label="50 MB")
            assert peak_kib < 400 * 1024, f"{args}: peak RSS {peak_kib} KiB for a refused 50 MB file"
    nothing_written(emulator, db)


HOSTILE_BYTES = {
    "png.yaml": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "binary content"),
    "gzip.json": (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xcb\xc9\xcf\x01\x00", "binary content"),
    "elf.yml": (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)), "binary content"),
    "latin1.yaml": ("plans:\n  - slug: free\n    name: Caf\xe9\n".encode("latin-1"), "not valid UTF-8"),
    "cp1252.json": ('{"plans": [{"name": \u201cPro\u201d}]}'.encode("cp1252"), "not valid UTF-8"),
    "utf16.yaml": ("plans: []\n".encode("utf-16"), "binary content"),
    "overlong.yaml": (b"plans:\n  - slug: \xc0\xaf\n", "not valid UTF-8"),
    "surrogate_bytes.json": (b'{"plans": [{"slug": "\xed\xa0\x80"}]}', "not valid UTF-8"),
    "truncated_utf8.yaml": (b"plans:\n  - name: \xe2\x82", "not valid UTF-8"),
    "control_chars.yaml": (b"plans:\n  - slug: free\x07\x1b[31m\n", "invalid YAML"),
}


def test_binary_and_non_utf8_files_are_one_error_line(
    cli_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator, db: psycopg.Connection
) -> None:
    cases = {}
    for name, (data, mention) in HOSTILE_BYTES.items():
        path = tmp_path / name
        path.write_bytes(data)
        cases[name] = (path, (f"Error: {path}", mention))
    refused_everywhere(cases, cli_env)
    nothing_written(emulator, db)


NOT_TEXT = {"nul": '"Fr\\u0000ee"', "lone-high-surrogate": '"Fr\\ud800ee"', "lone-low-surrogate": '"\\udfff"'}


def test_strings_postgres_and_utf8_cannot_hold_are_refused_at_validation(
    cli_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator, db: psycopg.Connection
) -> None:
    """An escaped NUL or lone surrogate parses (JSON `\\u0000`, YAML `"\\ud800"`) but is not text:
    Postgres refuses NUL and neither can be sent as UTF-8. These used to validate, and apply then
    failed after its Stripe writes. Now refused before anything is written."""
    cases = {}
    for label, value in NOT_TEXT.items():
        for fmt in ("json", "yaml"):
            if fmt == "json":
                text = json.dumps({"plans": standard_plans()}).replace(
                    '"name": "Free"', f'"name": {value}', 1
                )
            else:
                text = serialize({"plans": standard_plans()}, "yaml").replace(
                    "name: Free", f"name: {value}", 1
                )
            path = tmp_path / f"{label}.{fmt}"
            path.write_text(text, encoding="utf-8")
            cases[f"{label}.{fmt}"] = (path, (f"Error: {path}", "plans[0] (free).name: contains a"))
    refused_everywhere(cases, cli_env)
    nothing_written(emulator, db)


CONTROLS = {
    "csi-in-name": ("name", '"Pro\\u009b31m"', "plans[1] (pro).name: contains the control character U+009B"),
    "esc-in-description": (
        "description",
        '"x\\u001b[2J"',
        "(pro).description: contains the control character U+001B",
    ),
    "rlo-in-name": ("name", '"Pro \\u202eyadrom"', "(pro).name: contains the bidirectional control U+202E"),
    "isolate-in-description": (
        "description",
        '"\\u2066x"',
        "(pro).description: contains the bidirectional control U+2066",
    ),
    "newline-in-name": ("name", '"Pro\\nFree"', "(pro).name: contains a tab or line break (U+000A)"),
}


def test_controls_and_bidi_overrides_in_catalog_text_are_refused_naming_file_line_and_field(
    cli_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator, db: psycopg.Connection
) -> None:
    """A C1 control (U+009B is a one-byte CSI) or a right-to-left override in a plan's name reached
    the text plan, the PR comment and Stripe raw. Refused in every format, with file:line: field."""
    cases = {}
    for label, (key, value, mention) in CONTROLS.items():
        for fmt in ("json", "yaml"):
            plans = standard_plans()
            plans[1][key] = "PLACEHOLDER"
            if fmt == "json":
                text = json.dumps({"plans": plans}, indent=2).replace('"PLACEHOLDER"', value)
            else:
                text = serialize({"plans": plans}, "yaml").replace("PLACEHOLDER", value)
            path = tmp_path / f"{label}.{fmt}"
            path.write_text(text, encoding="utf-8")
            line = next(n for n, row in enumerate(text.splitlines(), 1) if value in row)
            cases[f"{label}.{fmt}"] = (path, (f"Error: {path}:{line}: ", mention))
    refused_everywhere(cases, cli_env)
    nothing_written(emulator, db)


def test_a_description_may_span_lines_and_hold_tabs(tmp_path: Path) -> None:
    plans = standard_plans()
    plans[1]["description"] = "First line\n\tindented second line"
    catalog = load_catalog(write_catalog(tmp_path, plans))
    assert catalog.by_slug()["pro"].description == "First line\n\tindented second line"


# --- folders with links that go nowhere, devices and FIFOs ---------------------------------------


def _folder_with(folder: Path, links: dict[str, str] | None = None, fifo: str | None = None) -> Path:
    folder.mkdir()
    write_catalog(folder, standard_plans(), name="10-plans.json")
    for name, target in (links or {}).items():
        (folder / name).symlink_to(target)
    if fifo is not None:
        os.mkfifo(folder / fifo)
    return folder


FOLDERS: dict[str, tuple[dict[str, str], str | None, tuple[str, ...]]] = {
    "loop-pair": (
        {"a.yaml": "b.yaml", "b.yaml": "a.yaml"},
        None,
        ("a.yaml: cannot read: a symlink loop", "b.yaml: cannot read: a symlink loop"),
    ),
    "self-loop": ({"self.yaml": "self.yaml"}, None, ("self.yaml: cannot read: a symlink loop",)),
    "broken": ({"gone.yml": "does-not-exist.yml"}, None, ("gone.yml: cannot read: a broken symlink",)),
    "dev-zero": ({"zero.yaml": "/dev/zero"}, None, ("zero.yaml: not a regular file (a device)",)),
    "fifo": ({}, "pipe.json", ("pipe.json: not a regular file (a FIFO)",)),
}


@pytest.mark.parametrize("problems", [1, 2])
def test_a_folder_with_an_unreadable_catalog_entry_is_refused_not_skipped(
    problems: int, cli_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator, db: psycopg.Connection
) -> None:
    """A symlink loop (a pair, a self-loop), a broken link, a link to /dev/zero, a FIFO next to a
    valid catalog file. Skipping such an entry would drop its plans, and apply would archive them:
    each is one line naming it (a loop pair is two), and nothing is opened that could block."""
    cases = {}
    for case, (links, fifo, mentions) in FOLDERS.items():
        if len(mentions) == problems:
            cases[case] = (_folder_with(tmp_path / case, links, fifo), mentions)
    refused_everywhere(cases, cli_env, lines=problems, in_process=False, real=COMMANDS[::2], timeout=30)
    nothing_written(emulator, db)


def test_a_single_unreadable_catalog_path_is_refused(cli_env: dict[str, str], tmp_path: Path) -> None:
    cases = {}
    for case in ("self-loop", "dev-zero", "fifo"):
        path = tmp_path / f"{case}.yaml"
        if case == "self-loop":
            path.symlink_to(path.name)
        elif case == "dev-zero":
            path.symlink_to("/dev/zero")
        else:
            os.mkfifo(path)
        cases[case] = (path, (f"Error: {path}: ",))
    refused_everywhere(cases, cli_env, in_process=False, timeout=30)


def test_a_folder_symlinked_into_itself_is_not_descended(cli_env: dict[str, str], tmp_path: Path) -> None:
    folder = _folder_with(tmp_path / "catalog", {"nested.yaml": ".", "up.json": ".."})
    result = run_cli("validate", str(folder), env=cli_env, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "valid, 3 plan(s)" in result.stdout


# --- a wrong database, a wrong or revoked key, Stripe unreachable --------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DB_PASSWORD = "Db-pa55w0rd-never-printed"


def run_mixed(jobs: Sequence[tuple[str, Sequence[str], dict[str, str]]], timeout: float = 120) -> list[Any]:
    """(label, argv, env) jobs: `apply` (and `doctor`) as subprocesses, concurrently; the rest
    in-process through `cli.main`. Results in the same order."""
    results: list[Any] = [None] * len(jobs)
    real = [i for i, (_, args, _) in enumerate(jobs) if args[0] in ("apply", "doctor")]
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = pool.map(lambda i: run_cli(*jobs[i][1], env=jobs[i][2], timeout=timeout), real)
        for i, result in zip(real, done, strict=True):
            results[i] = result
    for i, (_, args, env) in enumerate(jobs):
        if results[i] is None:
            code, out, err = run_in_process(*args, env=env)
            results[i] = subprocess.CompletedProcess(["kuploy", "-", "-", *args], code, out, err)
    return results


def test_a_wrong_or_unreachable_database_url_is_one_line_without_the_password(
    database_url: str,
    cli_env: dict[str, str],
    tmp_path: Path,
    emulator: RunningEmulator,
    db: psycopg.Connection,
) -> None:
    """Bad scheme, unknown host, credentials the server refuses (an unknown role on this test's
    server), a closed port, not a URL at all: one line naming DATABASE_URL, no password, and
    Stripe is not even read."""
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    host, port, dbname = info.get("host", "127.0.0.1"), info.get("port", "5432"), info["dbname"]
    urls = {
        "bad-scheme": "mysql://kuploy@127.0.0.1:3306/kuploy",
        "bad-host": f"postgresql://kuploy:{DB_PASSWORD}@db.kuploy.invalid:5432/kuploy",
        "wrong-credentials": f"postgresql://kuploy_intruder:{DB_PASSWORD}@{host}:{port}/{dbname}",
        "closed-port": f"postgresql://kuploy:{DB_PASSWORD}@127.0.0.1:{closed_port()}/kuploy",
        "not-a-url": "definitely not a database",
    }
    catalog = str(write_catalog(tmp_path, standard_plans()))
    commands = (("plan", catalog), ("apply", "--auto-approve", catalog), ("drift",), ("export",))
    jobs = [
        (case, command, {**cli_env, "DATABASE_URL": url})
        for case, url in urls.items()
        for command in commands
    ]
    for (case, _, _), result in zip(jobs, run_mixed(jobs), strict=True):
        assert_refused(result, "Error: cannot connect to DATABASE_URL", label=case)
        assert DB_PASSWORD not in result.stdout + result.stderr, case
    assert emulator.emulator.requests == []
    nothing_written(emulator, db)


def test_an_unparseable_database_url_is_named(cli_env: dict[str, str], tmp_path: Path) -> None:
    env = {**cli_env, "DATABASE_URL": f"postgresql://kuploy:{DB_PASSWORD}@[::1/kuploy"}
    code, out, err = run_in_process("plan", str(write_catalog(tmp_path, standard_plans())), env=env)
    assert_refused(subprocess.CompletedProcess(["kuploy"], code, out, err), "DATABASE_URL")


MALFORMED_KEYS = {
    "publishable-as-secret": "pk_test_51Hx0000000000000000000000",
    "not-a-key": "hunter2-not-a-stripe-key",
    "too-short": "sk_test_abc",
}


def test_a_malformed_stripe_key_is_one_line_without_the_key(
    cli_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator, db: psycopg.Connection
) -> None:
    catalog = str(write_catalog(tmp_path, standard_plans()))
    commands = (("plan", catalog), ("apply", "--auto-approve", catalog), ("migrate",), ("drift", catalog))
    jobs = [
        (key, command, {**cli_env, "STRIPE_SECRET_KEY": key})
        for key in MALFORMED_KEYS.values()
        for command in commands
    ]
    for (key, _, _), result in zip(jobs, run_mixed(jobs), strict=True):
        assert_refused(result, "STRIPE_SECRET_KEY", label=key)
        assert key not in result.stdout + result.stderr
    assert emulator.emulator.requests == []
    nothing_written(emulator, db)


def test_a_revoked_stripe_key_401_is_one_line_without_the_key(
    cli_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator, db: psycopg.Connection
) -> None:
    """Well-formed enough for the tool, refused by (the emulator as) Stripe with a 401."""
    key = "sk_test_Revoked-Key.0000000000000000"
    env = {**cli_env, "STRIPE_SECRET_KEY": key}
    catalog = str(write_catalog(tmp_path, standard_plans()))
    commands = [("plan", catalog), ("apply", "--auto-approve", catalog), ("drift", catalog), ("doctor",)]
    *refused, doctor = run_mixed([("401", command, env) for command in commands])
    for result in refused:
        assert_refused(result, label="401")
        assert key not in result.stdout + result.stderr and "Revoked-Key" not in result.stderr
    assert {r["status"] for r in emulator.emulator.requests} == {401}
    assert doctor.returncode == 1 and "Traceback" not in doctor.stderr
    assert "Stripe rejected STRIPE_SECRET_KEY" in doctor.stdout and key not in doctor.stdout + doctor.stderr
    nothing_written(emulator, db)


def test_stripe_unreachable_ends_with_one_line(
    cli_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator, db: psycopg.Connection
) -> None:
    """Connection refused: retried with backoff, then one line saying so, well within the timeout."""
    env = {**cli_env, "STRIPE_API_BASE": f"http://127.0.0.1:{closed_port()}"}
    catalog = str(write_catalog(tmp_path, standard_plans()))
    commands = [("apply", "--auto-approve", catalog), ("plan", catalog), ("doctor",)]
    *refused, doctor = run_many(commands, env, timeout=90)  # each one backs off: all at once
    for result in refused:
        assert_refused(result, "Stripe is unreachable", label="unreachable")
    assert doctor.returncode == 1 and "Stripe could not be reached" in doctor.stdout, doctor.stdout
    nothing_written(emulator, db)


def test_every_currency_validate_accepts_can_be_priced(
    cli_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    """Every currency `validate` accepts is one Stripe (here the emulator) prices: a catalog with a
    plan in each of them applies, and each gets its Price."""
    assert STRIPE_CURRENCIES <= SUPPORTED_CURRENCIES, sorted(STRIPE_CURRENCIES - SUPPORTED_CURRENCIES)
    codes = sorted(STRIPE_CURRENCIES)
    plans = [kuploy_plan("free", None)] + [kuploy_plan(f"in-{code}", 2000, currency=code) for code in codes]
    catalog = str(write_catalog(tmp_path, plans))
    assert run_in_process("validate", catalog)[0] == 0
    result = run_cli("apply", "--auto-approve", catalog, env=cli_env)
    assert result.returncode == 0, result.stderr
    prices = stripe_client.v1.prices.list(params={"limit": 100}).auto_paging_iter()
    assert sorted(p.currency for p in prices if p.active) == codes
