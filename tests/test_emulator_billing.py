"""The emulator's billing half through the real `stripe` SDK: invoice items, invoices (create, finalize,
pay, void, mark uncollectible, update, delete, lines) and subscriptions' `payment_behavior`.

What Stripe does is taken from its API reference (docs.stripe.com/api/invoices, /invoiceitems,
/subscriptions/create `payment_behavior`) and from the SDK's typed params; the event sequences follow
real `stripe listen` logs of the same flows (a subscription paid by pm_card_visa: customer.subscription.
created, invoice.created, invoice.finalized, payment_intent.created, charge.succeeded,
payment_intent.succeeded, invoice.paid, invoice.payment_succeeded)."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
import stripe

from conftest import monthly_price

PAID = [
    "invoice.finalized",
    "payment_intent.created",
    "charge.succeeded",
    "payment_intent.succeeded",
    "invoice.paid",
    "invoice.payment_succeeded",
]


def event_types(client: stripe.StripeClient, since: str | None = None) -> list[str]:
    """Every event type, oldest first (after the event `since`)."""
    events = [e for e in client.v1.events.list(params={"limit": 100}).data][::-1]
    if since is not None:
        ids = [e.id for e in events]
        events = events[ids.index(since) + 1 :]
    return [e.type for e in events]


def last_event_id(client: stripe.StripeClient) -> str:
    return client.v1.events.list(params={"limit": 1}).data[0].id


def customer(client: stripe.StripeClient, card: str | None = None) -> Any:
    """A customer; with `card` (a pm_card_* test PaymentMethod) attached and made its default."""
    params: dict[str, Any] = {"email": "billing@example.com"}
    if card is not None:
        params |= {"payment_method": card, "invoice_settings": {"default_payment_method": card}}
    return client.v1.customers.create(params=params)  # type: ignore[arg-type]


def one_time_price(client: stripe.StripeClient, amount: int = 700) -> Any:
    product = client.v1.products.create(params={"name": "Setup"})
    return client.v1.prices.create(params={"currency": "usd", "unit_amount": amount, "product": product.id})


# ---------------------------------------------------------------------------------------- invoice items


def test_invoice_items_are_pending_until_an_invoice_includes_them(stripe_client: stripe.StripeClient) -> None:
    cus = customer(stripe_client)
    by_amount = stripe_client.v1.invoice_items.create(
        params={"customer": cus.id, "amount": 2000, "currency": "usd", "description": "Setup fee"}
    )
    price = one_time_price(stripe_client, 700)
    by_price = stripe_client.v1.invoice_items.create(
        params={"customer": cus.id, "pricing": {"price": price.id}, "quantity": 3, "metadata": {"k": "v"}}
    )
    assert (by_amount.object, by_amount.amount, by_amount.currency, by_amount.invoice) == (
        "invoiceitem",
        2000,
        "usd",
        None,
    )
    assert (by_price.amount, by_price.quantity) == (2100, 3)
    assert by_price.pricing is not None and by_price.pricing.price_details is not None
    assert by_price.pricing.price_details.price == price.id
    pending = stripe_client.v1.invoice_items.list(params={"customer": cus.id, "pending": True})
    assert {i.id for i in pending.data} == {by_amount.id, by_price.id}

    updated = stripe_client.v1.invoice_items.update(by_price.id, params={"quantity": 1, "description": "One"})
    assert (updated.amount, updated.description) == (700, "One")

    # Without include, an invoice takes nothing (Stripe's default is `exclude`).
    empty = stripe_client.v1.invoices.create(params={"customer": cus.id})
    assert (empty.status, empty.total, empty.lines.data) == ("draft", 0, [])
    invoice = stripe_client.v1.invoices.create(
        params={"customer": cus.id, "pending_invoice_items_behavior": "include"}
    )
    assert invoice.total == 2700
    assert invoice.currency == "usd"
    assert [line.amount for line in invoice.lines.data] == [2000, 700]
    assert stripe_client.v1.invoice_items.retrieve(by_amount.id).invoice == invoice.id
    assert stripe_client.v1.invoice_items.list(params={"customer": cus.id, "pending": True}).data == []
    assert event_types(stripe_client)[-3:] == ["invoiceitem.created", "invoice.created", "invoice.created"]


def test_invoice_items_change_only_while_pending_or_on_a_draft(stripe_client: stripe.StripeClient) -> None:
    cus = customer(stripe_client)
    invoice = stripe_client.v1.invoices.create(params={"customer": cus.id})
    item = stripe_client.v1.invoice_items.create(
        params={"customer": cus.id, "amount": 500, "currency": "usd", "invoice": invoice.id}
    )
    assert stripe_client.v1.invoices.retrieve(invoice.id).amount_due == 500
    stripe_client.v1.invoice_items.update(item.id, params={"amount": 800})
    assert stripe_client.v1.invoices.retrieve(invoice.id).amount_due == 800
    stripe_client.v1.invoices.finalize_invoice(invoice.id)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        stripe_client.v1.invoice_items.delete(item.id)
    assert "draft" in str(exc.value.user_message)
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.invoice_items.update(item.id, params={"amount": 1})

    pending = stripe_client.v1.invoice_items.create(
        params={"customer": cus.id, "amount": 1, "currency": "usd"}
    )
    deleted = stripe_client.v1.invoice_items.delete(pending.id)
    assert deleted.deleted is True
    assert event_types(stripe_client)[-1] == "invoiceitem.deleted"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        stripe_client.v1.invoice_items.retrieve(pending.id)
    assert missing.value.http_status == 404


def test_invoice_item_rules(stripe_client: stripe.StripeClient) -> None:
    cus = customer(stripe_client)
    recurring = monthly_price(stripe_client)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"customer": cus.id, "pricing": {"price": recurring.id}}, "pricing[price]"),
        ({"customer": cus.id, "amount": 100}, "currency"),  # the customer has no currency yet
        ({"customer": "cus_missing", "amount": 100, "currency": "usd"}, "customer"),
        ({"customer": cus.id, "amount": 100, "currency": "usd", "discountable": False}, "discountable"),
        (
            {
                "customer": cus.id,
                "amount": 100,
                "currency": "usd",
                "price_data": {"currency": "usd", "product": "prod_x"},
            },
            "price_data",
        ),
    ]
    for params, param in cases:
        with pytest.raises(stripe.InvalidRequestError) as exc:
            stripe_client.v1.invoice_items.create(params=params)  # type: ignore[arg-type]
        assert exc.value.http_status == 400
        assert exc.value.error is not None and exc.value.error.param == param, params


# ---------------------------------------------------------------------------------------------- invoices


def test_finalize_numbers_the_invoice_and_serves_its_hosted_page(stripe_client: stripe.StripeClient) -> None:
    cus = customer(stripe_client)
    stripe_client.v1.invoice_items.create(params={"customer": cus.id, "amount": 1200, "currency": "usd"})
    invoice = stripe_client.v1.invoices.create(
        params={
            "customer": cus.id,
            "pending_invoice_items_behavior": "include",
            "collection_method": "send_invoice",
            "days_until_due": 30,
            "description": "November",
        }
    )
    assert (invoice.number, invoice.hosted_invoice_url, invoice.auto_advance) == (None, None, False)
    mark = last_event_id(stripe_client)
    final = stripe_client.v1.invoices.finalize_invoice(invoice.id)
    assert final.status == "open"
    assert final.number == f"{cus.invoice_prefix}-0001"
    assert final.due_date is not None and final.status_transitions.finalized_at is not None
    assert final.due_date - final.status_transitions.finalized_at == 30 * 86400
    assert event_types(stripe_client, mark) == ["invoice.finalized"]
    assert final.hosted_invoice_url is not None
    with urllib.request.urlopen(final.hosted_invoice_url) as page:
        assert page.status == 200
        assert page.headers["Content-Type"].startswith("text/html")
        html = page.read().decode()
    assert final.number in html and "12.00" in html
    with pytest.raises(stripe.InvalidRequestError) as again:
        stripe_client.v1.invoices.finalize_invoice(invoice.id)
    assert "already finalized" in str(again.value.user_message)
    second = stripe_client.v1.invoices.create(params={"customer": cus.id})
    assert stripe_client.v1.invoices.finalize_invoice(second.id).number == f"{cus.invoice_prefix}-0002"


def test_an_invoice_with_nothing_due_is_paid_when_finalized(stripe_client: stripe.StripeClient) -> None:
    cus = customer(stripe_client)
    invoice = stripe_client.v1.invoices.create(params={"customer": cus.id})
    mark = last_event_id(stripe_client)
    assert stripe_client.v1.invoices.finalize_invoice(invoice.id).status == "paid"
    assert event_types(stripe_client, mark) == [
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
    ]


def test_pay_finalizes_a_draft_and_charges_the_payment_method(stripe_client: stripe.StripeClient) -> None:
    """What `stripe trigger invoice.paid` does (its fixture: customer, attach pm_card_visa, invoice item,
    invoice with pending items included, pay with that payment method)."""
    cus = customer(stripe_client)
    pm = stripe_client.v1.payment_methods.attach("pm_card_visa", params={"customer": cus.id})
    stripe_client.v1.invoice_items.create(params={"customer": cus.id, "amount": 2000, "currency": "usd"})
    invoice = stripe_client.v1.invoices.create(
        params={"customer": cus.id, "pending_invoice_items_behavior": "include"}
    )
    mark = last_event_id(stripe_client)
    paid = stripe_client.v1.invoices.pay(invoice.id, params={"payment_method": pm.id})
    assert (paid.status, paid.amount_paid, paid.amount_remaining, paid.attempt_count) == ("paid", 2000, 0, 1)
    assert paid.number is not None and paid.status_transitions.paid_at is not None
    assert event_types(stripe_client, mark) == PAID
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.invoices.pay(invoice.id)


def test_a_declined_payment_answers_402_and_the_attempt_stands(stripe_client: stripe.StripeClient) -> None:
    """`stripe trigger invoice.payment_failed`: pm_card_chargeCustomerFail attaches, then every charge is
    declined; Stripe answers the pay step with HTTP 402, `card_error` (the CLI's fixture expects it)."""
    cus = customer(stripe_client)
    pm = stripe_client.v1.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": cus.id})
    stripe_client.v1.invoice_items.create(params={"customer": cus.id, "amount": 2000, "currency": "usd"})
    invoice = stripe_client.v1.invoices.create(
        params={"customer": cus.id, "pending_invoice_items_behavior": "include"}
    )
    mark = last_event_id(stripe_client)
    with pytest.raises(stripe.CardError) as exc:
        stripe_client.v1.invoices.pay(invoice.id, params={"payment_method": pm.id})
    assert exc.value.http_status == 402
    body = exc.value.json_body
    assert isinstance(body, dict)
    error = body["error"]
    assert (error["type"], error["code"], error["decline_code"], error["message"]) == (
        "card_error",
        "card_declined",
        "generic_decline",
        "Your card was declined.",
    )
    after = stripe_client.v1.invoices.retrieve(invoice.id)
    assert (after.status, after.attempt_count, after.attempted, after.amount_paid) == ("open", 1, True, 0)
    assert event_types(stripe_client, mark) == [
        "invoice.finalized",
        "payment_intent.created",
        "charge.failed",
        "payment_intent.payment_failed",
        "invoice.payment_failed",
    ]
    # Another card pays the same open invoice.
    good = stripe_client.v1.payment_methods.attach("pm_card_visa", params={"customer": cus.id})
    assert stripe_client.v1.invoices.pay(invoice.id, params={"payment_method": good.id}).status == "paid"


def test_pay_without_any_payment_method_is_refused(stripe_client: stripe.StripeClient) -> None:
    cus = customer(stripe_client)
    stripe_client.v1.invoice_items.create(params={"customer": cus.id, "amount": 900, "currency": "usd"})
    invoice = stripe_client.v1.invoices.create(
        params={"customer": cus.id, "pending_invoice_items_behavior": "include"}
    )
    with pytest.raises(stripe.InvalidRequestError) as exc:
        stripe_client.v1.invoices.pay(invoice.id)
    assert "no attached payment source or default payment method" in str(exc.value.user_message)
    assert stripe_client.v1.invoices.retrieve(invoice.id).status == "open"  # finalized by the attempt


def test_void_mark_uncollectible_update_and_delete(stripe_client: stripe.StripeClient) -> None:
    cus = customer(stripe_client)

    def open_invoice() -> Any:
        stripe_client.v1.invoice_items.create(params={"customer": cus.id, "amount": 300, "currency": "usd"})
        draft = stripe_client.v1.invoices.create(
            params={"customer": cus.id, "pending_invoice_items_behavior": "include"}
        )
        return stripe_client.v1.invoices.finalize_invoice(draft.id)

    voided = stripe_client.v1.invoices.void_invoice(open_invoice().id)
    assert voided.status == "void" and voided.status_transitions.voided_at is not None
    assert event_types(stripe_client)[-1] == "invoice.voided"
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.invoices.void_invoice(voided.id)

    bad = stripe_client.v1.invoices.mark_uncollectible(open_invoice().id)
    assert bad.status == "uncollectible"
    assert event_types(stripe_client)[-1] == "invoice.marked_uncollectible"
    assert stripe_client.v1.invoices.void_invoice(bad.id).status == "void"

    draft = stripe_client.v1.invoices.create(params={"customer": cus.id, "metadata": {"a": "1"}})
    updated = stripe_client.v1.invoices.update(
        draft.id, params={"description": "Fixed", "metadata": {"b": "2"}}
    )
    assert updated.metadata is not None
    assert (updated.description, updated.metadata.to_dict()) == ("Fixed", {"a": "1", "b": "2"})
    update_event = stripe_client.v1.events.list(params={"limit": 1}).data[0]
    assert update_event.type == "invoice.updated"
    assert update_event.data.previous_attributes is not None
    assert update_event.data.previous_attributes["description"] is None
    deleted = stripe_client.v1.invoices.delete(draft.id)
    assert deleted.deleted is True
    assert event_types(stripe_client)[-1] == "invoice.deleted"
    with pytest.raises(stripe.InvalidRequestError) as not_draft:
        stripe_client.v1.invoices.delete(voided.id)
    assert "draft" in str(not_draft.value.user_message)
    final = open_invoice()
    with pytest.raises(stripe.InvalidRequestError) as locked:
        stripe_client.v1.invoices.update(
            final.id, params={"days_until_due": 3, "collection_method": "send_invoice"}
        )
    assert locked.value.error is not None and locked.value.error.code == "invoice_not_editable"
    tagged = stripe_client.v1.invoices.update(final.id, params={"metadata": {"ok": "yes"}})
    assert tagged.metadata is not None
    assert tagged.metadata.to_dict() == {"ok": "yes"}


def test_invoice_lines_page_by_cursor(stripe_client: stripe.StripeClient) -> None:
    cus = customer(stripe_client)
    for amount in range(1, 6):
        stripe_client.v1.invoice_items.create(
            params={"customer": cus.id, "amount": amount, "currency": "usd"}
        )
    invoice = stripe_client.v1.invoices.create(
        params={"customer": cus.id, "pending_invoice_items_behavior": "include"}
    )
    first = stripe_client.v1.invoices.line_items.list(invoice.id, params={"limit": 2})
    assert [line.amount for line in first.data] == [1, 2] and first.has_more
    rest = stripe_client.v1.invoices.line_items.list(
        invoice.id, params={"limit": 10, "starting_after": first.data[-1].id}
    )
    assert [line.amount for line in rest.data] == [3, 4, 5] and not rest.has_more
    assert rest.url == f"/v1/invoices/{invoice.id}/lines"


def test_unmodelled_invoice_parameters_are_refused(stripe_client: stripe.StripeClient) -> None:
    cus = customer(stripe_client)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        stripe_client.v1.invoices.create(params={"customer": cus.id, "footer": "Thanks"})
    assert "does not model" in str(exc.value.user_message)
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        stripe_client.v1.invoices.create(params={"customer": cus.id, "not_a_param": "x"})  # type: ignore[arg-type]
    assert unknown.value.error is not None and unknown.value.error.code == "parameter_unknown"


# ----------------------------------------------------------------------------------------- subscriptions


def test_a_subscription_without_a_payment_method_is_incomplete(stripe_client: stripe.StripeClient) -> None:
    """Stripe's default `allow_incomplete`: the first invoice is created and finalized; with nothing to
    charge it stays open and the subscription `incomplete` (no payment was attempted)."""
    cus = customer(stripe_client)
    price = monthly_price(stripe_client)
    mark = last_event_id(stripe_client)
    sub = stripe_client.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": price.id}], "expand": ["latest_invoice"]}
    )
    assert sub.status == "incomplete"
    invoice = sub.latest_invoice
    assert isinstance(invoice, stripe.Invoice)
    assert (invoice.status, invoice.amount_due, invoice.billing_reason) == (
        "open",
        1500,
        "subscription_create",
    )
    types = event_types(stripe_client, mark)
    assert types == [
        "customer.updated",  # its currency, set by its first subscription
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "payment_intent.created",
    ]
    created = stripe_client.v1.events.list(params={"type": "customer.subscription.created"}).data[0]
    assert created.data.object["status"] == "incomplete"


