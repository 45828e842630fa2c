"""load_catalog: YAML / kuploy.app JSON → resolved `Catalog`, or every problem at once."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from reconciler import model
from reconciler.catalog import (
    MAX_FILE_BYTES,
    MAX_PLANS,
    PRESETS,
    STRIPE_CURRENCIES,
    dump_catalog,
    load_catalog,
    parse_size,
)
from reconciler.errors import CatalogError, KuployError

HERE = Path(__file__).parent
ROOT = HERE.parent
GIB = 1024**3

# Line numbers below refer to this text (line 1 is `plans:`).
BASE = """\
plans:
  - slug: free
    name: Free
    isDefault: true
    preset: small
  - slug: pro
    name: Pro
    preset: medium
    priceCents: 2000
    currency: usd
    billingCycle: monthly
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in an empty folder so files are named relatively in messages (`catalog.yaml:9: ...`)."""
    monkeypatch.chdir(tmp_path)


def write(name: str, content: str | bytes) -> Path:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def problems(path: Path) -> tuple[str, ...]:
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert isinstance(caught.value, KuployError)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def base_with(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new, 1)


def manual_limits(**overrides: object) -> dict[str, object]:
    limits: dict[str, object] = dict.fromkeys(model.LIMIT_COLUMNS.values(), 1)
    limits.update(overrides)
    return limits


# --- valid catalogs -------------------------------------------------------------------------------


def test_resolution_of_presets_copy_from_manual_entry_units_and_unlimited() -> None:
    catalog = load_catalog(HERE / "catalogs" / "resolution.yaml")
    plans = catalog.by_slug()
    assert [p.slug for p in catalog.plans] == ["free", "base", "middle", "top", "big"]
    assert catalog.sources == (str(HERE / "catalogs" / "resolution.yaml"),)

    free = plans["free"]
    assert free.is_default and free.is_active
    assert free.price_cents == 0  # the default plan's absent price becomes 0
    assert free.description == ""
    assert free.limits.max_storage_bytes == 512 * 1024**2
    assert free.limits.max_apps == 2
    assert free.features == model.Features()

    base = plans["base"]
    medium = PRESETS["medium"]
    assert base.currency == "usd"  # lowercased
    assert base.billing_cycle is model.BillingCycle.MONTHLY
    assert base.limits.max_projects == medium.limits["maxProjects"] == 10
    assert base.limits.max_apps == model.UNLIMITED
    assert base.limits.max_storage_bytes == 100_000_000
    assert base.features.white_label is True  # override on top of the preset
    assert base.features.ai_assistant is False  # medium has it; the plan switched it off
    assert base.features.domain_purchase is True  # from the preset

    middle = plans["middle"]
    assert middle.is_active is False  # its own key
    assert middle.description == "The base plan."  # copied
    assert middle.price_cents == 3000
    assert (middle.currency, middle.billing_cycle) == ("usd", model.BillingCycle.MONTHLY)
    assert middle.limits.max_projects == 20
    assert middle.limits.max_apps == model.UNLIMITED
    assert middle.features == base.features

    top = plans["top"]  # copies middle, which copies base
    assert top.is_active is True  # isActive is never copied
    assert top.is_default is False
    assert top.name == "Top"
    assert top.price_cents == 3000
    assert (top.currency, top.billing_cycle) == ("cad", model.BillingCycle.ANNUAL)
    assert top.limits.max_projects == 20
    assert top.limits.max_databases == 10
    assert top.limits.max_storage_bytes == 1024**4 * 3 // 2
    assert top.features.multi_server is True
    assert top.features.white_label is True

    big = plans["big"]
    assert big.price_cents == 99_999_999
    assert big.limits.max_storage_bytes == model.UNLIMITED
    assert big.limits.build_minutes_per_month == 0
    assert big.limits.max_instances == PRESETS["large"].limits["maxInstances"]
    assert all(big.features.as_json().values())


def test_presets_are_complete() -> None:
    for preset in PRESETS.values():
        assert set(preset.limits) == set(model.LIMIT_COLUMNS.values())
        assert set(preset.features) == set(model.FEATURE_KEYS.values())
    assert PRESETS["small"].limits["maxStorageBytes"] == 10 * GIB


def test_kuploy_app_json_with_defaults_for_absent_keys() -> None:
    plans = [
        {"slug": "free", "name": "Free", "priceCents": None, "isDefault": True, "limits": manual_limits()},
        {
            "slug": "pro",
            "name": "Pro",
            "description": "Pro plan",
            "priceCents": 2000,
            "currency": "cad",
            "billingCycle": "annual",
            "isDefault": False,
            "isActive": True,
            "limits": manual_limits(maxStorageBytes=5 * GIB, maxApps="unlimited"),
            "features": {"whiteLabel": True, "prioritySupport": True},
        },
    ]
    catalog = load_catalog(write("catalog.json", json.dumps({"plans": plans}, indent=2)))
    free, pro = catalog.plans
    assert (free.price_cents, free.description, free.is_active) == (0, "", True)
    assert pro.billing_cycle is model.BillingCycle.ANNUAL
    assert pro.limits.max_storage_bytes == 5 * GIB
    assert pro.limits.max_apps == model.UNLIMITED
    assert pro.features == model.Features(white_label=True, priority_support=True)
    assert catalog.sources == ("catalog.json",)


def test_folder_merges_yaml_yml_and_json_in_name_order_ignoring_other_files() -> None:
    folder = HERE / "catalogs" / "folder"
    catalog = load_catalog(folder)
    assert [p.slug for p in catalog.plans] == ["free", "pro", "agency"]
    assert catalog.sources == tuple(
        str(folder / name) for name in ("10-free.yaml", "20-paid.yml", "30-upstream.json")
    )
    pro = catalog.by_slug()["pro"]
    assert pro.limits == catalog.by_slug()["free"].limits  # copy_from across files
    assert pro.is_default is False
    agency = catalog.by_slug()["agency"]
    assert agency.features == model.Features(white_label=True)


def test_examples_load() -> None:
    catalog = load_catalog(ROOT / "examples" / "catalog.yaml")
    assert load_catalog(ROOT / "examples") == catalog  # the only catalog file directly in examples/
    assert sum(p.is_default for p in catalog.plans) == 1
    paid = [p for p in catalog.plans if p.is_paid]
    assert len(paid) >= 3
    assert len({p.currency for p in paid}) >= 2
    assert {p.billing_cycle for p in paid} == set(model.BillingCycle)
    upstream = load_catalog(ROOT / "examples" / "kuploy-app" / "catalog.json")
    assert any(not p.is_active for p in upstream.plans)
    assert not {p.slug for p in upstream.plans} & {p.slug for p in catalog.plans}
    first_line = (ROOT / "examples" / "catalog.yaml").read_text().splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=../schemas/catalog.schema.json"


def test_schema_symlink_points_at_the_packaged_schema() -> None:
    link = ROOT / "schemas" / "catalog.schema.json"
    assert link.is_symlink()
    assert link.resolve() == (ROOT / "reconciler" / "schemas" / "catalog.schema.json").resolve()
    schema = json.loads(link.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50GiB", 50 * GIB),
        ("512MiB", 512 * 1024**2),
        ("1.5TiB", 1024**4 * 3 // 2),
        ("10GB", 10 * 1000**3),
        ("100 MB", 100 * 1000**2),
        ("2gib", 2 * GIB),
        ("3k", 3000),
        ("4Ki", 4096),
        ("1024", 1024),
        ("0.5KiB", 512),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["1.5B", "0.0001KB", "5XB", "GiB", "-1GiB", "9999999TiB"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_currency_set() -> None:
    assert {"usd", "eur", "cad", "gbp", "jpy", "chf", "aud"} <= STRIPE_CURRENCIES
    assert all(len(code) == 3 and code.islower() for code in STRIPE_CURRENCIES)
    assert "xyz" not in STRIPE_CURRENCIES


# --- reading and parsing --------------------------------------------------------------------------


def test_missing_path() -> None:
    assert problems(Path("nope.yaml")) == ("nope.yaml: no such file or folder",)


def test_folder_without_catalog_files() -> None:
    write("plans/README.md", "hello")
    assert problems(Path("plans")) == (
        "plans: no catalog files (*.yaml, *.yml, *.json) directly in this folder",
    )


def test_bad_yaml_syntax() -> None:
    path = write("catalog.yaml", base_with("    name: Pro\n", "   name: Pro\n"))
    (problem,) = problems(path)
    assert problem.startswith("catalog.yaml:7: invalid YAML: ")


def test_bad_json_syntax() -> None:
    path = write("catalog.json", '{"plans": [\n  {"slug": "a",}\n]}')
    assert problems(path) == (
        "catalog.json:2: invalid JSON: Expecting property name enclosed in double quotes (column 16)",
    )


@pytest.mark.parametrize("content", ["", "   \n", "# just a comment\n"])
def test_empty_yaml(content: str) -> None:
    assert problems(write("catalog.yaml", content)) == (
        "catalog.yaml: empty file: expected a mapping with a 'plans' list",
    )


def test_empty_json() -> None:
    assert problems(write("catalog.json", "")) == (
        "catalog.json: empty file: expected an object with a 'plans' list",
    )


@pytest.mark.parametrize(
    ("content", "shown"),
    [("- free\n- pro\n", 'list ["free", "pro"]'), ("just text\n", 'string "just text"'), ("null\n", "null")],
)
def test_wrong_top_level_type(content: str, shown: str) -> None:
    assert problems(write("catalog.yaml", content)) == (
        f"catalog.yaml:1: the top level must be a mapping with a 'plans' list, not {shown}",
    )


def test_json_wrong_top_level_type() -> None:
    assert problems(write("catalog.json", "[1, 2]")) == (
        "catalog.json:1: the top level must be a mapping with a 'plans' list, not list [1, 2]",
    )


def test_missing_plans() -> None:
    assert problems(write("catalog.yaml", "version: 1\n")) == ("catalog.yaml:1: plans: missing (required)",)


def test_non_utf8() -> None:
    path = write("catalog.yaml", "plans:\n  - slug: caf\xe9\n".encode("latin-1"))
    assert problems(path) == ("catalog.yaml:2: not valid UTF-8 (byte 0xe9 at offset 20)",)


def test_binary() -> None:
    path = write("catalog.yaml", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert problems(path) == (
        "catalog.yaml:3: binary content (a NUL byte), not a YAML or JSON catalog in UTF-8",
    )


def test_too_large() -> None:
    path = write("catalog.yaml", "#" * (MAX_FILE_BYTES + 1))
    assert problems(path) == ("catalog.yaml: larger than 10 MiB; refusing to parse it as a catalog",)


def many_plans(count: int) -> list[dict[str, object]]:
    """`count` valid plans: the free default, then paid ones."""
    paid = {"preset": "small", "priceCents": 100, "currency": "usd", "billingCycle": "monthly"}
    return [{"slug": "free", "name": "Free", "preset": "small", "isDefault": True}] + [
        {"slug": f"p{i:05}", "name": f"Plan {i}", **paid} for i in range(1, count)
    ]


def as_yaml(plans: list[dict[str, object]]) -> str:
    """One key per line: free takes 4 lines, each paid plan 6."""
    lines = ["plans:"]
    for plan in plans:
        lines += [f"  {'-' if i == 0 else ' '} {k}: {json.dumps(v)}" for i, (k, v) in enumerate(plan.items())]
    return "\n".join(lines) + "\n"


def test_more_than_the_maximum_of_plans_is_refused_before_the_schema_check() -> None:
    """A 10 MiB catalog of 99,181 plans took two minutes and a gigabyte to validate. The documented
    maximum (MAX_PLANS, 10,000) is refused as soon as plan 10,001 is seen, with one line."""
    assert MAX_PLANS == 10_000
    plans = many_plans(MAX_PLANS + 1)
    plans[-1]["priceCents"] = "not checked"  # the schema check never runs: only the count is reported
    line = 1 + 4 + 6 * (MAX_PLANS - 1) + 1  # after `plans:`, free's 4 lines and 9,999 paid plans of 6
    assert problems(write("many.yaml", as_yaml(plans))) == (
        f"many.yaml:{line}: plans[10000]: more than 10000 plans; a catalog holds at most 10000 plans "
        "(refused before checking them)",
    )
    assert problems(write("many.json", json.dumps({"plans": plans}))) == (
        "many.json: plans: 10001 plans; a catalog holds at most 10000 plans (refused before checking them)",
    )
    write("folder/a.json", json.dumps({"plans": plans[:6000]}))
    write("folder/b.json", json.dumps({"plans": plans[6000:]}))
    assert problems(Path("folder")) == (
        "folder: 10001 plans in its 2 files; a catalog holds at most 10000 plans "
        "(refused before checking them)",
    )


def test_the_maximum_of_plans_itself_loads() -> None:
    catalog = load_catalog(write("many.json", json.dumps({"plans": many_plans(MAX_PLANS)})))
    assert len(catalog.plans) == MAX_PLANS


def test_yaml_aliases_are_refused() -> None:
    bomb = 'a: &a ["x", "x"]\nb: &b [*a, *a]\nc: &c [*b, *b]\nplans: [*c]\n'
    assert problems(write("catalog.yaml", bomb)) == (
        "catalog.yaml:2: invalid YAML: YAML aliases (*a) are not supported: write the values out, "
        "or use copy_from (column 8)",
    )


def test_unsafe_yaml_tag() -> None:
    (problem,) = problems(write("catalog.yaml", "plans: !!python/object/apply:os.system [ls]\n"))
    assert problem.startswith("catalog.yaml:1: invalid YAML: could not determine a constructor")


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    assert problems(write("catalog.json", "[" * 50_000 + "]" * 50_000)) == (
        "catalog.json: nested too deeply to be a catalog",
    )


def test_duplicate_yaml_key() -> None:
    path = write("catalog.yaml", base_with("    currency: usd\n", "    currency: usd\n    currency: eur\n"))
    assert problems(path) == (
        "catalog.yaml:11: plans[1] (pro).currency: duplicate key (first given at line 10)",
    )


def test_duplicate_json_key() -> None:
    plans = '{"plans": [\n  {"slug": "free", "name": "Free",\n   "name": "Gratis", "isDefault": true}\n]}'
    assert problems(write("catalog.json", plans)) == (
        "catalog.json:3: plans[0] (free).name: duplicate key (first given at line 2)",
    )


def test_json_lines_where_yaml_or_a_source_map_library_would_count_otherwise() -> None:
    """The JSON line walk, kept because neither PyYAML's composer nor json-source-map gives these
    lines: a BOM, a raw U+2028 inside a string (a line break to YAML, not to JSON), tab indentation
    (refused by YAML), a key written as a surrogate-pair escape or with an escaped slash (both
    compared undecoded by json-source-map), and a duplicate key (json-source-map keeps only one)."""
    text = (
        '\ufeff{"plans": [\n'
        ' {"slug": "free", "name": "Free\u2028Tier", "isDefault": true, "preset": "small"},\n'
        '\t{"slug": "pro", "name": "Pro", "preset": "medium", "priceCents": 2000,\n'
        '\t "currency": "usd", "billingCycle": "monthly", "\\ud83d\\ude00": 1, "a\\/b": 2,\n'
        '\t "name": "Pro again"}\n'
        "]}\n"
    )
    emoji, slash, duplicate = problems(write("catalog.json", text))
    assert emoji.startswith("catalog.json:4: plans[1] (pro).\U0001f600: unknown key (allowed: slug, ")
    assert slash.startswith("catalog.json:4: plans[1] (pro).a/b: unknown key (allowed: slug, ")
    assert duplicate == "catalog.json:5: plans[1] (pro).name: duplicate key (first given at line 3)"


# --- schema errors --------------------------------------------------------------------------------


def test_string_price() -> None:
    path = write("catalog.yaml", base_with("priceCents: 2000", 'priceCents: "2000"'))
    assert problems(path) == (
        'catalog.yaml:9: plans[1] (pro).priceCents: must be an integer or null, not string "2000"',
    )


def test_float_price_is_not_an_integer() -> None:
    path = write("catalog.yaml", base_with("priceCents: 2000", "priceCents: 2000.0"))
    assert problems(path) == (
        "catalog.yaml:9: plans[1] (pro).priceCents: must be an integer or null, not number 2000.0",
    )


@pytest.mark.parametrize(
    ("written", "yaml11"),
    [
        ("0700", "is read as 448 by YAML 1.1 but as 700 by YAML 1.2"),  # octal in 1.1
        ("+0700", "is read as 448 by YAML 1.1 but as 700 by YAML 1.2"),
        ("1:30", "is read as 90 by YAML 1.1 but as the text '1:30' by YAML 1.2"),  # base 60
        ("1_000", "is read as 1000 by YAML 1.1 but as the text '1_000' by YAML 1.2"),
        ("0x10", "is 16 written in base 16"),
        ("0o7", "is read as the text '0o7' by YAML 1.1 but as 7 by YAML 1.2"),
        ("0b101", "is read as 5 by YAML 1.1 but as the text '0b101' by YAML 1.2"),
        ("2e3", "is read as the text '2e3' by YAML 1.1 but as 2000 by YAML 1.2"),
        ("00", "is not read the same way by every YAML reader"),
    ],
)
def test_a_yaml_number_yaml_versions_read_differently_is_refused_saying_why(
    written: str, yaml11: str
) -> None:
    """PyYAML reads YAML 1.1, where `priceCents: 0700` silently became 448 cents; editors and other
    tools read YAML 1.2. Money and limits are plain decimal or refused, at their file:line and path."""
    catalog = base_with("priceCents: 2000", f"priceCents: {written}")
    catalog = catalog.replace(
        "    preset: medium\n", f"    preset: medium\n    limits:\n      maxApps: {written}\n"
    )
    (limit, price) = problems(write("catalog.yaml", catalog))
    advice = "write integers in plain decimal, booleans as true or false, and quote text"
    assert price == f"catalog.yaml:11: plans[1] (pro).priceCents: {written} {yaml11}: {advice}"
    assert limit == f"catalog.yaml:10: plans[1] (pro).limits.maxApps: {written} {yaml11}: {advice}"


@pytest.mark.parametrize("written", ["yes", "No", "on", "OFF", "y", "N"])
def test_a_yaml_11_boolean_is_refused_where_a_boolean_goes(written: str) -> None:
    """`isActive: no` is false in YAML 1.1 and the text "no" in YAML 1.2: refused, not guessed."""
    catalog = base_with("    preset: medium\n", f"    preset: medium\n    isActive: {written}\n")
    (problem,) = problems(write("catalog.yaml", catalog))
    assert problem.startswith(f"catalog.yaml:9: plans[1] (pro).isActive: {written} ")
    assert "true or false" in problem


def test_plain_yaml_numbers_booleans_and_quoted_text_still_load() -> None:
    """The forms every YAML reader agrees on, and any disputed form quoted as text (or as a key)."""
    catalog = base_with("priceCents: 2000", "priceCents: +2000\n    description: '0700'\n    isActive: True")
    catalog = catalog.replace("name: Pro", 'name: "yes"')
    (_free, pro) = load_catalog(write("catalog.yaml", catalog)).plans
    assert (pro.price_cents, pro.description, pro.name, pro.is_active) == (2000, "0700", "yes", True)
    assert problems(write("keys.yaml", BASE + "on: 1\n")) == (
        "keys.yaml:12: on: unknown key (allowed: version, plans, webhookEndpoint)",
    )


def test_export_quotes_text_that_would_read_back_as_something_else() -> None:
    texts = ["0700", "1:30", "yes", "y", "2e3", "0o7", "1_000", "true", "null", "12", ".5"]
    free, pro = load_catalog(write("catalog.yaml", BASE)).plans
    plans = [free] + [
        dataclasses.replace(pro, slug=f"plan-{i}", name=text, description=text)
        for i, text in enumerate(texts)
    ]
    path = write("exported.yaml", dump_catalog(model.Catalog(plans=tuple(plans), sources=("x",))))
    loaded = load_catalog(path).plans
    assert [(p.name, p.description) for p in loaded[1:]] == [(t, t) for t in texts]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("plans:", "version: true\nplans:", "catalog.yaml:1: version: must be 1, not true"),
        (
            "    preset: medium\n",
            "    preset: medium\n    limits: {maxApps: 50.0}\n",
            "catalog.yaml:9: plans[1] (pro).limits.maxApps: must be a non-negative integer "
            "(at most 2147483647) or 'unlimited', not number 50.0",
        ),
        (
            "    name: Pro\n",
            '    name: "\\u3000"\n',  # an ideographic space: blank to Python's regex
            "catalog.yaml:7: plans[1] (pro).name: must not be blank",
        ),
    ],
)
def test_values_only_a_lenient_schema_check_would_let_through(old: str, new: str, expected: str) -> None:
    """A valid catalog is checked by a compiled copy of the schema alone (fastjsonschema): it must
    refuse what the full check refuses, where later drafts' meanings (a float 50.0 is an integer,
    true equals 1) or another regex engine's whitespace would let these through."""
    path = write("catalog.yaml", base_with(old, new))
    assert problems(path) == (expected,)


