"""The sandbox a command runs against when neither DATABASE_URL nor STRIPE_SECRET_KEY is set: the
embedded PostgreSQL and the Stripe emulator, started for the command and stopped at its end (the
PostgreSQL stays running if `sandbox start` keeps it; the emulator always runs in this process)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from reconciler.errors import ConfigError
from reconciler.files import make_writable_folder
from reconciler.sandbox.emulator import EmulatorConfigError, start_in_thread
from reconciler.sandbox.postgres import use_sandbox_database
from reconciler.settings import SANDBOX_STRIPE_KEY, Environment, Secret, Settings


@contextlib.contextmanager
def sandbox_session(
    env: Environment, *, lock_timeout: float, max_rps: float | None, announce: Callable[[str], None]
) -> Iterator[Settings]:
    """Settings pointing at a running sandbox; `announce` is told once what runs and where its state is."""
    state = env.state_dir
    make_writable_folder(
        state, what="the sandbox state folder", fix="set KUPLOY_STATE_DIR to a writable folder"
    )
    with contextlib.ExitStack() as stack:
        database_url, database = stack.enter_context(use_sandbox_database(state))
        try:
            emulator = stack.enter_context(start_in_thread(state_file=state / "stripe.json"))
        except EmulatorConfigError as e:
            raise ConfigError(str(e)) from e
        running = (
            f"embedded PostgreSQL (kept running, pid {database.pid}: `kuploy-reconciler sandbox stop` "
            "stops it) and Stripe emulator"
            if database.kept
            else "embedded PostgreSQL and Stripe emulator for this command only (nothing stays running)"
        )
        announce(
            f"sandbox mode: {running}, state in {state}/ "
            "(set DATABASE_URL and STRIPE_SECRET_KEY to use real ones)"
        )
        yield Settings(
            database_url=Secret(database_url),
            stripe_secret_key=Secret(SANDBOX_STRIPE_KEY),
            stripe_api_base=emulator.url,
            sandbox=True,
            state_dir=state,
            lock_timeout=lock_timeout,
            max_rps=max_rps,
        )
