"""The emulator against Stripe's published OpenAPI contract: every logged request and response fits."""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Iterator
from typing import Any, cast

import pytest
import stripe

from reconciler.sandbox.emulator import RunningEmulator, start_in_thread

import stripe_contract as contract
from conftest import post_admin


@pytest.fixture
def running() -> Iterator[RunningEmulator]:
    with start_in_thread() as run:
        yield run


def _client(url: str, key: str = "sk_test_contract") -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": url}, max_network_retries=0)


def _drive(url: str) -> None:
    """A realistic reconcile-like sequence, errors included."""
    c = _client(url)
    prod = c.v1.products.create(
        params={"name": "Pro", "description": "The pro plan", "metadata": {"kuploy_plan": "pro"}}
    )
    old = c.v1.prices.create(
        params={
            "product": prod.id,
            "currency": "cad",
            "unit_amount": 2000,
            "recurring": {"interval": "month", "interval_count": 1},
            "lookup_key": "kuploy_pro_monthly",
            "metadata": {"kuploy_plan": "pro"},
            "tax_behavior": "exclusive",
        }
    )
    c.v1.products.update(prod.id, params={"default_price": old.id})
    new = c.v1.prices.create(
        params={
            "product": prod.id,
            "currency": "cad",
            "unit_amount": 2500,
            "recurring": {"interval": "month"},
            "lookup_key": "kuploy_pro_monthly",
            "transfer_lookup_key": True,
        }
    )
    c.v1.products.update(
        prod.id, params={"default_price": new.id, "metadata": {"kuploy_plan": "pro", "v": "2"}}
    )
    c.v1.prices.update(old.id, params={"active": False, "metadata": {"archived": "yes"}})
    c.v1.prices.create(params={"currency": "usd", "unit_amount": 0, "product_data": {"name": "Free"}})
    c.v1.products.create(
        params={"name": "Team", "default_price_data": {"currency": "usd", "unit_amount": 19900}}
    )
    for i in range(7):
        c.v1.products.create(params={"name": f"Filler {i}", "active": i % 2 == 0})
    list(c.v1.products.list(params={"limit": 3, "active": True}).auto_paging_iter())
    list(c.v1.prices.list(params={"limit": 2, "expand": ["data.product"]}).auto_paging_iter())
    c.v1.prices.list(params={"lookup_keys": ["kuploy_pro_monthly"], "active": True, "type": "recurring"})
    c.v1.prices.list(params={"product": prod.id, "currency": "cad", "recurring": {"interval": "month"}})
    c.v1.products.retrieve(prod.id, params={"expand": ["default_price"]})
    c.v1.prices.retrieve(new.id)
    doomed = c.v1.products.create(params={"name": "Doomed"})
    c.v1.products.delete(doomed.id)

    failing: list[Any] = [
        lambda: c.raw_request("post", f"/v1/prices/{new.id}", unit_amount=5),
        lambda: c.v1.prices.update(old.id, params={"lookup_key": "kuploy_pro_monthly"}),
        lambda: c.v1.prices.update(new.id, params={"active": False}),
        lambda: c.v1.products.retrieve("prod_missing"),
        lambda: c.v1.products.delete(prod.id),
        lambda: c.v1.prices.create(params={"product": prod.id, "currency": "xyz", "unit_amount": 1}),
        lambda: c.v1.products.create(params={"name": "A"}, options={"idempotency_key": "same"}),
        lambda: c.v1.products.create(params={"name": "B"}, options={"idempotency_key": "same"}),
        lambda: _client(url, "garbage").v1.products.list(),
        lambda: c.raw_request("get", "/v1/nothing"),
    ]
    for call in failing:
        with contextlib.suppress(stripe.StripeError):
            call()
    _drive_billing(url)


