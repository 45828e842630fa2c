"""Charges: made by PaymentIntents when they confirm (succeeded or failed); retrieve and list."""

from __future__ import annotations

import time

import stripe

from ..cards import decline
from ..context import Ctx
from ..errors import JSON
from ..listing import standard_routes
from ..params import MODELLED_PARAMS, PARAM_SPECS, spec_of
from ..registry import Kind, register_kind

_SELLER_MESSAGES = {
    "generic_decline": "The bank did not return any further details with this decline.",
    "insufficient_funds": "The bank returned the decline code `insufficient_funds`.",
    "authentication_required": "The bank returned the decline code `authentication_required`.",
}


def new_charge(ctx: Ctx, intent: JSON, method: JSON, decline_code: str | None) -> JSON:
    """The Charge of one confirmation attempt of `intent` with `method`: succeeded, or failed with
    `decline_code`. Stored; the caller emits its event."""
    failed = decline_code is not None
    charge: JSON = {
        "id": ctx.fresh_id("ch_", 24),
        "object": "charge",
        "amount": intent["amount"],
        "amount_captured": 0 if failed else intent["amount"],
        "amount_refunded": 0,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": None if failed else ctx.fresh_id("txn_", 24),
        "billing_details": method["billing_details"],
        "calculated_statement_descriptor": "KUPLOY SANDBOX",
        "captured": not failed,
        "created": int(time.time()),
        "currency": intent["currency"],
        "customer": intent["customer"],
        "description": intent["description"],
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "fraud_details": {},
        "livemode": ctx.livemode,
        "metadata": dict(intent["metadata"]),
        "on_behalf_of": None,
        "outcome": _outcome(decline_code),
        "paid": not failed,
        "payment_intent": intent["id"],
        "payment_method": method["id"],
        "payment_method_details": {
            "card": _card_details(ctx, intent, method["card"], failed),
            "type": "card",
        },
        "radar_options": {},
        "receipt_email": intent["receipt_email"],
        "receipt_number": None,
        "receipt_url": None if failed else f"https://pay.stripe.com/receipts/payment/{ctx.fresh_id('', 40)}",
        "refunded": False,
        "review": None,
        "shipping": intent["shipping"],
        "source": None,
        "source_transfer": None,
        "statement_descriptor": intent["statement_descriptor"],
        "statement_descriptor_suffix": intent["statement_descriptor_suffix"],
        "status": "failed" if failed else "succeeded",
        "transfer_data": None,
        "transfer_group": None,
    }
    if failed:
        error = decline(decline_code)
        charge["failure_code"] = error["code"]
        charge["failure_message"] = error["message"]
    ctx.put("charge", charge)
    return charge


def _outcome(decline_code: str | None) -> JSON:
    """The Charge's `outcome`: authorized, or declined by the issuer with `decline_code` (Radar's risk
    fields are fixed)."""
    outcome: JSON = {
        "advice_code": None,
        "network_advice_code": None,
        "network_decline_code": None,
        "network_status": "approved_by_network",
        "reason": None,
        "risk_level": "normal",
        "risk_score": 32,
        "seller_message": "Payment complete.",
        "type": "authorized",
    }
    if decline_code is not None:
        outcome.update(
            {
                "network_decline_code": "05",
                "network_status": "declined_by_network",
                "reason": decline_code,
                "seller_message": _SELLER_MESSAGES.get(
                    decline_code, "The bank did not return any further details with this decline."
                ),
                "type": "issuer_declined",
            }
        )
    return outcome


def _card_details(ctx: Ctx, intent: JSON, card: JSON, failed: bool) -> JSON:
    """`payment_method_details.card`: the PaymentMethod's card, and the authorization when it went
    through."""
    return {
        "amount_authorized": None if failed else intent["amount"],
        "authorization_code": None if failed else "123456",
        "brand": card["brand"],
        "checks": card["checks"],
        "country": card["country"],
        "exp_month": card["exp_month"],
        "exp_year": card["exp_year"],
        "extended_authorization": {"status": "disabled"},
        "fingerprint": card["fingerprint"],
        "funding": card["funding"],
        "incremental_authorization": {"status": "unavailable"},
        "installments": None,
        "last4": card["last4"],
        "mandate": None,
        "multicapture": {"status": "unavailable"},
        "network": card["brand"],
        "network_token": {"used": False},
        "network_transaction_id": None if failed else ctx.fresh_id("", 15),
        "overcapture": {"maximum_amount_capturable": intent["amount"], "status": "unavailable"},
        "regulated_status": card["regulated_status"],
        "three_d_secure": None,
        "wallet": None,
    }


register_kind(
    Kind(
        "charge",
        "charges",
        path="/v1/charges",
        expandable={
            "application": "",
            "application_fee": "",
            "balance_transaction": "",
            "customer": "customer",
            "failure_balance_transaction": "",
            "on_behalf_of": "",
            "payment_intent": "payment_intent",
            "review": "",
            "source_transfer": "",
            "transfer": "",
        },
        filters=("customer", "payment_intent"),
    )
)
standard_routes("charge")
PARAM_SPECS["charge.retrieve"] = spec_of(stripe.params.ChargeRetrieveParams)
PARAM_SPECS["charge.list"] = spec_of(stripe.params.ChargeListParams)
MODELLED_PARAMS["charge.list"] = frozenset(
    {"created", "customer", "ending_before", "expand", "limit", "payment_intent", "starting_after"}
)
