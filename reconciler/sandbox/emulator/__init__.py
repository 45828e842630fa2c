"""A local, stateful emulator of Stripe's REST API, served over HTTP to the real `stripe` SDK.

Strict by design: parameters are checked against the SDK's own typed params, and what it does not model
is refused, never silently accepted. It imports nothing of the rest of `reconciler`: the core reaches it
only over HTTP, as it reaches Stripe. What it models, and why it behaves as it does: docs/stripe-emulator.md.

Layout: `server` (HTTP) -> `app.Emulator` (lock, log, faults) -> `pipeline` (one request: auth,
idempotency, faults, dispatch through `registry.ROUTES`) -> `resources/*` (one module per Stripe
resource) over `store` (tables, side tables, transactions), with `params`, `rendering`, `events`,
`delivery`, `cards`, `admin`."""

from __future__ import annotations

from . import resources, search  # noqa: F401  (importing them registers their kinds and routes)
from .app import Emulator
from .common import SUPPORTED_CURRENCIES, period_end
from .delivery import USER_AGENT, DeliverySettings, sign
from .errors import EmulatorConfigError, StripeError
from .faults import FAULTS, FaultSettings
from .params import KUPLOY_EVENT_TYPES, PARAM_SPECS, WEBHOOK_EVENT_TYPES, decode_form, validate_params
from .pipeline import Reply
from .server import RunningEmulator, serve, start_in_thread

_period_end = period_end  # the name tests use

__all__ = [
    "FAULTS",
    "KUPLOY_EVENT_TYPES",
    "PARAM_SPECS",
    "SUPPORTED_CURRENCIES",
    "USER_AGENT",
    "WEBHOOK_EVENT_TYPES",
    "DeliverySettings",
    "Emulator",
    "EmulatorConfigError",
    "FaultSettings",
    "Reply",
    "RunningEmulator",
    "StripeError",
    "decode_form",
    "serve",
    "sign",
    "start_in_thread",
    "validate_params",
]