def _drive_billing(url: str) -> None:
    """Customers, subscriptions (one left on an archived price) and webhook endpoints, errors included."""
    c = _client(url)
    prod = c.v1.products.create(params={"name": "Team", "metadata": {"kuploy_plan": "team"}})
    old = c.v1.prices.create(
        params={
            "product": prod.id,
            "currency": "usd",
            "unit_amount": 4900,
            "recurring": {"interval": "month"},
            "lookup_key": "kuploy_team_monthly",
        }
    )
    new = c.v1.prices.create(
        params={
            "product": prod.id,
            "currency": "usd",
            "unit_amount": 5900,
            "recurring": {"interval": "month"},
        }
    )
    yearly = c.v1.prices.create(
        params={
            "product": prod.id,
            "currency": "usd",
            "unit_amount": 59000,
            "recurring": {"interval": "year"},
        }
    )
    customers = [
        c.v1.customers.create(
            params={
                "email": f"owner{i}@example.com",
                "name": f"Org {i}",
                "description": "kuploy org",
                "metadata": {"kuploy_org": f"org_{i}"},
                "address": {"country": "CA", "postal_code": "H2X 1Y4"},
                "preferred_locales": ["en", "fr"],
            }
        )
        for i in range(4)
    ]
    c.v1.customers.update(
        customers[0].id,
        params={
            "phone": "+15145550000",
            "metadata": {"tier": "gold"},
            "shipping": {"name": "Org 0", "address": {"line1": "1 Rue", "country": "CA"}},
            "tax_exempt": "none",
        },
    )
    c.v1.customers.retrieve(customers[1].id)
    list(c.v1.customers.list(params={"limit": 2}).auto_paging_iter())
    c.v1.customers.list(params={"email": "owner2@example.com", "created": {"gte": 0}})

    subs = [
        c.v1.subscriptions.create(
            params={
                "customer": cus.id,
                "items": [{"price": old.id, "quantity": 1, "metadata": {"seat": "base"}}],
                "metadata": {"kuploy_org": f"org_{i}"},
                "cancel_at_period_end": i == 3,
            }
        )
        for i, cus in enumerate(customers)
    ]
    c.v1.subscriptions.update(subs[0].id, params={"cancel_at_period_end": True, "metadata": {"n": "1"}})
    item = subs[1]["items"].data[0].id
    c.v1.subscriptions.update(
        subs[1].id, params={"items": [{"id": item, "price": yearly.id}], "proration_behavior": "none"}
    )
    c.v1.subscriptions.update(subs[1].id, params={"items": [{"price": new.id, "quantity": 2}]})
    c.v1.subscriptions.cancel(subs[2].id, params={"cancellation_details": {"comment": "moving on"}})
    c.v1.prices.create(
        params={
            "product": prod.id,
            "currency": "usd",
            "unit_amount": 5400,
            "recurring": {"interval": "month"},
            "lookup_key": "kuploy_team_monthly",
            "transfer_lookup_key": True,
        }
    )
    c.v1.prices.update(old.id, params={"active": False})
    c.v1.subscriptions.retrieve(subs[3].id, params={"expand": ["customer", "items.data.price.product"]})
    c.v1.subscriptions.list(params={"price": old.id, "status": "active", "limit": 100})
    c.v1.subscriptions.list(params={"status": "all", "customer": customers[2].id})
    list(c.v1.subscriptions.list(params={"limit": 2, "expand": ["data.customer"]}).auto_paging_iter())

    endpoint = c.v1.webhook_endpoints.create(
        params={
            "url": "https://kuploy.example/stripe/webhook",
            "enabled_events": [
                "checkout.session.completed",
                "customer.subscription.created",
                "customer.subscription.updated",
                "customer.subscription.deleted",
                "invoice.paid",
                "invoice.payment_failed",
                "price.updated",
                "product.updated",
            ],
            "description": "kuploy billing",
            "metadata": {"owner": "billing"},
            "api_version": cast(Any, stripe.api_version),
        }
    )
    spare = c.v1.webhook_endpoints.create(
        params={"url": "https://kuploy.example/all", "enabled_events": ["*"]}
    )
    c.v1.webhook_endpoints.update(
        endpoint.id,
        params={
            "enabled_events": ["invoice.paid"],
            "disabled": True,
            "description": "",
            "metadata": {"v": "2"},
        },
    )
    c.v1.webhook_endpoints.retrieve(endpoint.id)
    list(c.v1.webhook_endpoints.list(params={"limit": 1}).auto_paging_iter())
    c.v1.webhook_endpoints.delete(spare.id)

    failing: list[Any] = [
        lambda: c.v1.customers.create(params={"email": "nope"}),
        lambda: c.v1.customers.retrieve("cus_missing"),
        lambda: c.raw_request("post", "/v1/customers", plan="pro"),
        lambda: c.v1.subscriptions.create(params={"customer": "cus_missing", "items": [{"price": new.id}]}),
        lambda: c.v1.subscriptions.create(params={"customer": customers[0].id, "items": [{"price": old.id}]}),
        lambda: c.v1.subscriptions.create(params={"items": [{"price": new.id}]}),
        lambda: c.raw_request(
            "post", "/v1/subscriptions", customer=customers[0].id, items=[{"price": new.id}], coupon_code="X"
        ),
        lambda: c.v1.subscriptions.update(subs[2].id, params={"cancel_at_period_end": True}),
        lambda: c.v1.subscriptions.cancel(subs[2].id),
        lambda: c.v1.subscriptions.retrieve("sub_missing"),
        lambda: c.raw_request(
            "post", "/v1/webhook_endpoints", url="https://x.example", enabled_events=["bogus.event"]
        ),
        lambda: c.v1.webhook_endpoints.retrieve(spare.id),
        lambda: c.v1.webhook_endpoints.delete(spare.id),
    ]
    for call in failing:
        with contextlib.suppress(stripe.StripeError):
            call()


