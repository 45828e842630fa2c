"""Benchmark of one list page of the Stripe emulator at N objects (default 10,000 products).

A script, not a test (pytest collects only `test_*.py`):

    python tests/benchmarks/bench_emulator_list.py [--objects 10000] [--pages 200] [--limit 100]

It creates the products through `Emulator.handle` (in process, no HTTP), then times `GET
/v1/products?limit=L` pages walked by `starting_after`, as the SDK's auto-pagination reads them,
and the first page alone. Only `Emulator.handle` is used, so the same script measures any version
of the emulator. Prints milliseconds per page (median and mean of the timed pages)."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from urllib.parse import urlencode

from reconciler.sandbox.emulator import Emulator

HEADERS = {"Authorization": "Bearer sk_test_bench", "Content-Type": "application/x-www-form-urlencoded"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--limit", type=int, default=100)
    args = parser.parse_args()
    emu = Emulator()
    try:
        for i in range(args.objects):
            reply = emu.handle("POST", "/v1/products", HEADERS, urlencode({"name": f"p{i}"}).encode())
            assert reply.status == 200, reply.body
        walk: list[float] = []
        after: str | None = None
        for _ in range(args.pages):
            query = {"limit": args.limit} | ({"starting_after": after} if after else {})
            start = time.perf_counter()
            reply = emu.handle("GET", "/v1/products?" + urlencode(query), HEADERS, b"")
            walk.append((time.perf_counter() - start) * 1000)
            assert reply.status == 200, reply.body
            after = reply.body["data"][-1]["id"] if reply.body["has_more"] else None
        first: list[float] = []
        for _ in range(50):
            start = time.perf_counter()
            reply = emu.handle("GET", f"/v1/products?limit={args.limit}", HEADERS, b"")
            first.append((time.perf_counter() - start) * 1000)
        result = {
            "objects": args.objects,
            "limit": args.limit,
            "walk_pages": len(walk),
            "walk_ms_per_page_median": round(statistics.median(walk), 2),
            "walk_ms_per_page_mean": round(statistics.mean(walk), 2),
            "first_page_ms_median": round(statistics.median(first), 2),
        }
        print(json.dumps(result))
    finally:
        emu.close()


if __name__ == "__main__":
    main()
