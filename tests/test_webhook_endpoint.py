"""The webhook endpoint as desired state: planned, created once (secret written once, 0600), updated in
place, reported as drift when edited by hand. Through the command line against the emulator."""

from __future__ import annotations

import json
import stat
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
import stripe
import yaml

from reconciler import api
from reconciler.catalog import load_catalog
from reconciler.model import WEBHOOK_EVENTS
from reconciler.sandbox.emulator import RunningEmulator
from reconciler.settings import Settings

import stripe_contract as contract
from conftest import standard_plans, stripe_writes
from test_cli import ROOT, run
from test_sync import assert_clean_failure

URL = "https://billing.example.com/api/webhooks/stripe"


def catalog(tmp_path: Path, endpoint: dict[str, Any] | None = None, name: str = "catalog.yaml") -> Path:
    document: dict[str, Any] = {"version": 1, "plans": standard_plans()}
    if endpoint is not None:
        document["webhookEndpoint"] = endpoint
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def endpoints(client: stripe.StripeClient) -> list[Any]:
    return list(client.v1.webhook_endpoints.list(params={"limit": 100}).auto_paging_iter())


def secrets(emulator: RunningEmulator) -> dict[str, str]:
    with urllib.request.urlopen(f"{emulator.url}/_emulator/webhook_secrets", timeout=10) as response:
        return dict(json.load(response)["test"])


def test_plan_apply_apply_creates_once_and_writes_the_secret_once(
    cli_env: dict[str, str],
    tmp_path: Path,
    emulator: RunningEmulator,
    stripe_client: stripe.StripeClient,
) -> None:
    path = catalog(tmp_path, {"url": URL})
    planned = run("plan", str(path), env=cli_env)
    assert planned.returncode == 0, planned.stderr
    assert "+ webhook_endpoint  create" in planned.stdout
    assert f'url: "{URL}"' in planned.stdout and "Plan: 4 to create." in planned.stdout

    document = json.loads(run("plan", "-o", "json", str(path), env=cli_env).stdout)
    jsonschema.validate(document, json.loads((ROOT / "schemas" / "plan.schema.json").read_text()))
    first = document["changes"][0]
    assert first["address"] == "webhook_endpoint" and first["plan"] is None
    assert first["operations"][0]["type"] == "CreateWebhookEndpoint"
    assert document["summary"]["total"] == 4

    secret_file = tmp_path / "whsec"
    applied = run(
        "apply", "--auto-approve", "--webhook-secret-file", str(secret_file), str(path), env=cli_env
    )
    assert applied.returncode == 0, applied.stderr
    (endpoint,) = endpoints(stripe_client)
    assert endpoint.url == URL and sorted(endpoint.enabled_events) == sorted(WEBHOOK_EVENTS)
    assert endpoint.metadata["kuploy_managed_by"] == "kuploy-reconciler"
    secret = secrets(emulator)[endpoint.id]
    assert secret_file.read_text() == secret
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert secret not in applied.stdout + applied.stderr

    writes = len(stripe_writes(emulator))
    again = run("apply", "--auto-approve", "--webhook-secret-file", str(secret_file), str(path), env=cli_env)
    assert again.returncode == 0 and "No changes" in again.stdout, again.stdout + again.stderr
    assert len(stripe_writes(emulator)) == writes
    assert secret_file.read_text() == secret
    assert run("plan", "--detailed-exitcode", str(path), env=cli_env).returncode == 0


def test_creating_needs_a_secret_destination_before_any_write(
    cli_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator, db: psycopg.Connection
) -> None:
    path = catalog(tmp_path, {"url": URL})
    result = run("apply", "--auto-approve", str(path), env=cli_env)
    assert_clean_failure(result)
    assert "--webhook-secret-file" in result.stderr and "Nothing was changed" in result.stderr
    assert stripe_writes(emulator) == []
    assert db.execute("SELECT to_regclass('cloud_plans')").fetchone() == (None,)


def test_an_existing_secret_file_is_never_overwritten(
    cli_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator
) -> None:
    secret_file = tmp_path / "whsec"
    secret_file.write_text("whsec_previous\n")
    result = run(
        "apply",
        "--auto-approve",
        "--webhook-secret-file",
        str(secret_file),
        str(catalog(tmp_path, {"url": URL})),
        env=cli_env,
    )
    assert_clean_failure(result)
    assert "exists and is not empty" in result.stderr
    assert secret_file.read_text() == "whsec_previous\n" and stripe_writes(emulator) == []