def test_a_slug_ending_in_a_newline_is_refused_by_the_full_check() -> None:
    """The compiled check reads `$` as the very end (stricter than Python's `re`); what it refuses
    goes to the full check, which decides: here the rule that only a description spans lines."""
    path = write("catalog.yaml", base_with("  - slug: pro\n", '  - slug: "pro\\n"\n'))
    assert problems(path) == (
        "catalog.yaml:6: plans[1] (pro\\n).slug: contains a tab or line break (U+000A): only a "
        "description may span lines",
    )


def test_bool_limit() -> None:
    path = write(
        "catalog.yaml",
        base_with("    preset: medium\n", "    preset: medium\n    limits:\n      maxApps: true\n"),
    )
    assert problems(path) == (
        "catalog.yaml:10: plans[1] (pro).limits.maxApps: must be a non-negative integer (at most 2147483647) "
        "or 'unlimited', not true",
    )


def test_bool_limit_in_json() -> None:
    plans = [{"slug": "free", "name": "Free", "isDefault": True, "limits": manual_limits(maxDomains=False)}]
    path = write("catalog.json", json.dumps({"plans": plans}, indent=1))
    (problem,) = problems(path)
    assert problem.startswith(
        "catalog.json:12: plans[0] (free).limits.maxDomains: must be a non-negative integer"
    )
    assert problem.endswith(", not false")


