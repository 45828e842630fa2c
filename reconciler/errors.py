"""The one error tree users see. Each prints as one line (or one line per problem)."""

from __future__ import annotations

from collections.abc import Iterable


class KuployError(Exception):
    """A problem the operator can act on; the CLI prints it without a traceback and exits 1."""


class CatalogError(KuployError):
    """The catalog is invalid. Carries every problem at once, one per line."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("\n".join(self.problems))


class ConfigError(KuployError):
    """Flags or environment variables are missing, contradictory or unsafe."""


class SchemaError(KuployError):
    """`cloud_plans` (or another cloud_* table) has a shape the tool cannot safely write."""


class StateReadError(KuployError):
    """Current state could not be read from Stripe (a rejected key, an error listing Products/Prices)."""


class ApplyError(KuployError):
    """An apply stopped part-way; the message says what was done and that re-running is safe.

    `transient`: the cause may pass (rate limit, outage, a lost answer), so re-reading the state
    and applying again can finish the job."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class Interrupted(KuployError):
    """Ctrl-C while a command worked; the message says what it had changed by then."""


class MigrationsInterrupted(Interrupted):
    """Ctrl-C during `migrate`: the migrations applied before it stay applied (each is its own
    transaction), the one in progress was rolled back. `applied` and `not_applied` are labels."""

    def __init__(self, applied: tuple[str, ...], not_applied: tuple[str, ...]) -> None:
        self.applied = applied
        self.not_applied = not_applied
        done = f"applied before it stopped: {', '.join(applied)}" if applied else "no migration was applied"
        rest = (
            f"not applied: {', '.join(not_applied)} (the one in progress was rolled back). "
            "Re-running migrate applies the rest."
            if not_applied
            else "none is left to apply."
        )
        super().__init__(f"migrate interrupted (Ctrl-C); {done}; {rest}")


class LockTimeout(KuployError):
    """Another apply, migrate or seed holds the reconciler's advisory lock."""


class MassArchiveRefused(KuployError):
    """The plan archives too many active paid plans at once; nothing was written."""


class ApplyInterrupted(Interrupted):
    """Ctrl-C during an apply; the message says what was written before it."""


class FetchError(KuployError):
    """The catalog URL gave no usable catalog; nothing was read or written."""


class StalePlanError(KuployError):
    """The state changed since the saved plan was made; it must be planned again."""


class SandboxInUse(KuployError):
    """Another kuploy-reconciler command is using the sandbox database."""
