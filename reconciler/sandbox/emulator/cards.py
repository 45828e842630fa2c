"""Stripe's test cards (docs.stripe.com/testing) this emulator knows, and what paying with each does."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import JSON, admin_error

# Stripe's test cards (docs.stripe.com/testing) this emulator knows: outcome, decline code.
TEST_CARDS: dict[str, tuple[str, str | None]] = {
    "4242424242424242": ("succeeded", None),
    "4000000000000002": ("declined", "generic_decline"),
    "4000000000009995": ("declined", "insufficient_funds"),
    "4000000000003220": ("requires_action", None),
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


def decline(code: str | None) -> JSON:
    message = {
        "insufficient_funds": "Your card has insufficient funds.",
    }.get(code or "", "Your card was declined.")
    return {"code": "card_declined", "decline_code": code, "message": message, "type": "card_error"}