def test_a_subscription_is_charged_to_the_customers_default_payment_method(
    stripe_client: stripe.StripeClient,
) -> None:
    cus = customer(stripe_client, "pm_card_visa")
    price = monthly_price(stripe_client)
    mark = last_event_id(stripe_client)
    sub = stripe_client.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": price.id}], "expand": ["latest_invoice"]}
    )
    assert sub.status == "active"
    assert isinstance(sub.latest_invoice, stripe.Invoice) and sub.latest_invoice.status == "paid"
    assert event_types(stripe_client, mark) == [
        "customer.updated",  # its currency, set by its first subscription
        "customer.subscription.created",
        "invoice.created",
        *PAID,
    ]
    created = stripe_client.v1.events.list(params={"type": "customer.subscription.created"}).data[0]
    assert created.data.object["status"] == "active"


def test_the_subscriptions_own_payment_method_comes_first(stripe_client: stripe.StripeClient) -> None:
    cus = customer(stripe_client, "pm_card_visa")
    declining = stripe_client.v1.payment_methods.attach(
        "pm_card_chargeCustomerFail", params={"customer": cus.id}
    )
    price = monthly_price(stripe_client)
    sub = stripe_client.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": price.id}], "default_payment_method": declining.id}
    )
    assert sub.status == "incomplete"
    assert sub.default_payment_method == declining.id
    assert event_types(stripe_client)[-1] == "invoice.payment_failed"


