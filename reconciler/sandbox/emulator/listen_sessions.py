"""`stripe listen` against the emulator: the websocket a CLI session connects to, and the events pushed
over it (or, for a `stripe logs tail` session, the account's requests: `request_logs`). The session
itself is made by `POST /v1/stripecli/sessions` (resources/stripecli_sessions.py).

The protocol, as the Stripe CLI speaks it (stripe-cli pkg/websocket, pkg/proxy):

* The CLI opens `websocket_url?websocket_feature=webhooks` with subprotocol `stripecli-devproxy-v1` and
  its session in a `Websocket-Id` header. An id the emulator does not know is refused with
  `{"error": {"message": "Unknown WebSocket ID."}}`: the CLI then asks for a new session.
* It pings every 2 s and gives up on a connection without a pong for 10 s (answered by `websockets`);
  it closes and reopens the websocket every `reconnect_delay` seconds. Events of a session that
  connected once are kept for it while it is away (at most GRACE_S and MAX_QUEUED).
* Each event is a text message `{"type": "webhook_event", "webhook_id", "webhook_conversation_id",
  "event_payload": <the event's JSON, as webhook endpoints receive it>, "http_headers": <the headers of a
  delivery, `Stripe-Signature` signed with the session's secret at sending time>, "endpoint":
  {"api_version": null | version}}`. The CLI forwards `event_payload` with `http_headers` as they are,
  keeps only messages whose `endpoint.api_version` is null (the account's default version) or, with
  `--latest`, only those that name one, and applies `--events` itself: so every event is sent twice,
  null then `latest_version` (the same version here, `stripe.api_version`).
* The CLI answers each with `event_ack` and each forward with `webhook_response`; both are read and
  dropped.

Standard library threads around `websockets`' sans-I/O protocol: the HTTP server's thread for the
connection reads, a second one sends; frames, pings and the closing handshake are the library's."""

from __future__ import annotations

import functools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import stripe
from websockets.frames import CloseCode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from . import request_logs
from .common import random_id
from .delivery import Job, signed_headers
from .errors import JSON
from .request_logs import REQUEST_LOGS_FEATURE
from .resources.stripecli_sessions import WEBSOCKET_PATH

SUBPROTOCOL = Subprotocol("stripecli-devproxy-v1")
UNKNOWN_ID = "Unknown WebSocket ID."
GRACE_S = 120.0  # a disconnected session's events are kept this long for its reconnection
MAX_QUEUED = 1000  # per session: the oldest are dropped beyond it


@dataclass(eq=False)
class _Session:
    """The runtime side of one session: events waiting to be sent, whether a websocket is attached."""

    id: str
    webhook_id: str
    livemode: bool
    request_logs: JSON | None  # a `stripe logs tail` session's filters (None: a `stripe listen` one)
    queue: deque[Job | str] = field(default_factory=deque)  # events, or request-log messages as sent
    attached: int = 0  # open websockets of the session (two overlap while the CLI reconnects)
    detached_at: float = 0.0  # monotonic time the last one closed


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    protocol: ServerProtocol
    session: _Session
    lock: threading.Lock = field(default_factory=threading.Lock)  # the protocol is not thread-safe
    closed: bool = False

    def flush(self) -> None:
        """Send what the protocol has to send (under `lock`); an empty chunk means end the write side."""
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.sock.sendall(chunk)
            else:
                self.sock.shutdown(socket.SHUT_WR)


def _message(session: _Session, job: Job, api_version: str | None) -> str:
    return json.dumps(
        {
            "type": "webhook_event",
            "webhook_id": session.webhook_id,
            "webhook_conversation_id": random_id("wc_", 24),
            "event_payload": job.body.decode("utf-8"),
            "http_headers": signed_headers(job),
            "endpoint": {"api_version": api_version},
        }
    )