def test_negative_limit() -> None:
    path = write(
        "catalog.yaml", base_with("    preset: small\n", "    preset: small\n    limits: {maxProjects: -1}\n")
    )
    assert problems(path) == (
        "catalog.yaml:6: plans[0] (free).limits.maxProjects: must be a non-negative integer "
        "(at most 2147483647) or 'unlimited', not integer -1",
    )


def test_bad_storage_size() -> None:
    path = write(
        "catalog.yaml",
        base_with("    preset: small\n", "    preset: small\n    limits:\n      maxStorageBytes: 1.5 B\n"),
    )
    assert problems(path) == (
        "catalog.yaml:7: plans[0] (free).limits.maxStorageBytes: '1.5 B' is 1.5 bytes, not a whole number "
        "of bytes",
    )


def test_unknown_key_with_suggestion() -> None:
    path = write("catalog.yaml", base_with("priceCents: 2000", "priceCent: 2000"))
    assert problems(path) == (
        "catalog.yaml:9: plans[1] (pro).priceCent: unknown key; did you mean 'priceCents'?",
    )


def test_unknown_top_level_key() -> None:
    path = write("catalog.yaml", "currency: usd\n" + BASE)
    (problem,) = problems(path)
    assert problem.startswith(
        "catalog.yaml:1: currency: unknown key (allowed: version, plans, webhookEndpoint)"
    )


