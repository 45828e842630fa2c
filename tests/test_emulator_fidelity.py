"""The emulator's smaller Stripe rules, each checked through the real SDK over HTTP against what Stripe
documents or answered in recordings: the Search API (docs.stripe.com/search), `previous_attributes` of a
hash change, the 10-key cap on `lookup_keys`, the idempotency-key messages and `request_log_url`."""

from __future__ import annotations

import json
import urllib.request

import pytest
import stripe

from reconciler.sandbox.emulator import RunningEmulator

from conftest import TEST_KEY


def _products(client: stripe.StripeClient) -> dict[str, str]:
    made = {}
    for name, meta, active in (
        ("Starter", {"tier": "small"}, True),
        ("Team plan", {"tier": "medium"}, True),
        ("Enterprise", {"tier": "large", "region": "eu"}, False),
    ):
        made[name] = client.v1.products.create(params={"name": name, "metadata": meta, "active": active}).id
    return made


def _search(client: stripe.StripeClient, query: str, **params: object) -> list[str]:
    result = client.v1.products.search(params={"query": query, **params})  # type: ignore[typeddict-item]
    return [p.id for p in result.data]


def test_search_products_by_field_metadata_and_boolean(stripe_client: stripe.StripeClient) -> None:
    made = _products(stripe_client)
    assert _search(stripe_client, "name:'Starter'") == [made["Starter"]]
    assert _search(stripe_client, "name:'starter'") == [made["Starter"]]  # exact match ignores case
    assert _search(stripe_client, "metadata['tier']:'large'") == [made["Enterprise"]]
    assert set(_search(stripe_client, "active:'true'")) == {made["Starter"], made["Team plan"]}
    assert _search(stripe_client, "active:'true' AND metadata['tier']:'medium'") == [made["Team plan"]]
    assert set(_search(stripe_client, "name:'Starter' OR name:'Enterprise'")) == {
        made["Starter"],
        made["Enterprise"],
    }
    assert _search(stripe_client, "name~'plan'") == [made["Team plan"]]  # substring, not prefix
    assert set(_search(stripe_client, "-metadata['tier']:'small'")) == {made["Team plan"], made["Enterprise"]}
    assert _search(stripe_client, "metadata['region']:null AND name:'Starter'") == [made["Starter"]]


def test_search_pages_with_next_page(stripe_client: stripe.StripeClient) -> None:
    made = _products(stripe_client)
    first = stripe_client.v1.products.search(params={"query": "-name:'nothing'", "limit": 1})
    assert first["object"] == "search_result" and first["url"] == "/v1/products/search"
    assert first.has_more and first.next_page
    seen = [p.id for p in first.data]
    page = first
    while page.has_more:
        assert page.next_page is not None
        page = stripe_client.v1.products.search(
            params={"query": "-name:'nothing'", "limit": 1, "page": page.next_page}
        )
        seen += [p.id for p in page.data]
    assert page.next_page is None
    assert sorted(seen) == sorted(made.values())  # every product


def test_search_other_kinds(stripe_client: stripe.StripeClient) -> None:
    product = stripe_client.v1.products.create(params={"name": "Pro"})
    price = stripe_client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "eur",
            "unit_amount": 900,
            "recurring": {"interval": "month"},
            "lookup_key": "pro_monthly",
        }
    )
    found = stripe_client.v1.prices.search(params={"query": f"product:'{product.id}' AND currency:'eur'"})
    assert [p.id for p in found.data] == [price.id]
    by_key = stripe_client.v1.prices.search(params={"query": "lookup_key:'pro_monthly'"})
    assert [p.id for p in by_key.data] == [price.id]
    customer = stripe_client.v1.customers.create(params={"email": "ops@example.com", "name": "Ops"})
    by_email = stripe_client.v1.customers.search(params={"query": "email~'example.com'"})
    assert [c.id for c in by_email.data] == [customer.id]
    newer = stripe_client.v1.customers.search(params={"query": f"created>={customer.created}"})
    assert customer.id in [c.id for c in newer.data]
    subs = stripe_client.v1.subscriptions.search(params={"query": "status:'active'"})
    assert subs["object"] == "search_result"


