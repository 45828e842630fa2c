"""The Stripe emulator, driven through the real `stripe` SDK over HTTP (no mocks)."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
import stripe

from reconciler.sandbox.emulator import (
    KUPLOY_EVENT_TYPES,
    PARAM_SPECS,
    WEBHOOK_EVENT_TYPES,
    FaultSettings,
    RunningEmulator,
    _period_end,
    start_in_thread,
)

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
    return client.v1.prices.create(params=cast(Any, {**base, **params}))


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
        "request_log_url": f"{running.url}/_emulator/requests/{exc.value.request_id}",
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


def test_pages_follow_filters_deletions_and_other_processes_writes(tmp_path: Path) -> None:
    """A page reads the kind's ordered index from the cursor on: filtered pages, deleted objects and
    objects another emulator process wrote into the shared state file must all show as they are."""
    state = tmp_path / "stripe.json"
    with start_in_thread(state_file=state) as first, start_in_thread(state_file=state) as second:
        one, two = make_client(first.url), make_client(second.url)
        ids = [product(one, name=f"P{i}", active=i % 3 != 0).id for i in range(30)]
        active = [i for n, i in enumerate(ids) if n % 3 != 0]
        assert [p.id for p in two.v1.products.list(params={"limit": 7}).auto_paging_iter()] == ids[::-1]
        page = two.v1.products.list(params={"limit": 4, "active": True, "starting_after": ids[20]})
        assert [p.id for p in page.data] == [ids[19], ids[17], ids[16], ids[14]] and page.has_more
        page = two.v1.products.list(params={"limit": 4, "active": True, "ending_before": ids[20]})
        assert [p.id for p in page.data] == [ids[26], ids[25], ids[23], ids[22]] and page.has_more
        one.v1.products.delete(ids[19])
        newer = [product(one, name=f"Q{i}").id for i in range(3)]
        expected = [i for i in reversed(active) if i != ids[19]]
        walked = two.v1.products.list(params={"limit": 4, "active": True}).auto_paging_iter()
        assert [p.id for p in walked] == newer[::-1] + expected


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
    with start_in_thread(faults=FaultSettings(latency_ms=5)) as run:
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
        "request_id",
        "method",
        "path",
        "query",
        "form",
        "idempotency_key",
        "status",
        "response",
        "stripe_version",
        "fault",
        "created",  # when, and whose (the key's mode): what `stripe logs tail` is sent
        "livemode",
    }
    assert all(r["fault"] is None and r["livemode"] is False for r in log)
    assert abs(create["created"] - time.time()) < 60
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


# ------------------------------------------------------------------------------ customers


def customer(client: stripe.StripeClient, **params: Any) -> stripe.Customer:
    return client.v1.customers.create(params=cast(Any, {"email": "ada@example.com", **params}))


def paying_customer(client: stripe.StripeClient, **params: Any) -> stripe.Customer:
    """A customer whose default payment method is Stripe's test card: its subscriptions are paid."""
    card = {"payment_method": "pm_card_visa", "invoice_settings": {"default_payment_method": "pm_card_visa"}}
    return customer(client, **card, **params)


