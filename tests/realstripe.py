"""One suite, two Stripe backends: the emulator by default, real test-mode Stripe with a key, recorded
as vcrpy cassettes that replay without one. See docs/stripe-emulator.md ("Running against real Stripe").

Environment:
- `KUPLOY_TEST_STRIPE_KEY=sk_test_…`: run the real-Stripe tests against Stripe (a live key is refused).
- `pytest --record` or `KUPLOY_TEST_STRIPE_RECORD=1` (with the key): record them into `tests/cassettes/`.
- Without a key, a scenario with a cassette replays it (`record_mode="none"`), one without is skipped.

The pieces:
- `RunGuard`: a local HTTP proxy in front of the backend that the reconciler and the tests talk to. It
  scopes everything to one test run: list calls return only the objects this run created (found with
  `ids[]` / `product=` upstream, so other objects in a shared account are never read into a cassette),
  and any write or read of an object the run did not create is refused. This is what makes "tests
  never touch objects they did not create" hold, even though the reconciler archives every *owned*
  Product whose plan is not in its catalog (another run's, or a maintainer's own `pro`).
- `Recorder`: the vcrpy configuration. Secrets (`sk_`/`rk_`/`pk_` keys, `whsec_` secrets, `acct_` ids)
  are scrubbed from headers, URIs and bodies; every Stripe id is mapped to a stable placeholder
  (`prod_0001`) the same way in paths, bodies and headers; the cassette starts with a
  `kuploy_cassette` header (when, from where, Stripe-Version, SDK version, run id).
- `compare_with_emulator`: replays a cassette's requests against a fresh emulator and lists every
  difference in the fields the tool reads, minus `ACCEPTED_DIFFERENCES`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests
import stripe
import vcr
import yaml
from vcr.patch import PATCHER_NAMES
from vcr.serializers import yamlserializer

from reconciler.sandbox.emulator import start_in_thread

KEY_ENV = "KUPLOY_TEST_STRIPE_KEY"
RECORD_ENV = "KUPLOY_TEST_STRIPE_RECORD"
STRIPE_API = "https://api.stripe.com"
CASSETTE_DIR = Path(__file__).parent / "cassettes"
HEADER_KEY = "kuploy_cassette"
EMULATOR_SERVER = "kuploy-stripe-emulator"  # the emulator's `Server` header: never recorded
EMULATOR_KEY = "sk_test_kuployRealStripeSuite000000000"
RECORD_HINT = f"record with {KEY_ENV}=sk_test_… pytest --record"

# --------------------------------------------------------------------------------------- keys


class LiveKeyRefused(pytest.UsageError):  # type: ignore[misc]  # final in pytest's stubs; subclassed for the message
    """The suite creates and archives objects: it never runs with a live key."""


def stripe_test_key() -> str | None:
    """The real-Stripe key from the environment: None when unset; a live or malformed key is refused."""
    key = os.environ.get(KEY_ENV, "").strip()
    if not key:
        return None
    if key.startswith(("sk_live_", "rk_live_")):
        raise LiveKeyRefused(f"{KEY_ENV} is a live key: the test suite only ever runs in test mode")
    if not key.startswith(("sk_test_", "rk_test_")):
        raise LiveKeyRefused(f"{KEY_ENV} must be a test-mode secret key (sk_test_…)")
    return key


def wants_recording(config: pytest.Config) -> bool:
    return bool(config.getoption("--record", default=False)) or os.environ.get(RECORD_ENV, "") not in (
        "",
        "0",
    )


# ----------------------------------------------------------------------------- scrubbing & ids

SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Keys: full, or as Stripe echoes them partly masked (`sk_test_****abcd`).
    (re.compile(r"\b(sk|rk|pk)_(test|live)_[A-Za-z0-9*]+"), r"\1_\2_[REDACTED]"),
    (re.compile(r"\bwhsec_[A-Za-z0-9*]+"), "whsec_[REDACTED]"),
    (re.compile(r"\bacct_[A-Za-z0-9]+"), "acct_[REDACTED]"),
)
# Headers that never reach a cassette: credentials, the connected account, and the SDK's client
# telemetry (`X-Stripe-Client-User-Agent` carries the recording machine's `uname`).
# `X-Stripe-Client-Telemetry` only reports the recording machine's latencies.
FILTERED_REQUEST_HEADERS = (
    "authorization",
    "stripe-account",
    "x-stripe-client-user-agent",
    "x-stripe-client-telemetry",
    "cookie",
)
FILTERED_RESPONSE_HEADERS = ("set-cookie", "stripe-account")

# Real Stripe ids: a known prefix and at least 10 characters. Placeholders (`prod_0001`) are shorter,
# so normalising is idempotent (vcrpy runs the filters again on loaded and replayed requests).
_ID_PREFIXES = (
    "cs_test|cs_live|prod|price|plan|cus|sub|si|we|evt|in|il|ii|pi|pm|ch|seti|sched|txn|req|src|card"
)
ID_RE = re.compile(rf"\b({_ID_PREFIXES})_([A-Za-z0-9]{{10,}})\b")
PLACEHOLDER_RE = re.compile(rf"\b({_ID_PREFIXES})_(\d{{4,6}})\b")


def scrub(text: str) -> str:
    for pattern, replacement in SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@dataclass
class IdNormalizer:
    """Maps each real id to `<prefix>_<n>` (n counted per prefix, in order of first sight), the same
    way wherever it appears, so a replay sends exactly the requests that were recorded."""

    ids: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def _placeholder(self, match: re.Match[str]) -> str:
        real = match.group(0)
        if real not in self.ids:
            prefix = match.group(1)
            self.counts[prefix] = self.counts.get(prefix, 0) + 1
            self.ids[real] = f"{prefix}_{self.counts[prefix]:04d}"
        return self.ids[real]

    def __call__(self, text: str) -> str:
        return ID_RE.sub(self._placeholder, text)


def _clean(text: str, ids: IdNormalizer) -> str:
    return ids(scrub(text))


def _as_bytes(body: Any) -> bytes:
    return body if isinstance(body, bytes) else str(body).encode("utf-8")


def _clean_body(body: Any, ids: IdNormalizer) -> Any:
    if isinstance(body, bytes):
        try:
            return _clean(body.decode("utf-8"), ids).encode("utf-8")
        except UnicodeDecodeError:
            return body
    if isinstance(body, str):
        return _clean(body, ids)
    return body


# ----------------------------------------------------------------------------------- recording


class EmulatorAnswerRefused(RuntimeError):
    """A cassette is evidence of what real Stripe said; the emulator's answers are never recorded."""