@pytest.mark.parametrize(
    "query",
    [
        "",
        "colour:'red'",  # not a searchable field of products
        "name:Starter",  # strings must be quoted
        "name:'a' AND name:'b' OR name:'c'",  # AND and OR cannot be mixed
        "name~'ab'",  # substring needs 3 characters
        "active~'true'",  # no substring on booleans
        "metadata:'x'",  # metadata needs a key
        " AND ".join(f"name:'{i}'" for i in range(11)),  # at most 10 clauses
    ],
)
def test_search_refuses_queries_it_cannot_read(stripe_client: stripe.StripeClient, query: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        stripe_client.v1.products.search(params={"query": query})
    assert caught.value.http_status == 400
    assert caught.value.param == "query"


def test_search_is_not_mistaken_for_a_retrieve(stripe_client: stripe.StripeClient) -> None:
    """`/v1/products/search` is its own route, not the product with id "search"."""
    result = stripe_client.v1.products.search(params={"query": "name:'nothing'"})
    assert result["object"] == "search_result" and result.data == []


def test_previous_attributes_of_a_metadata_change_hold_only_the_changed_keys(
    stripe_client: stripe.StripeClient,
) -> None:
    product = stripe_client.v1.products.create(params={"name": "P", "metadata": {"keep": "1", "drop": "2"}})
    stripe_client.v1.products.update(product.id, params={"metadata": {"drop": "", "added": "3", "keep": "1"}})
    event = stripe_client.v1.events.list(params={"type": "product.updated"}).data[0]
    previous = event.data.to_dict()["previous_attributes"]
    assert previous["metadata"] == {"added": None, "drop": "2"}  # "keep" did not change
    assert set(previous) <= {"metadata", "updated"}


def test_lookup_keys_are_capped_at_ten(stripe_client: stripe.StripeClient) -> None:
    stripe_client.v1.prices.list(params={"lookup_keys": [f"k{i}" for i in range(10)]})
    with pytest.raises(stripe.InvalidRequestError) as caught:
        stripe_client.v1.prices.list(params={"lookup_keys": [f"k{i}" for i in range(11)]})
    # The real answer to 12 keys, quoted in stripe/stripe-node#2089.
    assert caught.value.user_message == "Array lookup_keys exceeded maximum 10 allowed elements."


def test_an_idempotency_key_reused_on_another_endpoint(stripe_client: stripe.StripeClient) -> None:
    stripe_client.v1.products.create(params={"name": "A"}, options={"idempotency_key": "key-1"})
    with pytest.raises(stripe.IdempotencyError) as caught:
        stripe_client.v1.customers.create(params={"name": "A"}, options={"idempotency_key": "key-1"})
    # Stripe's wording (activemerchant's remote test against real Stripe matches its start).
    assert caught.value.user_message == (
        "Keys for idempotent requests can only be used for the same endpoint they were first used for "
        "('/v1/products' vs '/v1/customers'). Try using a key other than 'key-1' if you meant to execute a "
        "different request."
    )
    with pytest.raises(stripe.IdempotencyError) as caught:
        stripe_client.v1.products.create(params={"name": "B"}, options={"idempotency_key": "key-1"})
    assert "can only be used with the same parameters they were first used with" in str(
        caught.value.user_message
    )


def test_errors_carry_a_request_log_url_that_answers(
    emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        stripe_client.v1.products.retrieve("prod_missing")
    error = caught.value.json_body["error"]  # type: ignore[index]
    url = error["request_log_url"]
    assert url.endswith(f"/_emulator/requests/{caught.value.request_id}")
    with urllib.request.urlopen(url.replace("http://127.0.0.1", emulator.url.rsplit(":", 1)[0])) as r:
        entry = json.load(r)
    assert entry["path"] == "/v1/products/prod_missing" and entry["status"] == 404
    assert TEST_KEY not in json.dumps(entry)
