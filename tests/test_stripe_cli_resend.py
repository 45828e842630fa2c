"""`stripe events resend` (the official CLI, pinned in tools/package.json) against the emulator: with
`--webhook-endpoint` the event goes again to that endpoint, signed anew with its secret; without it
(`for_stripecli=true`), to the running `stripe listen`, which forwards it as the first time
(docs/stripe-emulator.md, "stripe listen" and "stripe events resend")."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import stripe

from reconciler.sandbox.emulator import RunningEmulator

import stripe_cli
from conftest import TEST_KEY
from test_emulator_checkout import Receiver
from test_stripe_cli import WAIT
from test_stripe_cli_listen import receiver

CLI = stripe_cli.find_cli()
pytestmark = pytest.mark.skipif(CLI is None, reason=stripe_cli.INSTALL_HINT)


@pytest.fixture
def cli() -> str:
    assert CLI is not None  # the module is skipped otherwise
    return CLI


@pytest.fixture
def endpoint_receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def resend(cli: str, api_base: str, event_id: str, *args: str) -> stripe_cli.CliResult:
    return stripe_cli.run(cli, ["events", "resend", event_id, *args], api_base=api_base, api_key=TEST_KEY)


def test_resend_to_a_webhook_endpoint_delivers_the_event_again_signed_with_its_secret(
    cli: str, emulator: RunningEmulator, stripe_client: stripe.StripeClient, endpoint_receiver: Receiver
) -> None:
    hook = stripe_client.v1.webhook_endpoints.create(
        params={"url": endpoint_receiver.url, "enabled_events": ["product.created"]}
    )
    product = stripe_client.v1.products.create(params={"name": "Resent by the CLI"})
    assert emulator.emulator.wait_for_deliveries(WAIT)
    (event,) = stripe_client.v1.events.list().data

    result = resend(cli, emulator.url, event.id, "--webhook-endpoint", hook.id)

    assert result.returncode == 0, result.describe()
    assert json.loads(result.stdout)["id"] == event.id  # the CLI prints the event
    assert emulator.emulator.wait_for_deliveries(WAIT)
    first, again = endpoint_receiver.events(str(hook.secret))
    assert again.id == first.id == event.id and again.data.object.id == product.id


def test_resend_errors_are_stripes(cli: str, emulator: RunningEmulator) -> None:
    """The CLI prints an API error's body and exits 0, as against Stripe."""
    result = resend(cli, emulator.url, "evt_unknown", "--webhook-endpoint", "we_unknown")
    assert result.returncode == 0, result.describe()
    error = json.loads(result.stdout)["error"]
    assert (error["code"], error["message"]) == ("resource_missing", "No such notification: 'evt_unknown'")


def test_resend_without_an_endpoint_goes_to_the_running_stripe_listen(
    cli: str, emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    with receiver() as got:
        args = ["--all-snapshot", "--forward-to", got.url]
        with stripe_cli.listening(cli, args, api_base=emulator.url, api_key=TEST_KEY) as listening:
            product = stripe_client.v1.products.create(params={"name": "Forwarded twice"})
            got.wait_for(1, listening)
            (event,) = stripe_client.v1.events.list().data
            result = resend(cli, emulator.url, event.id)
            assert result.returncode == 0, result.describe()
            first, again = got.wait_for(2, listening)
    for delivery in (first, again):
        forwarded = stripe.Webhook.construct_event(
            delivery.body.decode(), delivery.headers["Stripe-Signature"], listening.secret
        )
        assert (forwarded.id, forwarded.data.object.id) == (event.id, product.id)