class ListenSessions:
    """The websockets of `stripe listen` sessions and the events waiting for them. `find(websocket_id)`
    is the stored session (None if unknown); `push` takes the listener jobs of committed requests."""

    def __init__(self, find: Callable[[str], JSON | None]) -> None:
        self._find = find
        self._cond = threading.Condition()
        self._sessions: dict[str, _Session] = {}
        self._connections: set[_Connection] = set()
        self._stopped = False

    def push(self, jobs: Iterable[Job]) -> None:
        """Queue each job for its session, if a websocket of it is open or was lately; else drop it."""
        with self._cond:
            for job in jobs:
                session = self._sessions.get(job.endpoint_id)
                if session is not None and self._still_listening(session):
                    self._queue(session, job)
            self._cond.notify_all()

    def push_request_logs(self, entries: Iterable[JSON]) -> None:
        """Queue each request-log entry for the `stripe logs tail` sessions whose mode and filters take it."""
        with self._cond:
            for entry in entries:
                for session in list(self._sessions.values()):
                    if session.request_logs is None or not self._still_listening(session):
                        continue
                    if request_logs.tailed(entry, session.livemode, session.request_logs):
                        self._queue(session, request_logs.message(entry))
            self._cond.notify_all()

    def _still_listening(self, session: _Session) -> bool:
        """Whether a websocket of the session is open or was lately (else it is forgotten); under `_cond`."""
        if session.attached or time.monotonic() - session.detached_at <= GRACE_S:
            return True
        del self._sessions[session.id]
        return False

    @staticmethod
    def _queue(session: _Session, item: Job | str) -> None:
        session.queue.append(item)
        while len(session.queue) > MAX_QUEUED:
            session.queue.popleft()

    def serve(self, sock: socket.socket, target: str, headers: Iterable[tuple[str, str]]) -> None:
        """Answer an HTTP upgrade request that was read from `sock`, then serve the websocket until it
        closes. The protocol parses the request again (its head, as read), so that it reads frames next."""
        protocol = ServerProtocol(subprotocols=[SUBPROTOCOL])
        head = f"GET {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        protocol.receive_data(head.encode("latin-1"))
        request = next((e for e in protocol.events_received() if isinstance(e, Request)), None)
        if request is None:
            _quietly(lambda: sock.sendall(b"".join(protocol.data_to_send())))
            return
        response = protocol.accept(request)
        stored = self._find(request.headers.get("Websocket-Id", ""))
        if urlsplit(target).path != WEBSOCKET_PATH:
            response = protocol.reject(404, json.dumps({"error": {"message": "Not found."}}))
        elif response.status_code == 101 and stored is None:
            response = protocol.reject(400, json.dumps({"error": {"message": UNKNOWN_ID}}))
        protocol.send_response(response)
        if stored is None or protocol.state is not State.OPEN:
            _quietly(lambda: sock.sendall(b"".join(protocol.data_to_send())))
            return
        conn = _Connection(sock, protocol, self._attach(stored))
        sender = threading.Thread(
            target=self._send_loop, args=(conn,), name="stripe-cli-websocket", daemon=True
        )
        try:
            with conn.lock:
                conn.flush()
            sender.start()
            self._read_loop(conn)
        finally:
            self._detach(conn)
            if sender.is_alive():
                sender.join(timeout=5)

    def close(self) -> None:
        """Close every websocket (1001 going away) and stop sending."""
        with self._cond:
            self._stopped = True
            connections = list(self._connections)
            self._cond.notify_all()
        for conn in connections:
            with conn.lock:
                if conn.protocol.state is State.OPEN:
                    conn.protocol.send_close(CloseCode.GOING_AWAY, "The Stripe emulator is stopping.")
                    _quietly(conn.flush)
                _quietly(functools.partial(conn.sock.shutdown, socket.SHUT_RDWR))

    def _attach(self, stored: JSON) -> _Session:
        with self._cond:
            session = self._sessions.get(stored["id"])
            if session is None:
                logs = stored["filters"] if REQUEST_LOGS_FEATURE in stored.get("features", ()) else None
                session = _Session(stored["id"], stored["webhook_id"], bool(stored["livemode"]), logs)
                self._sessions[stored["id"]] = session
            session.attached += 1
            return session

    def _detach(self, conn: _Connection) -> None:
        with self._cond:
            conn.closed = True
            self._connections.discard(conn)
            conn.session.attached -= 1
            conn.session.detached_at = time.monotonic()
            self._cond.notify_all()
        _quietly(conn.sock.close)

    def _read_loop(self, conn: _Connection) -> None:
        """Feed what the CLI sends to the protocol (it answers pings and the closing handshake) until
        the connection ends; the CLI's acks and responses are dropped."""
        with self._cond:
            if self._stopped:
                return
            self._connections.add(conn)
        while True:
            try:
                data = conn.sock.recv(1 << 16)
            except OSError:
                data = b""
            with conn.lock:
                if data:
                    conn.protocol.receive_data(data)
                else:
                    conn.protocol.receive_eof()
                conn.protocol.events_received()
                _quietly(conn.flush)
                if not data or conn.protocol.state is not State.OPEN:
                    return

    def _send_loop(self, conn: _Connection) -> None:
        """Send the session's queued events, each twice (the default and the latest API version), or
        its request-log messages."""
        session = conn.session
        while True:
            with self._cond:
                while not (conn.closed or self._stopped or session.queue):
                    self._cond.wait()
                if conn.closed or self._stopped:
                    return
                item = session.queue.popleft()
            if isinstance(item, str):
                texts = [item]
            else:
                texts = [_message(session, item, version) for version in (None, stripe.api_version)]
            with conn.lock:
                sent = conn.protocol.state is State.OPEN
                if sent:
                    for text in texts:
                        conn.protocol.send_text(text.encode("utf-8"))
                    sent = _quietly(conn.flush)
            if not sent:
                with self._cond:
                    session.queue.appendleft(item)  # for the session's next websocket
                return


def _quietly(action: Callable[[], object]) -> bool:
    """Run a socket action whose failure only means the peer is gone; False if it failed."""
    try:
        action()
    except OSError:
        return False
    return True
