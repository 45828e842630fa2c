"""`kuploy-reconciler listen`: the Stripe webhook listener (design: docs/listener.md).

`verification` refuses what must not be written, `events` decides and records what an event does,
`pool` holds its connections, `app` answers HTTP, `workers` starts `listen --workers N` processes;
the rows are `reconciler.state.subscriptions`'. The names below are the package's interface."""

from reconciler.listener.app import EVENT_DEADLINE, create_app, logger
from reconciler.listener.events import LOCK_SPACE, Outcome, OutcomeKind, process_event
from reconciler.listener.pool import ConnectionPool
from reconciler.listener.verification import MAX_BODY, TOLERANCE, Event, Rejected, Unavailable
from reconciler.listener.workers import (
    WORKER_DEBUG_ENV,
    WORKER_LIVE_ENV,
    WORKER_LOG_FORMAT_ENV,
    WORKER_METRICS_ENV,
    app_from_environment,
    configure_logging,
    uvicorn_log_config,
    webhook_secret_from_environment,
    worker_environment,
)
from reconciler.model import WEBHOOK_PATH

__all__ = [
    "EVENT_DEADLINE",
    "LOCK_SPACE",
    "MAX_BODY",
    "TOLERANCE",
    "WEBHOOK_PATH",
    "WORKER_DEBUG_ENV",
    "WORKER_LIVE_ENV",
    "WORKER_LOG_FORMAT_ENV",
    "WORKER_METRICS_ENV",
    "ConnectionPool",
    "Event",
    "Outcome",
    "OutcomeKind",
    "Rejected",
    "Unavailable",
    "app_from_environment",
    "configure_logging",
    "create_app",
    "logger",
    "process_event",
    "uvicorn_log_config",
    "webhook_secret_from_environment",
    "worker_environment",
]
