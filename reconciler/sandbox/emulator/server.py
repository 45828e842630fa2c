"""The HTTP layer: a threading `http.server` that reads bodies (bounded, chunked or not), hands each
request to `Emulator.handle` and writes its `Reply`; `start_in_thread` and `serve` run it."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

from .app import Emulator
from .common import random_id
from .delivery import DEFAULT_DELIVERIES, DeliverySettings
from .errors import StripeError
from .faults import NO_FAULTS, FaultSettings
from .pipeline import Reply

MAX_BODY_BYTES = 1 << 20
MAX_DRAINED_BYTES = 16 << 20


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)


class _BodyError(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in one write (the handler flushes wfile after each request) and without
    # Nagle: otherwise keep-alive clients wait out a delayed ACK (~40 ms) on every answer.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    server_version = "kuploy-stripe-emulator"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError as exc:
            raise _BodyError("Invalid Content-Length header.") from exc
        if length < 0:
            raise _BodyError("Invalid Content-Length header.")
        if length > MAX_BODY_BYTES:
            if length <= MAX_DRAINED_BYTES:  # read and drop it so the connection stays usable
                remaining = length
                while remaining > 0:
                    got = self.rfile.read(min(remaining, 1 << 16))
                    if not got:
                        break
                    remaining -= len(got)
            raise _BodyError(f"Request body too large: at most {MAX_BODY_BYTES} bytes are accepted.")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip() or b"x", 16)
            except ValueError as exc:
                raise _BodyError("Malformed chunked request body.") from exc
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise _BodyError(f"Request body too large: at most {MAX_BODY_BYTES} bytes are accepted.")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _dispatch(self, method: str) -> None:
        emulator = cast(_Server, self.server).emulator
        if method == "GET" and self.headers.get("Upgrade", "").lower() == "websocket":
            self.close_connection = True  # the socket is the websocket's now, then closed
            emulator.listen_sessions.serve(self.connection, self.path, self.headers.items())
            return
        try:
            body = self._read_body()
        except _BodyError as exc:
            self._send(
                Reply(
                    400, StripeError(400, str(exc)).body(), {"Request-Id": random_id("req_", 14)}, close=True
                )
            )
            return
        try:
            reply = emulator.handle(method, self.path, dict(self.headers.items()), body)
        except Exception as exc:  # pragma: no cover - handle() already converts errors
            reply = Reply(
                500, StripeError(500, f"Emulator failure: {exc}", type_="api_error").body(), close=True
            )
        if reply.drop:  # a timeout fault: hang (bounded), then close without an answer
            emulator.stopping.wait(reply.hang_s)
            self.close_connection = True
            return
        if reply.delay_s > 0:
            time.sleep(reply.delay_s)
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        if isinstance(reply.body, str):  # a page (an invoice's hosted page)
            payload, content_type = reply.body.encode("utf-8"), "text/html; charset=utf-8"
        else:
            payload = (json.dumps(reply.body, indent=2, default=str) + "\n").encode("utf-8")
            content_type = "application/json"
        self.send_response(reply.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-cache, no-store")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level failures (bad request line, unsupported method) also answer in Stripe's shape."""
        text = message or self.responses.get(code, ("Error",))[0]
        err_type = "api_error" if code >= 500 and code != 501 else "invalid_request_error"
        self._send(Reply(code, StripeError(code, text, type_=err_type).body(), close=True))


@dataclass
class RunningEmulator:
    """An emulator served from a background thread. Use as a context manager or call stop()."""

    url: str
    emulator: Emulator
    _server: _Server
    _thread: threading.Thread

    def stop(self) -> None:
        self.emulator.stopping.set()  # hanging (timeout-fault) connections end now
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
        self.emulator.close()

    def __enter__(self) -> RunningEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _url(server: _Server, host: str) -> str:
    port = server.server_address[1]
    shown = host if host not in ("0.0.0.0", "") else "127.0.0.1"
    return f"http://{shown}:{port}"


def start_in_thread(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    state_file: Path | None = None,
    faults: FaultSettings = NO_FAULTS,
    deliveries: DeliverySettings = DEFAULT_DELIVERIES,
) -> RunningEmulator:
    emulator = Emulator(state_file=state_file, faults=faults, deliveries=deliveries)
    server = _Server((host, port), emulator)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="stripe-emulator", daemon=True
    )
    thread.start()
    return RunningEmulator(_url(server, host), emulator, server, thread)


def serve(*, host: str, port: int, state_file: Path | None = None, faults: FaultSettings = NO_FAULTS) -> None:
    """Serve until interrupted (Ctrl-C stops cleanly)."""
    emulator = Emulator(state_file=state_file, faults=faults)
    server = _Server((host, port), emulator)
    print(f"Stripe emulator listening on {_url(server, host)}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stopping.set()
        server.server_close()
        emulator.close()