class Recorder:
    """vcrpy set up for Stripe: filters, id normalisation and the cassette header.

    `record=True` records (record_mode "all": a fresh cassette each time); otherwise the cassette is
    replayed with record_mode "none" (a request it does not hold fails the test). `upstream` is where
    the recording goes; only `https://api.stripe.com` may be recorded into `tests/cassettes/`.
    `ignore_netlocs`: local hops (the `RunGuard`) that pass through unrecorded."""

    def __init__(
        self,
        cassette_dir: Path,
        *,
        record: bool,
        upstream: str = STRIPE_API,
        ignore_netlocs: tuple[str, ...] = (),
        run_id: str | None = None,
    ) -> None:
        if record and cassette_dir.resolve() == CASSETTE_DIR.resolve() and upstream != STRIPE_API:
            raise EmulatorAnswerRefused(
                f"tests/cassettes/ only holds recordings of {STRIPE_API}, not of {upstream}"
            )
        self.cassette_dir = cassette_dir
        self.record = record
        self.upstream = upstream
        self.ignore_netlocs = ignore_netlocs
        self.run_id = run_id
        self.ids = IdNormalizer()

    # vcrpy hooks -------------------------------------------------------------------------------

    def before_record_request(self, request: Any) -> Any:
        if urlsplit(request.uri).netloc in self.ignore_netlocs:
            return None  # a local hop: passed through, never recorded nor replayed
        request.uri = _clean(request.uri, self.ids)
        request.body = _clean_body(request.body, self.ids)
        for name in list(request.headers):
            if name.lower() == "content-length":
                request.headers[name] = str(len(_as_bytes(request.body or b"")))
        for name in list(request.headers):
            if name.lower() in FILTERED_REQUEST_HEADERS:
                del request.headers[name]
            else:
                request.headers[name] = _clean(str(request.headers[name]), self.ids)
        return request

    def before_record_response(self, response: dict[str, Any]) -> dict[str, Any]:
        headers: dict[str, Any] = response.get("headers", {})
        for name, values in list(headers.items()):
            if name.lower() == "server" and any(EMULATOR_SERVER in str(v) for v in values):
                raise EmulatorAnswerRefused("refusing to record an answer of the Stripe emulator")
            if name.lower() in FILTERED_RESPONSE_HEADERS:
                del headers[name]
            else:
                headers[name] = [_clean(str(v), self.ids) for v in values]
        body = response.get("body", {})
        if "string" in body:
            body["string"] = _clean_body(body["string"], self.ids)
            for name in headers:
                if name.lower() == "content-length":  # placeholders are shorter than real ids
                    headers[name] = [str(len(_as_bytes(body["string"])))]
        return response

    # the cassette file ----------------------------------------------------------------------------

    def serialize(self, cassette_dict: dict[str, Any]) -> str:
        """vcrpy's YAML, after a `kuploy_cassette` header (a top-level key vcrpy ignores on load)."""
        versions = sorted(
            {
                str(v)
                for interaction in cassette_dict["interactions"]
                for name, values in interaction["request"]["headers"].items()
                if name.lower() == "stripe-version"
                for v in (values if isinstance(values, list) else [values])
            }
        )
        answered = sorted(
            {
                str(v)
                for interaction in cassette_dict["interactions"]
                for name, values in interaction["response"]["headers"].items()
                if name.lower() == "stripe-version"
                for v in values
            }
        )
        header = {
            "recorded_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "recorded_from": self.upstream,
            "stripe_version": versions[0] if len(versions) == 1 else versions,
            "stripe_version_answered": answered[0] if len(answered) == 1 else answered,
            "stripe_python": stripe.VERSION,
            "run_id": self.run_id,
            "interactions": len(cassette_dict["interactions"]),
        }
        top = (
            "# Recorded by tests/realstripe.py from a real Stripe answer. Never edit or write by hand:\n"
            f"# re-record with {KEY_ENV}=sk_test_… pytest --record tests/test_real_stripe.py\n"
        )
        return (
            top
            + yaml.safe_dump({HEADER_KEY: header}, sort_keys=False)
            + str(yamlserializer.serialize(cassette_dict))
        )

    @staticmethod
    def deserialize(text: str) -> dict[str, Any]:
        return yamlserializer.deserialize(text)  # type: ignore[no-any-return]

    def vcr(self) -> vcr.VCR:
        recorder = vcr.VCR(
            cassette_library_dir=str(self.cassette_dir),
            serializer="kuploy-yaml",
            path_transformer=vcr.VCR.ensure_suffix(".yaml"),
            record_mode="all" if self.record else "none",
            filter_headers=list(FILTERED_REQUEST_HEADERS),
            before_record_request=self.before_record_request,
            before_record_response=self.before_record_response,
            decode_compressed_response=True,
            # The body too: a replay must send what was recorded, or it is not evidence for it.
            match_on=("method", "scheme", "host", "port", "path", "query", "body"),
            # Only `http.client` (the RunGuard's hop to Stripe, `stripe.UrllibClient`) is recorded. The
            # reconciler and the tests reach the guard through requests/urllib3, which stay unpatched:
            # vcrpy briefly unpatches everything, process-wide, while it passes a request through, and
            # the guard's upstream call could then slip past the recording.
            skip_patchers=[p for p in PATCHER_NAMES if p != "httplib"],
        )
        recorder.register_serializer("kuploy-yaml", self)
        return recorder

    @contextlib.contextmanager
    def use(self, name: str) -> Iterator[Any]:
        with self.vcr().use_cassette(name) as cassette:
            yield cassette


