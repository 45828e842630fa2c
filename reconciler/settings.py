"""What the operator configures, and keeping its secrets out of output. `Settings` and `Environment`
from flags and the guide's environment variables, `CatalogFetch` (license sync); `Secret`, which masks
its repr; DSN and log redaction (`redact_dsn`, `scrub`, `redact`, `RedactingFilter`); Stripe key and
header checks; `NumberRange`, the one way a number is read from a flag or variable."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from reconciler.errors import ConfigError

DEFAULT_STATE_DIR = Path(".kuploy-sandbox")
SANDBOX_STRIPE_KEY = "sk_test_kuploySandbox0000000000000000"


class Secret:
    """A value that never shows itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


MASK = "***"
_SHOWN_FIRST = ("host", "hostaddr", "port", "dbname", "user", "password")


def redact_dsn(dsn: str) -> str:
    """The DSN for messages, every password masked: parsed by libpq's own rules (a URL's userinfo,
    its `?password=` parameter, a key/value `password='two words'`), then rebuilt as key/value
    parameters, `host=db port=5432 dbname=kuploy user=kuploy password=***`. A DSN libpq cannot
    parse is not shown at all (its parse error would quote it whole)."""
    import psycopg  # here, not at the top: `--version` and `validate` need no psycopg (start-up)
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(a connection string libpq cannot parse)"
    if "password" in params:
        params["password"] = MASK
    ordered = {k: params[k] for k in _SHOWN_FIRST if k in params} | params
    return make_conninfo("", **ordered)