def test_bad_enum_and_slug() -> None:
    path = write(
        "catalog.yaml", base_with("billingCycle: monthly", "billingCycle: weekly").replace("pro", "Pro!")
    )
    assert problems(path) == (
        "catalog.yaml:6: plans[1] (Pro!).slug: must be lowercase letters, digits, '-' or '_', start with a "
        'letter or digit and be at most 63 characters, not string "Pro!"',
        "catalog.yaml:11: plans[1] (Pro!).billingCycle: must be one of monthly, annual, null, not string "
        '"weekly"',
    )


def test_missing_name() -> None:
    path = write("catalog.yaml", base_with("    name: Pro\n", ""))
    assert problems(path) == ("catalog.yaml:6: plans[1] (pro).name: missing (required)",)


def test_preset_and_copy_from() -> None:
    path = write(
        "catalog.yaml", base_with("    preset: medium\n", "    preset: medium\n    copy_from: free\n")
    )
    assert problems(path) == (
        "catalog.yaml:9: plans[1] (pro).copy_from: use either preset or copy_from, not both",
    )


def test_all_schema_errors_at_once_sorted_by_line_then_invariants() -> None:
    text = base_with("priceCents: 2000", 'priceCents: "x"')
    text = text.replace("    isDefault: true\n", "    isDefault: yes please\n")
    text += "  - slug: team\n    name: Team\n    preset: huge\n"
    text += "  - slug: paid\n    name: Paid\n    preset: small\n"
    assert problems(write("catalog.yaml", text)) == (
        'catalog.yaml:4: plans[0] (free).isDefault: must be true or false, not string "yes please"',
        'catalog.yaml:9: plans[1] (pro).priceCents: must be an integer or null, not string "x"',
        'catalog.yaml:14: plans[2] (team).preset: must be one of small, medium, large, not string "huge"',
        "catalog.yaml:15: plans[3] (paid).priceCents: must be a positive integer for an active paid plan, "
        "not missing or 0",
        "catalog.yaml:15: plans[3] (paid).currency: required for an active paid plan (e.g. usd)",
        "catalog.yaml:15: plans[3] (paid).billingCycle: required for an active paid plan: monthly or annual",
    )