def test_error_if_incomplete_answers_402_and_creates_nothing(stripe_client: stripe.StripeClient) -> None:
    cus = customer(stripe_client, "pm_card_chargeCustomerFail")
    price = monthly_price(stripe_client)
    mark = last_event_id(stripe_client)
    with pytest.raises(stripe.CardError) as exc:
        stripe_client.v1.subscriptions.create(
            params={
                "customer": cus.id,
                "items": [{"price": price.id}],
                "payment_behavior": "error_if_incomplete",
            }
        )
    assert exc.value.http_status == 402
    body = exc.value.json_body
    assert isinstance(body, dict)
    error = body["error"]
    assert (error["type"], error["code"], error["decline_code"]) == (
        "card_error",
        "card_declined",
        "generic_decline",
    )
    assert stripe_client.v1.subscriptions.list(params={"customer": cus.id, "status": "all"}).data == []
    assert stripe_client.v1.invoices.list(params={"customer": cus.id}).data == []
    assert event_types(stripe_client, mark) == []
    assert stripe_client.v1.customers.retrieve(cus.id).next_invoice_sequence == 1

    bare = customer(stripe_client)
    with pytest.raises(stripe.InvalidRequestError) as no_pm:
        stripe_client.v1.subscriptions.create(
            params={
                "customer": bare.id,
                "items": [{"price": price.id}],
                "payment_behavior": "error_if_incomplete",
            }
        )
    assert "no attached payment source" in str(no_pm.value.user_message)
    assert stripe_client.v1.subscriptions.list(params={"customer": bare.id, "status": "all"}).data == []

    ok = customer(stripe_client, "pm_card_visa")
    sub = stripe_client.v1.subscriptions.create(
        params={"customer": ok.id, "items": [{"price": price.id}], "payment_behavior": "error_if_incomplete"}
    )
    assert sub.status == "active"


