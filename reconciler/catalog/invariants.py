"""Rules across a plan's keys and across plans, checked on resolved plans: a currency Stripe supports,
a paid plan with a price, currency and cycle, exactly one active default plan without a price; and the
catalog's one webhook endpoint (or `--webhook-url`) with all six events of the billing guide.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from reconciler import errors, model
from reconciler.catalog.problems import Doc, printable, problem
from reconciler.catalog.resolution import Entry
from reconciler.catalog.schema import webhook_url_pattern

# Deliberately also in sandbox/emulator/common.py: the emulator imports nothing of the core (and plays
# Stripe, whose list has a few more entries, e.g. usdc).
_CURRENCY_CODES = """
    usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl bsd bwp byn bzd
    cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp gbp gel gip gmd gnf gtq gyd
    hkd hnl htg huf idr ils inr isk jmd jod jpy kes kgs khr kmf krw kwd kyd kzt lak lbp lkr lrd lsl mad
    mdl mga mkd mmk mnt mop mur mvr mwk mxn myr mzn nad ngn nio nok npr nzd omr pab pen pgk php pkr
    pln pyg qar ron rsd rub rwf sar sbd scr sek sgd shp sle sos srd std szl thb tjs tnd top try
    ttd twd tzs uah ugx uyu uzs vnd vuv wst xaf xcd xcg xof xpf yer zar zmw
"""
STRIPE_CURRENCIES: frozenset[str] = frozenset(_CURRENCY_CODES.split())
"""Presentment currencies Stripe accepts for Prices (lowercase ISO 4217), from Stripe's
"Supported currencies" page and its "Invalid currency" error. Not accepted: HRK (Croatia uses EUR
since 2023) and the replaced MRO, SLL and SVC. The emulator accepts the same set (plus USDC)."""


def plan_problems(entry: Entry, plan: model.PlanSpec) -> Iterator[str]:
    if plan.currency is not None and plan.currency not in STRIPE_CURRENCIES:
        yield entry.problem(f"'{plan.currency}' is not a currency Stripe supports", "currency")
    if plan.is_default:
        if not plan.is_active:
            yield entry.problem("an inactive plan cannot be the default plan", "isDefault")
        if plan.price_cents:
            yield entry.problem(
                f"the default plan must have no price (absent, null or 0), not {plan.price_cents}: "
                "it gets no Stripe Price",
                "priceCents",
            )
        return
    if not plan.is_active:
        return
    if not plan.price_cents or plan.price_cents <= 0:
        given = f"not {plan.price_cents}" if plan.price_cents else "not missing or 0"
        yield entry.problem(f"must be a positive integer for an active paid plan, {given}", "priceCents")
    if plan.currency is None:
        yield entry.problem("required for an active paid plan (e.g. usd)", "currency")
    if plan.billing_cycle is None:
        yield entry.problem("required for an active paid plan: monthly or annual", "billingCycle")


def default_problems(label: str, resolved: list[tuple[Entry, model.PlanSpec]]) -> Iterator[str]:
    defaults = [(entry, plan) for entry, plan in resolved if plan.is_default and plan.is_active]
    if not defaults:
        yield (
            f"{label}: no default plan: exactly one active plan must have isDefault: true "
            "(the free plan new organizations get)"
        )
    first = defaults[0][0] if defaults else None
    for entry, _plan in defaults[1:]:
        assert first is not None
        yield entry.problem(
            f"a second default plan: '{first.slug}' at {first.at()} is already the default; "
            "exactly one active plan may have isDefault: true",
            "isDefault",
        )


def webhook_endpoint(docs: list[Doc], problems: list[str]) -> model.WebhookEndpointSpec | None:
    """The one `webhookEndpoint` the catalog declares (in at most one file), events defaulted."""
    declared = [
        d for d in docs if isinstance(d.data, dict) and isinstance(d.data.get("webhookEndpoint"), dict)
    ]
    if len(declared) > 1:
        problems.append(
            problem(
                declared[1],
                ("webhookEndpoint",),
                f"declared again (first in {declared[0].file}); one webhook endpoint per catalog",
            )
        )
        return None
    if not declared:
        return None
    doc = declared[0]
    if any(item.path[:1] == ("webhookEndpoint",) for item in doc.found):
        return None  # the schema check reported it
    data = doc.data["webhookEndpoint"]
    url, events = data.get("url"), data.get("events", list(model.WEBHOOK_EVENTS))
    if (
        not isinstance(url, str)
        or not isinstance(events, list)
        or not all(isinstance(e, str) for e in events)
    ):
        return None  # the schema check reported it
    if "*" not in events and (missing := [e for e in model.WEBHOOK_EVENTS if e not in events]):
        problems.append(
            problem(
                doc,
                ("webhookEndpoint", "events"),
                f"misses {', '.join(missing)}: kuploy-cloud needs all six events of the billing guide",
            )
        )
        return None
    return model.WebhookEndpointSpec(url=url, events=tuple(sorted(set(events))))


def webhook_endpoint_from_flag(url: str) -> model.WebhookEndpointSpec:
    """`--webhook-url URL`: the endpoint with the six events of the guide, URL checked as the schema does."""
    if not re.match(webhook_url_pattern(), url):
        raise errors.ConfigError(
            f"--webhook-url must be an absolute http(s) URL ending {model.WEBHOOK_PATH}, "
            f"not {printable(url)!r}"
        )
    return model.WebhookEndpointSpec(url=url)
