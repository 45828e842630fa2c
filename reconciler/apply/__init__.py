"""Executes a `Plan`: Stripe additive steps, then one Postgres transaction, then Stripe archives.
`apply_plan` runs one round; `api._rounds` calls it, once per round of an apply.

Deciding what changes is `diff.py`'s job; this package only carries operations out, in the
crash-safe order documented in `plan.py`, and reports each one as it completes. Within a phase,
the operations of one billing plan run in order (create Price → move default → …) and different
plans run concurrently, under the client-side rate limit of `throttle.StripeCalls`.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import psycopg
import stripe

from reconciler.apply.to_postgres import ApplyRecord, write_rows
from reconciler.apply.to_stripe import OnWebhookSecret, StripeWriter, run_stripe_op
from reconciler.errors import ApplyError
from reconciler.plan import Op, Phase, Plan, Ref, WriteRow
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
    writer = StripeWriter(calls=calls, round=round)
    if on_webhook_secret is not None:
        writer.on_webhook_secret = on_webhook_secret
    run = _Run(
        writer=writer,
        on_op=on_op,
        concurrency=concurrency,
        progress=progress if progress is not None else Progress(),
    )
    ops = plan.ops_in_order()
    run.run_phase(_chains(ops, Phase.PREPARE))  # Stripe, additive
    if ops:  # Postgres: the rows and the apply's record, one transaction (even with no row to write)
        run.write_postgres(conn, [op for op in ops if isinstance(op, WriteRow)], record)
    run.run_phase(_chains(ops, Phase.RETIRE))  # Stripe, subtractive: nothing points at it any more
    return run.done


@dataclass
class _Run:
    """The state one apply shares between its phases and its worker threads."""

    writer: StripeWriter
    on_op: OnOp
    concurrency: int
    progress: Progress
    done: int = 0
    """Operations completed, counted (and reported through `on_op`) under `lock`."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    interrupted: threading.Event = field(default_factory=threading.Event)
    """Set on Ctrl-C: no chain starts another operation."""

    def run_phase(self, chains: list[list[Op]]) -> None:
        """Run the chains concurrently, each in order. Every chain runs to its end even when another
        fails: a transient failure then costs one more round for that plan only, not for all of them."""
        if not chains:
            return
        pool = ThreadPoolExecutor(max_workers=max(1, self.concurrency), thread_name_prefix="apply")
        futures: list[Future[None]] = []
        try:
            for chain in chains:
                futures.append(pool.submit(self.run_chain, chain))
            wait(futures)
        except KeyboardInterrupt:
            # Ctrl-C reaches this (main) thread only: start nothing more, let the calls in flight end
            # (so what was written is known), then stop. Waited for on the futures, not by joining the
            # threads: on Python 3.11 a `Thread.join` that Ctrl-C interrupts marks the running thread
            # as stopped, so a second join (and the interpreter's exit) no longer waits for it.
            self.interrupted.set()
            for future in futures:
                future.cancel()
            wait(futures)
            raise
        finally:
            pool.shutdown(wait=True)  # the workers are idle by now: this only ends them
        _raise_failures(futures)

    def run_chain(self, chain: list[Op]) -> None:
        """One plan's operations of a phase, in order, until Ctrl-C or the first failure."""
        for op in chain:
            if self.interrupted.is_set():
                return
            try:
                run_stripe_op(op, self.writer)
            except stripe.StripeError as e:
                status = e.http_status or "no answer"
                reason = f"Stripe error ({status}): {e.user_message or type(e).__name__}"
                raise _op_failed(op, reason, transient=transient(e)) from e
            self._completed(op)

    def write_postgres(self, conn: psycopg.Connection, rows: list[WriteRow], record: ApplyRecord) -> None:
        """Every `cloud_plans` row and the apply's record in one transaction, with the ids of the
        objects PREPARE created filled in."""
        resolved = [
            (op, self._resolve(op.stripe_product_id, op), self._resolve(op.stripe_price_id, op))
            for op in rows
        ]
        try:
            write_rows(conn, resolved, record)
        except psycopg.Error as e:
            first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
            what = "writing cloud_plans" + (f" (first row {rows[0].slug!r})" if rows else "")
            raise ApplyError(_stopped(f"{what}: Postgres error, no row was written: {first_line}")) from e
        self.progress.rows += len(rows)
        for op in rows:
            self._completed(op)

    def _resolve(self, ref: Ref | None, op: WriteRow) -> str | None:
        return None if ref is None else self.writer.resolve(ref, op.slug)

    def _completed(self, op: Op) -> None:
        with self.lock:
            self.done += 1
            self.on_op(op)


def _chains(ops: Sequence[Op], phase: Phase) -> list[list[Op]]:
    """The operations of `phase`, one chain per billing plan, each in plan order."""
    chains: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.phase is phase:
            chains[op.slug].append(op)
    return list(chains.values())


def _raise_failures(futures: list[Future[None]]) -> None:
    """One `ApplyError` for the whole phase, once every plan has stopped; transient only if every
    failure is."""
    errors = [e for f in futures if isinstance(e := f.exception(), ApplyError)]
    if errors:
        raise ApplyError(
            _stopped(str(errors[0]), len(errors) - 1), transient=all(e.transient for e in errors)
        )
    for future in futures:
        future.result()  # anything that is not an ApplyError is a bug: let it surface


def _op_failed(op: Op, reason: str, *, transient: bool) -> ApplyError:
    """The failure of one operation; the apply's message is made once every plan has stopped."""
    return ApplyError(f"{op.describe()} (plan {op.slug!r}): {reason}", transient=transient)


def _stopped(what: str, others: int = 0) -> str:
    also = f" ({others} other plan(s) also stopped)" if others else ""
    return f"apply stopped at: {what}{also}"