def test_default_incomplete_leaves_the_first_invoice_to_confirm(stripe_client: stripe.StripeClient) -> None:
    cus = customer(stripe_client, "pm_card_visa")
    price = monthly_price(stripe_client)
    sub = stripe_client.v1.subscriptions.create(
        params={
            "customer": cus.id,
            "items": [{"price": price.id}],
            "payment_behavior": "default_incomplete",
            "expand": ["latest_invoice.confirmation_secret"],
        }
    )
    assert sub.status == "incomplete"
    invoice = sub.latest_invoice
    assert isinstance(invoice, stripe.Invoice) and invoice.status == "open"
    assert invoice.confirmation_secret is not None
    assert invoice.confirmation_secret.type == "payment_intent"
    assert "_secret_" in invoice.confirmation_secret.client_secret
    assert event_types(stripe_client)[-1] == "payment_intent.created"  # nothing was attempted
    plain = stripe_client.v1.invoices.retrieve(invoice.id)
    assert plain.confirmation_secret is None  # includable: only when expanded


def test_payment_behavior_on_updates_and_resume(stripe_client: stripe.StripeClient) -> None:
    cus = customer(stripe_client, "pm_card_visa")
    price = monthly_price(stripe_client)
    sub = stripe_client.v1.subscriptions.create(params={"customer": cus.id, "items": [{"price": price.id}]})
    with pytest.raises(stripe.InvalidRequestError) as on_create:
        stripe_client.v1.subscriptions.create(
            params={
                "customer": cus.id,
                "items": [{"price": price.id}],
                "payment_behavior": "pending_if_incomplete",
            }
        )
    assert on_create.value.error is not None and on_create.value.error.param == "payment_behavior"
    with pytest.raises(stripe.InvalidRequestError) as pending_metadata:
        stripe_client.v1.subscriptions.update(
            sub.id, params={"payment_behavior": "pending_if_incomplete", "metadata": {"a": "b"}}
        )
    assert pending_metadata.value.error is not None and pending_metadata.value.error.param == "metadata"
    updated = stripe_client.v1.subscriptions.update(
        sub.id,
        params={
            "payment_behavior": "pending_if_incomplete",
            "items": [{"id": sub["items"].data[0].id, "quantity": 2}],
        },
    )
    assert updated["items"].data[0].quantity == 2 and updated.pending_update is None
    with pytest.raises(stripe.InvalidRequestError) as resume:
        stripe_client.v1.subscriptions.resume(sub.id)
    assert "not paused" in str(resume.value.user_message)
    with pytest.raises(stripe.InvalidRequestError) as pause:
        stripe_client.v1.subscriptions.update(sub.id, params={"pause_collection": {"behavior": "void"}})
    assert "does not model" in str(pause.value.user_message)