def _passwords(dsn: str) -> set[str]:
    """Every form the DSN's password may take in a message: as libpq reads it, as written (quoted,
    percent-encoded), and as a naive reading of an unparseable DSN would find it."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    found: set[str] = set()
    with contextlib.suppress(psycopg.Error):
        if password := conninfo_to_dict(dsn).get("password"):
            found.update({str(password), quote(str(password), safe=""), quote(str(password))})
    if match := _USERINFO_PASSWORD.search(dsn):
        found.add(match.group(2))
    for match in _PASSWORD_PARAM.finditer(dsn):
        value = match.group(1)
        found.update({value, value.strip("'"), value.split("&")[0]})
    return {f for f in found if f and f != MASK}


_USERINFO_PASSWORD = re.compile(r"(://[^:/@]*:)([^@]*)@")
_PASSWORD_PARAM = re.compile(r"password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s]+)", re.IGNORECASE)


def scrub(text: str, dsn: str) -> str:
    """`text` (say, a driver's error message) without the DSN or its password in it."""
    for secret in sorted({dsn, *_passwords(dsn)}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


# --- logs and tracebacks: nothing secret, whoever logs it -----------------------------------------

_SECRET_PATTERNS = (
    (re.compile(r"\b((?:sk|rk|pk)_(?:test|live)_)[0-9A-Za-z._-]+"), r"\1" + MASK),
    (re.compile(r"\b(whsec_)[^\s'\"&,;]+"), r"\1" + MASK),
    (re.compile(r"\b(Bearer\s+)[^\s'\"]+", re.IGNORECASE), r"\1" + MASK),
    (re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@"), r"\1" + MASK + "@"),
    (_PASSWORD_PARAM, "password=" + MASK),
)
_SECRET_VARIABLES = (
    "STRIPE_SECRET_KEY",
    "STRIPE_PUBLISHABLE_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "KUPLOY_LICENSE_KEY",
)
_STRIPE_BODIES = re.compile(r"(?:^| )(message='(?:Post details|API response body)')(?: |$)")
"""The stripe SDK's DEBUG lines carrying a request's or a response's body (a webhook endpoint's
signing secret, customers' data): replaced whole, whatever they hold. The SDK writes them as logfmt
with the keys sorted, so `message=` is not first (`body=… message='API response body'`)."""


_SECRET_SHAPES = ("_test_", "_live_", "whsec_", "bearer", "://", "password")
"""What any of `_SECRET_PATTERNS` needs (lowercase): most log lines have none, and skip them all."""


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` without any of `secrets` or anything shaped like a key, a signing secret, a bearer
    token or a DSN password."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    lowered = text.lower()
    if any(shape in lowered for shape in _SECRET_SHAPES):
        for pattern, masked in _SECRET_PATTERNS:
            text = pattern.sub(masked, text)
    return text


def secrets_in(env: Mapping[str, str]) -> tuple[str, ...]:
    """The secret values the environment holds (keys, license, the DSN's password in its forms)."""
    values = [env.get(name, "").strip() for name in _SECRET_VARIABLES]
    if dsn := env.get("DATABASE_URL"):
        values.extend(_passwords(dsn))
    # Longest first (one may hold another); a very short one would mask ordinary words.
    return tuple(sorted({v for v in values if len(v) >= 4}, key=len, reverse=True))


class RedactingFilter(logging.Filter):
    """On a handler: every record it emits is redacted (`redact`), its traceback included, and the
    stripe SDK's body lines are replaced. For the CLI's and the listener's handlers (uvicorn's too):
    no logger, at any level, prints a key, a signing secret, a license key or a password."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.secrets = secrets_in(os.environ)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.name.startswith("stripe") and (body := _STRIPE_BODIES.search(message)):
            message = f"{body[1]} (body not logged)"
        record.msg, record.args = redact(message, self.secrets), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


def redact_logging() -> None:
    """Put a `RedactingFilter` on every handler of the root logger (where the CLI's logs go)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


STRIPE_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO}
"""The values of the SDK's `STRIPE_LOG` that make it print (it compares them exactly)."""


def stripe_log_through_logging(variable: str = "STRIPE_LOG") -> None:
    """Honour `STRIPE_LOG=debug|info` through logging, where `RedactingFilter` sees it: the SDK would
    print its request lines to stderr itself, with `print()`. The variable is taken out of the
    environment (the SDK reads it when imported: call this before), and the `stripe` logger gets its
    level; its records go to the root handlers, which redact. `variable` is the one the workers of
    `listen --workers N` are handed it in."""
    level = STRIPE_LOG_LEVELS.get(os.environ.pop(variable, ""))
    if level is not None:
        logging.getLogger("stripe").setLevel(level)


def stripe_log_level() -> str:
    """`debug`, `info` or "": what `stripe_log_through_logging` set, to hand on to worker processes."""
    level = logging.getLogger("stripe").level
    return next((name for name, value in STRIPE_LOG_LEVELS.items() if value == level), "")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    database_url: Secret
    stripe_secret_key: Secret
    stripe_api_base: str | None = None
    live: bool = False
    sandbox: bool = False
    state_dir: Path = DEFAULT_STATE_DIR
    lock_timeout: float = 60.0
    max_rps: float | None = None
    """Client-side Stripe request rate; None: Stripe's limit for the key's mode (25/s test, 90/s live)."""
    stripe_timeout: float = 30.0
    concurrency: int = 8

    @property
    def effective_max_rps(self) -> float:
        if self.max_rps is not None:
            return self.max_rps
        return 90.0 if key_mode(self.stripe_secret_key.reveal()) == "live" else 25.0

    @property
    def database_label(self) -> str:
        """Where the database is, for messages: the DSN without its password."""
        return redact_dsn(self.database_url.reveal())

    def environment(self, *, max_rps: float) -> dict[str, str]:
        """These settings as the variables `Environment.read` reads back (the sandbox's too): how the
        listener hands them to its worker processes, each of which gets `max_rps`."""
        env = {
            "DATABASE_URL": self.database_url.reveal(),
            "STRIPE_SECRET_KEY": self.stripe_secret_key.reveal(),
            "KUPLOY_STRIPE_MAX_RPS": repr(max_rps),
        }
        if self.stripe_api_base:
            env["STRIPE_API_BASE"] = self.stripe_api_base
        return env


@dataclass(frozen=True, slots=True, kw_only=True)
class Environment:
    """What the operator asked for, before the sandbox (if any) is started."""

    database_url: Secret | None
    stripe_secret_key: Secret | None
    stripe_api_base: str | None
    state_dir: Path
    live: bool
    max_rps: float | None = None

    @property
    def wants_sandbox(self) -> bool:
        return self.database_url is None and self.stripe_secret_key is None

    def settings(self, *, lock_timeout: float = 60.0, max_rps: float | None = None) -> Settings:
        """Settings for the database and Stripe configured here (the sandbox is the CLI's to start)."""
        if self.database_url is None or self.stripe_secret_key is None:
            raise ConfigError("DATABASE_URL and STRIPE_SECRET_KEY are not set")
        return Settings(
            database_url=self.database_url,
            stripe_secret_key=self.stripe_secret_key,
            stripe_api_base=self.stripe_api_base,
            live=self.live,
            lock_timeout=lock_timeout,
            max_rps=max_rps or self.max_rps,
        )

    @classmethod
    def read(
        cls, env: Mapping[str, str] | None = None, *, live: bool = False, strict: bool = True
    ) -> Environment:
        """The environment as configured; `strict=False` skips the key-pair check (`doctor` reports it)."""
        env = os.environ if env is None else env
        database_url = env.get("DATABASE_URL") or None
        key = env.get("STRIPE_SECRET_KEY") or None
        if (database_url is None) != (key is None):
            missing, present = (
                ("STRIPE_SECRET_KEY", "DATABASE_URL")
                if key is None
                else (
                    "DATABASE_URL",
                    "STRIPE_SECRET_KEY",
                )
            )
            raise ConfigError(
                f"{present} is set but {missing} is not: set both to use a real database and Stripe, "
                "or neither to use the local sandbox (embedded Postgres + Stripe emulator)"
            )
        max_rps = env.get("KUPLOY_STRIPE_MAX_RPS")
        if key is not None:
            check_stripe_key(key, live=live)
            if strict and (publishable := env.get("STRIPE_PUBLISHABLE_KEY")):
                check_key_pair(key, publishable)
        return cls(
            database_url=Secret(database_url) if database_url else None,
            stripe_secret_key=Secret(key) if key else None,
            stripe_api_base=env.get("STRIPE_API_BASE") or None,
            state_dir=state_dir(env),
            live=live,
            max_rps=MAX_RPS.parse(max_rps, "KUPLOY_STRIPE_MAX_RPS") if max_rps else None,
        )


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """The tool's local state folder: the sandbox's data and the fetched-catalog cache.
    `KUPLOY_STATE_DIR`, else `KUPLOY_SANDBOX_DIR` (its older name), else `.kuploy-sandbox/`."""
    env = os.environ if env is None else env
    return Path(env.get("KUPLOY_STATE_DIR") or env.get("KUPLOY_SANDBOX_DIR") or DEFAULT_STATE_DIR)


@dataclass(frozen=True, slots=True, kw_only=True)
class CatalogFetch:
    """How a catalog URL is fetched (license sync): from `KUPLOY_CATALOG_URL`, `KUPLOY_LICENSE_KEY`,
    `KUPLOY_CATALOG_TIMEOUT` (seconds, to connect and for each read), `KUPLOY_CATALOG_RETRIES`."""

    url: str | None
    license_key: Secret | None
    timeout: float = 10.0
    retries: int = 3
    """Retries after the first attempt, for 5xx, 408/429, timeouts and connection errors only."""
    backoff: float = 0.5
    """First retry delay in seconds; doubles each retry (with jitter), at most 8 s."""
    cache_dir: Path = DEFAULT_STATE_DIR / "catalog-cache"

    @classmethod
    def read(cls, env: Mapping[str, str] | None = None) -> CatalogFetch:
        env = os.environ if env is None else env
        timeout = env.get("KUPLOY_CATALOG_TIMEOUT")
        retries = env.get("KUPLOY_CATALOG_RETRIES")
        key = (env.get("KUPLOY_LICENSE_KEY") or "").strip(" \t\r\n") or None  # a final newline is not the key
        if key is not None:
            check_header_token(key, "KUPLOY_LICENSE_KEY")
        return cls(
            url=env.get("KUPLOY_CATALOG_URL") or None,
            license_key=Secret(key) if key else None,
            timeout=CATALOG_TIMEOUT.parse(timeout, "KUPLOY_CATALOG_TIMEOUT") if timeout else 10.0,
            retries=int(CATALOG_RETRIES.parse(retries, "KUPLOY_CATALOG_RETRIES")) if retries else 3,
            cache_dir=state_dir(env) / "catalog-cache",
        )


def check_stripe_key(key: str, *, live: bool) -> None:
    """Refuse keys that are malformed, or live without `--live`, or test with `--live`."""
    check_header_token(key, "STRIPE_SECRET_KEY")
    prefixes = ("sk_test_", "sk_live_", "rk_test_", "rk_live_")
    if not key.startswith(prefixes) or len(key) < 12:
        raise ConfigError("STRIPE_SECRET_KEY does not look like a Stripe secret key (sk_test_… or sk_live_…)")
    is_live = key_mode(key) == "live"
    if is_live and not live:
        raise ConfigError("STRIPE_SECRET_KEY is a live key: pass --live to change real billing")
    if live and not is_live:
        raise ConfigError("--live was given but STRIPE_SECRET_KEY is a test-mode key: refusing the mismatch")


_TOKEN = re.compile(r"[!-~]+")
"""What a bearer token or API key can be: printable ASCII without spaces, so it fits in an HTTP
header as it is (a newline there splits the header; a curly quote cannot be encoded)."""


def check_header_token(value: str, name: str) -> None:
    """Refuse a key that cannot be sent as it is, naming the variable and never the value."""
    if _TOKEN.fullmatch(value):
        return
    bad = next((c for c in value if not _TOKEN.fullmatch(c)), "")
    kind = (
        "nothing" if not bad else
        "a line break" if bad in "\r\n" else
        "a space or tab" if bad in " \t" else
        "a control character" if bad.isascii() else
        "a non-ASCII character (a curly quote, a non-breaking space...)"
    )  # fmt: skip
    raise ConfigError(
        f"{name} contains {kind}: a key is printable ASCII without spaces; copy it again "
        "(without quotes or line breaks)"
    )


def key_mode(key: str) -> str | None:
    """ "test" or "live" for a Stripe key (sk_, rk_, pk_), None when it is not one."""
    for mode in ("test", "live"):
        if key.startswith((f"sk_{mode}_", f"rk_{mode}_", f"pk_{mode}_")):
            return mode
    return None


def check_key_pair(secret: str, publishable: str) -> None:
    """Refuse a live secret key with a test publishable key, or the reverse."""
    if not publishable.startswith(("pk_test_", "pk_live_")):
        raise ConfigError(
            "STRIPE_PUBLISHABLE_KEY does not look like a publishable key (pk_test_… or pk_live_…)"
        )
    if key_mode(secret) != key_mode(publishable):
        raise ConfigError(
            f"STRIPE_SECRET_KEY is a {key_mode(secret)} key but STRIPE_PUBLISHABLE_KEY is a "
            f"{key_mode(publishable)} key: use keys of the same mode"
        )


_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
"""A number as an operator types it: ASCII digits only (`str.isdigit` and `float` also take '²',
'٣' and full-width digits), no `nan`, `inf`, `0x`, or `_`."""
_WHOLE = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class NumberRange:
    """What one flag or variable accepts; `parse` is the one way a number is read from the operator.

    `float()` alone takes `nan` (which compares false with every bound, so it passes any range
    check and turns a guard off), `inf` and `1e308` (which overflow later, as a deadline or a
    socket timeout), and non-ASCII digits."""

    minimum: float
    maximum: float
    min_open: bool = False
    """The minimum itself is excluded (a timeout or a rate of 0 means nothing)."""
    integer: bool = False
    unit: str = ""

    def describe(self) -> str:
        what = "a whole number" if self.integer else "a number"
        unit = f" {self.unit}" if self.unit else ""
        if self.min_open:
            return f"{what} greater than {self.minimum:g} and at most {self.maximum:g}{unit}"
        return f"{what} from {self.minimum:g} to {self.maximum:g}{unit}"

    def parse(self, raw: str, name: str) -> float:
        """`raw` as a number in range, or `ConfigError` naming `name` and what it accepts."""
        text = raw.strip()
        form = _WHOLE if self.integer else _DECIMAL
        value = float(text) if form.fullmatch(text) else math.nan
        low_ok = value > self.minimum if self.min_open else value >= self.minimum
        if not (math.isfinite(value) and low_ok and value <= self.maximum):
            raise ConfigError(f"{name} must be {self.describe()}, not {_printable_value(raw)}")
        return value


def _printable_value(raw: str) -> str:
    """A refused value as a message shows it: quoted, escaped, cut short."""
    shown = repr(raw[:40])  # repr escapes what is not printable
    return shown if len(raw) <= 40 else f"{shown[:-1]}...'"


ARCHIVE_SHARE = NumberRange(0, 1)
LOCK_TIMEOUT = NumberRange(0, 86400, unit="seconds")
MAX_RPS = NumberRange(0.1, 10000, unit="requests per second")
CATALOG_TIMEOUT = NumberRange(0, 600, min_open=True, unit="seconds")
CATALOG_RETRIES = NumberRange(0, 10, integer=True)
