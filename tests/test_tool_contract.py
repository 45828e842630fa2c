"""Every request the reconciler itself makes, and every answer it gets, fits Stripe's published spec."""

from __future__ import annotations

from pathlib import Path

from reconciler import api
from reconciler.catalog import load_catalog
from reconciler.sandbox.emulator import RunningEmulator
from reconciler.settings import Settings

import stripe_contract as contract
from conftest import standard_plans, write_catalog


def test_requests_of_a_full_lifecycle_fit_the_spec(
    settings: Settings, tmp_path: Path, emulator: RunningEmulator
) -> None:
    path = write_catalog(tmp_path, standard_plans())
    plans = standard_plans()
    steps = [
        plans,  # create
        [plans[0], {**plans[1], "priceCents": 2500}, plans[2]],  # price change
        [plans[0], {**plans[1], "priceCents": 2500, "name": "Pro+"}, plans[2]],  # rename
        [plans[0], {**plans[1], "priceCents": 2500, "name": "Pro+"}],  # removal
        plans,  # re-add, price back
    ]
    for step in steps:
        write_catalog(tmp_path, step)
        api.apply(settings, load_catalog(path), confirm=lambda plan: True)

    log = emulator.emulator.requests
    assert {r["method"] for r in log} == {"GET", "POST"}
    problems = []
    for entry in log:
        params = entry["form"] if entry["method"] == "POST" else entry["query"]
        problems += contract.validate_request(entry["method"], entry["path"], params)
        problems += contract.validate_response(
            entry["method"], entry["path"], entry["status"], entry["response"]
        )
    assert problems == []
    assert all(entry["status"] == 200 for entry in log), [e for e in log if e["status"] != 200]
