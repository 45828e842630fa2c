"""`stripe logs tail` (the official CLI, pinned in tools/package.json) against the emulator: a session
with the `request_logs` feature, and each request made through the SDK printed by the CLI as it prints
Stripe's (docs/stripe-emulator.md, "stripe logs tail")."""

from __future__ import annotations

import time

import pytest
import stripe

from reconciler.sandbox.emulator import RunningEmulator

import stripe_cli
from conftest import TEST_KEY
from test_stripe_cli import WAIT
from test_stripe_cli_listen import QUIET

CLI = stripe_cli.find_cli()
LINE_START = r"(?m)^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "  # the CLI prints the request's local time first
pytestmark = pytest.mark.skipif(CLI is None, reason=stripe_cli.INSTALL_HINT)


@pytest.fixture
def cli() -> str:
    assert CLI is not None  # the module is skipped otherwise
    return CLI


def request_id(call: stripe.StripeObject) -> str:
    response = call.last_response
    assert response is not None
    return str(response.request_id)


def test_logs_tail_prints_each_request_made_through_the_sdk(
    cli: str, emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    with stripe_cli.tailing(cli, [], api_base=emulator.url, api_key=TEST_KEY) as tail:
        created = request_id(stripe_client.v1.products.create(params={"name": "Tailed"}))
        with pytest.raises(stripe.InvalidRequestError) as missing:
            stripe_client.v1.products.retrieve("prod_missing")
        tail.wait_for_stdout(rf"{LINE_START}\[200\] POST /v1/products \[{created}\]", WAIT)
        failed = rf"{LINE_START}\[404\] GET /v1/products/prod_missing \[{missing.value.request_id}\]"
        tail.wait_for_stdout(failed + r"\nType: invalid_request_error\nCode: resource_missing\n", WAIT)
        tail.wait_for_stdout(r"Message: No such product: 'prod_missing'\nParam: id\n", WAIT)
        assert "/v1/stripecli/sessions" not in tail.output()  # the CLI hides its own session's request


def test_logs_tail_applies_its_filters(
    cli: str, emulator: RunningEmulator, stripe_client: stripe.StripeClient
) -> None:
    args = ["--filter-http-method", "POST", "--filter-status-code-type", "2XX"]
    with stripe_cli.tailing(cli, args, api_base=emulator.url, api_key=TEST_KEY) as tail:
        with pytest.raises(stripe.InvalidRequestError):
            stripe_client.v1.products.create(params={"name": ""})  # a POST answered 400
        stripe_client.v1.products.list()  # a GET answered 200
        created = request_id(stripe_client.v1.products.create(params={"name": "Kept"}))
        tail.wait_for_stdout(rf"\[200\] POST /v1/products \[{created}\]", WAIT)
        time.sleep(QUIET)  # the CLI prints each message from its own goroutine: no order is assumed
        printed = [line for line in tail.output().splitlines() if "[req_" in line]
    assert len(printed) == 1, tail.output()
