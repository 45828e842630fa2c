"""Fetch the kuploy.app catalog from a URL (license sync), safely: anything but a valid catalog stops
here with a `FetchError` (exit 1) before any state is read or written, so an outage of kuploy.app never
becomes "archive every plan". No database, no Stripe. The rules (the bearer key, never sent on: redirects
are refused; deadlines; retries; the ETag cache) are the README's "License sync"."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from reconciler import backoff
from reconciler.catalog import MAX_FILE_BYTES, load_catalog_text
from reconciler.errors import CatalogError, ConfigError, FetchError
from reconciler.model import Catalog
from reconciler.settings import CatalogFetch

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
"""The only hosts a plain http:// catalog URL may name (tests, a local mirror)."""

MAX_DELAY = 8.0
READ_SIZE = 64 * 1024
USER_AGENT = "kuploy-reconciler (license sync)"


# Declared as every value is (STYLE §5), like drift.DriftItem: only the form is shared.
@dataclass(frozen=True, slots=True, kw_only=True)
class Fetched:
    catalog: Catalog
    not_modified: bool
    """The server answered 304: the cached catalog was used."""
    attempts: int


def is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


def url_label(url: str) -> str:
    """The URL as messages and apply records show it: no credentials, no query, no fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme.lower()}://{host}{port}{parts.path or '/'}"


def check_url(url: str) -> None:
    """https:// anywhere; http:// only to this machine (127.0.0.1/localhost), for tests."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as e:
        raise ConfigError(f"catalog URL is not a valid URL: {e}") from e
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if not host:
        raise ConfigError("catalog URL has no host")
    if parts.username or parts.password:
        raise ConfigError(
            "catalog URL carries credentials: put the license key in KUPLOY_LICENSE_KEY instead"
        )
    if scheme == "http" and host not in LOOPBACK_HOSTS:
        raise ConfigError(
            f"catalog URL {url_label(url)} is plain http: use https:// (http:// only for 127.0.0.1/localhost)"
        )
    if scheme not in ("http", "https"):
        raise ConfigError(f"catalog URL must start with https://, not {scheme}://")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError for the 3xx: handled as a final answer


@dataclass(frozen=True, slots=True)
class _Cached:
    etag: str | None
    body: str


def _cache_path(config: CatalogFetch, url: str) -> Path:
    return config.cache_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:24]}.json"


