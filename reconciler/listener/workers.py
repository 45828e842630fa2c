"""Worker start-up: logging for `listen`, and the app of one `listen --workers N` process, built from
the environment `listen` prepared (uvicorn starts workers from the import string
`reconciler.listener:app_from_environment`)."""

from __future__ import annotations

import copy
import logging
import os
import sys
from typing import Any

from starlette.applications import Starlette

from reconciler.errors import ConfigError
from reconciler.listener.app import create_app, logger
from reconciler.settings import (
    MAX_RPS,
    Environment,
    RedactingFilter,
    Secret,
    Settings,
    redact_logging,
    stripe_log_level,
    stripe_log_through_logging,
)
from reconciler.telemetry import use_json_logs

WORKER_LIVE_ENV = "KUPLOY_LISTENER_LIVE"
"""Set to 1 by `listen --live --workers N` for its worker processes (see `app_from_environment`)."""
WORKER_DEBUG_ENV = "KUPLOY_LISTENER_DEBUG"
"""Set to 1 by `listen --debug --workers N`: the workers log at debug level too."""
WORKER_LOG_FORMAT_ENV = "KUPLOY_LISTENER_LOG_FORMAT"
"""`json` for `listen --log-format json --workers N`."""
WORKER_METRICS_ENV = "KUPLOY_LISTENER_METRICS"
"""Set to 0 by `listen --no-metrics --workers N`."""
WORKER_STRIPE_LOG_ENV = "KUPLOY_LISTENER_STRIPE_LOG"
"""`STRIPE_LOG` (debug or info) of `listen --workers N`, under a name the SDK does not print for."""


def configure_logging(*, debug: bool = False, json_lines: bool = False) -> None:
    """One line per event on stderr: `reconciler.listener` at info, whatever else is configured;
    with `json_lines`, every line is a JSON object."""
    # A no-op when the CLI already configured logging (with --debug or not).
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, stream=sys.stderr)
    redact_logging()
    if json_lines:
        use_json_logs()
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration, each of its handlers redacting (`RedactingFilter`): its
    error log prints tracebacks of whatever an app raised."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": RedactingFilter}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact"]
    return config


def webhook_secret_from_environment() -> Secret:
    secret = os.environ.get("STRIPE_WEBHOOK_SECRET") or None
    if secret is None:
        raise ConfigError(
            "listen needs STRIPE_WEBHOOK_SECRET: the signing secret (whsec_…) of the Stripe webhook "
            "endpoint pointing at this listener (Stripe Dashboard → Developers → Webhooks)"
        )
    return Secret(secret)


def worker_environment(
    settings: Settings, *, workers: int, live: bool, log_format: str, metrics: bool
) -> dict[str, str]:
    """What `listen --workers N` hands its worker processes through the environment they inherit
    (they import the app, so only the environment crosses): the resolved settings (the sandbox's too,
    which `listen` keeps serving), each worker at its share of the Stripe rate but at least the lowest
    rate a worker accepts (the limiter never goes below it anyway), and what `app_from_environment`
    reads to configure the worker like `listen` itself."""
    share = max(MAX_RPS.minimum, settings.effective_max_rps / workers)
    return {
        **settings.environment(max_rps=share),
        WORKER_LIVE_ENV: "1" if live else "0",
        WORKER_DEBUG_ENV: "1" if logging.getLogger().isEnabledFor(logging.DEBUG) else "0",
        WORKER_LOG_FORMAT_ENV: log_format,
        WORKER_METRICS_ENV: "1" if metrics else "0",
        WORKER_STRIPE_LOG_ENV: stripe_log_level(),
    }


def app_from_environment() -> Starlette:
    """The app of one worker process of `listen --workers N` (uvicorn starts workers from an import
    string, so only the environment crosses): `listen` resolved the settings, sandbox included, into
    DATABASE_URL, STRIPE_SECRET_KEY, STRIPE_API_BASE, KUPLOY_STRIPE_MAX_RPS (its share of the rate)
    and `WORKER_LIVE_ENV`, before the workers started."""
    configure_logging(
        debug=os.environ.get(WORKER_DEBUG_ENV) == "1",
        json_lines=os.environ.get(WORKER_LOG_FORMAT_ENV) == "json",
    )
    stripe_log_through_logging(WORKER_STRIPE_LOG_ENV)
    env = Environment.read(live=os.environ.get(WORKER_LIVE_ENV) == "1", strict=False)
    return create_app(
        env.settings(),
        webhook_secret=webhook_secret_from_environment(),
        metrics=os.environ.get(WORKER_METRICS_ENV) != "0",
    )