def test_customer_create_retrieve_update(client: stripe.StripeClient) -> None:
    created = customer(client, name="Ada", description="First", metadata={"kuploy_org": "o1"})
    assert created.id.startswith("cus_") and len(created.id) == len("cus_") + 14
    assert created.object == "customer" and created.livemode is False
    assert (created.email, created.name, created.description) == ("ada@example.com", "Ada", "First")
    assert created.metadata is not None and created.metadata.to_dict() == {"kuploy_org": "o1"}
    assert created.balance == 0 and created.currency is None and created.delinquent is False
    assert created.address is None and created.phone is None and created.tax_exempt == "none"
    assert created.invoice_prefix is not None and len(created.invoice_prefix) == 8
    assert created.next_invoice_sequence == 1 and created.preferred_locales == []
    assert isinstance(created.created, int)
    assert client.v1.customers.retrieve(created.id).to_dict() == created.to_dict()

    updated = client.v1.customers.update(
        created.id,
        params={
            "email": "ada@kuploy.dev",
            "description": "Second",
            "metadata": {"kuploy_org": "", "plan": "pro"},
            "address": {"country": "CA", "city": "Montreal"},
        },
    )
    assert updated.email == "ada@kuploy.dev" and updated.description == "Second" and updated.name == "Ada"
    assert updated.metadata is not None and updated.metadata.to_dict() == {"plan": "pro"}
    assert updated.address is not None
    assert updated.address.to_dict() == {
        "city": "Montreal",
        "country": "CA",
        "line1": None,
        "line2": None,
        "postal_code": None,
        "state": None,
    }
    assert client.v1.customers.update(created.id, params={"address": ""}).address is None
    with pytest.raises(stripe.InvalidRequestError) as not_unsettable:  # the SDK types it non-emptyable
        client.v1.customers.update(created.id, params={"description": ""})
    assert error_of(not_unsettable.value)["code"] == "parameter_invalid_empty"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.customers.retrieve("cus_nope")
    assert missing.value.http_status == 404
    assert error_of(missing.value)["message"] == "No such customer: 'cus_nope'"