def test_every_logged_request_and_response_fits_the_contract(running: RunningEmulator) -> None:
    _drive(running.url)
    log = running.emulator.requests
    assert len(log) > 30
    assert {r["status"] for r in log} >= {200, 400, 401, 404}
    problems: list[str] = []
    for entry in log:
        problems += contract.validate_response(
            entry["method"], entry["path"], entry["status"], entry["response"]
        )
        params = {**entry["query"], **entry["form"]}
        if entry["status"] == 200:
            problems += contract.validate_request(entry["method"], entry["path"], params)
        elif entry["response"]["error"].get("code") == "parameter_unknown":
            # What the emulator calls unknown, the contract must reject too.
            assert contract.validate_request(entry["method"], entry["path"], params), entry
    assert problems == []
    exercised = {
        (r["method"], re.sub(r"/(cus|sub|we)_[A-Za-z0-9]+$", r"/{\1}", r["path"]), r["status"]) for r in log
    }
    for resource, key in (("customers", "cus"), ("subscriptions", "sub"), ("webhook_endpoints", "we")):
        base = f"/v1/{resource}"
        assert {("GET", base, 200), ("POST", base, 200), ("POST", base, 400)} <= exercised, resource
        assert {("GET", f"{base}/{{{key}}}", 200), ("POST", f"{base}/{{{key}}}", 200)} <= exercised, resource
        assert ("GET", f"{base}/{{{key}}}", 404) in exercised, resource
    assert {
        ("DELETE", "/v1/subscriptions/{sub}", 200),
        ("DELETE", "/v1/webhook_endpoints/{we}", 200),
    } <= exercised


def test_stripe_fixtures_validate() -> None:
    for name in ("product", "price", "customer", "subscription", "webhook_endpoint"):
        assert contract.validate_object(name, contract.fixture(name)) == []
    assert contract.validate_response("GET", "/v1/products/prod_x", 200, contract.fixture("product")) == []
    assert contract.validate_response("GET", "/v1/prices/price_x", 200, contract.fixture("price")) == []