# --- invariants -----------------------------------------------------------------------------------


def test_bad_currency() -> None:
    path = write("catalog.yaml", base_with("currency: usd", "currency: xyz"))
    assert problems(path) == (
        "catalog.yaml:10: plans[1] (pro).currency: 'xyz' is not a currency Stripe supports",
    )


def test_missing_billing_cycle() -> None:
    path = write("catalog.yaml", base_with("    billingCycle: monthly\n", ""))
    assert problems(path) == (
        "catalog.yaml:6: plans[1] (pro).billingCycle: required for an active paid plan: monthly or annual",
    )


def test_zero_price_for_paid_plan() -> None:
    path = write("catalog.yaml", base_with("priceCents: 2000", "priceCents: 0"))
    assert problems(path) == (
        "catalog.yaml:9: plans[1] (pro).priceCents: must be a positive integer for an active paid plan, "
        "not missing or 0",
    )


def test_price_above_stripe_maximum() -> None:
    path = write("catalog.yaml", base_with("priceCents: 2000", "priceCents: 100000000"))
    assert problems(path) == (
        "catalog.yaml:9: plans[1] (pro).priceCents: must be at most 99999999, not 100000000",
    )


def test_inactive_paid_plan_needs_no_price() -> None:
    text = base_with("    priceCents: 2000\n", "    isActive: false\n")
    catalog = load_catalog(write("catalog.yaml", text))
    assert catalog.by_slug()["pro"].price_cents == 0  # stored as 0: cloud_plans.price is NOT NULL
    assert not catalog.by_slug()["pro"].is_paid


