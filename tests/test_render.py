"""Renderers on hand-built plans: what an operator reads."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import jsonschema

from reconciler.diff import diff
from reconciler.drift import DriftItem, DriftReport, Where
from reconciler.model import Catalog, CurrentState, StripeState
from reconciler.plan import Plan
from reconciler.render.drift import render_drift_text
from reconciler.render.json import render_json
from reconciler.render.text import render_text

from test_diff import FREE, LIMITS, PRO, converged

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "plan.schema.json").read_text())


def test_text_shows_before_and_after_per_field_and_a_summary() -> None:
    changed = replace(PRO, price_cents=2500, limits=replace(LIMITS, max_apps=20))
    text = render_text(diff(Catalog(plans=(FREE, changed)), converged(FREE, PRO)))
    assert "± plan.pro  replace-price" in text
    assert "    priceCents: 2000 → 2500" in text
    assert "    limits.maxApps: 2 → 20" in text
    assert "· archive Stripe Price price_pro" in text
    assert text.rstrip().endswith("Plan: 1 to replace price.")
    assert "\033[" not in text


def test_text_lists_every_resolved_field_of_a_new_plan() -> None:
    text = render_text(diff(Catalog(plans=(FREE, PRO)), CurrentState(rows={}, stripe=StripeState())))
    assert "+ plan.pro  create" in text
    assert '    name: "Pro"' in text and "    limits.maxStorageBytes: 10737418240" in text
    assert "Plan: 2 to create." in text


def test_text_colour_only_when_asked() -> None:
    plan = diff(Catalog(plans=(FREE,)), converged(FREE, PRO))
    assert "\033[31m- plan.pro" in render_text(plan, color=True)


UNSEEN = "\x9b31m\u202e\x1b[2J\u2066\x07\u2028"
"""A one-byte CSI (U+009B), a right-to-left override, an ESC sequence, an isolate, BEL, a line
separator: what a plan shows must never carry them raw, from the catalog, Postgres or Stripe."""
RAW = "\x9b\u202e\x1b\u2066\x07\u2028"


def hostile_plan() -> Plan:
    """Every side hostile: a new name (catalog), an old name (Stripe), an archived slug (Postgres)."""
    before = replace(PRO, name=f"Old{UNSEEN}")
    gone = replace(PRO, slug=f"gone{UNSEEN}", name=f"Gone{UNSEEN}")
    desired = Catalog(
        plans=(FREE, replace(PRO, name=f"@octocat{UNSEEN}", description=f"by @github/security{UNSEEN}"))
    )
    return diff(desired, converged(FREE, before, gone))


def test_text_escapes_controls_and_bidi_overrides_from_every_source() -> None:
    text = render_text(hostile_plan())
    assert not any(char in text for char in RAW), repr(text)
    assert "\\u009b31m\\u202e\\u001b[2J\\u2066\\u0007\\u2028" in text
    assert "- plan.gone\\u009b31m" in text and 'name: "Old\\u009b31m' in text


def test_drift_text_escapes_what_was_typed_in_the_dashboard() -> None:
    item = DriftItem(
        plan=f"pro{UNSEEN}", where=Where.STRIPE, field="name", expected="Pro", actual=f"Pro{UNSEEN}"
    )
    text = render_drift_text(DriftReport(items=(item,), baseline="the catalog given"))
    assert not any(char in text for char in RAW), repr(text)
    assert "~ plan.pro\\u009b31m\\u202e" in text and 'actual "Pro\\u009b31m\\u202e' in text


def test_no_changes_and_pending_migrations() -> None:
    assert render_text(Plan()) == "No changes. cloud_plans and Stripe match the catalog.\n"
    text = render_text(Plan(pending_migrations=("0001_cloud_plans",)))
    assert "Pending migrations (apply runs them first): 0001_cloud_plans" in text


def test_json_is_valid_against_its_schema() -> None:
    plan = diff(Catalog(plans=(FREE, replace(PRO, name="Pro+"))), converged(FREE, PRO))
    document = json.loads(render_json(plan))
    jsonschema.validate(document, SCHEMA)
    (change,) = document["changes"]
    assert change["address"] == "plan.pro" and change["action"] == "update"
    assert {"path": "name", "before": "Pro", "after": "Pro+"} in change["fields"]
    assert [op["type"] for op in change["operations"]] == ["UpdateProduct", "WriteRow"]
    assert document["summary"] == {
        "create": 0,
        "reactivate": 0,
        "replace_price": 0,
        "update": 1,
        "archive": 0,
        "total": 1,
    }


def test_json_of_nothing_to_do() -> None:
    document = json.loads(render_json(Plan()))
    jsonschema.validate(document, SCHEMA)
    assert document["changes"] == []