def read_header(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    header = data.get(HEADER_KEY)
    if not isinstance(header, dict):
        raise AssertionError(f"{path}: no {HEADER_KEY} header: not a recording of this suite")
    return header


def recorded_cassettes(directory: Path = CASSETTE_DIR) -> list[Path]:
    return sorted(directory.glob("*.yaml"))


# ------------------------------------------------------------------------------- the run guard


def _stripe_error(status: int, message: str, code: str | None = None) -> tuple[int, bytes]:
    err: dict[str, Any] = {"message": message, "type": "invalid_request_error"}
    if code:
        err["code"] = code
    return status, json.dumps({"error": err}).encode()


def _empty_list(path: str, data: list[Any] | None = None) -> tuple[int, bytes]:
    return 200, json.dumps({"object": "list", "data": data or [], "has_more": False, "url": path}).encode()


_FORWARDED = ("authorization", "stripe-version", "idempotency-key", "content-type", "user-agent")
_RETURNED = (
    "request-id",
    "stripe-version",
    "idempotency-key",
    "idempotent-replayed",
    "original-request",
    "stripe-should-retry",
)


class RunGuard:
    """A proxy scoping one test run to the Products and Prices it created (see the module docstring).

    Everything else answers locally: other list endpoints are empty (a run makes no customers or
    subscriptions), and any other route is refused. Every refusal is also kept in `violations`, so a
    test fails even if the code under test swallowed the error."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.products: list[str] = []
        self.prices: list[str] = []
        self.violations: list[str] = []
        self.writes = 0  # POST and DELETE requests that reached the backend
        self._lock = threading.Lock()
        guard = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                with guard._lock:
                    try:
                        status, payload, extra = guard.handle(self.command, self.path, headers, body)
                    except Exception as exc:  # a replay without a matching recording, a network error
                        # 400, not 5xx: the client must not retry what can never succeed.
                        guard.violations.append(f"{self.command} {self.path}: {type(exc).__name__}: {exc}")
                        status, payload = _stripe_error(400, f"kuploy test guard: {exc}")
                        extra = {}
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="run-guard", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def netloc(self) -> str:
        return urlsplit(self.url).netloc

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -------------------------------------------------------------------------------------------

    def _refuse(self, message: str) -> tuple[int, bytes, dict[str, str]]:
        self.violations.append(message)
        status, payload = _stripe_error(403, f"kuploy test guard: {message}")
        return status, payload, {}

    def _upstream(
        self, method: str, path: str, query: list[tuple[str, str]], headers: Mapping[str, str], body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        """One request to the backend, through `http.client`: the one library `Recorder` patches, so
        this hop, and only this hop, is what a cassette records."""
        forwarded = {k: v for k, v in headers.items() if k in _FORWARDED}
        forwarded["accept-encoding"] = "identity"
        if method in ("POST", "DELETE"):
            self.writes += 1
        base = urlsplit(self.upstream)
        connection_class = (
            http.client.HTTPSConnection if base.scheme == "https" else http.client.HTTPConnection
        )
        connection = connection_class(base.hostname or "", base.port, timeout=60)
        try:
            target = base.path + path + (("?" + urlencode(query)) if query else "")
            connection.request(method, target, body=body or None, headers=forwarded)
            answer = connection.getresponse()
            content = answer.read()
            extra = {k: v for k, v in answer.getheaders() if k.lower() in _RETURNED}
            return answer.status, content, extra
        finally:
            connection.close()

    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        split = urlsplit(target)
        path, query = split.path, parse_qsl(split.query, keep_blank_values=True)
        parts = path.strip("/").split("/")
        if len(parts) < 2 or parts[0] != "v1":
            return self._refuse(f"{method} {path} is not a Stripe API route this suite uses")
        resource = parts[1]
        if resource not in ("products", "prices"):
            if method == "GET" and len(parts) == 2:
                status, payload = _empty_list(path)  # nothing of this kind belongs to the run
                return status, payload, {}
            return self._refuse(f"{method} {path}: the real-Stripe suite only touches products and prices")
        mine = self.products if resource == "products" else self.prices
        if len(parts) == 3:  # one object: only the run's own
            if parts[2] not in mine:
                return self._refuse(f"{method} {path}: {parts[2]} was not created by this test run")
            return self._upstream(method, path, query, headers, body)
        if len(parts) != 2:
            return self._refuse(f"{method} {path} is not a route this suite uses")
        if method == "POST":
            return self._create(resource, path, query, headers, body)
        if method == "GET":
            return self._list(resource, path, query, headers)
        return self._refuse(f"{method} {path} is not a route this suite uses")

    def _create(
        self, resource: str, path: str, query: list[tuple[str, str]], headers: Mapping[str, str], body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        if resource == "prices" and "product" in form and form["product"] not in self.products:
            return self._refuse(f"a price for {form['product']}, which this test run did not create")
        status, payload, extra = self._upstream("POST", path, query, headers, body)
        if status == 200:
            created = json.loads(payload)
            if resource == "products":
                self._track(self.products, created.get("id"))
                default = created.get("default_price")
                self._track(self.prices, default if isinstance(default, str) else None)
            else:
                self._track(self.prices, created.get("id"))
                if "product_data[name]" in form:
                    self._track(self.products, created.get("product"))
        return status, payload, extra

    @staticmethod
    def _track(ids: list[str], obj_id: Any) -> None:
        if isinstance(obj_id, str) and obj_id not in ids:
            ids.append(obj_id)

    def _list(
        self, resource: str, path: str, query: list[tuple[str, str]], headers: Mapping[str, str]
    ) -> tuple[int, bytes, dict[str, str]]:
        params = [(k, v) for k, v in query if k not in ("starting_after", "ending_before")]
        if len(params) != len(query):
            return self._refuse(f"GET {path}: paging past the first page is not needed by this suite")
        if not self.products:
            status, payload = _empty_list(path)
            return status, payload, {}
        if resource == "products":
            if len(self.products) > 100:
                return self._refuse("more than 100 products in one test run")
            ids = [(f"ids[{i}]", p) for i, p in enumerate(self.products)]
            return self._upstream("GET", path, params + ids, headers, b"")
        wanted = dict(params).get("product")
        products = [wanted] if wanted else list(self.products)
        if wanted and wanted not in self.products:
            status, payload = _empty_list(path)
            return status, payload, {}
        params = [(k, v) for k, v in params if k != "product"]
        data: list[Any] = []
        extra: dict[str, str] = {}
        for product in products:
            status, payload, extra = self._upstream(
                "GET", path, [*params, ("product", product)], headers, b""
            )
            if status != 200:
                return status, payload, extra
            page = json.loads(payload)
            if page.get("has_more"):
                return self._refuse(f"more than one page of prices for {product}")
            data.extend(page["data"])
        data.sort(key=lambda p: -int(p.get("created") or 0))  # Stripe's order: newest first
        status, payload = _empty_list(path, data)
        return status, payload, extra


def guard_client(guard: RunGuard, key: str) -> stripe.StripeClient:
    return stripe.StripeClient(
        key, base_addresses={"api": guard.url}, http_client=stripe.RequestsClient(timeout=60)
    )


def archive_run_objects(client: stripe.StripeClient, run_id: str) -> list[str]:
    """Archive everything this run created: every Product listed through the guard (only the run's
    own) whose plan slug carries the run id, after unsetting its default price, then its Prices.
    Returns what was archived; a listed Product without the run's tag is an error."""
    archived: list[str] = []
    suffix = f"-{run_id}"
    for product in client.v1.products.list(params={"limit": 100}).data:
        slug = (product.metadata.to_dict() if product.metadata else {}).get("kuploy_plan", "")
        if not slug.endswith(suffix):
            raise AssertionError(f"{product.id} is not tagged with run {run_id} (kuploy_plan={slug!r})")
        if product.active or product.default_price:
            client.v1.products.update(product.id, params={"active": False, "default_price": ""})
        archived.append(product.id)
        for price in client.v1.prices.list(params={"product": product.id, "limit": 100}).data:
            if price.active:
                client.v1.prices.update(price.id, params={"active": False})
            archived.append(price.id)
    return archived


# ----------------------------------------------------------------------------- the fixture


class Backend(NamedTuple):
    """What `stripe_backend` yields: where to send Stripe calls (the run guard), the key, and the
    cleanup that archives what the run created (also run by the fixture at teardown)."""

    api_base: str | None
    key: str
    cleanup: Callable[[], list[str]]
    run_id: str
    name: str  # "emulator" | "stripe (live)" | "stripe (recording)" | "stripe (cassette)"
    guard: RunGuard


def cassette_name(request: pytest.FixtureRequest) -> str:
    return request.node.originalname  # type: ignore[no-any-return]


@contextlib.contextmanager
def stripe_backend_for(request: pytest.FixtureRequest, which: str) -> Iterator[Backend]:
    """`which` is "emulator" or "stripe". Skips (one line) when "stripe" has neither key nor cassette."""
    key = stripe_test_key()
    record = wants_recording(request.config)
    name = cassette_name(request)
    if which == "emulator":
        with (
            start_in_thread() as emulator,
            guarded_backend(emulator.url, EMULATOR_KEY, secrets.token_hex(4), "emulator") as backend,
        ):
            yield backend
        return
    cassette_file = CASSETTE_DIR / f"{name}.yaml"
    if key is None:
        if record:
            pytest.skip(f"--record needs {KEY_ENV}=sk_test_…")
        if not cassette_file.exists():
            pytest.skip(f"no {KEY_ENV} and no cassette {cassette_file.name}: {RECORD_HINT}")
        run_id = str(read_header(cassette_file)["run_id"])
        replay = Recorder(CASSETTE_DIR, record=False, run_id=run_id)
        with guarded_backend(STRIPE_API, EMULATOR_KEY, run_id, "stripe (cassette)", replay, name) as backend:
            yield backend
        return
    run_id = secrets.token_hex(4)
    recorder = Recorder(CASSETTE_DIR, record=True, run_id=run_id) if record else None
    label = "stripe (recording)" if record else "stripe (live)"
    with guarded_backend(STRIPE_API, key, run_id, label, recorder, name) as backend:
        yield backend


@contextlib.contextmanager
def guarded_backend(
    upstream: str,
    key: str,
    run_id: str,
    label: str,
    recorder: Recorder | None = None,
    cassette: str = "",
) -> Iterator[Backend]:
    """A `RunGuard` in front of `upstream`, inside `recorder`'s cassette when one is given; at the
    end the run's objects are archived (recorded too) and any guard refusal fails the test."""
    guard = RunGuard(upstream)
    try:
        with contextlib.ExitStack() as stack:
            if recorder is not None:
                recorder.ignore_netlocs = (*recorder.ignore_netlocs, guard.netloc)
                stack.enter_context(recorder.use(cassette))
            client = guard_client(guard, key)
            done: list[str] = []

            def cleanup() -> list[str]:
                if not done:
                    done.extend(archive_run_objects(client, run_id))
                return done

            try:
                yield Backend(guard.url, key, cleanup, run_id, label, guard)
            finally:
                cleanup()  # also after a failure: a shared account is never left polluted
        assert not guard.violations, f"the test touched what it did not create: {guard.violations}"
    finally:
        guard.stop()


# ------------------------------------------------------------------- emulator vs recording

# Differences between a cassette (real Stripe) and the emulator that are known and accepted, keyed by
# "<object>.<field>" (or "<METHOD> <route> <object>.<field>" for one route), each with its reason.
# Everything not listed here is reported. Keep it short: each entry is a fidelity gap.
ACCEPTED_DIFFERENCES: dict[str, str] = {}

# What is compared: the fields the reconciler reads (state/from_stripe.py), per object kind.
COMPARED_FIELDS: dict[str, tuple[str, ...]] = {
    "product": ("name", "description", "active", "default_price", "metadata"),
    "price": (
        "product",
        "active",
        "unit_amount",
        "currency",
        "recurring.interval",
        "lookup_key",
        "metadata",
    ),
}


def _route(method: str, path: str) -> str:
    return f"{method} " + re.sub(r"/(?=[a-z_]+_\d{4,6}\b)[^/]+", "/{id}", path)


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _learn_ids(recorded: Any, got: Any, ids: dict[str, str]) -> None:
    """Pair each placeholder id in a recorded answer with the emulator's id at the same place."""
    if isinstance(recorded, dict) and isinstance(got, dict):
        for key, value in recorded.items():
            if key in got:
                _learn_ids(value, got[key], ids)
    elif isinstance(recorded, list) and isinstance(got, list):
        for a, b in zip(recorded, got, strict=False):
            _learn_ids(a, b, ids)
    elif isinstance(recorded, str) and isinstance(got, str) and PLACEHOLDER_RE.fullmatch(recorded):
        ids.setdefault(recorded, got)


def _map_ids(text: str, ids: Mapping[str, str]) -> str:
    return PLACEHOLDER_RE.sub(lambda m: ids.get(m.group(0), m.group(0)), text)


def _compare(recorded: Any, got: Any, where: str, route: str, ids: Mapping[str, str]) -> list[str]:
    def differ(what: str, a: Any, b: Any) -> list[str]:
        a = _map_ids(a, ids) if isinstance(a, str) else a
        if a == b or what in ACCEPTED_DIFFERENCES or f"{route} {what}" in ACCEPTED_DIFFERENCES:
            return []
        return [f"{where}: {what}: stripe={a!r} emulator={b!r}"]

    if not isinstance(recorded, dict) or not isinstance(got, dict):
        return differ("body", recorded, got)
    if "error" in recorded or "error" in got:
        out: list[str] = []
        for part in ("type", "code", "param"):
            out += differ(f"error.{part}", _get(recorded, f"error.{part}"), _get(got, f"error.{part}"))
        return out
    kind = recorded.get("object")
    out = differ("object", kind, got.get("object"))
    if kind == "list":
        out += differ("list.has_more", recorded.get("has_more"), got.get("has_more"))
        rec_data, got_data = recorded.get("data") or [], got.get("data") or []
        out += differ("list.length", len(rec_data), len(got_data))
        for n, (a, b) in enumerate(zip(rec_data, got_data, strict=False)):
            out += _compare(a, b, f"{where} data[{n}]", route, ids)
        return out
    for name in COMPARED_FIELDS.get(str(kind), ()):
        out += differ(f"{kind}.{name}", _get(recorded, name), _get(got, name))
    return out


def compare_with_emulator(path: Path) -> list[str]:
    """Send each request of a cassette, in order, to a fresh emulator and list every difference in
    status, error type/code/param, the fields the tool reads and a list's `has_more`. Recorded 401s
    are not replayed: the key that caused them is filtered out of the cassette."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    header = data.get(HEADER_KEY) or {}
    differences: list[str] = []
    version = header.get("stripe_version")
    if version != stripe.api_version and "stripe_version" not in ACCEPTED_DIFFERENCES:
        differences.append(
            f"{path.name}: recorded with Stripe-Version {version!r}; the emulator and the SDK speak "
            f"{stripe.api_version!r}: re-record"
        )
    ids: dict[str, str] = {}
    with start_in_thread() as emulator, requests.Session() as session:
        for n, interaction in enumerate(data["interactions"]):
            req, resp = interaction["request"], interaction["response"]
            if resp["status"]["code"] == 401:
                continue  # the key is filtered out: the emulator cannot be asked the same question
            split = urlsplit(req["uri"])
            target = _map_ids(split.path + (f"?{split.query}" if split.query else ""), ids)
            headers = {
                name: _map_ids(str(values[0] if isinstance(values, list) else values), ids)
                for name, values in req["headers"].items()
                if name.lower() in ("stripe-version", "idempotency-key", "content-type")
            }
            headers["Authorization"] = f"Bearer {EMULATOR_KEY}"
            body = req.get("body")
            if isinstance(body, bytes):
                body = body.decode("utf-8")
            answer = session.request(
                req["method"],
                emulator.url + target,
                headers=headers,
                data=_map_ids(body, ids).encode() if body else None,
                timeout=30,
            )
            where = f"{path.name} #{n} {req['method']} {split.path}"
            route = _route(req["method"], split.path)
            text = resp["body"]["string"]
            recorded = json.loads(text.decode() if isinstance(text, bytes) else text)
            got = answer.json()
            status = resp["status"]["code"]
            if status != answer.status_code and "status" not in ACCEPTED_DIFFERENCES:
                differences.append(f"{where}: status: stripe={status} emulator={answer.status_code}")
            _learn_ids(recorded, got, ids)
            differences += _compare(recorded, got, where, route, ids)
    return differences