def test_two_defaults() -> None:
    path = write(
        "catalog.yaml", base_with("    preset: medium\n", "    preset: medium\n    isDefault: true\n")
    )
    assert problems(path) == (
        "catalog.yaml:10: plans[1] (pro).priceCents: the default plan must have no price "
        "(absent, null or 0), not 2000: it gets no Stripe Price",
        "catalog.yaml:9: plans[1] (pro).isDefault: a second default plan: 'free' at catalog.yaml:2 is "
        "already the default; exactly one active plan may have isDefault: true",
    )


def test_no_default() -> None:
    path = write("catalog.yaml", base_with("    isDefault: true\n", ""))
    assert problems(path) == (
        "catalog.yaml:2: plans[0] (free).priceCents: must be a positive integer for an active paid plan, "
        "not missing or 0",
        "catalog.yaml:2: plans[0] (free).currency: required for an active paid plan (e.g. usd)",
        "catalog.yaml:2: plans[0] (free).billingCycle: required for an active paid plan: monthly or annual",
        "catalog.yaml: no default plan: exactly one active plan must have isDefault: true "
        "(the free plan new organizations get)",
    )


def test_inactive_default() -> None:
    path = write(
        "catalog.yaml", base_with("    isDefault: true\n", "    isDefault: true\n    isActive: false\n")
    )
    assert problems(path) == (
        "catalog.yaml:4: plans[0] (free).isDefault: an inactive plan cannot be the default plan",
        "catalog.yaml: no default plan: exactly one active plan must have isDefault: true "
        "(the free plan new organizations get)",
    )


