"""`sandbox checkout`: the guide's "Test your setup" with each test card, listener and emulator real."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import api
from reconciler.catalog import load_catalog
from reconciler.errors import KuployError
from reconciler.sandbox.checkout import run_checkout
from reconciler.settings import Settings

from conftest import standard_plans, write_catalog


@pytest.fixture
def applied(settings: Settings, tmp_path: Path) -> Settings:
    api.apply(settings, load_catalog(write_catalog(tmp_path, standard_plans())), confirm=lambda plan: True)
    return settings


def test_4242_subscribes_and_both_sides_agree(applied: Settings) -> None:
    report = run_checkout(applied, plan="pro", organization="org_42", card="4242 4242 4242 4242")
    assert report.outcome == "succeeded" and report.consistent
    assert report.kuploy is not None and report.stripe is not None
    assert report.kuploy["organizationId"] == "org_42" and report.kuploy["planId"] == "pro"
    assert report.kuploy["status"] == report.stripe["status"] == "active"
    assert report.kuploy["latestInvoiceStatus"] == "paid" and report.stripe["latestInvoiceStatus"] == "paid"


def test_0002_is_declined_and_nothing_is_recorded(applied: Settings) -> None:
    report = run_checkout(applied, plan="pro", organization="org_declined", card="4000000000000002")
    assert report.outcome == "declined" and report.kuploy is None and report.stripe is None
    assert report.consistent


def test_3220_needs_3d_secure(applied: Settings) -> None:
    waiting = run_checkout(
        applied, plan="team", organization="org_3ds", card="4000000000003220", authenticate=False
    )
    assert waiting.outcome == "requires_action" and waiting.kuploy is None
    done = run_checkout(applied, plan="team", organization="org_3ds", card="4000000000003220")
    assert done.outcome == "succeeded" and done.consistent
    assert done.kuploy is not None and done.kuploy["planId"] == "team"


def test_unknown_plan_or_card_is_a_clear_error(applied: Settings) -> None:
    with pytest.raises(KuployError, match="has no active Stripe Price"):
        run_checkout(applied, plan="free", organization="o", card="4242424242424242")
    with pytest.raises(KuployError, match="not one of the guide's test cards"):
        run_checkout(applied, plan="pro", organization="o", card="5555555555554444")