def test_wrong_bodies_are_rejected() -> None:
    product = copy.deepcopy(contract.fixture("product"))
    product["active"] = "yes"
    del product["id"]
    problems = contract.validate_response("GET", "/v1/products/prod_x", 200, product)
    assert any("'yes' is not of type 'boolean'" in p for p in problems)
    assert any("'id' is a required property" in p for p in problems)

    price = copy.deepcopy(contract.fixture("price"))
    price["recurring"]["interval"] = "fortnight"
    price["lookup_key"] = 7
    assert len(contract.validate_response("GET", "/v1/prices/price_x", 200, price)) == 2
    assert contract.validate_response("GET", "/v1/prices/price_x", 404, {"error": {"message": "x"}})
    assert contract.validate_response("GET", "/v1/products", 200, {"object": "list", "data": []})


def test_request_validator_coerces_and_rejects() -> None:
    ok: dict[str, Any] = {
        "product": "prod_x",
        "currency": "usd",
        "unit_amount": "100",
        "recurring": {"interval": "month", "interval_count": "3"},
        "transfer_lookup_key": "true",
        "metadata": {"a": "b"},
        "expand": ["product"],
    }
    assert contract.validate_request("POST", "/v1/prices", ok) == []
    assert contract.validate_request("POST", "/v1/prices/price_x", {"metadata": ""}) == []
    assert contract.validate_request("GET", "/v1/prices", {"limit": "5", "lookup_keys": ["a"]}) == []
    assert contract.validate_request("POST", "/v1/prices", {**ok, "unit_amount": "ten"})
    assert contract.validate_request("POST", "/v1/prices/price_x", {"unit_amount": "5"})
    assert contract.validate_request("GET", "/v1/products", {"bogus": "1"})
    assert contract.validate_request("GET", "/v1/unknown", {})


def _drive_checkout(url: str) -> None:
    """Checkout sessions through each test card, renewals, invoices and events, errors included."""
    c = _client(url)
    prod = c.v1.products.create(params={"name": "Pro", "metadata": {"kuploy_plan": "pro"}})
    price = c.v1.prices.create(
        params={
            "product": prod.id,
            "currency": "usd",
            "unit_amount": 2000,
            "recurring": {"interval": "month"},
        }
    )
    known = c.v1.customers.create(params={"email": "known@example.com"})
    sessions = []
    for i, card in enumerate(["4242424242424242", "4000000000000002", "4000000000003220"]):
        for version in (None, "2025-02-24.acacia"):
            params: dict[str, Any] = {
                "mode": "subscription",
                "line_items": [{"price": price.id, "quantity": 1}],
                "client_reference_id": f"org_{i}",
                "success_url": "https://kuploy.example/ok?session_id={CHECKOUT_SESSION_ID}",
                "cancel_url": "https://kuploy.example/billing",
                "metadata": {"organizationId": f"org_{i}"},
                "subscription_data": {"metadata": {"organizationId": f"org_{i}"}},
            }
            if i == 0:
                params["customer"] = known.id
            else:
                params["customer_email"] = f"owner{i}@example.com"
            options: dict[str, Any] = {"stripe_version": version} if version else {}
            session = c.v1.checkout.sessions.create(params=cast(Any, params), options=cast(Any, options))
            answer = post_admin(url, f"/_emulator/checkout/{session.id}/complete", {"card": card})
            if answer["outcome"] == "requires_action":
                post_admin(url, f"/_emulator/payment_intents/{answer['payment_intent']}/authenticate", {})
            sessions.append(session)
    spare = c.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "line_items": [{"price": price.id, "quantity": 2}],
            "success_url": "https://kuploy.example/ok",
        }
    )
    c.v1.checkout.sessions.expire(spare.id)
    c.v1.checkout.sessions.retrieve(
        sessions[0].id, params={"expand": ["line_items", "subscription", "customer"]}
    )
    list(c.v1.checkout.sessions.list(params={"limit": 2}).auto_paging_iter())
    c.v1.checkout.sessions.list(params={"status": "complete", "customer": known.id})

    subs = c.v1.subscriptions.list(params={"status": "active"}).data
    post_admin(url, f"/_emulator/subscriptions/{subs[0].id}/renew", {"outcome": "paid"})
    post_admin(url, f"/_emulator/subscriptions/{subs[1].id}/renew", {"outcome": "failed"})
    post_admin(url, f"/_emulator/subscriptions/{subs[2].id}/cancel", {})
    c.v1.subscriptions.retrieve(subs[0].id, params={"expand": ["latest_invoice"]})

    invoices = c.v1.invoices.list(params={"limit": 100}).data
    c.v1.invoices.retrieve(invoices[0].id, params={"expand": ["customer"]})
    list(c.v1.invoices.list(params={"limit": 3}).auto_paging_iter())
    c.v1.invoices.list(params={"subscription": subs[1].id, "status": "open"})
    c.v1.invoices.list(params={"customer": known.id, "collection_method": "charge_automatically"})

    events = c.v1.events.list(params={"limit": 100}).data
    c.v1.events.retrieve(events[0].id)
    list(c.v1.events.list(params={"limit": 7, "type": "invoice.*"}).auto_paging_iter())
    c.v1.events.list(params={"types": ["invoice.paid", "invoice.payment_failed"], "created": {"gte": 0}})

    failing: list[Any] = [
        lambda: c.v1.checkout.sessions.create(params={"mode": "payment"}),
        lambda: c.v1.checkout.sessions.create(params={"mode": "subscription"}),
        lambda: c.raw_request("post", "/v1/checkout/sessions", mode="subscription", bogus="1"),
        lambda: c.v1.checkout.sessions.retrieve("cs_test_missing"),
        lambda: c.v1.checkout.sessions.expire(spare.id),
        lambda: c.v1.invoices.retrieve("in_missing"),
        lambda: c.raw_request("get", "/v1/invoices", bogus="1"),
        lambda: c.v1.events.retrieve("evt_missing"),
        lambda: c.v1.events.list(params={"type": "invoice.paid", "types": ["invoice.paid"]}),
        lambda: c.raw_request("get", "/v1/events", bogus="1"),
    ]
    for call in failing:
        with contextlib.suppress(stripe.StripeError):
            call()