def test_default_with_price() -> None:
    path = write(
        "catalog.yaml", base_with("    isDefault: true\n", "    isDefault: true\n    priceCents: 500\n")
    )
    assert problems(path) == (
        "catalog.yaml:5: plans[0] (free).priceCents: the default plan must have no price "
        "(absent, null or 0), not 500: it gets no Stripe Price",
    )


def test_duplicate_slug_in_one_file() -> None:
    path = write("catalog.yaml", BASE + "  - slug: pro\n    name: Pro again\n    copy_from: pro\n")
    assert problems(path) == (
        "catalog.yaml:12: plans[2] (pro).slug: duplicate slug 'pro': already defined at catalog.yaml:6 "
        "(plans[1])",
    )


def test_duplicate_slug_across_files() -> None:
    write("plans/a.yaml", BASE)
    write(
        "plans/b.json",
        json.dumps(
            {"plans": [{"slug": "free", "name": "Free", "isDefault": True, "limits": manual_limits()}]}
        ),
    )
    assert problems(Path("plans")) == (
        "plans/b.json:1: plans[0] (free).slug: duplicate slug 'free': already defined at plans/a.yaml:2 "
        "(plans[0])",
    )


def test_unknown_copy_from() -> None:
    path = write("catalog.yaml", base_with("    preset: medium\n", "    copy_from: premium\n"))
    assert problems(path) == (
        "catalog.yaml:8: plans[1] (pro).copy_from: unknown plan 'premium' (plans in the catalog: free, pro)",
    )


