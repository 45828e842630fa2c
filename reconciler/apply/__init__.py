"""Executes a `Plan`: Stripe additive steps, then one Postgres transaction, then Stripe archives.

Deciding what changes is `diff.py`'s job; this package only carries operations out, in the
crash-safe order documented in `plan.py`, and reports each one as it completes.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import stripe

from reconciler.apply.to_postgres import ApplyRecord, write_rows
from reconciler.apply.to_stripe import Ids, resolve, run_stripe_op
from reconciler.errors import ApplyError
from reconciler.plan import Op, Phase, Plan, WriteRow

OnOp = Callable[[Op], None]


def apply_plan(
    plan: Plan,
    record: ApplyRecord,
    *,
    client: stripe.StripeClient,
    conn: psycopg.Connection,
    on_op: OnOp = lambda op: None,
) -> int:
    """Run every operation of `plan`; returns how many ran. Raises `ApplyError` naming the failed one."""
    ops = plan.ops_in_order()
    ids: Ids = {}
    done = 0

    def fail(op: Op, reason: str) -> ApplyError:
        before = f"{done} of {len(ops)} operations had completed" if done else "nothing had been changed"
        return ApplyError(
            f"apply stopped at: {op.describe()} (plan {op.slug!r}): {reason}. {before}. "
            "Re-running apply is safe: it adopts what was done and finishes the rest."
        )

    def run_stripe(op: Op) -> None:
        nonlocal done
        try:
            run_stripe_op(op, client, ids)
        except stripe.StripeError as e:
            status = e.http_status or "no answer"
            raise fail(op, f"Stripe error ({status}): {e.user_message or type(e).__name__}") from e
        done += 1
        on_op(op)

    for op in ops:
        if op.phase is Phase.PREPARE:
            run_stripe(op)

    rows = [op for op in ops if isinstance(op, WriteRow)]
    if ops:
        resolved = [
            (
                op,
                None if op.stripe_product_id is None else resolve(op.stripe_product_id, op.slug, ids),
                None if op.stripe_price_id is None else resolve(op.stripe_price_id, op.slug, ids),
            )
            for op in rows
        ]
        try:
            write_rows(conn, resolved, record)
        except psycopg.Error as e:
            first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise fail(
                rows[0] if rows else ops[0], f"Postgres error, no row was written: {first_line}"
            ) from e
        for op in rows:
            done += 1
            on_op(op)

    for op in ops:
        if op.phase is Phase.RETIRE:
            run_stripe(op)
    return done