def intent_of(invoice: Any) -> str:
    """The PaymentIntent behind an invoice's `confirmation_secret` (`pi_…_secret_…`)."""
    assert invoice.confirmation_secret is not None
    return str(invoice.confirmation_secret.client_secret).split("_secret_")[0]


def test_confirming_the_first_invoices_intent_activates_the_subscription(
    stripe_client: stripe.StripeClient,
) -> None:
    """`default_incomplete` as Stripe's guides use it: the client confirms the PaymentIntent of
    `latest_invoice.confirmation_secret`; the invoice is paid and the subscription becomes active."""
    cus = customer(stripe_client)
    price = monthly_price(stripe_client)
    sub = stripe_client.v1.subscriptions.create(
        params={
            "customer": cus.id,
            "items": [{"price": price.id}],
            "payment_behavior": "default_incomplete",
            "expand": ["latest_invoice.confirmation_secret"],
        }
    )
    mark = last_event_id(stripe_client)
    intent = stripe_client.v1.payment_intents.confirm(
        intent_of(sub.latest_invoice), params={"payment_method": "pm_card_visa"}
    )
    assert intent.status == "succeeded"
    assert event_types(stripe_client, mark) == [
        "charge.succeeded",
        "payment_intent.succeeded",
        "invoice.paid",
        "invoice.payment_succeeded",
        "customer.subscription.updated",
    ]
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "active"
    latest = sub.latest_invoice
    assert isinstance(latest, stripe.Invoice)
    assert stripe_client.v1.invoices.retrieve(latest.id).status == "paid"


