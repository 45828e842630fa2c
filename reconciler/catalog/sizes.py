"""Storage sizes as a catalog writes them: `50GiB`, `512MiB`, `10GB`, or plain bytes, both ways."""

from __future__ import annotations

import re
from decimal import Decimal

MAX_BYTES = 2**63 - 1
SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(?:([KMGT])(I)?)?B?\s*$", re.IGNORECASE)
_POWERS = {"K": 1, "M": 2, "G": 3, "T": 4}


def parse_size(text: str) -> int:
    """Bytes for `50GiB`, `512MiB`, `1.5TiB`, `10GB`, `100 MB` or a plain `1024`.

    Ki/Mi/Gi/Ti are 1024^n, K/M/G/T (with or without B) are 1000^n, case-insensitive.
    Raises ValueError unless the result is a whole number of bytes within a Postgres bigint.
    """
    match = SIZE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size such as 50GiB, 512MiB, 10GB or a number of bytes")
    number, prefix, binary = match.groups()
    base = 1024 if binary else 1000
    size = Decimal(number) * base ** _POWERS[prefix.upper()] if prefix else Decimal(number)
    if size != size.to_integral_value():
        raise ValueError(f"{text!r} is {size} bytes, not a whole number of bytes")
    if size > MAX_BYTES:
        raise ValueError(f"{text!r} is more than {MAX_BYTES} bytes")
    return int(size)


def format_size(size: int) -> int | str:
    """`10737418240` → `10GiB`; sizes that are not a whole number of KiB..TiB stay plain bytes."""
    for unit, power in (("TiB", 4), ("GiB", 3), ("MiB", 2), ("KiB", 1)):
        if size > 0 and size % 1024**power == 0:
            return f"{size // 1024**power}{unit}"
    return size