def test_copy_from_cycle() -> None:
    text = BASE + (
        "  - slug: a\n    name: A\n    copy_from: c\n"
        "  - slug: b\n    name: B\n    copy_from: a\n"
        "  - slug: c\n    name: C\n    copy_from: b\n"
        "  - slug: d\n    name: D\n    copy_from: d\n"
    )
    assert problems(write("catalog.yaml", text)) == (
        "catalog.yaml:14: plans[2] (a).copy_from: copy_from cycle: a -> c -> b -> a",
        "catalog.yaml:20: plans[4] (c).copy_from: copy_from cycle: a -> c -> b -> a",
        "catalog.yaml:17: plans[3] (b).copy_from: copy_from cycle: a -> c -> b -> a",
        "catalog.yaml:23: plans[5] (d).copy_from: copy_from cycle: d -> d",
    )


def test_missing_limits_after_resolution() -> None:
    path = write("catalog.yaml", base_with("    preset: medium\n", "    limits:\n      maxApps: 3\n"))
    found = problems(path)
    assert len(found) == 10
    assert found[0] == (
        "catalog.yaml:8: plans[1] (pro).limits.maxProjects: missing: give every limit, "
        "or start from a preset or copy_from"
    )
    assert not any("maxApps" in problem for problem in found)


def test_error_in_one_plan_does_not_hide_errors_in_others() -> None:
    text = base_with("currency: usd", "currency: xyz") + "  - slug: x\n    name: X\n    copy_from: nope\n"
    text = text.replace("    preset: small\n", "    preset: small\n    limits: {maxApps: many}\n")
    found = problems(write("catalog.yaml", text))
    assert found[0].startswith(
        "catalog.yaml:6: plans[0] (free).limits.maxApps: must be a non-negative integer"
    )
    assert found[1:] == (
        "catalog.yaml:11: plans[1] (pro).currency: 'xyz' is not a currency Stripe supports",
        "catalog.yaml:15: plans[2] (x).copy_from: unknown plan 'nope' (plans in the catalog: free, pro, x)",
    )