def test_paying_an_incomplete_subscriptions_invoice_activates_it(stripe_client: stripe.StripeClient) -> None:
    cus = customer(stripe_client)
    price = monthly_price(stripe_client)
    sub = stripe_client.v1.subscriptions.create(params={"customer": cus.id, "items": [{"price": price.id}]})
    assert sub.status == "incomplete"
    pm = stripe_client.v1.payment_methods.attach("pm_card_visa", params={"customer": cus.id})
    paid = stripe_client.v1.invoices.pay(str(sub.latest_invoice), params={"payment_method": pm.id})
    assert paid.status == "paid"
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "active"
    assert event_types(stripe_client)[-1] == "customer.subscription.updated"


def test_three_d_secure_on_the_first_invoice(stripe_client: stripe.StripeClient, emulator: Any) -> None:
    """Card 4000 0000 0000 3220 needs 3-D Secure: `allow_incomplete` leaves the subscription incomplete
    with `invoice.payment_action_required` until the customer authenticates; `error_if_incomplete`
    answers 402 `subscription_payment_intent_requires_action`; `/pay` answers 402
    `invoice_payment_intent_requires_action` (docs.stripe.com/billing/subscriptions/overview)."""
    cus = customer(stripe_client, "pm_card_threeDSecure2Required")
    price = monthly_price(stripe_client)
    with pytest.raises(stripe.CardError) as strict:
        stripe_client.v1.subscriptions.create(
            params={
                "customer": cus.id,
                "items": [{"price": price.id}],
                "payment_behavior": "error_if_incomplete",
            }
        )
    assert strict.value.http_status == 402
    assert strict.value.code == "subscription_payment_intent_requires_action"
    assert stripe_client.v1.subscriptions.list(params={"customer": cus.id, "status": "all"}).data == []

    sub = stripe_client.v1.subscriptions.create(
        params={
            "customer": cus.id,
            "items": [{"price": price.id}],
            "expand": ["latest_invoice.confirmation_secret"],
        }
    )
    assert sub.status == "incomplete"
    assert event_types(stripe_client)[-2:] == [
        "payment_intent.requires_action",
        "invoice.payment_action_required",
    ]
    request = urllib.request.Request(
        f"{emulator.url}/_emulator/payment_intents/{intent_of(sub.latest_invoice)}/authenticate",
        data=b'{"outcome": "succeeded"}',
        method="POST",
    )
    with urllib.request.urlopen(request) as answer:
        assert answer.status == 200
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "active"

    stripe_client.v1.invoice_items.create(params={"customer": cus.id, "amount": 500, "currency": "usd"})
    invoice = stripe_client.v1.invoices.create(
        params={"customer": cus.id, "pending_invoice_items_behavior": "include"}
    )
    fresh = stripe_client.v1.payment_methods.attach(
        "pm_card_threeDSecure2Required", params={"customer": cus.id}
    )
    with pytest.raises(stripe.CardError) as pay:
        stripe_client.v1.invoices.pay(invoice.id, params={"payment_method": fresh.id})
    assert (pay.value.http_status, pay.value.code) == (402, "invoice_payment_intent_requires_action")
    assert event_types(stripe_client)[-1] == "invoice.payment_action_required"
