"""The Stripe emulator, driven through the real `stripe` SDK over HTTP (no mocks)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import stripe

from reconciler.sandbox.emulator import PARAM_SPECS, RunningEmulator, start_in_thread

KEY = "sk_test_emulator"


@pytest.fixture
def running() -> Iterator[RunningEmulator]:
    with start_in_thread() as run:
        yield run


@pytest.fixture
def client(running: RunningEmulator) -> stripe.StripeClient:
    return make_client(running.url)


def make_client(url: str, key: str = KEY) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": url}, max_network_retries=0)


def raw(
    url: str,
    method: str,
    path: str,
    body: bytes | str = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One HTTP request without the SDK (for what the SDK refuses to send)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=5)
    try:
        hdrs = {"Authorization": f"Bearer {KEY}", **(headers or {})}
        data = body.encode() if isinstance(body, str) else body
        if method == "POST":
            hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
        conn.request(method, path, body=data if method != "GET" else None, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(resp.read())
    finally:
        conn.close()


def error_of(exc: stripe.StripeError) -> dict[str, Any]:
    body = exc.json_body
    assert isinstance(body, dict)
    err = body["error"]
    assert isinstance(err, dict)
    return err


def product(client: stripe.StripeClient, **params: Any) -> stripe.Product:
    return client.v1.products.create(params={"name": "Pro", **params})  # type: ignore[typeddict-item]


def price(client: stripe.StripeClient, product_id: str, **params: Any) -> stripe.Price:
    base: dict[str, Any] = {"product": product_id, "currency": "usd", "unit_amount": 1000}
    return client.v1.prices.create(params={**base, **params})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- objects


def test_param_specs_come_from_the_sdk() -> None:
    create = PARAM_SPECS["price.create"]
    assert create.required == {"currency"}
    assert create.fields["recurring"].fields["interval"].enum == ("day", "month", "week", "year")
    assert "unit_amount" not in PARAM_SPECS["price.update"].fields
    assert "api_key" not in create.fields and "idempotency_key" not in create.fields
    assert PARAM_SPECS["product.update"].fields["description"].emptyable


def test_product_create_retrieve_update(client: stripe.StripeClient) -> None:
    created = product(client, description="Best plan", metadata={"plan": "pro", "tier": "2"})
    assert created.id.startswith("prod_") and len(created.id) == len("prod_") + 14
    assert created.object == "product" and created.livemode is False and created.active is True
    assert created.default_price is None and created.images == [] and created.marketing_features == []
    assert created.package_dimensions is None and created.url is None and created.unit_label is None
    assert created.metadata.to_dict() == {"plan": "pro", "tier": "2"}

    fetched = client.v1.products.retrieve(created.id)
    assert fetched.to_dict() == created.to_dict()

    updated = client.v1.products.update(
        created.id, params={"description": "", "name": "Pro+", "metadata": {"tier": "", "new": "x"}}
    )
    assert updated.description is None and updated.name == "Pro+"
    assert updated.metadata.to_dict() == {"plan": "pro", "new": "x"}
    cleared = client.v1.products.update(created.id, params={"metadata": ""})
    assert cleared.metadata.to_dict() == {}
    archived = client.v1.products.update(created.id, params={"active": False})
    assert archived.active is False


def test_price_shapes(client: stripe.StripeClient) -> None:
    prod = product(client)
    monthly = price(client, prod.id, recurring={"interval": "month"}, nickname="m")
    assert monthly.id.startswith("price_") and len(monthly.id) == len("price_") + 24
    assert monthly.type == "recurring" and monthly.billing_scheme == "per_unit"
    assert monthly.recurring is not None
    assert monthly.recurring.to_dict() == {
        "interval": "month",
        "interval_count": 1,
        "meter": None,
        "trial_period_days": None,
        "usage_type": "licensed",
    }
    assert monthly.unit_amount == 1000 and monthly.unit_amount_decimal == Decimal("1000")
    assert monthly.lookup_key is None and monthly.tax_behavior == "unspecified" and monthly.nickname == "m"
    assert monthly.product == prod.id and monthly.custom_unit_amount is None

    once = price(client, prod.id, currency="EUR", unit_amount=0)
    assert once.type == "one_time" and once.recurring is None and once.currency == "eur"
    assert once.unit_amount == 0

    decimal = client.v1.prices.create(
        params={"product": prod.id, "currency": "usd", "unit_amount_decimal": "12.5"}  # type: ignore[typeddict-item]
    )
    assert decimal.unit_amount is None and decimal.unit_amount_decimal == Decimal("12.5")


def test_product_data_and_default_price_data(client: stripe.StripeClient) -> None:
    via_price = client.v1.prices.create(
        params={"currency": "usd", "unit_amount": 500, "product_data": {"name": "Addon"}}
    )
    assert isinstance(via_price.product, str)
    assert client.v1.products.retrieve(via_price.product).name == "Addon"

    prod = client.v1.products.create(
        params={
            "name": "Team",
            "default_price_data": {"currency": "usd", "unit_amount": 900, "recurring": {"interval": "year"}},
            "expand": ["default_price"],
        }
    )
    default = prod.default_price
    assert isinstance(default, stripe.Price)
    assert default.product == prod.id and default.unit_amount == 900 and default.type == "recurring"


def test_price_requires_an_existing_product(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.prices.create(params={"currency": "usd", "unit_amount": 1})
    assert error_of(missing.value)["code"] == "parameter_missing"
    assert error_of(missing.value)["param"] == "product"
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.prices.create(params={"currency": "usd", "unit_amount": 1, "product": "prod_nope"})
    err = error_of(unknown.value)
    assert unknown.value.http_status == 400
    assert (err["code"], err["param"], err["message"]) == (
        "resource_missing",
        "product",
        "No such product: 'prod_nope'",
    )
    assert client.v1.prices.list().data == []


def test_expand(client: stripe.StripeClient) -> None:
    prod = product(client)
    pr = price(client, prod.id)
    expanded = client.v1.prices.retrieve(pr.id, params={"expand": ["product"]})
    assert isinstance(expanded.product, stripe.Product) and expanded.product.id == prod.id
    listed = client.v1.prices.list(params={"expand": ["data.product"]})
    assert isinstance(listed.data[0].product, stripe.Product)
    with pytest.raises(stripe.InvalidRequestError, match=r"cannot be expanded \(nickname\)"):
        client.v1.prices.retrieve(pr.id, params={"expand": ["nickname"]})
    with pytest.raises(stripe.InvalidRequestError, match=r"data\.product"):
        client.v1.prices.list(params={"expand": ["product"]})


# -------------------------------------------------------------------------- validation


def test_unknown_params_are_rejected(client: stripe.StripeClient) -> None:
    prod = product(client)
    pr = price(client, prod.id)
    for param, value in (("unit_amount", 5), ("currency", "eur"), ("recurring", {"interval": "day"})):
        with pytest.raises(stripe.InvalidRequestError) as exc:
            client.raw_request("post", f"/v1/prices/{pr.id}", **{param: value})
        err = error_of(exc.value)
        shown = param if param != "recurring" else "recurring"
        assert (err["type"], err["code"], err["param"]) == (
            "invalid_request_error",
            "parameter_unknown",
            shown,
        )
        assert err["message"] == f"Received unknown parameter: {shown}"
    with pytest.raises(stripe.InvalidRequestError) as nested:
        client.raw_request(
            "post",
            "/v1/prices",
            product=prod.id,
            currency="usd",
            unit_amount=1,
            recurring={"interval": "month", "foo": 1},
        )
    assert error_of(nested.value)["param"] == "recurring[foo]"
    assert error_of(nested.value)["message"] == "Received unknown parameter: recurring[foo]"
    with pytest.raises(stripe.InvalidRequestError, match="Received unknown parameter: bogus"):
        client.raw_request("get", "/v1/products", bogus="1")
    assert client.v1.prices.retrieve(pr.id).unit_amount == 1000


@pytest.mark.parametrize(
    ("params", "param", "code", "message"),
    [
        ({"unit_amount": "abc"}, "unit_amount", "parameter_invalid_integer", "Invalid integer: abc"),
        ({"unit_amount": -1}, "unit_amount", "parameter_invalid_integer", "greater than or equal to 0"),
        ({"active": "maybe"}, "active", None, "Invalid boolean: maybe"),
        ({"recurring": {"interval": "fortnight"}}, "recurring[interval]", None, "must be one of day, month"),
        ({"currency": "xyz"}, "currency", None, "Invalid currency: xyz. Stripe currently supports"),
        ({"currency": "us"}, "currency", None, "Invalid currency: us"),
        (
            {"nickname": ""},
            "nickname",
            "parameter_invalid_empty",
            "You passed an empty string for 'nickname'",
        ),
        (
            {"recurring": {"interval": "month", "interval_count": 37}},
            "recurring[interval_count]",
            None,
            "three",
        ),
        (
            {"unit_amount_decimal": "1.5", "unit_amount": 2},
            "unit_amount",
            "parameters_exclusive",
            "only specify",
        ),
    ],
)
def test_price_param_types(
    client: stripe.StripeClient, params: dict[str, Any], param: str, code: str | None, message: str
) -> None:
    prod = product(client)
    base: dict[str, Any] = {"product": prod.id, "currency": "usd", "unit_amount": 100}
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.raw_request("post", "/v1/prices", **{**base, **params})
    err = error_of(exc.value)
    assert exc.value.http_status == 400
    assert err["param"] == param
    assert err.get("code") == code
    assert message in err["message"]
    assert client.v1.prices.list().data == []


def test_missing_required_param(client: stripe.StripeClient) -> None:
    prod = product(client)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.raw_request("post", "/v1/prices", product=prod.id, unit_amount=5)
    err = error_of(exc.value)
    assert (err["code"], err["param"], err["message"]) == (
        "parameter_missing",
        "currency",
        "Missing required param: currency.",
    )
    with pytest.raises(stripe.InvalidRequestError, match=r"recurring\[interval\]"):
        client.raw_request(
            "post",
            "/v1/prices",
            product=prod.id,
            currency="usd",
            unit_amount=5,
            recurring={"interval_count": 1},
        )


@pytest.mark.parametrize("limit", ["0", "101", "-3", "99999999999999999999999", "ten"])
def test_list_limit_bounds(client: stripe.StripeClient, limit: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.raw_request("get", "/v1/products", limit=limit)
    assert error_of(exc.value)["param"] == "limit"


def test_metadata_limits(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError, match="up to 50 keys"):
        product(client, metadata={f"k{i}": "v" for i in range(51)})
    with pytest.raises(stripe.InvalidRequestError, match="up to 40 characters"):
        product(client, metadata={"k" * 41: "v"})
    with pytest.raises(stripe.InvalidRequestError, match="up to 500 characters"):
        product(client, metadata={"k": "v" * 501})
    assert len(product(client, metadata={f"k{i}": "v" * 500 for i in range(50)}).metadata.to_dict()) == 50


# ------------------------------------------------------------------------ business rules


def test_lookup_key_unique_and_transfer(client: stripe.StripeClient) -> None:
    prod = product(client)
    first = price(client, prod.id, lookup_key="pro_monthly")
    with pytest.raises(stripe.InvalidRequestError) as exc:
        price(client, prod.id, lookup_key="pro_monthly")
    err = error_of(exc.value)
    assert err["param"] == "lookup_key"
    assert err["message"] == f"A price (`{first.id}`) already uses that lookup key."
    assert len(client.v1.prices.list().data) == 1

    second = price(client, prod.id, lookup_key="pro_monthly", transfer_lookup_key=True)
    assert second.lookup_key == "pro_monthly"
    assert client.v1.prices.retrieve(first.id).lookup_key is None
    found = client.v1.prices.list(params={"lookup_keys": ["pro_monthly"]}).data
    assert [p.id for p in found] == [second.id]

    # Updating: conflict (even with an archived holder), then transfer back.
    client.v1.prices.update(second.id, params={"active": False})
    with pytest.raises(stripe.InvalidRequestError, match="already uses that lookup key"):
        client.v1.prices.update(first.id, params={"lookup_key": "pro_monthly"})
    moved = client.v1.prices.update(
        first.id, params={"lookup_key": "pro_monthly", "transfer_lookup_key": True}
    )
    assert moved.lookup_key == "pro_monthly"
    assert client.v1.prices.retrieve(second.id).lookup_key is None
    same = client.v1.prices.update(first.id, params={"lookup_key": "pro_monthly"})
    assert same.lookup_key == "pro_monthly"


def test_default_price_rules(client: stripe.StripeClient) -> None:
    prod = product(client)
    old = price(client, prod.id)
    new = price(client, prod.id, unit_amount=2000)
    assert client.v1.products.update(prod.id, params={"default_price": old.id}).default_price == old.id
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.prices.update(old.id, params={"active": False})
    assert error_of(exc.value)["message"] == (
        "This price cannot be archived because it is the default price of its product."
    )
    assert client.v1.prices.retrieve(old.id).active is True

    client.v1.products.update(prod.id, params={"default_price": new.id})
    assert client.v1.prices.update(old.id, params={"active": False}).active is False
    with pytest.raises(stripe.InvalidRequestError, match="archived"):
        client.v1.products.update(prod.id, params={"default_price": old.id})
    other = price(client, product(client, name="Other").id)
    with pytest.raises(stripe.InvalidRequestError, match="does not belong"):
        client.v1.products.update(prod.id, params={"default_price": other.id})
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.products.update(prod.id, params={"default_price": "price_nope"})
    assert error_of(missing.value)["code"] == "resource_missing"
    assert error_of(missing.value)["param"] == "default_price"

    unset = client.v1.products.update(prod.id, params={"default_price": ""})
    assert unset.default_price is None
    assert client.v1.prices.update(new.id, params={"active": False}).active is False


def test_price_immutables_and_tax_behavior(client: stripe.StripeClient) -> None:
    prod = product(client)
    pr = price(client, prod.id, tax_behavior="exclusive")
    with pytest.raises(stripe.InvalidRequestError, match="tax_behavior"):
        client.v1.prices.update(pr.id, params={"tax_behavior": "inclusive"})
    updated = client.v1.prices.update(pr.id, params={"nickname": "n", "metadata": {"a": "b"}})
    assert (updated.nickname, updated.metadata.to_dict(), updated.unit_amount) == ("n", {"a": "b"}, 1000)


def test_product_delete_rule(client: stripe.StripeClient) -> None:
    with_price = product(client)
    price(client, with_price.id)
    with pytest.raises(stripe.InvalidRequestError, match="cannot be deleted"):
        client.v1.products.delete(with_price.id)
    assert client.v1.products.retrieve(with_price.id).id == with_price.id

    bare = product(client, name="Bare")
    deleted = client.v1.products.delete(bare.id)
    assert deleted.to_dict() == {"id": bare.id, "object": "product", "deleted": True}
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.products.retrieve(bare.id)


# -------------------------------------------------------------------- idempotency and auth


def test_idempotency_replay_and_mismatch(client: stripe.StripeClient, running: RunningEmulator) -> None:
    params: dict[str, Any] = {"name": "Once", "metadata": {"k": "v"}}
    first = client.v1.products.create(params=params, options={"idempotency_key": "key-1"})  # type: ignore[arg-type]
    again = client.v1.products.create(params=params, options={"idempotency_key": "key-1"})  # type: ignore[arg-type]
    assert again.id == first.id
    assert again.last_response is not None
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    assert [p.id for p in client.v1.products.list().data] == [first.id]

    with pytest.raises(stripe.IdempotencyError) as exc:
        client.v1.products.create(params={"name": "Different"}, options={"idempotency_key": "key-1"})
    assert "Try using a key other than 'key-1'" in str(exc.value.user_message)
    assert error_of(exc.value)["type"] == "idempotency_error"

    # Errors from execution replay too; the same key under another API key is a different request.
    bad: dict[str, Any] = {"product": "prod_missing", "currency": "usd", "unit_amount": 1}
    for _ in range(2):
        with pytest.raises(stripe.InvalidRequestError, match="No such product"):
            client.v1.prices.create(params=bad, options={"idempotency_key": "key-2"})  # type: ignore[arg-type]
    replays = [r for r in running.emulator.requests if r["idempotency_key"] == "key-2"]
    assert [r["status"] for r in replays] == [400, 400]

    other = make_client(running.url, "sk_test_other")
    fresh = other.v1.products.create(params=params, options={"idempotency_key": "key-1"})  # type: ignore[arg-type]
    assert fresh.id != first.id


def test_authentication(running: RunningEmulator) -> None:
    status, headers, body = raw(running.url, "GET", "/v1/products", headers={"Authorization": ""})
    assert status == 401 and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("You did not provide an API key.")
    assert headers["request-id"].startswith("req_")
    for bad_key in ("pk_test_abc", "sk_nope_abc", "garbage"):
        with pytest.raises(stripe.AuthenticationError, match="Invalid API Key provided"):
            make_client(running.url, bad_key).v1.products.list()
    assert make_client(running.url, "rk_test_restricted").v1.products.list().data == []


def test_live_and_test_modes_are_separate(running: RunningEmulator) -> None:
    live = make_client(running.url, "sk_live_abc")
    test = make_client(running.url)
    prod = product(live)
    assert prod.livemode is True
    assert test.v1.products.list().data == []
    with pytest.raises(stripe.InvalidRequestError, match="No such product"):
        test.v1.products.retrieve(prod.id)
    assert live.v1.products.retrieve(prod.id).livemode is True


def test_not_found_shapes(client: stripe.StripeClient, running: RunningEmulator) -> None:
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.products.retrieve("prod_x")
    assert exc.value.http_status == 404
    assert error_of(exc.value) == {
        "code": "resource_missing",
        "doc_url": "https://stripe.com/docs/error-codes/resource-missing",
        "message": "No such product: 'prod_x'",
        "param": "id",
        "type": "invalid_request_error",
    }
    with pytest.raises(stripe.InvalidRequestError, match="No such price: 'price_x'"):
        client.v1.prices.retrieve("price_x")
    status, _, body = raw(running.url, "GET", "/v1/foo")
    assert status == 404
    assert body["error"]["message"].startswith("Unrecognized request URL (GET: /v1/foo).")
    status, _, body = raw(running.url, "DELETE", "/v1/prices/price_x")
    assert status == 404 and "(DELETE: /v1/prices/price_x)" in body["error"]["message"]


# --------------------------------------------------------------------------------- lists


def test_pagination_over_250_products(client: stripe.StripeClient) -> None:
    ids = [product(client, name=f"P{i}").id for i in range(250)]
    seen = [p.id for p in client.v1.products.list(params={"limit": 100}).auto_paging_iter()]
    assert seen == list(reversed(ids))
    default_page = client.v1.products.list()
    assert len(default_page.data) == 10 and default_page.has_more is True
    assert default_page.url == "/v1/products"

    middle = client.v1.products.list(params={"limit": 3, "starting_after": ids[100]})
    assert [p.id for p in middle.data] == [ids[99], ids[98], ids[97]] and middle.has_more
    before = client.v1.products.list(params={"limit": 3, "ending_before": ids[100]})
    assert [p.id for p in before.data] == [ids[103], ids[102], ids[101]] and before.has_more
    newest = client.v1.products.list(params={"limit": 3, "ending_before": ids[247]})
    assert [p.id for p in newest.data] == [ids[249], ids[248]] and newest.has_more is False
    backwards = client.v1.products.list(params={"limit": 40, "ending_before": ids[0]}).auto_paging_iter()
    assert [p.id for p in backwards] == ids[1:]
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.products.list(params={"starting_after": "prod_missing"})
    assert error_of(exc.value)["code"] == "resource_missing"
    assert error_of(exc.value)["param"] == "starting_after"


def test_list_filters(client: stripe.StripeClient) -> None:
    a = product(client, name="A")
    b = product(client, name="B", active=False)
    assert [p.id for p in client.v1.products.list(params={"active": True}).data] == [a.id]
    assert [p.id for p in client.v1.products.list(params={"active": False}).data] == [b.id]
    assert [p.id for p in client.v1.products.list(params={"ids": [a.id, "prod_zzz"]}).data] == [a.id]

    monthly = price(client, a.id, recurring={"interval": "month"}, lookup_key="a_m")
    yearly = price(client, a.id, recurring={"interval": "year"}, currency="eur")
    once = price(client, b.id)
    prices = client.v1.prices
    assert [p.id for p in prices.list(params={"product": a.id}).data] == [yearly.id, monthly.id]
    assert [p.id for p in prices.list(params={"type": "one_time"}).data] == [once.id]
    assert [p.id for p in prices.list(params={"currency": "eur"}).data] == [yearly.id]
    assert [p.id for p in prices.list(params={"recurring": {"interval": "month"}}).data] == [monthly.id]
    assert [p.id for p in prices.list(params={"lookup_keys": ["a_m", "none"]}).data] == [monthly.id]
    client.v1.prices.update(once.id, params={"active": False})
    assert [p.id for p in prices.list(params={"active": False}).data] == [once.id]
    assert len(prices.list(params={"created": {"gte": 0}}).data) == 3
    assert prices.list(params={"created": {"lt": 0}}).data == []


# ------------------------------------------------------------------------ infrastructure


def test_persistence_across_instances(tmp_path: Path) -> None:
    state = tmp_path / "sub" / "stripe.json"
    with start_in_thread(state_file=state) as first:
        c = make_client(first.url)
        prod = product(c, metadata={"k": "v"})
        pr = price(c, prod.id, lookup_key="persisted")
        c.v1.products.update(prod.id, params={"default_price": pr.id})
        c.v1.products.create(params={"name": "Idem"}, options={"idempotency_key": "persist-key"})
    assert state.exists() and not [p for p in state.parent.iterdir() if p.name.endswith(".tmp")]
    with start_in_thread(state_file=state) as second:
        c = make_client(second.url)
        assert second.emulator.requests == []
        again = c.v1.products.retrieve(prod.id)
        assert again.default_price == pr.id and again.metadata.to_dict() == {"k": "v"}
        assert c.v1.prices.retrieve(pr.id).lookup_key == "persisted"
        replay = c.v1.products.create(params={"name": "Idem"}, options={"idempotency_key": "persist-key"})
        assert replay.last_response is not None
        assert replay.last_response.headers.get("Idempotent-Replayed") == "true"
        assert len(c.v1.products.list().data) == 2
        with pytest.raises(stripe.InvalidRequestError, match="already uses"):
            price(c, prod.id, lookup_key="persisted")


def test_two_emulators_on_one_state_file_see_each_others_writes(tmp_path: Path) -> None:
    """Each sandbox command runs its own emulator on the shared file: no stale reads, no lost writes."""
    state = tmp_path / "stripe.json"
    with start_in_thread(state_file=state) as first, start_in_thread(state_file=state) as second:
        a, b = make_client(first.url), make_client(second.url)
        made_by_a = product(a)
        assert b.v1.products.retrieve(made_by_a.id).name == "Pro"
        made_by_b = product(b)
        price(a, made_by_b.id, lookup_key="shared")
        with pytest.raises(stripe.InvalidRequestError, match="already uses"):
            price(b, made_by_a.id, lookup_key="shared")
        assert {p.id for p in a.v1.products.list().data} == {made_by_a.id, made_by_b.id}
        assert {p.id for p in b.v1.products.list().data} == {made_by_a.id, made_by_b.id}


def test_latency_option_is_applied_and_requests_succeed() -> None:
    with start_in_thread(latency_ms=5) as run:
        assert run.emulator.latency_ms == 5
        c = make_client(run.url)
        assert product(c).name == "Pro"
        assert len(run.emulator.requests) == 1


def test_request_log(client: stripe.StripeClient, running: RunningEmulator) -> None:
    prod = client.v1.products.create(
        params={"name": "Logged", "metadata": {"a": "1"}}, options={"idempotency_key": "log-1"}
    )
    client.v1.products.list(params={"limit": 5, "expand": ["data.default_price"]})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.products.retrieve("prod_missing")
    log = running.emulator.requests
    assert [(r["method"], r["path"], r["status"]) for r in log] == [
        ("POST", "/v1/products", 200),
        ("GET", "/v1/products", 200),
        ("GET", "/v1/products/prod_missing", 404),
    ]
    create = log[0]
    assert set(create) == {
        "method",
        "path",
        "query",
        "form",
        "idempotency_key",
        "status",
        "response",
        "stripe_version",
    }
    assert create["form"] == {"name": "Logged", "metadata": {"a": "1"}} and create["query"] == {}
    assert create["idempotency_key"] == "log-1" and create["response"]["id"] == prod.id
    assert create["stripe_version"] == stripe.api_version
    assert log[1]["query"] == {"limit": "5", "expand": ["data.default_price"]}
    assert log[1]["idempotency_key"] is None
    assert log[2]["response"]["error"]["code"] == "resource_missing"
    # SDK POSTs always carry an auto-generated key.
    product(client)
    assert running.emulator.requests[-1]["idempotency_key"]

    status, _, body = raw(running.url, "GET", "/_emulator/requests", headers={"Authorization": ""})
    assert status == 200 and len(body) == 4 and body[0]["path"] == "/v1/products"
    status, _, _ = raw(running.url, "POST", "/_emulator/reset-log")
    assert status == 200 and running.emulator.requests == []
    status, _, body = raw(running.url, "GET", "/_emulator/requests")
    assert body == []


def test_robustness(running: RunningEmulator) -> None:
    url = running.url
    status, headers, body = raw(url, "POST", "/v1/products", body=b"name=\xff\xfe")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert headers["content-type"] == "application/json"
    status, _, body = raw(url, "POST", "/v1/products", body="name=%FF%FE")
    assert status == 400 and "UTF-8" in body["error"]["message"]
    status, _, body = raw(url, "POST", "/v1/products", body="name=a&name[x]=b")
    assert status == 400 and body["error"]["message"].startswith("Invalid hash")
    status, _, body = raw(url, "POST", "/v1/products", body="]]]=1")
    assert status == 400 and body["error"]["code"] == "parameter_unknown"
    status, _, body = raw(url, "GET", "/v1/products?limit=" + "9" * 500)
    assert status == 400 and body["error"]["param"] == "limit"
    status, _, body = raw(url, "POST", "/v1/products", body="x" * (2 << 20))
    assert status == 400 and "too large" in body["error"]["message"]
    status, _, body = raw(url, "PUT", "/v1/products")
    assert status == 404 and "Unrecognized request URL (PUT: /v1/products)" in body["error"]["message"]


def test_keep_alive_connection_serves_many_requests(running: RunningEmulator) -> None:
    parts = urlsplit(running.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        for i in range(5):
            conn.request(
                "POST",
                "/v1/products",
                body=f"name=K{i}",
                headers={
                    "Authorization": f"Bearer {KEY}",
                    "Content-Type": "application/x-www-form-urlencoded",
                },
            )
            resp = conn.getresponse()
            assert resp.status == 200 and resp.getheader("Content-Length")
            assert json.loads(resp.read())["name"] == f"K{i}"
            conn.request("GET", "/v1/products/prod_none", headers={"Authorization": f"Bearer {KEY}"})
            resp = conn.getresponse()
            assert resp.status == 404
            resp.read()
    finally:
        conn.close()
    assert len(running.emulator.requests) == 10


def test_concurrent_writes_are_serialised(running: RunningEmulator) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def create(i: int) -> str:
        c = make_client(running.url)
        prod = product(c, name=f"C{i}")
        return price(c, prod.id, lookup_key="contended", transfer_lookup_key=True).id

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(create, range(40)))
    c = make_client(running.url)
    holders = c.v1.prices.list(params={"lookup_keys": ["contended"]}).data
    assert len(holders) == 1 and holders[0].id in ids
    assert len(list(c.v1.prices.list(params={"limit": 100}).auto_paging_iter())) == 40
    assert len([r for r in running.emulator.requests if r["method"] == "POST"]) == 80