def test_checkout_invoice_and_event_routes_fit_the_contract(running: RunningEmulator) -> None:
    _drive_checkout(running.url)
    log = running.emulator.requests
    problems: list[str] = []
    for entry in log:
        problems += contract.validate_response(
            entry["method"], entry["path"], entry["status"], entry["response"]
        )
        params = {**entry["query"], **entry["form"]}
        if entry["status"] == 200:
            problems += contract.validate_request(entry["method"], entry["path"], params)
        elif entry["response"]["error"].get("code") == "parameter_unknown":
            assert contract.validate_request(entry["method"], entry["path"], params), entry
    # The objects the events carry fit their schemas too.
    schemas = {"checkout.session": "checkout.session", "invoice": "invoice", "subscription": "subscription"}
    for entry in log:
        if entry["path"] == "/v1/events" and entry["status"] == 200:
            for event in entry["response"]["data"]:
                assert contract.validate_object("event", event) == []
                name = schemas.get(event["data"]["object"]["object"])
                if name is not None:
                    problems += contract.validate_object(name, event["data"]["object"])
    assert problems == []
    exercised = {
        (r["method"], re.sub(r"/(cs_test|in|evt)_[A-Za-z0-9]+", r"/{\1}", r["path"]), r["status"])
        for r in log
    }
    assert {
        ("POST", "/v1/checkout/sessions", 200),
        ("POST", "/v1/checkout/sessions", 400),
        ("GET", "/v1/checkout/sessions", 200),
        ("GET", "/v1/checkout/sessions/{cs_test}", 200),
        ("GET", "/v1/checkout/sessions/{cs_test}", 404),
        ("POST", "/v1/checkout/sessions/{cs_test}/expire", 200),
        ("POST", "/v1/checkout/sessions/{cs_test}/expire", 400),
        ("GET", "/v1/invoices", 200),
        ("GET", "/v1/invoices", 400),
        ("GET", "/v1/invoices/{in}", 200),
        ("GET", "/v1/invoices/{in}", 404),
        ("GET", "/v1/events", 200),
        ("GET", "/v1/events", 400),
        ("GET", "/v1/events/{evt}", 200),
        ("GET", "/v1/events/{evt}", 404),
    } <= exercised
