"""The `Emulator`: one object holding the store, the fault settings, the request log and the webhook
deliverer, behind one lock that serialises requests. `handle()` is the entry point the HTTP layer calls:
Stripe routes go through `pipeline`, `/_emulator/*` through `admin`."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import admin, pipeline
from .delivery import DEFAULT_DELIVERIES, Deliverer, DeliverySettings, Job
from .errors import JSON, EmulatorConfigError
from .faults import FAULTS, NO_FAULTS, Faults, FaultSettings, number
from .listen_sessions import ListenSessions
from .pipeline import Reply
from .store import Store


class Emulator:
    """Stripe's state plus request handling. Thread-safe: one lock serialises requests."""

    def __init__(
        self,
        *,
        state_file: Path | None = None,
        faults: FaultSettings = NO_FAULTS,
        deliveries: DeliverySettings = DEFAULT_DELIVERIES,
    ) -> None:
        self.state_file = Path(state_file) if state_file is not None else None
        self._clock = time.monotonic  # tests may replace it to drive the rate limiter
        self.fault_state = Faults(faults, self._clock())
        self.stopping = threading.Event()  # set when the server stops: hanging connections end early
        self.requests: list[JSON] = []
        self._lock = threading.RLock()
        try:
            self.deliverer = Deliverer(
                retry_delays=deliveries.retry_delays,
                timeout=number("delivery_timeout", deliveries.timeout, 0.001, 600.0),
                shuffle=deliveries.shuffle,
                seed=faults.seed,
                still_wanted=self._still_wanted,
                on_delivered=self._delivered,
            )
        except ValueError as exc:
            if isinstance(exc, EmulatorConfigError):
                raise
            raise EmulatorConfigError(f"Stripe emulator delivery_retry_delays: {exc}") from exc
        self.store = Store(self.state_file)
        self.listen_sessions = ListenSessions(self._stripecli_session)

    @property
    def _accounts(self) -> dict[str, Any]:
        """The accounts by mode (tests reach objects through it)."""
        return self.store.accounts

    @property
    def latency_ms(self) -> int:
        return self.fault_state.current.latency_ms

    # ------------------------------------------------------------------ entry point

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Answer one HTTP request. `headers` keys are matched case-insensitively."""
        method = method.upper()
        hdrs = {k.lower(): v for k, v in headers.items()}
        split = urlsplit(target)
        if split.path.startswith("/_emulator/"):
            return admin.handle(self, method, split.path, body, hdrs)
        with self._lock:
            logged = len(self.requests)
            reply, jobs = pipeline.run(self, method, split.path, split.query, hdrs, body)
            entries = self.requests[logged:]  # this request's entry (the lock was held)
        self.send(jobs)
        self.listen_sessions.push_request_logs(entries)
        return reply

    def send(self, jobs: list[Job]) -> None:
        """Hand committed jobs over: to webhook delivery, or to the `stripe listen` sessions. Never call
        it while holding the emulator's lock (neither ever takes it while sending)."""
        self.deliverer.enqueue([job for job in jobs if not job.listener])
        self.listen_sessions.push(job for job in jobs if job.listener)

    # ------------------------------------------------------------------ request log

    def request_log(self) -> list[JSON]:
        with self._lock:
            return json.loads(json.dumps(self.requests))  # type: ignore[no-any-return]

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def stats(self) -> JSON:
        """Exact counts of the logged Stripe requests: per fault ("none" when there was none), per method
        (with its faults) and per status ("none" for timeouts, which never answer)."""
        with self._lock:
            by_fault = dict.fromkeys(("none", *FAULTS), 0)
            by_method: dict[str, dict[str, int]] = {}
            by_status: dict[str, int] = {}
            for entry in self.requests:
                fault = entry.get("fault") or "none"
                by_fault[fault] = by_fault.get(fault, 0) + 1
                per = by_method.setdefault(
                    str(entry["method"]), {"total": 0, **dict.fromkeys(("none", *FAULTS), 0)}
                )
                per["total"] += 1
                per[fault] = per.get(fault, 0) + 1
                status = str(entry["status"]) if entry.get("status") else "none"
                by_status[status] = by_status.get(status, 0) + 1
            return {
                "total": len(self.requests),
                "by_fault": by_fault,
                "by_method": dict(sorted(by_method.items())),
                "by_status": dict(sorted(by_status.items())),
            }

    # ------------------------------------------------------------------ faults

    def faults(self) -> JSON:
        """The current fault settings (what `GET /_emulator/faults` answers)."""
        with self._lock:
            return self.fault_state.settings()

    def set_faults(self, **settings: Any) -> JSON:
        """Change fault settings (see `Faults.update`); returns the new settings."""
        with self._lock:
            self.fault_state.update(settings, self._clock())
            return self.fault_state.settings()

    def _draw_fault(self) -> str | None:
        """Decide one Stripe request's fault. Called under the lock, once per request, in arrival order."""
        return self.fault_state.draw(self._clock)

    # ------------------------------------------------------------------ webhooks

    def webhook_secrets(self) -> dict[str, dict[str, str]]:
        """Signing secrets of the existing webhook endpoints, per mode: {"test": {we_id: whsec}, ...}.

        Stripe shows a secret only in the create response; tests that sign payloads get it here."""
        with self._lock, self.store.transaction():
            return {
                mode: {we_id: str(we["secret"]) for we_id, we in acct.webhook_endpoints.items()}
                for mode, acct in self.store.accounts.items()
            }

    def _still_wanted(self, job: Job) -> bool:
        with self._lock:
            endpoint = self.store.get(job.mode, "webhook_endpoint", job.endpoint_id)
            return endpoint is not None and endpoint["status"] == "enabled"

    def _delivered(self, job: Job) -> None:
        with self._lock, self.store.transaction():
            event = self.store.get(job.mode, "event", job.event_id)
            if event is not None and event["pending_webhooks"] > 0:
                event["pending_webhooks"] -= 1
                self.store.save()

    def wait_for_deliveries(self, timeout: float = 10.0) -> bool:
        """Wait until no webhook delivery is queued, in flight or scheduled for a retry (False on timeout).
        Never call it while holding the emulator's lock."""
        return self.deliverer.wait_idle(timeout)

    def flush_deliveries(self, timeout: float = 10.0) -> bool:
        """Make scheduled retries due now, then wait like `wait_for_deliveries`."""
        self.deliverer.expedite()
        return self.deliverer.wait_idle(timeout)

    def deliveries(self) -> list[JSON]:
        """Every delivery attempt so far, oldest first."""
        return self.deliverer.attempts()

    def _stripecli_session(self, websocket_id: str) -> JSON | None:
        """The stored `stripe listen` session with this websocket id, of either mode (None: unknown)."""
        with self._lock, self.store.transaction():
            for mode in self.store.accounts:
                session = self.store.get(mode, "stripecli_session", websocket_id)
                if session is not None:
                    return {**session, "livemode": mode == "live"}
            return None

    def close(self) -> None:
        """Stop the delivery thread (queued and scheduled deliveries are dropped) and close the `stripe
        listen` websockets."""
        self.deliverer.stop()
        self.listen_sessions.close()
