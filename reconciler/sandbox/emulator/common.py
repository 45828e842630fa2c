"""Facts and checks several Stripe resources share: currencies, ids, metadata, statement descriptors,
addresses, billing periods. No state: every function here is pure."""

from __future__ import annotations

import calendar
import re
import secrets
import string
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .errors import JSON, param_error

MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_LEN = 40
MAX_METADATA_VALUE_LEN = 500
MAX_STATEMENT_DESCRIPTOR_LEN = 22

# The currencies Stripe names in its "Invalid currency" error (in that order), plus later additions.

_CURRENCIES_IN_ORDER = [
    "usd",
    "aed",
    "afn",
    "all",
    "amd",
    "ang",
    "aoa",
    "ars",
    "aud",
    "awg",
    "azn",
    "bam",
    "bbd",
    "bdt",
    "bgn",
    "bhd",
    "bif",
    "bmd",
    "bnd",
    "bob",
    "brl",
    "bsd",
    "bwp",
    "byn",
    "bzd",
    "cad",
    "cdf",
    "chf",
    "clp",
    "cny",
    "cop",
    "crc",
    "cve",
    "czk",
    "djf",
    "dkk",
    "dop",
    "dzd",
    "egp",
    "etb",
    "eur",
    "fjd",
    "fkp",
    "gbp",
    "gel",
    "gip",
    "gmd",
    "gnf",
    "gtq",
    "gyd",
    "hkd",
    "hnl",
    "htg",
    "huf",
    "idr",
    "ils",
    "inr",
    "isk",
    "jmd",
    "jod",
    "jpy",
    "kes",
    "kgs",
    "khr",
    "kmf",
    "krw",
    "kwd",
    "kyd",
    "kzt",
    "lak",
    "lbp",
    "lkr",
    "lrd",
    "lsl",
    "mad",
    "mdl",
    "mga",
    "mkd",
    "mmk",
    "mnt",
    "mop",
    "mur",
    "mvr",
    "mwk",
    "mxn",
    "myr",
    "mzn",
    "nad",
    "ngn",
    "nio",
    "nok",
    "npr",
    "nzd",
    "omr",
    "pab",
    "pen",
    "pgk",
    "php",
    "pkr",
    "pln",
    "pyg",
    "qar",
    "ron",
    "rsd",
    "rub",
    "rwf",
    "sar",
    "sbd",
    "scr",
    "sek",
    "sgd",
    "shp",
    "sle",
    "sos",
    "srd",
    "std",
    "szl",
    "thb",
    "tjs",
    "tnd",
    "top",
    "try",
    "ttd",
    "twd",
    "tzs",
    "uah",
    "ugx",
    "uyu",
    "uzs",
    "vnd",
    "vuv",
    "wst",
    "xaf",
    "xcd",
    "xcg",  # the Caribbean guilder replaced ANG in 2025
    "xof",
    "xpf",
    "yer",
    "zar",
    "zmw",
    "usdc",
]
SUPPORTED_CURRENCIES: frozenset[str] = frozenset(_CURRENCIES_IN_ORDER)

_ALNUM = string.ascii_letters + string.digits


def random_id(prefix: str, length: int) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


def check_currency(value: str, param: str) -> str:
    code = value.lower()
    if code not in SUPPORTED_CURRENCIES:
        raise param_error(
            f"Invalid currency: {code}. Stripe currently supports these currencies: "
            f"{', '.join(_CURRENCIES_IN_ORDER)}",
            param,
        )
    return code


def check_descriptor(value: str, param: str) -> None:
    if len(value) > MAX_STATEMENT_DESCRIPTOR_LEN or any(c in value for c in "<>\\\"'*"):
        raise param_error(
            f"The statement descriptor must be at most {MAX_STATEMENT_DESCRIPTOR_LEN} characters and "
            "must not contain any of these characters: < > \\ \" ' *",
            param,
        )


def merge_metadata(current: Mapping[str, str], update: Any, param: str) -> dict[str, str]:
    if update is None:
        return dict(current)
    if update == "":
        return {}
    merged = dict(current)
    for key, value in update.items():
        if len(key) > MAX_METADATA_KEY_LEN:
            raise param_error(
                f"Metadata keys can have up to {MAX_METADATA_KEY_LEN} characters, but you passed in "
                f"a key with {len(key)} characters.",
                f"{param}[{key}]",
            )
        if len(value) > MAX_METADATA_VALUE_LEN:
            raise param_error(
                f"Metadata values can have up to {MAX_METADATA_VALUE_LEN} characters, but you passed "
                f"in a value that is {len(value)} characters.",
                f"{param}[{key}]",
            )
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    if len(merged) > MAX_METADATA_KEYS:
        raise param_error(
            f"Metadata can have up to {MAX_METADATA_KEYS} keys, but you passed in {len(merged)} keys.", param
        )
    return merged


def address(given: JSON) -> JSON:
    keys = ("city", "country", "line1", "line2", "postal_code", "state")
    return {k: given.get(k) or None for k in keys}


EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def period_end(start: int, recurring: JSON) -> int:
    """End of a billing period that starts at `start` (UTC; month ends clamp, as Stripe's do)."""
    interval, count = recurring["interval"], int(recurring["interval_count"])
    if interval in ("day", "week"):
        return start + count * (86400 if interval == "day" else 7 * 86400)
    begin = datetime.fromtimestamp(start, tz=UTC)
    months = begin.month - 1 + count * (12 if interval == "year" else 1)
    year, month = begin.year + months // 12, months % 12 + 1
    day = min(begin.day, calendar.monthrange(year, month)[1])
    return int(begin.replace(year=year, month=month, day=day).timestamp())