def _read_cache(path: Path) -> _Cached | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return _Cached(etag=data.get("etag") or None, body=str(data["body"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no cache, or one we cannot trust: fetch without If-None-Match


def _write_cache(path: Path, url: str, etag: str | None, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "source": url_label(url),
        "etag": etag,
        "fetchedAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "body": body,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(document, f, ensure_ascii=False)
    tmp.replace(path)


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    headers: Message
    body: bytes


class _Retry(Exception):
    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


def _retry_after(headers: Message | None) -> float | None:
    try:
        return min(MAX_DELAY, max(0.0, float((headers or Message()).get("Retry-After", ""))))
    except ValueError:
        return None


def _read_body(response: http.client.HTTPResponse, deadline: float, timeout: float) -> bytes:
    """The whole body, piece by piece, by `deadline` (checked after every read); at most one byte
    more than `MAX_FILE_BYTES`. Raises `_Retry` when the deadline passes or the body is cut short."""
    pieces: list[bytes] = []
    size = 0
    while size <= MAX_FILE_BYTES:
        try:
            piece = response.read1(READ_SIZE)
        except http.client.IncompleteRead as e:  # a chunked body that ended early
            raise _Retry(f"the answer was cut short ({size} bytes, then the connection closed)") from e
        if not piece:
            break
        pieces.append(piece)
        size += len(piece)
        if time.monotonic() > deadline:
            raise _Retry(
                f"the answer did not arrive whole within {timeout:g} s (KUPLOY_CATALOG_TIMEOUT), "
                f"{size} bytes by then"
            )
    declared = response.headers.get("Content-Length") or ""
    if declared.isdigit() and size < int(declared) and size <= MAX_FILE_BYTES:
        raise _Retry(f"the answer was cut short ({size} of {declared} bytes)")
    return b"".join(pieces)[: MAX_FILE_BYTES + 1]


def _once(opener: urllib.request.OpenerDirector, request: urllib.request.Request, timeout: float) -> _Answer:
    """One request; raises `_Retry` for what may pass, `FetchError` for what will not."""
    label = url_label(request.full_url)
    deadline = time.monotonic() + timeout
    try:
        with opener.open(request, timeout=timeout) as response:
            body = _read_body(response, deadline, timeout)
            return _Answer(status=response.status, headers=response.headers, body=body)
    except urllib.error.HTTPError as e:
        with e:
            if e.code == 304:
                return _Answer(status=304, headers=e.headers, body=b"")
            if e.code >= 500 or e.code in (408, 429):
                raise _Retry(f"HTTP {e.code} {e.reason}", _retry_after(e.headers)) from e
            if e.code in (401, 403):
                raise FetchError(
                    f"{label} refused the license key (HTTP {e.code}): check KUPLOY_LICENSE_KEY "
                    "(set, current, and for this URL); nothing was changed"
                ) from e
            if 300 <= e.code < 400:
                raise FetchError(
                    f"{label} answered HTTP {e.code}, a redirect: redirects are not followed (the license "
                    "key is sent only to the URL given); set the final URL; nothing was changed"
                ) from e
            raise FetchError(f"{label} answered HTTP {e.code} {e.reason}; nothing was changed") from e
    except urllib.error.URLError as e:
        if isinstance(e.reason, ssl.SSLCertVerificationError):
            raise FetchError(
                f"{label}: the TLS certificate could not be verified ({e.reason.verify_message}); "
                "nothing was changed"
            ) from e
        reason = e.reason
        kind = "timed out" if isinstance(reason, TimeoutError) else f"cannot connect ({_why(reason)})"
        raise _Retry(kind) from e
    except TimeoutError as e:
        raise _Retry(f"timed out after {timeout:g} s waiting for an answer") from e
    except (OSError, http.client.HTTPException) as e:
        raise _Retry(f"connection failed ({_why(e)})") from e


def _why(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return type(reason).__name__ if not isinstance(reason, str) else reason


def _with_retries(
    opener: urllib.request.OpenerDirector,
    request: urllib.request.Request,
    config: CatalogFetch,
    label: str,
    sleep: Callable[[float], None],
) -> tuple[_Answer, int]:
    """The first answer that is not worth retrying, and which attempt it came on."""
    attempts = config.retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return _once(opener, request, config.timeout), attempt
        except _Retry as e:
            if attempt == attempts:
                raise FetchError(
                    f"cannot fetch the catalog from {label}: {e.reason} "
                    f"({attempts} attempt{'s' if attempts > 1 else ''}); nothing was changed"
                ) from e
            delay = e.delay
            if delay is None:
                delay = backoff.delay(attempt - 1, config.backoff, MAX_DELAY, floor=config.backoff / 2)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def fetch_catalog(
    url: str,
    config: CatalogFetch,
    *,
    write_cache: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> Fetched:
    """The catalog at `url`, validated. Raises `FetchError`/`CatalogError`; writes only the cache
    (with `write_cache`, after the catalog validated)."""
    check_url(url)
    label = url_label(url)
    if config.license_key is None:
        raise ConfigError(
            "KUPLOY_LICENSE_KEY is not set: the kuploy.app catalog is fetched with the instance's license key"
        )
    cache_path = _cache_path(config, url)
    cached = _read_cache(cache_path)
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": USER_AGENT})
    # Unredirected: never copied onto a redirect (which is refused anyway).
    request.add_unredirected_header("Authorization", f"Bearer {config.license_key.reveal()}")
    if cached is not None and cached.etag:
        request.add_unredirected_header("If-None-Match", cached.etag)
    handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
    if (urlsplit(url).hostname or "") in LOOPBACK_HOSTS:
        handlers.append(urllib.request.ProxyHandler({}))  # this machine is never behind a proxy
    opener = urllib.request.build_opener(*handlers)

    answer, attempt = _with_retries(opener, request, config, label, sleep)

    if answer.status == 304:
        if cached is None:
            raise FetchError(
                f"{label} answered 304 Not Modified but no catalog is cached; nothing was changed"
            )
        return Fetched(catalog=_validated(cached.body, label), not_modified=True, attempts=attempt)
    if answer.status != 200:
        raise FetchError(
            f"{label} answered HTTP {answer.status}, not 200 with a catalog; nothing was changed"
        )
    text = _text(answer, label)
    catalog = _validated(text, label)
    etag = answer.headers.get("ETag") or None
    if write_cache:
        try:
            _write_cache(cache_path, url, etag, text)
        except OSError as e:
            raise FetchError(
                f"cannot write the catalog cache in {config.cache_dir}: {e.strerror or e}; "
                "set KUPLOY_STATE_DIR to a writable folder; nothing was changed"
            ) from e
    return Fetched(catalog=catalog, not_modified=False, attempts=attempt)


def _text(answer: _Answer, label: str) -> str:
    if len(answer.body) > MAX_FILE_BYTES:
        raise FetchError(f"{label} answered more than 10 MiB; refusing it as a catalog; nothing was changed")
    if not answer.body.strip():
        raise FetchError(f"{label} answered HTTP 200 with an empty body, not a catalog; nothing was changed")
    content_type = answer.headers.get("Content-Type") or "no Content-Type"
    try:
        text = answer.body.decode("utf-8").removeprefix("\ufeff")  # a BOM, as catalog files may have
        document = json.loads(text)
    except ValueError as e:
        raise FetchError(
            f"{label} answered HTTP 200 with something that is not JSON ({content_type}); nothing was changed"
        ) from e
    if isinstance(document, dict) and document.get("plans") == []:
        raise FetchError(
            f"{label} answered an empty catalog (no plans); refusing it: it would archive every plan; "
            "nothing was changed"
        )
    return text


def _validated(text: str, label: str) -> Catalog:
    try:
        return load_catalog_text(text, source=label)
    except CatalogError as e:
        raise CatalogError(
            [f"{label}: the fetched catalog is invalid, nothing was changed:", *e.problems]
        ) from e
