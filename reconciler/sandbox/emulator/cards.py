"""Stripe's test cards (docs.stripe.com/testing) this emulator knows: the card behind each number, test
PaymentMethod (`pm_card_*`) and test token (`tok_*`), what charging it does, and Stripe's decline bodies."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import JSON, admin_error


@dataclass(frozen=True, slots=True)
class Card:
    number: str
    brand: str  # visa, mastercard, amex
    decline_code: str | None = None  # every charge is declined with it
    # "none"; "until_setup": on-session payments need 3-D Secure until the card was authenticated once
    # (then off-session ones succeed); "always": every payment needs it (off-session ones are declined)
    authentication: str = "none"
    funding: str = "credit"
    attachable: bool = True  # attaching it to a customer succeeds (its zero-amount check passes)

    @property
    def last4(self) -> str:
        return self.number[-4:]


CARDS: dict[str, Card] = {
    c.number: c
    for c in (
        Card("4242424242424242", "visa"),
        Card("4000056655665556", "visa", funding="debit"),
        Card("5555555555554444", "mastercard"),
        Card("378282246310005", "amex"),
        Card("4000000000000002", "visa", decline_code="generic_decline", attachable=False),
        Card("4000000000009995", "visa", decline_code="insufficient_funds", attachable=False),
        # Attaching it to a customer succeeds; every charge is declined.
        Card("4000000000000341", "visa", decline_code="generic_decline"),
        Card("4000002500003155", "visa", authentication="until_setup"),
        Card("4000002760003184", "visa", authentication="always"),
        Card("4000000000003220", "visa", authentication="always"),
    )
}

# The test PaymentMethods and tokens Stripe documents, by the card they stand for.
_ALIASES: dict[str, str] = {
    "visa": "4242424242424242",
    "visa_debit": "4000056655665556",
    "mastercard": "5555555555554444",
    "amex": "378282246310005",
    "chargeDeclined": "4000000000000002",
    "visa_chargeDeclined": "4000000000000002",
    "chargeDeclinedInsufficientFunds": "4000000000009995",
    "visa_chargeDeclinedInsufficientFunds": "4000000000009995",
    "chargeCustomerFail": "4000000000000341",
    "authenticationRequiredSetupForOffSession": "4000002500003155",
    "authenticationRequired": "4000002760003184",
    "threeDSecure2Required": "4000000000003220",
}
TEST_PAYMENT_METHODS: dict[str, str] = {f"pm_card_{k}": v for k, v in _ALIASES.items()}
TEST_TOKENS: dict[str, str] = {f"tok_{k}": v for k, v in _ALIASES.items()}

# The outcome of paying with each card on the payment page (listed by the admin routes).
TEST_CARDS: dict[str, tuple[str, str | None]] = {
    number: ("requires_action", None)
    if card.authentication != "none"
    else ("declined", card.decline_code)
    if card.decline_code
    else ("succeeded", None)
    for number, card in CARDS.items()
}

DECLINE_MESSAGES = {
    "insufficient_funds": "Your card has insufficient funds.",
    "authentication_required": "Your card was declined. This transaction requires authentication.",
}


def card_arg(args: Mapping[str, Any]) -> str:
    card = args.get("card")
    if not isinstance(card, str):
        raise admin_error(f'"card" is required: one of {", ".join(TEST_CARDS)}.')
    return card


def card_outcome(card: str) -> tuple[str, str | None]:
    number = re.sub(r"[\s-]", "", card)
    if number not in TEST_CARDS:
        raise admin_error(f"Unknown test card {card!r}; this emulator knows {', '.join(TEST_CARDS)}.")
    return TEST_CARDS[number]


def card_of(number: str) -> Card:
    """The test card of a (possibly spaced) number; an admin error for an unknown one."""
    card_outcome(number)
    return CARDS[re.sub(r"[\s-]", "", number)]


def charge_result(card: Card, *, off_session: bool, authenticated: bool) -> tuple[str, str | None]:
    """What charging `card` does: ("succeeded", None), ("declined", decline code) or
    ("requires_action", None). `authenticated`: the card completed 3-D Secure with this merchant before."""
    needs_auth = card.authentication == "always" or (
        card.authentication == "until_setup" and not authenticated
    )
    if needs_auth:
        return ("declined", "authentication_required") if off_session else ("requires_action", None)
    if card.decline_code is not None:
        return "declined", card.decline_code
    return "succeeded", None


def decline(code: str | None) -> JSON:
    """The fields of Stripe's `card_error` for a decline (the caller adds charge, payment_intent...)."""
    error_code = "authentication_required" if code == "authentication_required" else "card_declined"
    return {
        "code": error_code,
        "decline_code": code,
        "doc_url": f"https://stripe.com/docs/error-codes/{error_code.replace('_', '-')}",
        "message": DECLINE_MESSAGES.get(code or "", "Your card was declined."),
        "type": "card_error",
    }


def authentication_failure(code: str, message: str, payment_method: JSON) -> JSON:
    """Stripe's `invalid_request_error` when the customer fails 3-D Secure (`code`:
    `payment_intent_authentication_failure` or `setup_intent_authentication_failure`), as an intent's
    last error."""
    return {
        "code": code,
        "doc_url": f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}",
        "message": message,
        "payment_method": payment_method,
        "type": "invalid_request_error",
    }


def card_details(ctx_mode: str, card: Card) -> JSON:
    """The `card` hash of a PaymentMethod for a test card (the fingerprint is stable per mode)."""
    fingerprint = hashlib.sha256(f"{ctx_mode}:{card.number}".encode()).hexdigest()[:16]
    return {
        "brand": card.brand,
        "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": None},
        "country": "US",
        "display_brand": card.brand,
        "exp_month": 12,
        "exp_year": 2034,
        "fingerprint": fingerprint,
        "funding": card.funding,
        "generated_from": None,
        "last4": card.last4,
        "networks": {"available": [card.brand], "preferred": None},
        "regulated_status": "unregulated",
        "three_d_secure_usage": {"supported": True},
        "wallet": None,
    }