def test_customer_params_are_checked(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as bad_email:
        customer(client, email="not-an-email")
    assert error_of(bad_email.value)["param"] == "email"
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.raw_request("post", "/v1/customers", email="a@b.co", plan="pro")
    assert error_of(unknown.value)["code"] == "parameter_unknown"
    # Valid for Stripe, not modelled here: refused rather than silently ignored.
    with pytest.raises(stripe.InvalidRequestError) as unmodelled:
        customer(client, source="tok_visa")
    assert error_of(unmodelled.value)["param"] == "source"
    assert "does not model" in error_of(unmodelled.value)["message"]
    with pytest.raises(stripe.InvalidRequestError, match="invoice_prefix"):
        customer(client, invoice_prefix="lower")
    assert client.v1.customers.list().data == []


def test_customer_list_email_filter_and_pagination(client: stripe.StripeClient) -> None:
    ids = [customer(client, email=f"u{i % 3}@example.com").id for i in range(24)]
    seen = [c.id for c in client.v1.customers.list(params={"limit": 5}).auto_paging_iter()]
    assert seen == list(reversed(ids))
    page = client.v1.customers.list(params={"limit": 3, "starting_after": ids[10]})
    assert [c.id for c in page.data] == [ids[9], ids[8], ids[7]] and page.has_more
    assert page.url == "/v1/customers"
    u1 = client.v1.customers.list(params={"email": "u1@example.com", "limit": 100}).data
    assert [c.id for c in u1] == [ids[i] for i in range(23, -1, -1) if i % 3 == 1]
    assert client.v1.customers.list(params={"email": "U1@example.com"}).data == []  # case-sensitive
    with pytest.raises(stripe.InvalidRequestError) as cursor:
        client.v1.customers.list(params={"ending_before": "cus_missing"})
    assert error_of(cursor.value)["param"] == "ending_before"


# -------------------------------------------------------------------------- subscriptions


def recurring_price(client: stripe.StripeClient, **params: Any) -> stripe.Price:
    prod = product(client)
    return price(client, prod.id, recurring={"interval": "month"}, **params)


def subscribe(
    client: stripe.StripeClient, customer_id: str, price_id: str, **params: Any
) -> stripe.Subscription:
    base: dict[str, Any] = {"customer": customer_id, "items": [{"price": price_id}]}
    return client.v1.subscriptions.create(params={**base, **params})  # type: ignore[arg-type]


def test_subscription_create_shape(client: stripe.StripeClient) -> None:
    cus = paying_customer(client)
    pr = recurring_price(client)
    sub = subscribe(client, cus.id, pr.id, metadata={"kuploy_plan": "pro"})
    assert sub.id.startswith("sub_") and len(sub.id) == len("sub_") + 24
    assert sub.object == "subscription" and sub.status == "active" and sub.livemode is False
    assert sub.customer == cus.id and sub.currency == "usd"
    assert isinstance(sub.latest_invoice, str) and sub.latest_invoice.startswith("in_")
    assert client.v1.invoices.retrieve(sub.latest_invoice).status == "paid"  # charged to the card
    assert sub.cancel_at_period_end is False and sub.cancel_at is None and sub.canceled_at is None
    assert sub.metadata.to_dict() == {"kuploy_plan": "pro"}
    assert sub.start_date == sub.created == sub.billing_cycle_anchor
    assert sub.collection_method == "charge_automatically" and sub.billing_mode.type == "flexible"
    items = sub["items"]  # `.items` is the dict method on StripeObject
    assert items.object == "list" and items.has_more is False and len(items.data) == 1
    item = items.data[0]
    assert isinstance(item, stripe.SubscriptionItem)
    assert item.id.startswith("si_") and item.subscription == sub.id and item.quantity == 1
    assert isinstance(item.price, stripe.Price) and item.price.to_dict() == pr.to_dict()
    assert item.plan.id == pr.id and item.plan.amount == 1000 and item.plan.interval == "month"
    # Periods live on the items in the current API version.
    assert item.current_period_start == sub.created
    assert item.current_period_end == _period_end(sub.created, {"interval": "month", "interval_count": 1})
    assert "current_period_end" not in sub.to_dict()
    assert client.v1.subscriptions.retrieve(sub.id).to_dict() == sub.to_dict()
    assert client.v1.customers.retrieve(cus.id).currency == "usd"  # set by its first subscription

    at_end = subscribe(client, cus.id, pr.id, cancel_at_period_end=True)
    assert at_end.status == "active" and at_end.cancel_at_period_end is True
    assert at_end.cancel_at == at_end["items"].data[0].current_period_end


def test_period_end_arithmetic() -> None:
    jan31 = 1706659200  # 2024-01-31T00:00:00Z
    assert _period_end(jan31, {"interval": "month", "interval_count": 1}) == 1709164800  # 2024-02-29
    assert _period_end(jan31, {"interval": "year", "interval_count": 1}) == 1738281600  # 2025-01-31
    assert _period_end(jan31, {"interval": "week", "interval_count": 2}) == jan31 + 14 * 86400
    assert _period_end(jan31, {"interval": "month", "interval_count": 13}) == 1740700800  # 2025-02-28


def test_subscription_create_rules(client: stripe.StripeClient) -> None:
    cus = customer(client)
    pr = recurring_price(client)
    prod = product(client, name="Other")
    one_time = price(client, prod.id)
    archived = price(client, prod.id, recurring={"interval": "month"})
    client.v1.prices.update(archived.id, params={"active": False})
    eur = price(client, prod.id, recurring={"interval": "month"}, currency="eur")
    cases: list[tuple[dict[str, Any], int, str, str | None, str]] = [
        ({"items": [{"price": pr.id}]}, 400, "customer", "parameter_missing", "Missing required param"),
        (
            {"customer": "cus_nope", "items": [{"price": pr.id}]},
            400,
            "customer",
            "resource_missing",
            "No such customer: 'cus_nope'",
        ),
        ({"customer": cus.id}, 400, "items", "parameter_missing", "Missing required param: items."),
        (
            {"customer": cus.id, "items": [{"price": "price_nope"}]},
            400,
            "items[0][price]",
            "resource_missing",
            "No such price: 'price_nope'",
        ),
        ({"customer": cus.id, "items": [{"price": archived.id}]}, 400, "items[0][price]", None, "inactive"),
        (
            {"customer": cus.id, "items": [{"price": one_time.id}]},
            400,
            "items[0][price]",
            None,
            "type=one_time",
        ),
        (
            {"customer": cus.id, "items": [{"price": pr.id}, {"price": pr.id}]},
            400,
            "items",
            None,
            "same plan",
        ),
        (
            {"customer": cus.id, "items": [{"price": pr.id}, {"price": eur.id}]},
            400,
            "items",
            None,
            "currency",
        ),
        (
            {"customer": cus.id, "items": [{"price": pr.id}], "trial_period_days": 7},
            400,
            "trial_period_days",
            None,
            "does not model",
        ),
        (
            {
                "customer": cus.id,
                "items": [
                    {
                        "price": pr.id,
                        "price_data": {
                            "currency": "usd",
                            "product": prod.id,
                            "recurring": {"interval": "month"},
                        },
                    }
                ],
            },
            400,
            "items[0][price_data]",
            None,
            "does not model",
        ),
        (
            {"customer": cus.id, "items": [{"price": pr.id, "quantity": -1}]},
            400,
            "items[0][quantity]",
            "parameter_invalid_integer",
            "greater than",
        ),
    ]
    for params, status, param, code, message in cases:
        with pytest.raises(stripe.InvalidRequestError) as exc:
            client.raw_request("post", "/v1/subscriptions", **params)
        err = error_of(exc.value)
        assert (exc.value.http_status, err["param"], err.get("code")) == (status, param, code), params
        assert message in err["message"], (params, err["message"])
    assert client.v1.subscriptions.list(params={"status": "all"}).data == []

    client.v1.products.update(prod.id, params={"active": False})
    live_price = price(client, prod.id, recurring={"interval": "month"})
    with pytest.raises(stripe.InvalidRequestError, match="marked as inactive"):
        subscribe(client, cus.id, live_price.id)
    # One customer, one currency while a subscription is live.
    subscribe(client, cus.id, pr.id)
    client.v1.products.update(prod.id, params={"active": True})
    with pytest.raises(stripe.InvalidRequestError, match="cannot combine currencies") as mixed:
        subscribe(client, cus.id, eur.id)
    assert error_of(mixed.value)["param"] == "currency"


def test_subscriptions_on_an_archived_price_stay_and_are_counted(client: stripe.StripeClient) -> None:
    prod = product(client)
    old = price(client, prod.id, recurring={"interval": "month"}, lookup_key="pro_monthly")
    new = price(client, prod.id, recurring={"interval": "month"}, unit_amount=1200)
    subs = [
        subscribe(client, paying_customer(client, email=f"c{i}@example.com").id, old.id) for i in range(3)
    ]
    on_new = subscribe(client, paying_customer(client).id, new.id)
    client.v1.subscriptions.cancel(subs[0].id)
    client.v1.prices.update(old.id, params={"active": False})

    kept = client.v1.subscriptions.retrieve(subs[1].id)
    assert kept.status == "active" and kept["items"].data[0].price.active is False
    count = client.v1.subscriptions.list(params={"price": old.id, "status": "active", "limit": 100})
    assert [s.id for s in count.data] == [subs[2].id, subs[1].id]
    assert [s.id for s in client.v1.subscriptions.list(params={"price": old.id}).data] == [
        subs[2].id,
        subs[1].id,
    ]
    every = client.v1.subscriptions.list(params={"price": old.id, "status": "all"}).data
    assert [s.id for s in every] == [subs[2].id, subs[1].id, subs[0].id]
    assert [s.id for s in client.v1.subscriptions.list(params={"status": "canceled"}).data] == [subs[0].id]
    assert [s.id for s in client.v1.subscriptions.list(params={"status": "ended"}).data] == [subs[0].id]
    assert [s.id for s in client.v1.subscriptions.list(params={"price": new.id}).data] == [on_new.id]
    assert client.v1.subscriptions.list(params={"status": "past_due"}).data == []
    # But no new subscription may start on the archived price.
    with pytest.raises(stripe.InvalidRequestError, match="inactive"):
        subscribe(client, customer(client).id, old.id)


def test_subscription_update(client: stripe.StripeClient) -> None:
    cus = paying_customer(client)
    prod = product(client)
    monthly = price(client, prod.id, recurring={"interval": "month"})
    other = price(client, prod.id, recurring={"interval": "month"}, unit_amount=3000)
    yearly = price(client, prod.id, recurring={"interval": "year"}, unit_amount=9000)
    sub = subscribe(client, cus.id, monthly.id, metadata={"a": "1"})
    item = sub["items"].data[0]

    ending = client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    assert ending.status == "active" and ending.cancel_at_period_end is True
    assert ending.cancel_at == item.current_period_end and ending.canceled_at is not None
    assert ending.cancellation_details is not None
    assert ending.cancellation_details.reason == "cancellation_requested"
    resumed = client.v1.subscriptions.update(
        sub.id, params={"cancel_at_period_end": False, "metadata": {"a": "", "b": "2"}}
    )
    assert resumed.cancel_at_period_end is False and resumed.cancel_at is None and resumed.canceled_at is None
    assert resumed.metadata.to_dict() == {"b": "2"}

    moved = client.v1.subscriptions.update(sub.id, params={"items": [{"id": item.id, "price": other.id}]})
    moved_item = moved["items"].data[0]
    assert moved_item.id == item.id and moved_item.price.id == other.id and moved_item.quantity == 1
    assert moved_item.current_period_end == item.current_period_end  # same interval: same period
    assert client.v1.subscriptions.list(params={"price": monthly.id}).data == []
    assert [s.id for s in client.v1.subscriptions.list(params={"price": other.id}).data] == [sub.id]
    yearly_sub = client.v1.subscriptions.update(
        sub.id, params={"items": [{"id": item.id, "price": yearly.id, "quantity": 3}]}
    )
    y_item = yearly_sub["items"].data[0]
    assert y_item.quantity == 3 and y_item.plan.interval == "year"
    assert y_item.current_period_end == _period_end(
        y_item.current_period_start, {"interval": "year", "interval_count": 1}
    )

    added = client.v1.subscriptions.update(sub.id, params={"items": [{"price": monthly.id}]})
    assert [i.price.id for i in added["items"].data] == [yearly.id, monthly.id]  # mixed intervals (flexible)
    second = added["items"].data[1].id
    removed = client.v1.subscriptions.update(sub.id, params={"items": [{"id": second, "deleted": True}]})
    assert [i.id for i in removed["items"].data] == [item.id]

    client.v1.prices.update(other.id, params={"active": False})
    for params, param in (
        ({"items": [{"id": item.id, "price": other.id}]}, "items[0][price]"),
        ({"items": [{"id": "si_nope", "price": monthly.id}]}, "items[0][id]"),
        ({"items": [{"id": item.id, "deleted": True}]}, "items"),
        ({"proration_date": 5}, "proration_date"),
    ):
        with pytest.raises(stripe.InvalidRequestError) as exc:
            client.v1.subscriptions.update(sub.id, params=params)  # type: ignore[arg-type]
        assert error_of(exc.value)["param"] == param, params
    unchanged = client.v1.subscriptions.retrieve(sub.id)
    assert [i.price.id for i in unchanged["items"].data] == [yearly.id]
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.subscriptions.update("sub_nope", params={"metadata": {"a": "b"}})
    assert missing.value.http_status == 404
    assert error_of(missing.value)["message"] == "No such subscription: 'sub_nope'"


def test_subscription_cancel(client: stripe.StripeClient) -> None:
    cus = customer(client)
    pr = recurring_price(client)
    sub = subscribe(client, cus.id, pr.id)
    canceled = client.v1.subscriptions.cancel(sub.id, params={"cancellation_details": {"comment": "bye"}})
    assert canceled.status == "canceled" and canceled.canceled_at is not None
    assert canceled.ended_at == canceled.canceled_at
    assert canceled.cancellation_details is not None and canceled.cancellation_details.comment == "bye"
    assert client.v1.subscriptions.retrieve(sub.id).status == "canceled"
    assert client.v1.subscriptions.list().data == []
    with pytest.raises(stripe.InvalidRequestError, match="already been canceled"):
        client.v1.subscriptions.cancel(sub.id)
    with pytest.raises(stripe.InvalidRequestError, match="can only update its cancellation_details"):
        client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    relabeled = client.v1.subscriptions.update(sub.id, params={"metadata": {"note": "x"}})
    assert relabeled.metadata.to_dict() == {"note": "x"}
    with pytest.raises(stripe.InvalidRequestError) as unmodelled:
        client.v1.subscriptions.cancel(subscribe(client, cus.id, pr.id).id, params={"invoice_now": True})
    assert error_of(unmodelled.value)["param"] == "invoice_now"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.subscriptions.cancel("sub_nope")
    assert missing.value.http_status == 404


def test_subscription_list_filters_pagination_and_expand(client: stripe.StripeClient) -> None:
    a, b = customer(client, email="a@example.com"), customer(client, email="b@example.com")
    pr = recurring_price(client)
    ids = [subscribe(client, (a if i % 2 else b).id, pr.id).id for i in range(13)]
    seen = [s.id for s in client.v1.subscriptions.list(params={"limit": 4}).auto_paging_iter()]
    assert seen == list(reversed(ids))
    back = client.v1.subscriptions.list(params={"limit": 2, "ending_before": ids[5]})
    assert [s.id for s in back.data] == [ids[7], ids[6]] and back.has_more
    of_a = client.v1.subscriptions.list(params={"customer": a.id, "limit": 100}).data
    assert [s.id for s in of_a] == [ids[i] for i in range(12, -1, -1) if i % 2]
    assert client.v1.subscriptions.list(params={"customer": "cus_nope"}).data == []

    listed = client.v1.subscriptions.list(
        params={"limit": 1, "expand": ["data.customer", "data.items.data.price.product"]}
    ).data[0]
    assert isinstance(listed.customer, stripe.Customer) and listed.customer.id == b.id
    assert isinstance(listed["items"].data[0].price.product, stripe.Product)
    with pytest.raises(stripe.InvalidRequestError, match="cannot be expanded"):
        client.v1.subscriptions.retrieve(ids[0], params={"expand": ["status"]})
    with pytest.raises(stripe.InvalidRequestError) as bad_status:
        client.raw_request("get", "/v1/subscriptions", status="sleeping")
    assert error_of(bad_status.value)["param"] == "status"


# ---------------------------------------------------------------------- webhook endpoints


def endpoint(
    client: stripe.StripeClient, options: dict[str, Any] | None = None, **params: Any
) -> stripe.WebhookEndpoint:
    base: dict[str, Any] = {
        "url": "https://kuploy.example/stripe/webhook",
        "enabled_events": ["invoice.paid"],
    }
    return client.v1.webhook_endpoints.create(
        params=cast(Any, {**base, **params}), options=cast(Any, options or {})
    )


def admin_secrets(url: str) -> dict[str, dict[str, str]]:
    status, _, body = raw(url, "GET", "/_emulator/webhook_secrets", headers={"Authorization": ""})
    assert status == 200
    return body  # type: ignore[no-any-return]


def test_kuploy_event_types_are_accepted() -> None:
    assert set(WEBHOOK_EVENT_TYPES) >= KUPLOY_EVENT_TYPES
    assert {"*", "charge.succeeded", "customer.subscription.trial_will_end"} <= set(WEBHOOK_EVENT_TYPES)


def test_webhook_endpoint_secret_only_on_create(
    client: stripe.StripeClient, running: RunningEmulator
) -> None:
    created = endpoint(
        client,
        enabled_events=sorted(KUPLOY_EVENT_TYPES),
        description="kuploy billing",
        metadata={"owner": "billing"},
        api_version=stripe.api_version,
        options={"idempotency_key": "we-1"},
    )
    assert created.id.startswith("we_") and created.object == "webhook_endpoint"
    assert created.status == "enabled" and created.livemode is False and created.application is None
    assert created.enabled_events == sorted(KUPLOY_EVENT_TYPES) and created.api_version == stripe.api_version
    assert created.description == "kuploy billing" and created.metadata.to_dict() == {"owner": "billing"}
    secret = created.secret
    assert secret is not None and secret.startswith("whsec_") and len(secret) > 30

    fetched = client.v1.webhook_endpoints.retrieve(created.id)
    listed = client.v1.webhook_endpoints.list().data[0]
    updated = client.v1.webhook_endpoints.update(created.id, params={"description": "renamed"})
    for view in (fetched, listed, updated):
        assert "secret" not in view.to_dict()
    assert updated.description == "renamed"
    assert admin_secrets(running.url) == {"test": {created.id: secret}, "live": {}}
    assert running.emulator.webhook_secrets()["test"][created.id] == secret
    # An idempotent replay is the original response, secret included (as Stripe replays it).
    replay = client.v1.webhook_endpoints.create(
        params={
            "url": "https://kuploy.example/stripe/webhook",
            "enabled_events": cast(Any, sorted(KUPLOY_EVENT_TYPES)),
            "description": "kuploy billing",
            "metadata": {"owner": "billing"},
            "api_version": stripe.api_version,  # type: ignore[typeddict-item]
        },
        options={"idempotency_key": "we-1"},
    )
    assert replay.id == created.id and replay.secret == secret
    assert len(client.v1.webhook_endpoints.list().data) == 1


def test_webhook_endpoint_rules(client: stripe.StripeClient, running: RunningEmulator) -> None:
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        endpoint(client, enabled_events=["invoice.paid", "invoice.teleported"])
    err = error_of(unknown.value)
    assert unknown.value.http_status == 400 and err["param"] == "enabled_events[1]"
    assert err["message"].startswith("Invalid enabled_events[1]: must be one of *, ")
    for params, param, code in (
        ({"enabled_events": ["*"]}, "url", "parameter_missing"),
        ({"url": "https://x.example/h"}, "enabled_events", "parameter_missing"),
        ({"url": "ftp://x.example/h", "enabled_events": ["*"]}, "url", "url_invalid"),
        ({"url": "not a url", "enabled_events": ["*"]}, "url", "url_invalid"),
        ({"url": "https://x.example/h", "enabled_events": ["*"], "connect": True}, "connect", None),
    ):
        with pytest.raises(stripe.InvalidRequestError) as exc:
            client.raw_request("post", "/v1/webhook_endpoints", **params)
        assert (error_of(exc.value)["param"], error_of(exc.value).get("code")) == (param, code), params
    assert endpoint(client, enabled_events=["*"]).enabled_events == ["*"]
    live = make_client(running.url, "sk_live_abc")
    with pytest.raises(stripe.InvalidRequestError, match="https"):
        endpoint(live, url="http://kuploy.example/hook")
    assert endpoint(live).livemode is True
    for _ in range(15):
        endpoint(client)
    with pytest.raises(stripe.InvalidRequestError, match="maximum of 16"):
        endpoint(client)
    assert len(client.v1.webhook_endpoints.list(params={"limit": 100}).data) == 16
    assert len(live.v1.webhook_endpoints.list().data) == 1


def test_webhook_endpoint_update_list_delete(client: stripe.StripeClient, running: RunningEmulator) -> None:
    ids = [endpoint(client, url=f"https://kuploy.example/h{i}").id for i in range(7)]
    seen = [w.id for w in client.v1.webhook_endpoints.list(params={"limit": 3}).auto_paging_iter()]
    assert seen == list(reversed(ids))
    page = client.v1.webhook_endpoints.list(params={"limit": 2, "starting_after": ids[4]})
    assert [w.id for w in page.data] == [ids[3], ids[2]] and page.url == "/v1/webhook_endpoints"

    we = ids[0]
    changed = client.v1.webhook_endpoints.update(
        we,
        params={
            "url": "https://kuploy.example/new",
            "enabled_events": ["customer.subscription.updated", "price.updated"],
            "disabled": True,
            "metadata": {"k": "v"},
        },
    )
    assert changed.url == "https://kuploy.example/new" and changed.status == "disabled"
    assert changed.enabled_events == ["customer.subscription.updated", "price.updated"]
    assert client.v1.webhook_endpoints.update(we, params={"disabled": False}).status == "enabled"
    with pytest.raises(stripe.InvalidRequestError) as bad:
        client.v1.webhook_endpoints.update(we, params=cast(Any, {"enabled_events": ["nope.nope"]}))
    assert error_of(bad.value)["param"] == "enabled_events[0]"
    assert client.v1.webhook_endpoints.retrieve(we).enabled_events == [
        "customer.subscription.updated",
        "price.updated",
    ]

    deleted = client.v1.webhook_endpoints.delete(we)
    assert deleted.to_dict() == {"id": we, "object": "webhook_endpoint", "deleted": True}
    with pytest.raises(stripe.InvalidRequestError) as gone:
        client.v1.webhook_endpoints.retrieve(we)
    assert gone.value.http_status == 404
    assert error_of(gone.value)["message"] == f"No such webhook endpoint: '{we}'"
    assert we not in admin_secrets(running.url)["test"] and len(admin_secrets(running.url)["test"]) == 6
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.webhook_endpoints.delete(we)


# --------------------------------------------------------- billing objects: modes and persistence


def test_billing_objects_are_per_mode(running: RunningEmulator) -> None:
    live, test = make_client(running.url, "sk_live_abc"), make_client(running.url)
    cus = customer(live)
    assert cus.livemode is True and test.v1.customers.list().data == []
    pr = recurring_price(test)
    with pytest.raises(stripe.InvalidRequestError, match="No such customer"):
        subscribe(test, cus.id, pr.id)
    with pytest.raises(stripe.InvalidRequestError, match="No such price"):
        subscribe(live, cus.id, pr.id)


def test_billing_objects_persist(tmp_path: Path) -> None:
    state = tmp_path / "stripe.json"
    with start_in_thread(state_file=state) as first:
        c = make_client(first.url)
        cus = customer(c, name="Kept")
        pr = recurring_price(c)
        sub = subscribe(c, cus.id, pr.id, metadata={"k": "v"})
        c.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
        we = endpoint(c)
        secret = we.secret
    with start_in_thread(state_file=state) as second:
        c = make_client(second.url)
        assert c.v1.customers.retrieve(cus.id).name == "Kept"
        again = c.v1.subscriptions.retrieve(sub.id)
        assert again.cancel_at_period_end is True and again.metadata.to_dict() == {"k": "v"}
        assert again["items"].data[0].price.id == pr.id
        assert [s.id for s in c.v1.subscriptions.list(params={"price": pr.id}).data] == [sub.id]
        assert "secret" not in c.v1.webhook_endpoints.retrieve(we.id).to_dict()
        assert admin_secrets(second.url)["test"] == {we.id: secret}


def test_state_files_without_billing_objects_still_load(tmp_path: Path) -> None:
    state = tmp_path / "old.json"
    with start_in_thread(state_file=state) as first:
        prod = product(make_client(first.url))
    data = json.loads(state.read_text())
    for acct in data["accounts"].values():
        for key in ("customers", "subscriptions", "webhook_endpoints"):
            del acct[key]
    state.write_text(json.dumps(data))
    with start_in_thread(state_file=state) as second:
        c = make_client(second.url)
        assert c.v1.products.retrieve(prod.id).id == prod.id
        assert c.v1.customers.list().data == []
        assert customer(c).id.startswith("cus_")


def test_billing_shapes_match_the_sdk_models(client: stripe.StripeClient) -> None:
    """No invented fields, none of the SDK's non-optional fields missing; omissions are listed."""
    cus = customer(client)
    sub = subscribe(client, cus.id, recurring_price(client).id)
    item = sub["items"].data[0]
    we = endpoint(client)
    omitted: dict[type, set[str]] = {
        # Includable (`expand`-only) fields, absent unless asked for, as in Stripe.
        stripe.Customer: {
            "cash_balance",
            "invoice_credit_balance",
            "sources",
            "subscriptions",
            "tax",
            "tax_ids",
        },
        # Conditional fields of features the emulator does not model.
        stripe.Subscription: {"managed_payments", "presentment_details", "status_details"},
        stripe.SubscriptionItem: {"billed_until", "current_trial"},
        stripe.WebhookEndpoint: set(),
        stripe.Plan: {"tiers"},
    }
    views: list[tuple[type, Any]] = [
        (stripe.Customer, cus),
        (stripe.Subscription, sub),
        (stripe.SubscriptionItem, item),
        (stripe.WebhookEndpoint, we),
        (stripe.Plan, item.plan),
    ]
    for cls, obj in views:
        declared = {k for k in cls.__annotations__ if not k.startswith("_") and k != "OBJECT_NAME"} - {
            "deleted"
        }
        keys = set(obj.to_dict())
        assert keys - declared == set(), cls
        assert declared - keys == omitted[cls], cls
