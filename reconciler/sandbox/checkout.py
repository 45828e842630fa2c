"""`sandbox checkout`: the billing guide's "Test your setup", end to end, without a Stripe account.

A listener is started on a free local port, a webhook endpoint for the guide's six events is
registered with the Stripe emulator (its signing secret goes straight to the listener, never to
the output), a Checkout Session for the plan's Price is completed with the given test card, the
emulator's signed events are delivered, and the subscription is shown as kuploy-cloud recorded it
(`cloud_subscriptions`) beside what Stripe says.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from psycopg.rows import dict_row

from reconciler import api
from reconciler.connections import connect_postgres, stripe_client
from reconciler.errors import KuployError
from reconciler.listener import create_app
from reconciler.model import WEBHOOK_EVENTS, WEBHOOK_PATH
from reconciler.settings import Secret, Settings
from reconciler.state.from_postgres import read_rows

CARDS = {
    "4242424242424242": "succeeds",
    "4000000000000002": "is declined",
    "4000000000003220": "requires 3D Secure",
}


@dataclass
class CheckoutReport:
    card: str
    outcome: str  # what the emulator's Checkout answered: succeeded, declined, requires_action, failed
    steps: list[str] = field(default_factory=list)
    kuploy: dict[str, Any] | None = None
    stripe: dict[str, Any] | None = None

    @property
    def consistent(self) -> bool:
        """kuploy-cloud and Stripe agree, and the card did what the guide says it does."""
        if self.outcome in ("declined", "requires_action", "failed"):
            return self.kuploy is None and self.stripe is None
        if self.kuploy is None or self.stripe is None:
            return False
        keys = ("status", "stripePriceId", "planId")
        return all(self.kuploy.get(k) == self.stripe.get(k) for k in keys)


def render_checkout(report: CheckoutReport, *, card: str) -> str:
    """The report as a side-by-side table of the subscription as kuploy-cloud and as Stripe see it,
    and the result line; `card` as the user typed it (the report holds it without spaces). Here, not
    in `render`, because the core never imports the sandbox."""
    ours, theirs = report.kuploy or {}, report.stripe or {}
    fields = sorted(set(ours) | set(theirs))
    lines = [f"{'field':<22} {'kuploy-cloud (cloud_subscriptions)':<40} Stripe"]
    lines += [f"{name:<22} {ours.get(name, '')!s:<40} {theirs.get(name, '')}" for name in fields]
    if not fields:
        lines.append(
            f"no subscription: the card {card} was {report.outcome}, nothing was recorded on either side"
        )
    lines.append(f"Result: {'consistent' if report.consistent else 'INCONSISTENT'} ({report.outcome})")
    return "".join(f"{line}\n" for line in lines)


def run_checkout(
    settings: Settings, *, plan: str, organization: str, card: str, authenticate: bool = True
) -> CheckoutReport:
    number = card.replace(" ", "")
    if number not in CARDS:
        raise KuployError(f"card {card} is not one of the guide's test cards: {', '.join(CARDS)}")
    if not settings.stripe_api_base:
        raise KuployError("sandbox checkout needs the Stripe emulator (sandbox mode or STRIPE_API_BASE)")
    api.migrate(settings)
    with connect_postgres(settings) as conn:
        row = read_rows(conn).get(plan)
    if row is None or not row.spec.is_paid or not row.stripe_price_id:
        raise KuployError(
            f"plan {plan!r} has no active Stripe Price: apply a catalog with it first "
            "(e.g. kuploy-reconciler apply examples/ --auto-approve)"
        )
    client = stripe_client(settings).client
    report = CheckoutReport(card=number, outcome="")
    port = _free_port()
    params: dict[str, Any] = {
        "url": f"http://127.0.0.1:{port}{WEBHOOK_PATH}",
        "enabled_events": sorted(WEBHOOK_EVENTS),
        "description": "kuploy-reconciler sandbox checkout",
    }
    endpoint = client.v1.webhook_endpoints.create(params=params)  # type: ignore[arg-type]
    report.steps.append(f"registered webhook endpoint {endpoint.id} for the guide's six events")
    try:
        app = create_app(settings, webhook_secret=Secret(str(endpoint.secret)))
        with _serving(app, port):
            report.steps.append(f"listener on http://127.0.0.1:{port}{WEBHOOK_PATH}")
            session = client.v1.checkout.sessions.create(
                params={
                    "mode": "subscription",
                    "line_items": [{"price": row.stripe_price_id, "quantity": 1}],
                    "client_reference_id": organization,
                    "success_url": "https://kuploy.example/billing/success",
                    "cancel_url": "https://kuploy.example/billing/cancel",
                }
            )
            report.steps.append(f"checkout session {session.id} for plan {plan!r} ({row.stripe_price_id})")
            answer = _admin(settings, f"/_emulator/checkout/{session.id}/complete", {"card": number})
            report.outcome = str(answer.get("outcome"))
            report.steps.append(f"card {card} ({CARDS[number]}): {report.outcome}")
            if report.outcome == "requires_action" and authenticate:
                answer = _admin(
                    settings, f"/_emulator/payment_intents/{answer['payment_intent']}/authenticate", {}
                )
                report.outcome = str(answer.get("outcome"))
                report.steps.append(f"3D Secure authenticated: {report.outcome}")
            _admin(settings, "/_emulator/deliveries/flush", {})
            subscription_id = answer.get("subscription")
            if isinstance(subscription_id, str):
                report.kuploy = _wait_for_row(settings, subscription_id)
                report.stripe = _stripe_view(client, subscription_id, report.kuploy)
    finally:
        client.v1.webhook_endpoints.delete(endpoint.id)
    return report


def _stripe_view(client: Any, subscription_id: str, kuploy: dict[str, Any] | None) -> dict[str, Any]:
    sub = client.v1.subscriptions.retrieve(subscription_id)
    item = sub["items"].data[0]
    invoice_status = None
    if sub.latest_invoice:
        invoice_id = sub.latest_invoice if isinstance(sub.latest_invoice, str) else sub.latest_invoice.id
        invoice_status = client.v1.invoices.retrieve(invoice_id).status
    return {
        "stripeSubscriptionId": sub.id,
        "organizationId": (sub.metadata.to_dict() if sub.metadata else {}).get("organizationId")
        or (kuploy or {}).get("organizationId"),
        "stripeCustomerId": sub.customer if isinstance(sub.customer, str) else sub.customer.id,
        "stripePriceId": item.price.id,
        "planId": (item.price.metadata.to_dict() if item.price.metadata else {}).get("kuploy_plan"),
        "status": sub.status,
        "currentPeriodEnd": item.to_dict().get("current_period_end"),
        "cancelAtPeriodEnd": sub.cancel_at_period_end,
        "latestInvoiceStatus": invoice_status,
    }


def _wait_for_row(settings: Settings, subscription_id: str, timeout: float = 10.0) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    with connect_postgres(settings) as conn, conn.cursor(row_factory=dict_row) as cur:
        while True:
            row = cur.execute(
                'SELECT * FROM cloud_subscriptions WHERE "stripeSubscriptionId" = %s', (subscription_id,)
            ).fetchone()
            if row is not None or time.monotonic() > deadline:
                if row is not None and row.get("currentPeriodEnd") is not None:
                    row["currentPeriodEnd"] = int(row["currentPeriodEnd"].timestamp())
                return dict(row) if row is not None else None
            time.sleep(0.1)


def _admin(settings: Settings, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The emulator's test-only routes (complete a checkout, 3D Secure, flush deliveries)."""
    assert settings.stripe_api_base
    request = urllib.request.Request(
        settings.stripe_api_base.rstrip("/") + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        answer = json.loads(e.read() or b"{}")
        message = answer.get("error", {}).get("message", str(e))
        raise KuployError(f"the Stripe emulator refused {path}: {message}") from e
    except OSError as e:
        raise KuployError(f"cannot reach the Stripe emulator at {settings.stripe_api_base}: {e}") from e
    return answer if isinstance(answer, dict) else {}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _serving(app: Any, port: int) -> Iterator[None]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="sandbox-listener", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise KuployError("the sandbox listener did not start")
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)
