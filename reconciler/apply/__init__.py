"""Executes a `Plan`: Stripe additive steps, then one Postgres transaction, then Stripe archives.

Deciding what changes is `diff.py`'s job; this package only carries operations out, in the
crash-safe order documented in `plan.py`, and reports each one as it completes. Within a phase,
the operations of one billing plan run in order (create Price → move default → …) and different
plans run concurrently, under the client-side rate limit of `throttle.StripeCalls`.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import psycopg
import stripe

from reconciler.apply.to_postgres import ApplyRecord, write_rows
from reconciler.apply.to_stripe import OnWebhookSecret, StripeWriter, run_stripe_op
from reconciler.errors import ApplyError
from reconciler.plan import Op, Phase, Plan, WriteRow
from reconciler.throttle import StripeCalls, transient

OnOp = Callable[[Op], None]


@dataclass
class Progress:
    """What an apply has written to Postgres so far (Stripe's side is counted by `CallStats`)."""

    rows: int = 0
    """cloud_plans rows committed."""


def apply_plan(
    plan: Plan,
    record: ApplyRecord,
    *,
    calls: StripeCalls,
    conn: psycopg.Connection,
    on_op: OnOp = lambda op: None,
    concurrency: int = 8,
    round: int = 0,
    on_webhook_secret: OnWebhookSecret | None = None,
    progress: Progress | None = None,
) -> int:
    """Run every operation of `plan`; returns how many ran. Raises `ApplyError` naming the failed one
    (`transient` when a later round, after re-reading the state, can finish the job). On Ctrl-C
    (KeyboardInterrupt) no operation starts any more; the ones running finish, then it propagates.
    What was written is in `progress` and the client's `CallStats`: the caller says it."""
    ops = plan.ops_in_order()
    writer = StripeWriter(calls=calls, round=round)
    if on_webhook_secret is not None:
        writer.on_webhook_secret = on_webhook_secret
    progress = progress if progress is not None else Progress()
    done = 0
    lock = threading.Lock()
    interrupted = threading.Event()

    def stopped(what: str, others: int = 0) -> str:
        also = f" ({others} other plan(s) also stopped)" if others else ""
        return f"apply stopped at: {what}{also}"

    def fail(op: Op, reason: str, *, transient: bool) -> ApplyError:
        """The failure of one operation; the apply's message is made once every plan has stopped."""
        return ApplyError(f"{op.describe()} (plan {op.slug!r}): {reason}", transient=transient)

    def completed(op: Op) -> None:
        nonlocal done
        with lock:
            done += 1
            on_op(op)

    def run_chain(chain: list[Op]) -> None:
        for op in chain:
            if interrupted.is_set():
                return
            try:
                run_stripe_op(op, writer)
            except stripe.StripeError as e:
                status = e.http_status or "no answer"
                reason = f"Stripe error ({status}): {e.user_message or type(e).__name__}"
                raise fail(op, reason, transient=transient(e)) from e
            completed(op)

    def run_phase(phase: Phase) -> None:
        chains: dict[str, list[Op]] = defaultdict(list)
        for op in ops:
            if op.phase is phase:
                chains[op.slug].append(op)
        if not chains:
            return
        # Every plan's chain runs to its end even when another fails: a transient failure then costs
        # one more round for that plan only, not for all of them.
        pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="apply")
        futures: list[Future[None]] = []
        try:
            futures.extend(pool.submit(run_chain, chain) for chain in chains.values())
            pool.shutdown(wait=True)
        except KeyboardInterrupt:
            # Ctrl-C reaches this (main) thread only: start nothing more, let the calls in flight end
            # (so what was written is known), then stop.
            interrupted.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        errors = [e for f in futures if isinstance(e := f.exception(), ApplyError)]
        if errors:
            raise ApplyError(
                stopped(str(errors[0]), len(errors) - 1), transient=all(e.transient for e in errors)
            )
        for future in futures:
            future.result()  # anything that is not an ApplyError is a bug: let it surface

    run_phase(Phase.PREPARE)
    if ops:
        rows = [op for op in ops if isinstance(op, WriteRow)]
        resolved = [
            (
                op,
                None if op.stripe_product_id is None else writer.resolve(op.stripe_product_id, op.slug),
                None if op.stripe_price_id is None else writer.resolve(op.stripe_price_id, op.slug),
            )
            for op in rows
        ]
        try:
            write_rows(conn, resolved, record)
            progress.rows += len(rows)
        except psycopg.Error as e:
            first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
            what = "writing cloud_plans" + (f" (first row {rows[0].slug!r})" if rows else "")
            raise ApplyError(stopped(f"{what}: Postgres error, no row was written: {first_line}")) from e
        for op in rows:
            completed(op)
    run_phase(Phase.RETIRE)
    return done