def test_print_webhook_secret_prints_it_on_stdout_only(
    cli_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    result = run(
        "apply", "--auto-approve", "--print-webhook-secret", str(catalog(tmp_path, {"url": URL})), env=cli_env
    )
    assert result.returncode == 0, result.stderr
    (endpoint,) = endpoints(stripe_client)
    secret = secrets(emulator)[endpoint.id]
    assert f"STRIPE_WEBHOOK_SECRET={secret}\n" in result.stdout
    assert secret not in result.stderr


def test_url_and_events_update_in_place_and_hand_edits_are_drift(
    cli_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    secret_file = tmp_path / "whsec"
    path = catalog(tmp_path, {"url": URL})
    assert (
        run(
            "apply", "--auto-approve", "--webhook-secret-file", str(secret_file), str(path), env=cli_env
        ).returncode
        == 0
    )
    (endpoint,) = endpoints(stripe_client)
    secret = secrets(emulator)[endpoint.id]

    new_url = "https://pay.example.com/api/webhooks/stripe"
    events = [*WEBHOOK_EVENTS, "customer.subscription.paused"]
    path = catalog(tmp_path, {"url": new_url, "events": events})
    planned = run("plan", str(path), env=cli_env)
    assert "~ webhook_endpoint  update" in planned.stdout
    assert f'url: "{URL}" → "{new_url}"' in planned.stdout
    updated = run("apply", "--auto-approve", str(path), env=cli_env)  # no secret destination needed
    assert updated.returncode == 0, updated.stderr
    (after,) = endpoints(stripe_client)
    assert after.id == endpoint.id and after.url == new_url
    assert sorted(after.enabled_events) == sorted(events)
    assert secrets(emulator)[endpoint.id] == secret

    assert run("drift", env=cli_env).returncode == 0
    stripe_client.v1.webhook_endpoints.update(
        endpoint.id, params={"url": URL, "enabled_events": ["invoice.paid"]}
    )
    drift = run("drift", "-o", "json", env=cli_env)
    assert drift.returncode == 2, drift.stdout + drift.stderr
    items = {i["field"]: i for i in json.loads(drift.stdout)["items"] if i["plan"] == "webhook_endpoint"}
    assert (
        items["webhook_endpoint.url"]["actual"] == URL
        and items["webhook_endpoint.url"]["expected"] == new_url
    )
    assert items["webhook_endpoint.events"]["actual"] == ["invoice.paid"]
    text = run("drift", env=cli_env)
    assert "~ webhook_endpoint" in text.stdout

    healed = run("apply", "--auto-approve", str(path), env=cli_env)
    assert healed.returncode == 0, healed.stderr
    assert endpoints(stripe_client)[0].url == new_url
    assert run("drift", env=cli_env).returncode == 0


def test_webhook_url_flag_for_a_kuploy_app_catalog(
    cli_env: dict[str, str], tmp_path: Path, stripe_client: stripe.StripeClient
) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"plans": standard_plans()}))
    bad = run("plan", "--webhook-url", "https://x.example/hooks", str(path), env=cli_env)
    assert_clean_failure(bad)
    assert "/api/webhooks/stripe" in bad.stderr
    secret_file = tmp_path / "whsec"
    result = run(
        "apply",
        "--auto-approve",
        "--webhook-url",
        URL,
        "--webhook-secret-file",
        str(secret_file),
        str(path),
        env=cli_env,
    )
    assert result.returncode == 0, result.stderr
    assert [e.url for e in endpoints(stripe_client)] == [URL]


def test_an_endpoint_made_by_hand_at_the_url_is_adopted_only_when_asked(
    cli_env: dict[str, str], tmp_path: Path, emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    made = stripe_client.v1.webhook_endpoints.create(
        params={"url": URL, "enabled_events": list(WEBHOOK_EVENTS)}  # type: ignore[arg-type]  # stripe types them as Literals
    )
    path = catalog(tmp_path, {"url": URL})
    refused = run(
        "apply", "--auto-approve", "--webhook-secret-file", str(tmp_path / "s"), str(path), env=cli_env
    )
    assert_clean_failure(refused)
    assert "--adopt" in refused.stderr and made.id in refused.stderr

    adopted = run("apply", "--auto-approve", "--adopt", str(path), env=cli_env)
    assert adopted.returncode == 0, adopted.stderr
    (endpoint,) = endpoints(stripe_client)
    assert endpoint.id == made.id and endpoint.metadata["kuploy_managed_by"] == "kuploy-reconciler"
    assert not (tmp_path / "s").exists() or (tmp_path / "s").read_text() == ""


def test_a_catalog_folder_declares_at_most_one_endpoint(cli_env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "catalog"
    folder.mkdir()
    catalog(folder, {"url": URL}, "a.yaml")
    (folder / "b.yaml").write_text(yaml.safe_dump({"plans": [], "webhookEndpoint": {"url": URL}}))
    result = run("validate", str(folder), env=cli_env)
    assert_clean_failure(result)
    assert "declared again" in result.stderr


def test_old_apply_records_and_catalogs_without_an_endpoint_keep_their_fingerprint() -> None:
    from reconciler.model import Catalog, fingerprint

    old = {"sources": ["x.yaml"], "plans": []}
    assert Catalog.from_dict(old).as_dict() == old
    assert fingerprint(Catalog.from_dict(old).as_dict()) == fingerprint(old)


def test_webhook_requests_fit_stripes_spec(
    settings: Settings, tmp_path: Path, emulator: RunningEmulator
) -> None:
    """Create, update and list of the endpoint, as the reconciler sends them, against the OpenAPI spec."""
    shown: list[str] = []
    destination = api.WebhookSecretDestination(show=shown.append)
    for endpoint in ({"url": URL}, {"url": URL, "events": [*WEBHOOK_EVENTS, "invoice.upcoming"]}):
        api.apply(
            settings,
            load_catalog(catalog(tmp_path, endpoint)),
            confirm=lambda plan: True,
            secrets=destination,
        )
    assert len(shown) == 1 and shown[0].startswith("STRIPE_WEBHOOK_SECRET=whsec_")
    log = [e for e in emulator.emulator.requests if "webhook_endpoints" in e["path"]]
    assert {(e["method"], e["path"].count("/")) for e in log} == {("GET", 2), ("POST", 2), ("POST", 3)}
    problems = []
    for entry in log:
        params = entry["form"] if entry["method"] == "POST" else entry["query"]
        problems += contract.validate_request(entry["method"], entry["path"], params)
        problems += contract.validate_response(
            entry["method"], entry["path"], entry["status"], entry["response"]
        )
    assert problems == []
