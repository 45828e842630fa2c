"""The emulator driven by an official Stripe SDK nobody here wrote: stripe-node, pinned in
tools/package.json and installed by `.ci/run` (`npm install --prefix tools`).

Each test runs one script of tests/node/ (a small Node integration of kuploy-cloud's billing: catalog,
idempotency and errors, customers, subscriptions, invoices, PaymentIntents, Checkout and webhooks)
against this test's emulator, then checks what it reports against the emulator's state read through
the Python SDK. stripe-node 23.2.0 pins `Stripe-Version: 2026-11-18.endive`, newer than the Python
SDK's: it is answered in the newest shape the emulator models. Without Node.js or the package the
tests skip, saying how to install them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
import stripe
from test_listener import request, serve

from reconciler import migrations
from reconciler.listener import create_app
from reconciler.model import WEBHOOK_PATH
from reconciler.sandbox.emulator import RunningEmulator
from reconciler.settings import Secret, Settings

from conftest import TEST_KEY
from node_tools import install_tools

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).parent / "node"
PINNED_VERSION = "23.2.0"
PINNED_API_VERSION = "2026-11-18.endive"
TIMEOUT = 120.0  # an upper bound for one script, never a timing assertion


def find_node_sdk() -> str | None:
    """Why the Node SDK cannot run here, or None when `node` and the pinned `stripe` package are there."""
    hint = "run `npm install --prefix tools --no-package-lock` (.ci/run does it)"
    if shutil.which("node") is None:
        return f"Node.js is not installed: stripe-node {PINNED_VERSION} needs it; then {hint}"
    package = ROOT / "tools" / "node_modules" / "stripe" / "package.json"
    if not package.is_file():
        install_tools()  # as .ci/run does, so the README's test command is the whole set-up
    if not package.is_file():
        return f"stripe-node {PINNED_VERSION} is not installed: {hint}"
    installed = json.loads(package.read_text())["version"]
    if installed != PINNED_VERSION:
        return f"stripe-node {installed} is installed, tools/package.json pins {PINNED_VERSION}: {hint}"
    return None


MISSING = find_node_sdk()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def run_node(script: str, emulator: RunningEmulator, *args: str) -> dict[str, Any]:
    """Run tests/node/SCRIPT against the emulator; its one line of JSON on stdout, parsed."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("STRIPE_", "KUPLOY_", "NODE_"))}
    env.update(KUPLOY_EMULATOR_URL=emulator.url, KUPLOY_STRIPE_KEY=TEST_KEY, NO_COLOR="1")
    done = subprocess.run(
        ["node", str(SCRIPTS / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"{script}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def node_requests(emulator: RunningEmulator) -> list[dict[str, Any]]:
    return [r for r in emulator.emulator.requests if r["path"].startswith("/v1/")]


# --- catalog ------------------------------------------------------------------------------------------


def test_catalog_create_update_paginate_expand_search_and_lookup_keys(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    out = run_node("catalog.mjs", emulator)
    seen = node_requests(emulator)  # before the checks below add the Python SDK's
    assert [r for r in seen if r["status"] >= 300] == [], "every call of a valid integration is answered"
    assert {r["stripe_version"] for r in seen} == {PINNED_API_VERSION}, "stripe-node pins its version"
    product = stripe_client.v1.products.retrieve(out["product"])
    assert (product.name, product.default_price) == ("Pro (2026)", out["prices"][0])
    assert product.metadata.to_dict() == {"kuploy_plan": "pro", "tier": "paid"}
    assert out["updated"] == {
        "name": "Pro (2026)",
        "defaultPrice": out["prices"][0],
        "metadata": {"kuploy_plan": "pro", "tier": "paid"},
    }
    assert stripe_client.v1.prices.retrieve(out["prices"][1]).nickname == out["priceUpdated"] == "Yearly"

    every = [p.id for p in stripe_client.v1.products.list(params={"limit": 100}).auto_paging_iter()]
    assert len(every) == 13
    assert out["walked"] == every, "for await walks every product once, newest first"
    assert out["autoPagingToArray"] == 13
    assert out["expandedProduct"] == {"id": product.id, "object": "product", "name": "Pro (2026)"}
    assert out["listedExpanded"] == [True, True]
    assert out["byLookup"] == ["pro_monthly", "pro_yearly"]
    assert out["search"] == {"object": "search_result", "ids": [product.id], "hasMore": False}
    assert out["priceSearch"] == [out["prices"][1]]
    assert sorted(out["searchWalked"]) == sorted(every), "a search's next_page walked to the end"


# --- idempotency and errors ----------------------------------------------------------------------------


def test_idempotency_keys_and_error_fields(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    out = run_node("errors.mjs", emulator)
    assert out["replay"]["first"] == out["replay"]["again"]
    assert out["replay"]["replayed"] == "true"
    assert len(list(stripe_client.v1.products.list().auto_paging_iter())) == 1, "the replay made nothing"

    for case in ("otherParams", "otherEndpoint"):
        error = out[case]
        assert (error["class"], error["rawType"], error["statusCode"]) == (
            "StripeIdempotencyError",
            "idempotency_error",
            400,
        )
    assert "same parameters" in out["otherParams"]["message"]
    assert "same endpoint" in out["otherEndpoint"]["message"]
    assert "'/v1/products' vs '/v1/customers'" in out["otherEndpoint"]["message"]

    expected = {
        "missing": ("StripeInvalidRequestError", "resource_missing", "id", 404),
        "badParam": ("StripeInvalidRequestError", "parameter_invalid_integer", "unit_amount", 400),
        "unknownParam": ("StripeInvalidRequestError", "parameter_unknown", "colour", 400),
        "tooManyLookupKeys": ("StripeInvalidRequestError", None, "lookup_keys", 400),
        "authentication": ("StripeAuthenticationError", None, None, 401),
        "badVersion": ("StripeInvalidRequestError", None, None, 400),
    }
    for case, (cls, code, param, status) in expected.items():
        error = out[case]
        assert (error["class"], error["code"], error["param"], error["statusCode"]) == (
            cls,
            code,
            param,
            status,
        )
        assert error["requestId"].startswith("req_"), case
        # Every error names its request, and the request log the emulator keeps has it.
        assert error["requestLogUrl"] == f"{emulator.url}/_emulator/requests/{error['requestId']}", case
    assert "prod_doesNotExist" in out["missing"]["message"]
    # stripe-node's own pin is newer than the Python SDK's: the refusal of an old one does not say
    # the emulator stops at the older pin.
    assert "from 2023-08-16 on; 2019-01-01 is older and not modelled" in out["badVersion"]["message"]
    assert "not-a-stripe-key" not in out["authentication"]["message"], "the key is redacted"

    endpoints = {
        "createPreview": "POST /v1/invoices/create_preview",
        "invoiceSearch": "GET /v1/invoices/search",
        "portal": "POST /v1/billing_portal/sessions",
    }
    for case, endpoint in endpoints.items():
        error = out["unmodelled"][case]
        assert (error["class"], error["statusCode"]) == ("StripeInvalidRequestError", 400), case
        assert (
            f"`{endpoint}` is valid for Stripe, but this Stripe emulator does not model it"
            in error["message"]
        )


def test_the_sdks_retries_under_injected_500s_write_each_product_once(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    emulator.emulator.set_faults(error_rate=0.3, seed=7)
    out = run_node("retries.mjs", emulator)
    emulator.emulator.set_faults(error_rate=0.0)
    faults = [r["fault"] for r in node_requests(emulator) if r["fault"]]
    assert "error_before_write" in faults and "error_after_write" in faults, faults
    assert len(out["created"]) + len(out["thrown"]) == 30
    assert out["thrown"], "an after-write 500 is not retried"
    assert {(t["status"], t["shouldRetry"]) for t in out["thrown"]} == {(500, "false")}
    names = [p.name for p in stripe_client.v1.products.list(params={"limit": 100}).auto_paging_iter()]
    assert sorted(names) == sorted(f"retry-{i}" for i in range(30)), "every call wrote once, none twice"


# --- customers, subscriptions, invoices, PaymentIntents -----------------------------------------------


def test_billing_customers_subscriptions_invoices_and_payment_intents(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    out = run_node("billing.mjs", emulator)
    payer = stripe_client.v1.customers.retrieve(out["payer"]["id"])
    assert payer.invoice_settings is not None
    saved = payer.invoice_settings.default_payment_method
    assert saved == out["payer"]["defaultPaymentMethod"] and str(saved).startswith("pm_")
    assert saved != "pm_card_visa", "a test token becomes a PaymentMethod of its own"
    assert out["payerCards"] == [{"id": saved, "brand": "visa", "last4": "4242"}]

    paid = stripe_client.v1.subscriptions.retrieve(out["paid"]["id"])
    assert paid.status == out["paid"]["status"] == "active"
    assert paid.metadata.to_dict() == {"organizationId": "org_node"}
    assert stripe_client.v1.invoices.retrieve(out["paid"]["invoice"]).status == "paid"

    assert (out["incomplete"]["status"], out["incomplete"]["invoiceStatus"]) == ("incomplete", "open")
    assert out["incomplete"]["secretType"] == "payment_intent" and out["incomplete"]["secretShaped"]
    assert out["incompleteConfirmed"] == {
        "intentStatus": "succeeded",
        "subscriptionStatus": "active",
        "invoiceStatus": "paid",
    }
    assert stripe_client.v1.subscriptions.retrieve(out["incomplete"]["id"]).status == "active"

    assert out["invoices"] == [out["paid"]["invoice"]]
    manual = out["manualInvoice"]
    assert (manual["draft"], manual["finalized"], manual["paid"]) == ("draft", "open", "paid")
    assert manual["amountPaid"] == 1500 and manual["lines"] == [1500]
    assert stripe_client.v1.invoices.retrieve(manual["id"]).status == "paid"

    assert out["intent"] == {
        "id": out["intent"]["id"],
        "before": "requires_payment_method",
        "after": "succeeded",
        "received": 4200,
    }
    # Real Stripe refuses to confirm, without a return_url, an intent open to redirect-based methods.
    refused = out["withoutReturnUrl"]
    assert (refused["class"], refused["statusCode"]) == ("StripeInvalidRequestError", 400)
    assert "A `return_url` must be specified" in refused["message"]
    assert out["threeDSecure"]["status"] == "requires_action"
    assert out["threeDSecure"]["action"] == "redirect_to_url"
    assert out["threeDSecure"]["returnUrl"] == "https://cloud.example.com/billing/return"
    assert out["threeDSecure"]["url"].endswith("/authenticate")
    assert (
        out["charge"]["paid"] and out["charge"]["status"] == "succeeded" and out["charge"]["amount"] == 4200
    )
    for case, decline_code in (("declined", "generic_decline"), ("insufficientFunds", "insufficient_funds")):
        error = out[case]
        assert (
            error["class"],
            error["rawType"],
            error["code"],
            error["declineCode"],
            error["statusCode"],
        ) == (
            "StripeCardError",
            "card_error",
            "card_declined",
            decline_code,
            402,
        )
        intent = stripe_client.v1.payment_intents.retrieve(error["paymentIntent"])
        assert intent.status == error["paymentIntentStatus"] == "requires_payment_method"
        assert (
            intent.last_payment_error is not None and intent.last_payment_error.decline_code == decline_code
        )

    assert out["deleted"]["deleted"] is True
    # As in Stripe, a deleted customer is still retrieved, as a stub saying so.
    assert stripe_client.v1.customers.retrieve(out["deleted"]["id"]).to_dict().get("deleted") is True


# --- Checkout and webhooks -----------------------------------------------------------------------------


def test_checkout_and_webhooks_verified_with_construct_event(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    out = run_node("checkout.mjs", emulator)
    assert out["endpoint"]["secretShaped"]
    verified = {e["type"]: e for e in out["verified"]}
    assert set(verified) == {"checkout.session.completed", "customer.subscription.created", "invoice.paid"}
    for event in out["verified"]:  # each delivery is an event the emulator recorded
        assert stripe_client.v1.events.retrieve(event["id"]).type == event["type"]
    assert out["tampered"] == out["wrongSecret"] == "StripeSignatureVerificationError"
    # Events come in the account's version; the endpoint pinned to 2023-08-16 gets that version's shape.
    assert {e["apiVersion"] for e in out["verified"]} == {stripe.api_version}
    [pinned] = out["pinned"]
    assert pinned["id"] == verified["invoice.paid"]["id"]
    assert (pinned["apiVersion"], pinned["paid"]) == ("2023-08-16", True)
    assert pinned["subscription"] == out["invoicePaidSubscription"] == out["completed"]["subscription"]

    session = stripe_client.v1.checkout.sessions.retrieve(out["session"]["id"])
    assert verified["checkout.session.completed"]["object"] == session.id
    assert (session.status, session.payment_status, session.client_reference_id) == (
        "complete",
        "paid",
        "org_node",
    )
    assert out["completed"]["subscription"] == session.subscription
    assert verified["customer.subscription.created"]["object"] == session.subscription
    subscription = stripe_client.v1.subscriptions.retrieve(str(session.subscription))
    assert subscription.status == out["completed"]["subscriptionStatus"] == "active"
    assert subscription.metadata.to_dict() == {"organizationId": "org_node", "planId": "business"}
    assert out["completed"]["lineItems"][0]["quantity"] == 1

    assert out["payment"]["mode"] == "payment" and out["payment"]["amountTotal"] == 2400
    assert [(i["quantity"], i["amount"]) for i in out["payment"]["items"]] == [(2, 2400)]
    assert out["expired"] == {"status": "expired"}


@pytest.fixture
def migrated_settings(database_url: str, emulator: RunningEmulator) -> Settings:
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrations.migrate(conn)
    return Settings(
        database_url=Secret(database_url),
        stripe_secret_key=Secret(TEST_KEY),
        stripe_api_base=emulator.url,
        lock_timeout=5,
        max_rps=1000,
    )


def test_a_signature_from_generate_test_header_string_is_accepted_by_the_listener(
    emulator: RunningEmulator, migrated_settings: Settings
) -> None:
    """What a Node test suite of kuploy-cloud would do: sign a payload with stripe-node's
    `webhooks.generateTestHeaderString`; kuploy's listener accepts it, and refuses it under another secret."""
    secret = "whsec_kuployNodeSdkTests000000000000"
    payload = json.dumps(
        {
            "id": "evt_nodeSdkSigned000000000000",
            "object": "event",
            "api_version": PINNED_API_VERSION,
            "created": 1_800_000_000,
            "data": {"object": {"id": "prod_nodeSdk", "object": "product"}},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": "product.created",
        }
    )
    header = run_node("sign.mjs", emulator, payload, secret)["header"]
    assert header.startswith("t=") and ",v1=" in header
    with serve(create_app(migrated_settings, webhook_secret=Secret(secret))) as listener:
        headers = {"Content-Type": "application/json", "Stripe-Signature": header}
        accepted = request(listener.url, "POST", WEBHOOK_PATH, payload.encode(), headers)
        assert accepted.status == 200 and accepted.body["received"] is True
    other = "whsec_kuployNodeSdkOtherSecret000000"
    with serve(create_app(migrated_settings, webhook_secret=Secret(other))) as listener:
        refused = request(listener.url, "POST", WEBHOOK_PATH, payload.encode(), headers)
        assert refused.status == 400


# --- what Stripe's guides do that the emulator does not model yet ------------------------------------


def test_the_subscriptions_guide_saves_the_card_it_was_paid_with(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    out = run_node("subscription_guide.mjs", emulator)
    subscription = stripe_client.v1.subscriptions.retrieve(out["subscription"]["id"])
    assert subscription.status == out["subscription"]["status"] == "active"
    saved = subscription.default_payment_method
    assert saved == out["subscription"]["defaultPaymentMethod"] and str(saved).startswith("pm_")


def test_an_invoice_names_the_payment_intent_that_paid_it_in_payments(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    out = run_node("invoice_payments.mjs", emulator)
    assert out["invoice"]["status"] == "paid"
    [payment] = out["invoice"]["payments"]
    assert (payment["status"], payment["type"], payment["amountPaid"]) == ("paid", "payment_intent", 900)
    intent = stripe_client.v1.payment_intents.retrieve(payment["paymentIntent"])
    assert (intent.status, intent.amount_received) == ("succeeded", 900)
