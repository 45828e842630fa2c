"""A local, stateful emulator of Stripe's REST API: Products, Prices, Customers, Subscriptions, Webhook
Endpoints, Checkout Sessions, Invoices and Events, with signed webhook deliveries.

The real `stripe` SDK talks to it over HTTP (`base_addresses={"api": url}`). It is deliberately strict:
parameters are checked against the SDK's own typed request parameters (`stripe.params.*`), and the
business rules the reconciler depends on (lookup-key uniqueness, default-price archiving, idempotency,
pagination, per-mode objects) behave as Stripe documents them. A permissive emulator would turn every
green test into a lie.

Only the standard library is used for serving (`http.server.ThreadingHTTPServer`). `stripe` is imported
solely to introspect its parameter TypedDicts.

Fault injection (for reliability tests and benchmarks)
------------------------------------------------------
`rate_limit`, `error_rate`, `timeout_rate` (constructor, `set_faults()`, `POST /_emulator/faults`, and
`sandbox serve --rate-limit/--error-rate/--timeout-rate/--seed`) apply to Stripe routes only, never to the
`/_emulator/*` admin routes. Every Stripe request draws the same three numbers from `random.Random(seed)`
whatever the settings, so one seed and one request order give one fault sequence. What each fault does,
and which Stripe behaviour it follows:

* `rate_limited`: a token bucket of `rate_limit` requests per second (burst of the same size) across all
  Stripe routes. Beyond it: HTTP 429, `{"error": {"code": "rate_limit", "doc_url": ..., "message":
  "Request rate limit exceeded. ...", "type": "invalid_request_error"}}`. Nothing runs and nothing is saved
  under the idempotency key: Stripe's rate limiter runs before its idempotency layer, so a retry with the
  same key executes (docs.stripe.com/error-low-level, content errors). No `Stripe-Should-Retry` and no
  `Retry-After` header: Stripe sends `Stripe-Should-Retry: true` only for 429 *lock timeouts*, and its SDKs
  deliberately do not retry real rate limits (stripe/stripe-dotnet#1886, stripe/stripe-node#1110);
  `Retry-After` is not documented by Stripe, so it is not invented here.
* `error_before_write`: HTTP 500 `{"error": {"message": ..., "type": "api_error"}}`; the request never
  began executing, so nothing changed and no idempotent result is saved ("results are only saved if an API
  endpoint started executing", docs.stripe.com/api/idempotent_requests). No `Stripe-Should-Retry` header:
  the SDK's own rule (retry 5xx when `max_network_retries` > 0) applies, and a retry may succeed.
* `error_after_write`: the request executes (the object exists, the state is saved), then the client gets
  the same 500. Stripe v1 saves "the status code and body of the first request made with a given
  idempotency key after endpoint execution begins. Retries with the same key return the saved response,
  including 500 errors" (docs.stripe.com/api/idempotent_requests): the 500 is saved and replayed, with
  `Stripe-Should-Retry: false` (stripe-python `_should_retry`: "we expect the stripe-should-retry header to
  be false in most cases when a 500 is returned, since our idempotency framework would typically replay
  it anyway"). A retry with the same key therefore never creates a second object; the caller finds the
  object by re-reading it (lookup key, metadata). The share of errors that come after the write is
  `after_write_share` (0.5 by default, a seeded choice).
* `timeout`: before anything runs, the connection hangs `hang_seconds` (bounded; ended early when the
  server stops) and is then closed without an answer; the client's read timeout fires first.

Every Stripe request is logged (`GET /_emulator/requests`) with `"fault"`: null, `"rate_limited"`,
`"error_before_write"`, `"error_after_write"` or `"timeout"`; `GET /_emulator/stats` counts them per fault,
per method and per status, so benchmarks can report retries exactly.

Checkout, invoices, events and webhooks
---------------------------------------
Stripe routes: `POST/GET /v1/checkout/sessions`, `GET /v1/checkout/sessions/{id}` (`expand[]=line_items`),
`POST /v1/checkout/sessions/{id}/expire` (`mode=subscription` only; a hosted session's `url` points at
`GET /_emulator/checkout/{id}`, a JSON stand-in for Stripe's page; open sessions expire at `expires_at`);
`GET /v1/invoices[/{id}]` (filters `customer`, `subscription`, `status`, `collection_method`);
`GET /v1/events[/{id}]` (filters `type` with `*` wildcards, `types[]`, `created`). Invoices and line items
have the current API's shape (`parent.subscription_details`, no `paid`/`payment_intent`).

Admin routes (JSON bodies, never faulted, each run like a request: under the lock, saved, then delivered):
`POST /_emulator/checkout/{id}/complete {"card": ..., "email"?, "name"?}`,
`POST /_emulator/payment_intents/{id}/authenticate {"outcome": "succeeded"|"failed"}` (3D Secure),
`POST /_emulator/invoices/{id}/pay {"card": ...}`, `POST /_emulator/subscriptions/{id}/renew {"card": ...}`
or `{"outcome": "paid"|"failed"|"requires_action"}`, `POST /_emulator/subscriptions/{id}/cancel`,
`GET /_emulator/deliveries`, `POST /_emulator/deliveries/flush {"timeout": s}`.

Test cards (docs.stripe.com/testing): 4242… pays, 4000…0002 is declined (`generic_decline`), 4000…9995 is
declined (`insufficient_funds`), 4000…3220 needs 3D Secure. What a card does at Checkout depends on the
API version the session was created with (its `Stripe-Version`), because Stripe changed it in
2025-03-31.basil ("Subscriptions are now created after the user completes payment. Failed payment
attempts no longer result in an incomplete subscription with a finalized invoice",
docs.stripe.com/changelog/basil/2025-03-31/checkout-legacy-subscription-upgrade):

* basil and later (the SDK's pinned version): 4242 → `customer.created` (unless `customer` was given),
  `customer.subscription.created` (active), `invoice.created` (draft), `invoice.finalized` (open),
  `invoice.paid`, `invoice.payment_succeeded`, `checkout.session.completed`. A declined card changes
  nothing and emits nothing: Checkout shows the decline and the session stays open for another card.
  3220 answers `requires_action` with a PaymentIntent id; nothing exists until it is authenticated, then
  the 4242 sequence follows (a failed authentication leaves the session open).
* before basil: the subscription is created `incomplete` with an open first invoice (`customer.created`,
  `customer.subscription.created`, `invoice.created`, `invoice.finalized`), then the card is tried:
  4242 → `invoice.paid`, `invoice.payment_succeeded`, `customer.subscription.updated` (active),
  `checkout.session.completed`; 0002 → `invoice.payment_failed` (it stays incomplete; the session stays
  open and may be completed with another card, paying the same invoice); 3220 →
  `invoice.payment_action_required` until authenticated, then as 4242.

Renewal (`renew`): `customer.subscription.updated` (the new period), `invoice.created`,
`invoice.finalized`, then `invoice.paid` + `invoice.payment_succeeded` (and back to active from past_due),
or `invoice.payment_failed` / `invoice.payment_action_required` + `customer.subscription.updated`
(past_due); with `cancel_at_period_end` it ends the subscription (`customer.subscription.deleted`).
`DELETE /v1/subscriptions/{id}` and the `cancel` route emit `customer.subscription.deleted`; API updates
emit `customer.subscription.updated`, `customer.updated`, `product.updated`, `price.updated` (also for the
price a `transfer_lookup_key` takes the key from) with `previous_attributes` (top-level fields), and
creations their `*.created`. `POST /v1/subscriptions` accepts `payment_behavior`: `default_incomplete`
makes an `incomplete` subscription with an open first invoice (paid with the `pay` route); the other
values keep the earlier behaviour (active, no invoice) because API customers carry no payment method here.

Events are stored with the account (`evt_`, `created`, `data.object` snapshot, `request.id` and
`idempotency_key` for API calls, null for automatic ones, `pending_webhooks`), listed newest first with
same-second events in creation order; a request that fails leaves none, an idempotent replay makes none.
Not modelled: `invoice.updated`, `payment_intent.*`, `charge.*`, `payment_method.*` events; PaymentIntents
are internal (only the admin route sees them). Delivery (signature, headers, retries, order) is described
in `reconciler.sandbox.delivery`; the queue is in memory and not persisted.
"""

from __future__ import annotations

import base64
import calendar
import contextlib
import fcntl
import hashlib
import json
import os
import random
import re
import secrets
import string
import sys
import tempfile
import threading
import time
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import stripe

from reconciler.errors import ConfigError
from reconciler.sandbox.delivery import DEFAULT_RETRY_DELAYS, DEFAULT_TIMEOUT, Deliverer, Job

__all__ = ["Emulator", "RunningEmulator", "serve", "start_in_thread"]

JSON = dict[str, Any]

STATE_FORMAT = "kuploy-stripe-emulator/1"
MAX_BODY_BYTES = 1 << 20
MAX_DRAINED_BYTES = 16 << 20
MAX_FORM_FIELDS = 5000
MAX_EXPAND_DEPTH = 4
MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_LEN = 40
MAX_METADATA_VALUE_LEN = 500
MAX_LOOKUP_KEY_LEN = 200
MAX_STATEMENT_DESCRIPTOR_LEN = 22
MAX_UNIT_AMOUNT = 99_999_999
INT64_MAX = (1 << 63) - 1
# Stripe caps a recurring interval at three years.
MAX_INTERVAL_COUNT = {"day": 1095, "week": 156, "month": 36, "year": 3}

# The currencies Stripe names in its "Invalid currency" error (in that order), plus later additions.
_CURRENCIES_IN_ORDER = [
    "usd",
    "aed",
    "afn",
    "all",
    "amd",
    "ang",
    "aoa",
    "ars",
    "aud",
    "awg",
    "azn",
    "bam",
    "bbd",
    "bdt",
    "bgn",
    "bhd",
    "bif",
    "bmd",
    "bnd",
    "bob",
    "brl",
    "bsd",
    "bwp",
    "byn",
    "bzd",
    "cad",
    "cdf",
    "chf",
    "clp",
    "cny",
    "cop",
    "crc",
    "cve",
    "czk",
    "djf",
    "dkk",
    "dop",
    "dzd",
    "egp",
    "etb",
    "eur",
    "fjd",
    "fkp",
    "gbp",
    "gel",
    "gip",
    "gmd",
    "gnf",
    "gtq",
    "gyd",
    "hkd",
    "hnl",
    "htg",
    "huf",
    "idr",
    "ils",
    "inr",
    "isk",
    "jmd",
    "jod",
    "jpy",
    "kes",
    "kgs",
    "khr",
    "kmf",
    "krw",
    "kwd",
    "kyd",
    "kzt",
    "lak",
    "lbp",
    "lkr",
    "lrd",
    "lsl",
    "mad",
    "mdl",
    "mga",
    "mkd",
    "mmk",
    "mnt",
    "mop",
    "mur",
    "mvr",
    "mwk",
    "mxn",
    "myr",
    "mzn",
    "nad",
    "ngn",
    "nio",
    "nok",
    "npr",
    "nzd",
    "omr",
    "pab",
    "pen",
    "pgk",
    "php",
    "pkr",
    "pln",
    "pyg",
    "qar",
    "ron",
    "rsd",
    "rub",
    "rwf",
    "sar",
    "sbd",
    "scr",
    "sek",
    "sgd",
    "shp",
    "sle",
    "sos",
    "srd",
    "std",
    "szl",
    "thb",
    "tjs",
    "tnd",
    "top",
    "try",
    "ttd",
    "twd",
    "tzs",
    "uah",
    "ugx",
    "uyu",
    "uzs",
    "vnd",
    "vuv",
    "wst",
    "xaf",
    "xcd",
    "xcg",  # the Caribbean guilder replaced ANG in 2025
    "xof",
    "xpf",
    "yer",
    "zar",
    "zmw",
    "usdc",
]
SUPPORTED_CURRENCIES: frozenset[str] = frozenset(_CURRENCIES_IN_ORDER)

_ALNUM = string.ascii_letters + string.digits
_KEY_RE = re.compile(r"^(sk|rk)_(test|live)_[A-Za-z0-9]{1,247}$")
_FORM_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_INT_RE = re.compile(r"^-?\d{1,19}$")


def _random_id(prefix: str, length: int) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


# --------------------------------------------------------------------------------------------- errors


class StripeError(Exception):
    """An error answered in Stripe's shape. `cacheable` is False for failures before execution began
    (parameter validation, auth, routing): Stripe saves no idempotent result for those."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        cacheable: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type_ = type_
        self.code = code
        self.param = param
        self.cacheable = cacheable

    def body(self) -> JSON:
        err: JSON = {}
        if self.code is not None:
            err["code"] = self.code
            err["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        err["message"] = self.message
        if self.param is not None:
            err["param"] = self.param
        err["type"] = self.type_
        return {"error": err}


def _param_error(message: str, param: str | None, code: str | None = None) -> StripeError:
    return StripeError(400, message, code=code, param=param, cacheable=False)


def _unknown(param: str) -> StripeError:
    return _param_error(f"Received unknown parameter: {param}", param, "parameter_unknown")


def _missing(param: str) -> StripeError:
    return _param_error(f"Missing required param: {param}.", param, "parameter_missing")


def _empty(param: str) -> StripeError:
    return _param_error(
        f"You passed an empty string for '{param}'. We assume empty values are an attempt to unset a "
        f"parameter; however '{param}' cannot be unset. You should remove '{param}' from your request or "
        "supply a non-empty value.",
        param,
        "parameter_invalid_empty",
    )


def _no_such(kind: str, obj_id: str, param: str, status: int = 404) -> StripeError:
    return StripeError(status, f"No such {kind}: '{obj_id}'", code="resource_missing", param=param)


def _one_of(values: tuple[str, ...]) -> str:
    if len(values) == 1:
        return values[0]
    return ", ".join(values[:-1]) + ", or " + values[-1]


# ------------------------------------------------------------------- parameter specs from the SDK


@dataclass(frozen=True)
class Spec:
    """What one request parameter accepts, derived from the SDK's typed params."""

    kind: str  # str | int | bool | decimal | float | enum | object | map | list | union
    enum: tuple[str, ...] = ()
    fields: Mapping[str, Spec] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    item: Spec | None = None
    options: tuple[Spec, ...] = ()
    emptyable: bool = False  # "" is accepted, meaning "unset"


_REQUEST_OPTION_KEYS = frozenset(stripe.RequestOptions.__annotations__)


def _hints(cls: type) -> dict[str, Any]:
    """Resolved annotations of a params TypedDict, minus the RequestOptions it may inherit.

    `typing.get_type_hints(cls)` cannot be used directly: the inherited RequestOptions annotations are
    forward references to names only importable under TYPE_CHECKING."""
    own = {k: v for k, v in cls.__annotations__.items() if k not in _REQUEST_OPTION_KEYS}
    holder = types.SimpleNamespace(__annotations__=own)
    module = sys.modules[cls.__module__]
    return typing.get_type_hints(holder, globalns=vars(module), include_extras=True)


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "__required_keys__") and hasattr(tp, "__annotations__")


def _typeddict_spec(cls: type) -> Spec:
    hints = _hints(cls)
    required = frozenset(cast(frozenset[str], cls.__required_keys__)) - _REQUEST_OPTION_KEYS  # type: ignore[attr-defined]
    return Spec("object", fields={k: _spec(v) for k, v in hints.items()}, required=required & set(hints))


def _spec(tp: Any) -> Spec:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.NotRequired, typing.Required):
        return _spec(args[0])
    if origin is typing.Literal:
        values = tuple(str(a) for a in args if a != "")
        return Spec("enum", enum=values, emptyable="" in args) if values else Spec("str", emptyable=True)
    if origin in (typing.Union, types.UnionType):
        literals: list[Any] = []
        others: list[Any] = []
        for a in args:
            (
                literals.extend(typing.get_args(a))
                if typing.get_origin(a) is typing.Literal
                else others.append(a)
            )
        emptyable = "" in literals
        lit_values = tuple(str(v) for v in literals if v != "")
        has_str = str in others
        specs: list[Spec] = []
        if lit_values:
            specs.append(Spec("enum", enum=lit_values))
        elif has_str:
            specs.append(Spec("str"))
        for o in others:
            if o is str or o is type(None):
                continue
            s = _spec(o)
            if s.kind == "map" and any(x.kind == "map" for x in specs):
                continue  # Dict[str, X] | UntypedStripeObject[X] are the same on the wire
            specs.append(s)
        if len(specs) == 1:
            only = specs[0]
            return Spec(
                only.kind,
                only.enum,
                only.fields,
                only.required,
                only.item,
                only.options,
                emptyable or only.emptyable,
            )
        return Spec("union", options=tuple(specs), emptyable=emptyable)
    if origin is list:
        return Spec("list", item=_spec(args[0]))
    if origin is dict:
        return Spec("map", item=_spec(args[1]))
    if isinstance(origin, type) and origin.__name__ == "UntypedStripeObject":
        return Spec("map", item=_spec(args[0]))
    if _is_typeddict(tp):
        return _typeddict_spec(tp)
    if tp is bool:
        return Spec("bool")
    if tp is int:
        return Spec("int")
    if tp is float:
        return Spec("float")
    if tp is Decimal:
        return Spec("decimal")
    return Spec("str")


_P = stripe.params
PARAM_SPECS: dict[str, Spec] = {
    "product.create": _typeddict_spec(_P.ProductCreateParams),
    "product.update": _typeddict_spec(_P.ProductUpdateParams),
    "product.list": _typeddict_spec(_P.ProductListParams),
    "product.retrieve": _typeddict_spec(_P.ProductRetrieveParams),
    "product.delete": _typeddict_spec(_P.ProductDeleteParams),
    "price.create": _typeddict_spec(_P.PriceCreateParams),
    "price.update": _typeddict_spec(_P.PriceUpdateParams),
    "price.list": _typeddict_spec(_P.PriceListParams),
    "price.retrieve": _typeddict_spec(_P.PriceRetrieveParams),
}
# Where Stripe documents more than the SDK's typing says. Kept to this one place, each with its reason.
_PRODUCT_UPDATE_FIELDS = dict(PARAM_SPECS["product.update"].fields)
# "default_price": Stripe documents unsetting a product's default price by posting an empty value; the SDK
# types the field as plain `str`, which would otherwise reject "".
_PRODUCT_UPDATE_FIELDS["default_price"] = Spec("str", emptyable=True)
PARAM_SPECS["product.update"] = Spec(
    "object", fields=_PRODUCT_UPDATE_FIELDS, required=PARAM_SPECS["product.update"].required
)
PARAM_SPECS.update(
    {
        "customer.create": _typeddict_spec(_P.CustomerCreateParams),
        "customer.update": _typeddict_spec(_P.CustomerUpdateParams),
        "customer.list": _typeddict_spec(_P.CustomerListParams),
        "customer.retrieve": _typeddict_spec(_P.CustomerRetrieveParams),
        "subscription.create": _typeddict_spec(_P.SubscriptionCreateParams),
        "subscription.update": _typeddict_spec(_P.SubscriptionUpdateParams),
        "subscription.list": _typeddict_spec(_P.SubscriptionListParams),
        "subscription.retrieve": _typeddict_spec(_P.SubscriptionRetrieveParams),
        "subscription.cancel": _typeddict_spec(_P.SubscriptionCancelParams),
        "webhook_endpoint.create": _typeddict_spec(_P.WebhookEndpointCreateParams),
        "webhook_endpoint.update": _typeddict_spec(_P.WebhookEndpointUpdateParams),
        "webhook_endpoint.list": _typeddict_spec(_P.WebhookEndpointListParams),
        "webhook_endpoint.retrieve": _typeddict_spec(_P.WebhookEndpointRetrieveParams),
        "webhook_endpoint.delete": _typeddict_spec(_P.WebhookEndpointDeleteParams),
        "checkout_session.create": _typeddict_spec(_P.checkout.SessionCreateParams),
        "checkout_session.list": _typeddict_spec(_P.checkout.SessionListParams),
        "checkout_session.retrieve": _typeddict_spec(_P.checkout.SessionRetrieveParams),
        "checkout_session.expire": _typeddict_spec(_P.checkout.SessionExpireParams),
        "invoice.list": _typeddict_spec(_P.InvoiceListParams),
        "invoice.retrieve": _typeddict_spec(_P.InvoiceRetrieveParams),
        "event.list": _typeddict_spec(_P.EventListParams),
        "event.retrieve": _typeddict_spec(_P.EventRetrieveParams),
    }
)

# The event types kuploy subscribes to. They are in the SDK's own list too; embedding them means a newer
# SDK that drops one cannot silently make the emulator reject what kuploy sends.
KUPLOY_EVENT_TYPES: frozenset[str] = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.expired",
        "customer.created",
        "customer.updated",
        "customer.deleted",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_failed",
        "invoice.payment_succeeded",
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "price.created",
        "price.updated",
        "price.deleted",
        "product.created",
        "product.updated",
        "product.deleted",
    }
)
_SDK_EVENT_ENUM = PARAM_SPECS["webhook_endpoint.create"].fields["enabled_events"].item
assert _SDK_EVENT_ENUM is not None and _SDK_EVENT_ENUM.kind == "enum"
# Every event type Stripe documents (the SDK's typed list, "*" included) plus the embedded ones above.
WEBHOOK_EVENT_TYPES: tuple[str, ...] = _SDK_EVENT_ENUM.enum + tuple(
    sorted(KUPLOY_EVENT_TYPES - set(_SDK_EVENT_ENUM.enum))
)
for _route in ("webhook_endpoint.create", "webhook_endpoint.update"):
    _fields = dict(PARAM_SPECS[_route].fields)
    _fields["enabled_events"] = Spec("list", item=Spec("enum", enum=WEBHOOK_EVENT_TYPES))
    PARAM_SPECS[_route] = Spec("object", fields=_fields, required=PARAM_SPECS[_route].required)

# Parameters Stripe accepts (the SDK types them) whose behaviour this emulator models, per route; the
# others are refused with a clear 400 rather than silently ignored (accepting and ignoring them would make
# a test pass against behaviour that does not exist here). Product and Price routes model everything.
_CUSTOMER_FIELDS = frozenset(
    {
        "address",
        "balance",
        "business_name",
        "description",
        "email",
        "expand",
        "individual_name",
        "invoice_prefix",
        "metadata",
        "name",
        "next_invoice_sequence",
        "phone",
        "preferred_locales",
        "shipping",
        "tax_exempt",
    }
)
_PAGING = frozenset({"created", "ending_before", "expand", "limit", "starting_after"})
MODELLED_PARAMS: dict[str, frozenset[str]] = {
    "customer.create": _CUSTOMER_FIELDS,
    "customer.update": _CUSTOMER_FIELDS,
    "customer.list": _PAGING | {"email"},
    "subscription.create": frozenset(
        {
            "customer",
            "items",
            "metadata",
            "cancel_at_period_end",
            "description",
            "expand",
            "payment_behavior",
            "proration_behavior",
        }
    ),
    "subscription.update": frozenset(
        {"items", "metadata", "cancel_at_period_end", "description", "expand", "proration_behavior"}
    ),
    "subscription.list": _PAGING | {"customer", "price", "status"},
    "subscription.cancel": frozenset({"cancellation_details", "expand", "prorate"}),
    "webhook_endpoint.create": frozenset(
        {"url", "enabled_events", "description", "metadata", "api_version", "expand"}
    ),
    "webhook_endpoint.update": frozenset(
        {"url", "enabled_events", "disabled", "description", "metadata", "expand"}
    ),
    "checkout_session.create": frozenset(
        {
            "cancel_url",
            "client_reference_id",
            "customer",
            "customer_email",
            "expand",
            "expires_at",
            "line_items",
            "metadata",
            "mode",
            "subscription_data",
            "success_url",
        }
    ),
    "checkout_session.list": _PAGING | {"customer", "status", "subscription"},
    "invoice.list": _PAGING | {"collection_method", "customer", "status", "subscription"},
    "event.list": _PAGING | {"type", "types"},
}
_MODELLED_NESTED = {
    "line_items": frozenset({"price", "quantity"}),
    "subscription_data": frozenset({"description", "metadata"}),
}
_MODELLED_ITEM_PARAMS = {
    "subscription.create": frozenset({"price", "quantity", "metadata"}),
    "subscription.update": frozenset({"id", "price", "quantity", "metadata", "deleted"}),
}
MAX_SUBSCRIPTION_ITEMS = 20
MAX_WEBHOOK_ENDPOINTS = 16
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_INVOICE_PREFIX_RE = re.compile(r"^[A-Z0-9]{3,12}$")


# Checkout ----------------------------------------------------------------------------------------

CHECKOUT_LIFETIME = 24 * 3600  # a session's default (and longest) life, as Stripe's
# From this API version on, a subscription-mode Checkout Session creates its subscription only after the
# payment succeeded (docs.stripe.com/changelog/basil/2025-03-31/checkout-legacy-subscription-upgrade).
CHECKOUT_BASIL = "2025-03-31"
MAX_FLUSH_SECONDS = 120.0
# Stripe's test cards (docs.stripe.com/testing) this emulator knows: outcome, decline code.
_TEST_CARDS: dict[str, tuple[str, str | None]] = {
    "4242424242424242": ("succeeded", None),
    "4000000000000002": ("declined", "generic_decline"),
    "4000000000009995": ("declined", "insufficient_funds"),
    "4000000000003220": ("requires_action", None),
}


def _admin_error(message: str) -> StripeError:
    return StripeError(400, message, cacheable=False)


def _card_arg(args: Mapping[str, Any]) -> str:
    card = args.get("card")
    if not isinstance(card, str):
        raise _admin_error(f'"card" is required: one of {", ".join(_TEST_CARDS)}.')
    return card


def _card_outcome(card: str) -> tuple[str, str | None]:
    number = re.sub(r"[\s-]", "", card)
    if number not in _TEST_CARDS:
        raise _admin_error(f"Unknown test card {card!r}; this emulator knows {', '.join(_TEST_CARDS)}.")
    return _TEST_CARDS[number]


def _decline(code: str | None) -> JSON:
    message = {
        "insufficient_funds": "Your card has insufficient funds.",
    }.get(code or "", "Your card was declined.")
    return {"code": "card_declined", "decline_code": code, "message": message, "type": "card_error"}


def _unmodelled(param: str) -> StripeError:
    return _param_error(
        f"The parameter `{param}` is valid for Stripe, but this Stripe emulator does not model its "
        "behaviour. Remove it, or extend the emulator.",
        param,
    )


# ------------------------------------------------------------------------------- form decoding


def decode_form(text: str) -> JSON:
    """Decode Stripe-style nested form/query encoding (`a[b][0]=x`, `expand[]=y`) into nested values.

    Leaves are strings; a node whose keys are exactly 0..n-1 becomes a list."""
    try:
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=MAX_FORM_FIELDS)
    except UnicodeDecodeError as exc:
        raise _param_error("Invalid request: the body or query string is not valid UTF-8.", None) from exc
    except ValueError as exc:
        raise _param_error(f"Invalid request: {exc}.", None) from exc
    root: JSON = {}
    for raw_key, value in pairs:
        m = _FORM_KEY_RE.match(raw_key)
        if m is None:
            raise _unknown(raw_key)
        segments = [m.group(1), *re.findall(r"\[([^\[\]]*)\]", m.group(2))]
        node = root
        shown = segments[0]
        for i, seg in enumerate(segments):
            key = str(len(node)) if seg == "" else seg
            if i == len(segments) - 1:
                if isinstance(node.get(key), dict):
                    raise _param_error(f"Invalid hash: {shown} was sent both as a value and a hash", shown)
                node[key] = value
            else:
                child = node.setdefault(key, {})
                if not isinstance(child, dict):
                    raise _param_error(f"Invalid hash: {shown} was sent both as a value and a hash", shown)
                node = child
                shown = f"{shown}[{segments[i + 1]}]"
    return cast(JSON, _listify(root))


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v) for k, v in node.items()}
    if (
        converted
        and all(k.isdigit() for k in converted)
        and sorted(int(k) for k in converted) == list(range(len(converted)))
    ):
        return [converted[str(i)] for i in range(len(converted))]
    return converted


# ---------------------------------------------------------------------------------- validation


def _join(prefix: str, key: str) -> str:
    return f"{prefix}[{key}]" if prefix else key


def validate_params(spec: Spec, data: Mapping[str, Any]) -> JSON:
    """Check decoded params against a top-level spec; return them coerced to Python types."""
    return _coerce_fields(spec, data, "")


def _coerce_fields(spec: Spec, data: Mapping[str, Any], prefix: str) -> JSON:
    for key in data:
        if key not in spec.fields:
            raise _unknown(_join(prefix, key))
    for key in sorted(spec.required):
        if key not in data:
            raise _missing(_join(prefix, key))
    return {key: _coerce(spec.fields[key], value, _join(prefix, key)) for key, value in data.items()}


def _coerce(spec: Spec, value: Any, name: str, *, in_map: bool = False) -> Any:
    if value == "" and (spec.emptyable or (in_map and spec.kind == "str")):
        return ""
    kind = spec.kind
    if kind == "union":
        first: StripeError | None = None
        for option in spec.options:
            try:
                return _coerce(option, value, name)
            except StripeError as exc:
                first = first or exc
        assert first is not None
        raise first
    if kind == "object":
        if not isinstance(value, dict):
            raise _param_error(f"Invalid hash: {name} must be a hash of parameters", name)
        return _coerce_fields(spec, value, name)
    if kind == "map":
        if isinstance(value, list):
            value = {str(i): v for i, v in enumerate(value)}
        if not isinstance(value, dict):
            raise _param_error(f"Invalid hash: {name} must be a hash of key-value pairs", name)
        assert spec.item is not None
        return {k: _coerce(spec.item, v, f"{name}[{k}]", in_map=True) for k, v in value.items()}
    if kind == "list":
        if isinstance(value, dict) and all(k.isdigit() for k in value):
            value = [value[k] for k in sorted(value, key=int)]
        if not isinstance(value, list):
            raise _param_error(f"Invalid array: {name} must be an array", name)
        assert spec.item is not None
        item = spec.item
        return [_coerce(item, v, f"{name}[{i}]") for i, v in enumerate(value)]
    # Scalars from here on.
    if not isinstance(value, str):
        raise _param_error(f"Invalid {name}: expected a single value, not a hash or array", name)
    if value == "":
        raise _empty(name)
    if kind == "bool":
        if value not in ("true", "false"):
            raise _param_error(f"Invalid boolean: {value}", name)
        return value == "true"
    if kind == "int":
        if not _INT_RE.match(value) or abs(int(value)) > INT64_MAX:
            raise _param_error(f"Invalid integer: {value}", name, "parameter_invalid_integer")
        return int(value)
    if kind in ("decimal", "float"):
        try:
            number = Decimal(value)
        except InvalidOperation:
            number = Decimal("NaN")
        if not number.is_finite() or len(value) > 40:
            raise _param_error(f"Invalid decimal: {value}", name)
        return number if kind == "decimal" else float(number)
    if kind == "enum":
        if value not in spec.enum:
            last = re.findall(r"([^\[\]]+)\]?$", name)[-1]
            if last.isdigit():  # an item of a list: name the whole path (`enabled_events[0]`)
                last = name
            raise _param_error(f"Invalid {last}: must be one of {_one_of(spec.enum)}", name)
        return value
    if len(value) > 40000:
        raise _param_error(f"Invalid string: {name} is too long", name)
    return value


# ------------------------------------------------------------------------------------ the state


@dataclass
class _Account:
    """One key mode's objects (test and live never see each other's)."""

    products: dict[str, JSON] = field(default_factory=dict)
    prices: dict[str, JSON] = field(default_factory=dict)
    customers: dict[str, JSON] = field(default_factory=dict)
    subscriptions: dict[str, JSON] = field(default_factory=dict)
    # Stored with their signing `secret`, which only the create response (and the admin route) shows.
    webhook_endpoints: dict[str, JSON] = field(default_factory=dict)
    checkout_sessions: dict[str, JSON] = field(default_factory=dict)
    invoices: dict[str, JSON] = field(default_factory=dict)
    events: dict[str, JSON] = field(default_factory=dict)
    # Card payments waiting for 3D Secure (internal: Stripe's PaymentIntents are not served here).
    payment_intents: dict[str, JSON] = field(default_factory=dict)
    order: dict[str, int] = field(default_factory=dict)  # creation sequence, breaks `created` ties

    def store(self, kind: str) -> dict[str, JSON]:
        return cast(dict[str, JSON], getattr(self, _OBJECT_KINDS[kind]))


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    close: bool = False
    hang_s: float = 0.0  # with `drop`: how long the connection hangs before it is closed
    drop: bool = False  # close the connection without any answer (a timeout fault)


_OBJECT_KINDS = {
    "product": "products",
    "price": "prices",
    "customer": "customers",
    "subscription": "subscriptions",
    "webhook_endpoint": "webhook_endpoints",
    "checkout_session": "checkout_sessions",
    "invoice": "invoices",
    "event": "events",
    "payment_intent": "payment_intents",
}
# URL path of each kind under /v1 (when not its store name); kinds without one have no Stripe route.
_PATHS = {
    "product": "products",
    "price": "prices",
    "customer": "customers",
    "subscription": "subscriptions",
    "webhook_endpoint": "webhook_endpoints",
    "checkout_session": "checkout/sessions",
    "invoice": "invoices",
    "event": "events",
}
# The routes of kinds that do not have the full create/retrieve/update/list set.
_ACTIONS = {
    "checkout_session": frozenset({"create", "retrieve", "list"}),
    "invoice": frozenset({"retrieve", "list"}),
    "event": frozenset({"retrieve", "list"}),
}
# DELETE on a resource path, per kind (kinds not listed have no DELETE route here).
_DELETE_ACTIONS = {"product": "delete", "subscription": "cancel", "webhook_endpoint": "delete"}
# As Stripe's "No such ..." messages say it.
_KIND_NAMES = {"webhook_endpoint": "webhook endpoint", "checkout_session": "checkout.session"}
# The `type` prefix of a kind's events.
_EVENT_PREFIX = {"subscription": "customer.subscription", "checkout_session": "checkout.session"}
# Kind an expandable field points to; "" marks a field that is always null here (expanding it is a no-op).
_EXPANDABLE = {
    "product": {"default_price": "price", "tax_code": ""},
    "price": {"product": "product"},
    "customer": {"default_source": "", "test_clock": ""},
    "subscription": {
        "customer": "customer",
        "application": "",
        "default_payment_method": "",
        "default_source": "",
        "latest_invoice": "invoice",
        "on_behalf_of": "",
        "pending_setup_intent": "",
        "schedule": "",
        "test_clock": "",
    },
    "invoice": {
        "customer": "customer",
        "application": "",
        "default_payment_method": "",
        "default_source": "",
        "from_invoice": "",
        "latest_revision": "",
        "on_behalf_of": "",
        "test_clock": "",
    },
    "checkout_session": {
        "customer": "customer",
        "invoice": "invoice",
        "subscription": "subscription",
        "payment_intent": "",
        "payment_link": "",
        "setup_intent": "",
    },
    "event": {},
}
_PRICE_INCLUDABLE = ("currency_options", "tiers")


def _ordered(obj: JSON) -> JSON:
    """Stripe's key order (id, object, then alphabetical); internal `_`-prefixed keys are left out."""
    head = {k: obj[k] for k in ("id", "object") if k in obj}
    return head | {k: obj[k] for k in sorted(obj) if k not in head and not k.startswith("_")}


def _period_end(start: int, recurring: JSON) -> int:
    """End of a billing period that starts at `start` (UTC; month ends clamp, as Stripe's do)."""
    interval, count = recurring["interval"], int(recurring["interval_count"])
    if interval in ("day", "week"):
        return start + count * (86400 if interval == "day" else 7 * 86400)
    begin = datetime.fromtimestamp(start, tz=UTC)
    months = begin.month - 1 + count * (12 if interval == "year" else 1)
    year, month = begin.year + months // 12, months % 12 + 1
    day = min(begin.day, calendar.monthrange(year, month)[1])
    return int(begin.replace(year=year, month=month, day=day).timestamp())


def _plan_of(price: JSON) -> JSON:
    """The legacy `plan` view of a recurring price, which subscription items still carry."""
    recurring = price["recurring"]
    return {
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": price["billing_scheme"],
        "created": price["created"],
        "currency": price["currency"],
        "interval": recurring["interval"],
        "interval_count": recurring["interval_count"],
        "livemode": price["livemode"],
        "metadata": price["metadata"],
        "meter": recurring["meter"],
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": price["tiers_mode"],
        "transform_usage": price["transform_quantity"],
        "trial_period_days": recurring["trial_period_days"],
        "usage_type": recurring["usage_type"],
    }


def _key_digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()[:24]


def _signature(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _redact(api_key: str) -> str:
    return api_key[:8] + "*" * max(len(api_key) - 12, 4) + api_key[-4:] if len(api_key) > 12 else api_key


# ------------------------------------------------------------------------------- fault injection

FAULTS = ("rate_limited", "error_before_write", "error_after_write", "timeout")
MAX_HANG_SECONDS = 600.0
RATE_LIMIT_MESSAGE = (
    "Request rate limit exceeded. You can learn more about rate limits here "
    "https://stripe.com/docs/rate-limits."
)
_FAULT_SETTINGS = (
    "rate_limit",
    "error_rate",
    "timeout_rate",
    "seed",
    "latency_ms",
    "hang_seconds",
    "after_write_share",
)


def _rate_limited() -> StripeError:
    return StripeError(429, RATE_LIMIT_MESSAGE, code="rate_limit", cacheable=False)


def _api_error(request_id: str) -> StripeError:
    return StripeError(
        500,
        "An unknown error occurred while processing your request. Please try again, or contact us at "
        f"https://support.stripe.com/ with the request ID {request_id}.",
        type_="api_error",
    )


def _number(name: str, value: Any, low: float, high: float | None = None) -> float:
    """A fault setting as a float within [low, high]; ConfigError otherwise (bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"Stripe emulator {name} must be a number, not {value!r}")
    number = float(value)
    if number != number or number < low or (high is not None and number > high):
        shown = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
        raise ConfigError(f"Stripe emulator {name} must be {shown}, not {value!r}")
    return number


class Emulator:
    """Stripe Products/Prices state plus request handling. Thread-safe: one lock serialises requests."""

    def __init__(
        self,
        *,
        state_file: Path | None = None,
        latency_ms: int = 0,
        rate_limit: float | None = None,
        error_rate: float = 0.0,
        timeout_rate: float = 0.0,
        seed: int | None = None,
        hang_seconds: float = 30.0,
        after_write_share: float = 0.5,
        delivery_retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        delivery_timeout: float = DEFAULT_TIMEOUT,
        shuffle_deliveries: bool = False,
    ) -> None:
        self.state_file = Path(state_file) if state_file is not None else None
        self.latency_ms = 0
        self.rate_limit: float | None = None
        self.error_rate = 0.0
        self.timeout_rate = 0.0
        self.seed: int | None = None
        self.hang_seconds = 30.0
        self.after_write_share = 0.5
        self._rng = random.Random()
        self._clock = time.monotonic  # tests may replace it to drive the rate limiter
        self._tokens = 0.0
        self._refilled = 0.0
        self.stopping = threading.Event()  # set when the server stops: hanging connections end early
        self.requests: list[JSON] = []
        self._lock = threading.RLock()
        self.set_faults(
            latency_ms=latency_ms,
            rate_limit=rate_limit,
            error_rate=error_rate,
            timeout_rate=timeout_rate,
            seed=seed,
            hang_seconds=hang_seconds,
            after_write_share=after_write_share,
        )
        self._accounts: dict[str, _Account] = {"test": _Account(), "live": _Account()}
        self._seq = 0
        self._idempotency: dict[str, dict[str, JSON]] = {}
        self._seen: tuple[int, int, int] | None = None  # state file signature last loaded or written
        # Events made by the request (or admin action) running now; see `_emit`.
        self._request_ctx: JSON = {"id": None, "idempotency_key": None}
        self._request_host: str | None = None  # the Host the client used (for the URLs of new objects)
        self._request_version: str | None = None  # its Stripe-Version header
        self._emitted: list[tuple[_Account, str, JSON]] = []
        self._outbox: list[Job] = []
        try:
            self.deliverer = Deliverer(
                retry_delays=delivery_retry_delays,
                timeout=_number("delivery_timeout", delivery_timeout, 0.001, 600.0),
                shuffle=shuffle_deliveries,
                seed=seed,
                still_wanted=self._still_wanted,
                on_delivered=self._delivered,
            )
        except ValueError as exc:
            raise ConfigError(f"Stripe emulator delivery_retry_delays: {exc}") from exc
        if self.state_file is not None and self.state_file.exists():
            self._load(self.state_file)
            self._seen = _signature(self.state_file)

    # ------------------------------------------------------------------ persistence

    def _load(self, path: Path) -> None:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("format") != STATE_FORMAT:
                raise ValueError(f"format is {raw.get('format')!r}, expected {STATE_FORMAT!r}")
            self._seq = int(raw["seq"])
            for mode in ("test", "live"):
                acct = raw["accounts"][mode]
                self._accounts[mode] = _Account(
                    products=dict(acct["products"]),
                    prices=dict(acct["prices"]),
                    # Absent from state files written before these resources existed.
                    customers=dict(acct.get("customers", {})),
                    subscriptions=dict(acct.get("subscriptions", {})),
                    webhook_endpoints=dict(acct.get("webhook_endpoints", {})),
                    checkout_sessions=dict(acct.get("checkout_sessions", {})),
                    invoices=dict(acct.get("invoices", {})),
                    events=dict(acct.get("events", {})),
                    payment_intents=dict(acct.get("payment_intents", {})),
                    order=dict(acct["order"]),
                )
            self._idempotency = {k: dict(v) for k, v in raw["idempotency"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"Stripe emulator state file {path} cannot be read: {exc}") from exc

    def _save(self) -> None:
        if self.state_file is None:
            return
        data = {
            "format": STATE_FORMAT,
            "seq": self._seq,
            "accounts": {
                mode: {
                    "products": a.products,
                    "prices": a.prices,
                    "customers": a.customers,
                    "subscriptions": a.subscriptions,
                    "webhook_endpoints": a.webhook_endpoints,
                    "checkout_sessions": a.checkout_sessions,
                    "invoices": a.invoices,
                    "events": a.events,
                    "payment_intents": a.payment_intents,
                    "order": a.order,
                }
                for mode, a in self._accounts.items()
            },
            "idempotency": self._idempotency,
        }
        target = self.state_file
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, separators=(",", ":"), default=str)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            self._seen = _signature(target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

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
            return {
                "rate_limit": self.rate_limit,
                "error_rate": self.error_rate,
                "timeout_rate": self.timeout_rate,
                "seed": self.seed,
                "latency_ms": self.latency_ms,
                "hang_seconds": self.hang_seconds,
                "after_write_share": self.after_write_share,
            }

    def set_faults(self, **settings: Any) -> JSON:
        """Change fault settings; the ones not given keep their value. All are checked before any is
        applied. `seed` (even the same one) restarts the random sequence; `rate_limit` refills the bucket.
        Returns the new settings."""
        unknown = sorted(set(settings) - set(_FAULT_SETTINGS))
        if unknown:
            raise ConfigError(
                f"Unknown Stripe emulator fault setting(s): {', '.join(unknown)} "
                f"(known: {', '.join(_FAULT_SETTINGS)})"
            )
        new = self.faults()
        if "rate_limit" in settings:
            limit = settings["rate_limit"]
            new["rate_limit"] = None if limit is None else _number("rate_limit", limit, 0.0)
            if new["rate_limit"] == 0.0:
                raise ConfigError("Stripe emulator rate_limit must be > 0 (or null for no limit)")
        for name in ("error_rate", "timeout_rate", "after_write_share"):
            if name in settings:
                new[name] = _number(name, settings[name], 0.0, 1.0)
        if new["error_rate"] + new["timeout_rate"] > 1.0:
            raise ConfigError("Stripe emulator error_rate + timeout_rate must be at most 1")
        if "hang_seconds" in settings:
            new["hang_seconds"] = _number("hang_seconds", settings["hang_seconds"], 0.0, MAX_HANG_SECONDS)
        if "latency_ms" in settings:
            latency = settings["latency_ms"]
            if isinstance(latency, bool) or not isinstance(latency, int) or latency < 0:
                raise ConfigError(f"Stripe emulator latency_ms must be an integer >= 0, not {latency!r}")
        if "seed" in settings:
            seed = settings["seed"]
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                raise ConfigError(f"Stripe emulator seed must be an integer or null, not {seed!r}")
        with self._lock:
            self.rate_limit = new["rate_limit"]
            self.error_rate = new["error_rate"]
            self.timeout_rate = new["timeout_rate"]
            self.after_write_share = new["after_write_share"]
            self.hang_seconds = new["hang_seconds"]
            if "latency_ms" in settings:
                self.latency_ms = int(settings["latency_ms"])
            if "seed" in settings:
                self.seed = settings["seed"]
                self._rng = random.Random(self.seed)
            if "rate_limit" in settings:
                self._tokens = max(self.rate_limit or 0.0, 1.0)
                self._refilled = self._clock()
            return self.faults()

    def _draw_fault(self) -> str | None:
        """Decide one Stripe request's fault. Called under the lock, once per request, in arrival order."""
        # Always two draws, whatever the settings: the i-th request's fate depends on the seed alone.
        # One draw splits [0, 1) into timeout | error | none, so each rate is exactly what was asked.
        u_fault, u_after = self._rng.random(), self._rng.random()
        if self.rate_limit is not None:
            now = self._clock()
            burst = max(self.rate_limit, 1.0)
            self._tokens = min(burst, self._tokens + (now - self._refilled) * self.rate_limit)
            self._refilled = now
            if self._tokens < 1.0:
                return "rate_limited"
            self._tokens -= 1.0
        if u_fault < self.timeout_rate:
            return "timeout"
        if u_fault < self.timeout_rate + self.error_rate:
            return "error_after_write" if u_after < self.after_write_share else "error_before_write"
        return None

    # ------------------------------------------------------------------ entry point

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Answer one HTTP request. `headers` keys are matched case-insensitively."""
        method = method.upper()
        hdrs = {k.lower(): v for k, v in headers.items()}
        split = urlsplit(target)
        path = split.path
        if path.startswith("/_emulator/"):
            return self._admin(method, path, body, hdrs)
        with self._lock:
            fault = self._draw_fault()
            if fault is not None and fault != "error_after_write":
                return self._fault_before_execution(fault, method, path, split.query, hdrs, body)
            with self._shared_state():
                reply = self._handle_stripe(method, path, split.query, hdrs, body, fault)
            jobs = self._take_outbox()
        self.deliverer.enqueue(jobs)  # outside the lock: delivery never holds it
        return reply

    def _fault_before_execution(
        self, fault: str, method: str, path: str, query_string: str, hdrs: Mapping[str, str], body: bytes
    ) -> Reply:
        """A rate limit, an error or a hang before the request runs: no state is read or written and no
        idempotent result is saved (a retry with the same key executes)."""
        request_id = _random_id("req_", 14)
        entry = self._new_entry(method, path, hdrs, fault)
        with contextlib.suppress(StripeError, UnicodeDecodeError):  # best effort: only for the log
            entry["query"] = decode_form(query_string)
            if method == "POST" and body:
                entry["form"] = decode_form(body.decode("utf-8"))
        extra: dict[str, str] = {
            "Request-Id": request_id,
            "Stripe-Version": hdrs.get("stripe-version") or stripe.api_version,
        }
        idem_key = hdrs.get("idempotency-key")
        if idem_key is not None and method in ("POST", "DELETE"):
            extra["Idempotency-Key"] = idem_key
        if fault == "timeout":
            entry["status"] = None
            self.requests.append(json.loads(json.dumps(entry, default=str)))
            return Reply(0, None, drop=True, hang_s=self.hang_seconds)
        error = _rate_limited() if fault == "rate_limited" else _api_error(request_id)
        entry["status"], entry["response"] = error.status, error.body()
        self.requests.append(json.loads(json.dumps(entry, default=str)))
        return Reply(error.status, error.body(), extra, delay_s=self.latency_ms / 1000)

    @staticmethod
    def _new_entry(method: str, path: str, hdrs: Mapping[str, str], fault: str | None) -> JSON:
        return {
            "method": method,
            "path": path,
            "query": {},
            "form": {},
            "idempotency_key": hdrs.get("idempotency-key"),
            "status": 0,
            "response": None,
            "stripe_version": hdrs.get("stripe-version"),
            "fault": fault,
        }

    @contextlib.contextmanager
    def _shared_state(self) -> Iterator[None]:
        """Several processes may serve one state file (each sandbox command runs its own emulator):
        hold an exclusive file lock per request and reload the file when another process wrote it."""
        if self.state_file is None:
            yield
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.state_file.with_name(self.state_file.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if self.state_file.exists() and _signature(self.state_file) != self._seen:
                    self._load(self.state_file)
                    self._seen = _signature(self.state_file)
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def webhook_secrets(self) -> dict[str, dict[str, str]]:
        """Signing secrets of the existing webhook endpoints, per mode: {"test": {we_id: whsec}, ...}.

        Stripe shows a secret only in the create response; tests that sign payloads get it here."""
        with self._lock, self._shared_state():
            return {
                mode: {we_id: str(we["secret"]) for we_id, we in acct.webhook_endpoints.items()}
                for mode, acct in self._accounts.items()
            }

    def _admin(
        self, method: str, path: str, body: bytes = b"", hdrs: Mapping[str, str] | None = None
    ) -> Reply:
        flow = self._admin_flows(method, path, body, hdrs or {})
        if flow is not None:
            return flow
        if method == "GET" and path == "/_emulator/requests":
            return Reply(200, self.request_log())
        if method == "GET" and path == "/_emulator/stats":
            return Reply(200, self.stats())
        if method == "GET" and path == "/_emulator/faults":
            return Reply(200, self.faults())
        if method == "POST" and path == "/_emulator/faults":
            try:
                settings = json.loads(body.decode("utf-8") or "{}")
                if not isinstance(settings, dict):
                    raise ConfigError("the body must be a JSON object of fault settings")
                return Reply(200, self.set_faults(**settings))
            except (ConfigError, ValueError) as exc:
                return Reply(400, StripeError(400, f"Invalid fault settings: {exc}").body())
        if method == "GET" and path == "/_emulator/webhook_secrets":
            return Reply(200, self.webhook_secrets())
        if method == "POST" and path == "/_emulator/reset-log":
            self.reset_log()
            return Reply(200, {"ok": True})
        return Reply(404, self._unrecognized(method, path).body())

    @staticmethod
    def _unrecognized(method: str, path: str) -> StripeError:
        return StripeError(
            404,
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can "
            "help at https://support.stripe.com/.",
            cacheable=False,
        )

    def _handle_stripe(
        self,
        method: str,
        path: str,
        query_string: str,
        hdrs: Mapping[str, str],
        body: bytes,
        fault: str | None = None,
    ) -> Reply:
        """Run one Stripe request. `fault` is None or "error_after_write": the request runs (and any write
        is kept), then the client gets a 500 that is saved under the idempotency key, as Stripe does."""
        request_id = _random_id("req_", 14)
        idem_key = hdrs.get("idempotency-key")
        entry = self._new_entry(method, path, hdrs, fault)
        extra: dict[str, str] = {"Request-Id": request_id}
        if idem_key is not None and method in ("POST", "DELETE"):
            extra["Idempotency-Key"] = idem_key
        dirty = False
        saved_500 = False
        try:
            entry["query"] = decode_form(query_string)
            if method == "POST" and body:
                try:
                    text = body.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise _param_error("Invalid request: the body is not valid UTF-8.", None) from exc
                entry["form"] = decode_form(text)
            api_key = self._authenticate(hdrs)
            mode = "live" if "_live_" in api_key else "test"
            route, obj_id = self._route(method, path)
            params = {**entry["query"], **entry["form"]} if method == "POST" else dict(entry["query"])
            scope = _key_digest(api_key)
            replay = None
            fingerprint = ""
            if idem_key is not None and method in ("POST", "DELETE"):
                if len(idem_key) > 255:
                    raise _param_error("Idempotency keys cannot be longer than 255 characters.", None)
                fingerprint = hashlib.sha256(
                    json.dumps([method, path, params], sort_keys=True).encode()
                ).hexdigest()
                replay = self._idempotency.get(scope, {}).get(idem_key)
                if replay is not None and replay["fingerprint"] != fingerprint:
                    raise StripeError(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters they were "
                        f"first used with. Try using a key other than '{idem_key}' if you meant to execute "
                        "a different request.",
                        type_="idempotency_error",
                        cacheable=False,
                    )
            if replay is not None:
                status, payload = int(replay["status"]), replay["response"]
                extra["Idempotent-Replayed"] = "true"
                extra["Original-Request"] = str(replay["request_id"])
                if fault == "error_after_write":
                    status, payload = 500, _api_error(request_id).body()
            else:
                self._emitted = []
                self._expire_due(self._accounts[mode], mode)
                dirty = bool(self._emitted)  # sessions that expired just now
                self._commit_events()
                self._request_ctx = {"id": request_id, "idempotency_key": idem_key}
                self._request_host = hdrs.get("host")
                self._request_version = hdrs.get("stripe-version")
                try:
                    status, payload = 200, self._execute(route, obj_id, params, self._accounts[mode], mode)
                    dirty = dirty or method != "GET" or bool(self._emitted)
                except StripeError as exc:
                    self._discard_events()
                    if not exc.cacheable:
                        raise
                    status, payload = exc.status, exc.body()
                finally:
                    self._request_ctx = {"id": None, "idempotency_key": None}
                    self._request_host = self._request_version = None
                self._commit_events()
                if fault == "error_after_write":  # executed (and kept); the answer is lost to a 500
                    status, payload = 500, _api_error(request_id).body()
                if idem_key is not None and method in ("POST", "DELETE"):
                    saved_500 = status >= 500
                    self._idempotency.setdefault(scope, {})[idem_key] = {
                        "fingerprint": fingerprint,
                        "status": status,
                        "response": payload,
                        "request_id": request_id,
                    }
                    dirty = True
        except StripeError as exc:
            status, payload = exc.status, exc.body()
            if status == 401:
                extra["WWW-Authenticate"] = 'Basic realm="Stripe"'
            # It failed before executing: there is no write for an error to come after. The client gets
            # the real error, and the log says no fault was applied.
            entry["fault"] = None
        except Exception as exc:  # never a traceback to the client
            self._discard_events()
            status = 500
            payload = StripeError(
                500,
                f"An unknown error occurred in the Stripe emulator: {type(exc).__name__}: {exc}",
                type_="api_error",
            ).body()
        if dirty:
            self._save()
        if status >= 500 and (saved_500 or "Idempotent-Replayed" in extra):
            # A retry with this key would replay the same 500: tell the SDK not to retry.
            extra["Stripe-Should-Retry"] = "false"
        extra["Stripe-Version"] = hdrs.get("stripe-version") or stripe.api_version
        entry["status"] = status
        entry["response"] = payload
        self.requests.append(json.loads(json.dumps(entry, default=str)))
        return Reply(status, payload, extra, delay_s=self.latency_ms / 1000)

    @staticmethod
    def _authenticate(hdrs: Mapping[str, str]) -> str:
        auth = hdrs.get("authorization", "").strip()
        key = ""
        if auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        elif auth.lower().startswith("basic "):
            try:
                key = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8").split(":", 1)[0]
            except (ValueError, UnicodeDecodeError):
                key = ""
        elif auth:
            key = auth
        if not key:
            raise StripeError(
                401,
                "You did not provide an API key. You need to provide your API key in the Authorization "
                "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
                "https://stripe.com/docs/api#authentication for details, or we can help at "
                "https://support.stripe.com/.",
                cacheable=False,
            )
        if not _KEY_RE.match(key):
            raise StripeError(401, f"Invalid API Key provided: {_redact(key)}", cacheable=False)
        return key

    def _route(self, method: str, path: str) -> tuple[str, str | None]:
        for kind, plural in _PATHS.items():
            base = f"/v1/{plural}"
            allowed = _ACTIONS.get(kind)
            action: str | None = None
            obj_id: str | None = None
            if path == base:
                action = {"GET": "list", "POST": "create"}.get(method)
            elif path.startswith(base + "/"):
                rest = unquote(path[len(base) + 1 :])
                if kind == "checkout_session" and method == "POST" and rest.endswith("/expire"):
                    obj_id, action = rest[: -len("/expire")], "expire"
                    allowed = None
                else:
                    obj_id = rest
                    action = {"GET": "retrieve", "POST": "update"}.get(method)
                    if method == "DELETE":
                        action = _DELETE_ACTIONS.get(kind)
                if not obj_id or "/" in obj_id:
                    action = None
            if action is not None and (allowed is None or action in allowed):
                return f"{kind}.{action}", obj_id
        raise self._unrecognized(method, path)

    # ------------------------------------------------------------------ execution

    def _execute(self, route: str, obj_id: str | None, raw: JSON, acct: _Account, mode: str) -> JSON:
        params = validate_params(PARAM_SPECS[route], raw)
        modelled = MODELLED_PARAMS.get(route)
        if modelled is not None:
            for name in params:
                if name not in modelled:
                    raise _unmodelled(name)
        for name, allowed in _MODELLED_NESTED.items():
            if route == "checkout_session.create" and name in params:
                entries = params[name] if isinstance(params[name], list) else [params[name]]
                for i, entry in enumerate(entries):
                    for key in entry:
                        if key not in allowed:
                            shown = (
                                f"{name}[{i}][{key}]" if isinstance(params[name], list) else f"{name}[{key}]"
                            )
                            raise _unmodelled(shown)
        expand = [str(e) for e in params.pop("expand", None) or []]
        kind, action = route.split(".")
        if action == "list":
            if kind == "event" and "type" in params and "types" in params:
                raise _param_error(
                    "You may only specify one of these parameters: type, types.",
                    "types",
                    "parameters_exclusive",
                )
            return self._list(kind, params, expand, acct)
        if kind not in ("product", "price"):
            return self._execute_billing(kind, action, obj_id, params, expand, acct, mode)
        if action == "create":
            created = (
                self._create_product(params, acct, mode)
                if kind == "product"
                else self._create_price(params, acct, mode)
            )
            return self._render(kind, created, expand, acct)
        assert obj_id is not None
        store = acct.products if kind == "product" else acct.prices
        obj = store.get(obj_id)
        if obj is None:
            raise _no_such(kind, obj_id, "id")
        if action == "retrieve":
            return self._render(kind, obj, expand, acct)
        if action == "delete":
            snapshot = self._snapshot(kind, obj, acct)
            deleted = self._delete_product(obj, acct)
            self._emit(acct, mode, "product.deleted", kind, obj, snapshot=snapshot)
            return deleted
        before = self._snapshot(kind, obj, acct)
        if kind == "product":
            self._update_product(obj, params, acct)
        else:
            self._update_price(obj, params, acct, mode)
        self._emit_update(acct, mode, kind, obj, before, ignore=("updated",))
        return self._render(kind, obj, expand, acct)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # products ------------------------------------------------------------------

    def _create_product(self, p: JSON, acct: _Account, mode: str) -> JSON:
        product_id = p.get("id") or self._fresh_id(acct, "prod_", 14)
        if product_id in acct.products:
            raise StripeError(400, "Product already exists.", code="resource_already_exists", param="id")
        now = int(time.time())
        product = self._new_product(product_id, p, now, mode, "")
        price = None
        if "default_price_data" in p:
            price = self._build_price(p["default_price_data"], acct, product_id, mode, "default_price_data")
            product["default_price"] = price["id"]
        acct.products[product_id] = product
        acct.order[product_id] = self._next_seq()
        if price is not None:
            self._store_price(price, acct)
        self._emit(acct, mode, "product.created", "product", product)
        if price is not None:
            self._emit(acct, mode, "price.created", "price", price)
        return product

    def _new_product(self, product_id: str, p: JSON, now: int, mode: str, prefix: str) -> JSON:
        metadata = self._merge_metadata({}, p.get("metadata"), _join(prefix, "metadata"))
        descriptor = p.get("statement_descriptor")
        if descriptor is not None:
            self._check_descriptor(descriptor, _join(prefix, "statement_descriptor"))
        return {
            "id": product_id,
            "object": "product",
            "active": p.get("active", True),
            "created": now,
            "default_price": None,
            "description": p.get("description") or None,
            "images": list(p.get("images") or []),
            "livemode": mode == "live",
            "marketing_features": [{"name": f.get("name")} for f in p.get("marketing_features") or []],
            "metadata": metadata,
            "name": p["name"],
            "package_dimensions": p.get("package_dimensions") or None,
            "shippable": p.get("shippable"),
            "statement_descriptor": descriptor,
            "tax_code": p.get("tax_code") or None,
            "type": p.get("type", "service"),
            "unit_label": p.get("unit_label") or None,
            "updated": now,
            "url": p.get("url") or None,
        }

    def _update_product(self, product: JSON, p: JSON, acct: _Account) -> None:
        changes: JSON = {}
        if "default_price" in p:
            price_id = p["default_price"]
            if price_id == "":
                changes["default_price"] = None
            else:
                price = acct.prices.get(price_id)
                if price is None:
                    raise _no_such("price", price_id, "default_price", status=400)
                if price["product"] != product["id"]:
                    raise StripeError(
                        400,
                        f"The price `{price_id}` does not belong to product `{product['id']}`; a product's "
                        "default price must be one of its own prices.",
                        param="default_price",
                    )
                if not price["active"]:
                    raise StripeError(
                        400,
                        f"The price `{price_id}` is archived (inactive) and cannot be set as the default "
                        "price of a product.",
                        param="default_price",
                    )
                changes["default_price"] = price_id
        for key in ("active", "name", "shippable"):
            if key in p:
                changes[key] = p[key]
        for key in ("description", "tax_code", "unit_label", "url", "package_dimensions"):
            if key in p:
                changes[key] = p[key] or None
        if "images" in p:
            changes["images"] = list(p["images"] or [])
        if "marketing_features" in p:
            changes["marketing_features"] = [{"name": f.get("name")} for f in p["marketing_features"] or []]
        if "statement_descriptor" in p:
            self._check_descriptor(p["statement_descriptor"], "statement_descriptor")
            changes["statement_descriptor"] = p["statement_descriptor"]
        if "metadata" in p:
            changes["metadata"] = self._merge_metadata(product["metadata"], p["metadata"], "metadata")
        product.update(changes)
        product["updated"] = max(int(time.time()), int(product["updated"]))

    def _delete_product(self, product: JSON, acct: _Account) -> JSON:
        if any(price["product"] == product["id"] for price in acct.prices.values()):
            raise StripeError(
                400, "This product cannot be deleted because it has one or more user-created prices."
            )
        del acct.products[product["id"]]
        acct.order.pop(product["id"], None)
        return {"id": product["id"], "object": "product", "deleted": True}

    # prices --------------------------------------------------------------------

    def _create_price(self, p: JSON, acct: _Account, mode: str) -> JSON:
        if "product" in p and "product_data" in p:
            raise _param_error(
                "You may only specify one of these parameters: product, product_data.",
                "product",
                "parameters_exclusive",
            )
        new_product = None
        if "product_data" in p:
            data = p["product_data"]
            product_id = data.get("id") or self._fresh_id(acct, "prod_", 14)
            if product_id in acct.products:
                raise StripeError(
                    400, "Product already exists.", code="resource_already_exists", param="product_data[id]"
                )
            new_product = self._new_product(product_id, data, int(time.time()), mode, "product_data")
        elif "product" in p:
            product_id = p["product"]
            if product_id not in acct.products:
                raise _no_such("product", product_id, "product", status=400)
        else:
            raise _missing("product")
        price = self._build_price(p, acct, product_id, mode, "")
        lookup_key = p.get("lookup_key")
        holder = None
        if lookup_key is not None:
            if len(lookup_key) > MAX_LOOKUP_KEY_LEN:
                raise _param_error(
                    f"Invalid lookup_key: must be at most {MAX_LOOKUP_KEY_LEN} characters", "lookup_key"
                )
            holder = self._lookup_holder(acct, lookup_key, None, bool(p.get("transfer_lookup_key")))
            price["lookup_key"] = lookup_key
        price["nickname"] = p.get("nickname")
        # Everything is checked: now mutate, atomically.
        if holder is not None:
            before = self._snapshot("price", holder, acct)
            holder["lookup_key"] = None
            self._emit_update(acct, mode, "price", holder, before)
        if new_product is not None:
            acct.products[new_product["id"]] = new_product
            acct.order[new_product["id"]] = self._next_seq()
            self._emit(acct, mode, "product.created", "product", new_product)
        self._store_price(price, acct)
        self._emit(acct, mode, "price.created", "price", price)
        return price

    def _store_price(self, price: JSON, acct: _Account) -> None:
        acct.prices[price["id"]] = price
        acct.order[price["id"]] = self._next_seq()

    def _fresh_id(self, acct: _Account, prefix: str, length: int) -> str:
        while True:
            candidate = _random_id(prefix, length)
            if not any(candidate in acct.store(kind) for kind in _OBJECT_KINDS) and not any(
                item["id"] == candidate for sub in acct.subscriptions.values() for item in sub["items"]
            ):
                return candidate

    def _build_price(self, p: JSON, acct: _Account, product_id: str, mode: str, prefix: str) -> JSON:
        def name(key: str) -> str:
            return _join(prefix, key)

        currency = self._currency(p["currency"], name("currency"))
        scheme = p.get("billing_scheme", "per_unit")
        unit_amount: int | None = None
        unit_amount_decimal: str | None = None
        custom: JSON | None = None
        tiers: list[JSON] | None = None
        tiers_mode: str | None = None
        given = [k for k in ("unit_amount", "unit_amount_decimal", "custom_unit_amount") if k in p]
        if len(given) > 1:
            raise _param_error(
                f"You may only specify one of these parameters: {', '.join(given)}.",
                name(given[0]),
                "parameters_exclusive",
            )
        if scheme == "tiered":
            if given:
                raise _param_error(
                    f"You cannot specify `{given[0]}` with `billing_scheme=tiered`.", name(given[0])
                )
            if not p.get("tiers"):
                raise _missing(name("tiers"))
            if "tiers_mode" not in p:
                raise _missing(name("tiers_mode"))
            tiers_mode = p["tiers_mode"]
            tiers = [
                {
                    "flat_amount": t.get("flat_amount"),
                    "flat_amount_decimal": str(t["flat_amount"]) if "flat_amount" in t else None,
                    "unit_amount": t.get("unit_amount"),
                    "unit_amount_decimal": str(t["unit_amount"]) if "unit_amount" in t else None,
                    "up_to": None if t["up_to"] == "inf" else t["up_to"],
                }
                for t in p["tiers"]
            ]
        elif "unit_amount" in p:
            unit_amount = int(p["unit_amount"])
            if unit_amount < 0:
                raise _param_error(
                    "This value must be greater than or equal to 0.",
                    name("unit_amount"),
                    "parameter_invalid_integer",
                )
            if unit_amount > MAX_UNIT_AMOUNT:
                raise StripeError(
                    400,
                    f"This value must be less than or equal to {MAX_UNIT_AMOUNT}.",
                    code="amount_too_large",
                    param=name("unit_amount"),
                )
            unit_amount_decimal = str(unit_amount)
        elif "unit_amount_decimal" in p:
            dec = Decimal(p["unit_amount_decimal"])
            if dec < 0 or dec > MAX_UNIT_AMOUNT or -cast(int, dec.as_tuple().exponent) > 12:
                raise _param_error(
                    f"Invalid decimal: {p['unit_amount_decimal']}", name("unit_amount_decimal")
                )
            unit_amount_decimal = format(dec.normalize(), "f")
            unit_amount = int(dec) if dec == dec.to_integral_value() else None
        elif "custom_unit_amount" in p:
            cua = p["custom_unit_amount"]
            if not cua.get("enabled"):
                raise _param_error(
                    "custom_unit_amount[enabled] must be true when custom_unit_amount is given.",
                    name("custom_unit_amount[enabled]"),
                )
            custom = {k: cua.get(k) for k in ("maximum", "minimum", "preset")}
        else:
            raise _param_error(
                "Missing required param: unit_amount. One of `unit_amount`, `unit_amount_decimal`, or "
                "`custom_unit_amount` is required, unless `billing_scheme=tiered`.",
                name("unit_amount"),
                "parameter_missing",
            )
        recurring = None
        if "recurring" in p:
            r = p["recurring"]
            interval = r["interval"]
            count = int(r.get("interval_count", 1))
            if count < 1 or count > MAX_INTERVAL_COUNT[interval]:
                raise _param_error(
                    "Invalid interval_count: the maximum interval allowed is three years (3 years, "
                    "36 months, 156 weeks or 1095 days) and interval_count must be at least 1.",
                    name("recurring[interval_count]"),
                )
            usage_type = r.get("usage_type", "licensed")
            if usage_type == "metered" and not r.get("meter"):
                raise _missing(name("recurring[meter]"))
            recurring = {
                "interval": interval,
                "interval_count": count,
                "meter": r.get("meter"),
                "trial_period_days": r.get("trial_period_days"),
                "usage_type": usage_type,
            }
        transform = p.get("transform_quantity")
        if transform is not None and tiers is not None:
            raise _param_error(
                "transform_quantity cannot be combined with tiers.", name("transform_quantity")
            )
        currency_options: JSON = {}
        for cur, opt in (p.get("currency_options") or {}).items():
            code = self._currency(cur, name(f"currency_options[{cur}]"))
            amount = opt.get("unit_amount")
            currency_options[code] = {
                "custom_unit_amount": None,
                "tax_behavior": opt.get("tax_behavior", "unspecified"),
                "unit_amount": amount,
                "unit_amount_decimal": None if amount is None else str(amount),
            }
        tax_behavior = p.get("tax_behavior", "unspecified")
        currency_options[currency] = {
            "custom_unit_amount": custom,
            "tax_behavior": tax_behavior,
            "unit_amount": unit_amount,
            "unit_amount_decimal": unit_amount_decimal,
        }
        return {
            "id": self._fresh_id(acct, "price_", 24),
            "object": "price",
            "active": p.get("active", True),
            "billing_scheme": scheme,
            "created": int(time.time()),
            "currency": currency,
            "currency_options": currency_options,
            "custom_unit_amount": custom,
            "livemode": mode == "live",
            "lookup_key": None,
            "metadata": self._merge_metadata({}, p.get("metadata"), name("metadata")),
            "nickname": None,
            "product": product_id,
            "recurring": recurring,
            "tax_behavior": tax_behavior,
            "tiers": tiers,
            "tiers_mode": tiers_mode,
            "transform_quantity": (
                {"divide_by": transform["divide_by"], "round": transform["round"]} if transform else None
            ),
            "type": "recurring" if recurring else "one_time",
            "unit_amount": unit_amount,
            "unit_amount_decimal": unit_amount_decimal,
        }

    def _update_price(self, price: JSON, p: JSON, acct: _Account, mode: str) -> None:
        changes: JSON = {}
        holder = None
        if "active" in p:
            product = acct.products.get(price["product"])
            if p["active"] is False and product is not None and product["default_price"] == price["id"]:
                raise StripeError(
                    400,
                    "This price cannot be archived because it is the default price of its product.",
                    param="active",
                )
            changes["active"] = p["active"]
        if "lookup_key" in p:
            key = p["lookup_key"]
            if len(key) > MAX_LOOKUP_KEY_LEN:
                raise _param_error(
                    f"Invalid lookup_key: must be at most {MAX_LOOKUP_KEY_LEN} characters", "lookup_key"
                )
            holder = self._lookup_holder(acct, key, price["id"], bool(p.get("transfer_lookup_key")))
            changes["lookup_key"] = key
        if "nickname" in p:
            changes["nickname"] = p["nickname"]
        if "tax_behavior" in p:
            current = price["tax_behavior"]
            if current in ("inclusive", "exclusive") and p["tax_behavior"] != current:
                raise StripeError(
                    400,
                    f"tax_behavior cannot be changed once it is set to `{current}`.",
                    param="tax_behavior",
                )
            changes["tax_behavior"] = p["tax_behavior"]
        if "metadata" in p:
            changes["metadata"] = self._merge_metadata(price["metadata"], p["metadata"], "metadata")
        if "currency_options" in p:
            options = p["currency_options"]
            if options == "":
                changes["currency_options"] = {
                    price["currency"]: price["currency_options"][price["currency"]]
                }
            else:
                merged = dict(price["currency_options"])
                for cur, opt in options.items():
                    code = self._currency(cur, f"currency_options[{cur}]")
                    amount = opt.get("unit_amount")
                    merged[code] = {
                        "custom_unit_amount": None,
                        "tax_behavior": opt.get("tax_behavior", "unspecified"),
                        "unit_amount": amount,
                        "unit_amount_decimal": None if amount is None else str(amount),
                    }
                changes["currency_options"] = merged
        if holder is not None:
            before = self._snapshot("price", holder, acct)
            holder["lookup_key"] = None
            self._emit_update(acct, mode, "price", holder, before)
        price.update(changes)

    @staticmethod
    def _lookup_holder(acct: _Account, key: str, self_id: str | None, transfer: bool) -> JSON | None:
        holder = next(
            (pr for pr in acct.prices.values() if pr["lookup_key"] == key and pr["id"] != self_id), None
        )
        if holder is not None and not transfer:
            raise StripeError(
                400, f"A price (`{holder['id']}`) already uses that lookup key.", param="lookup_key"
            )
        return holder

    # shared checks ------------------------------------------------------------------

    @staticmethod
    def _currency(value: str, param: str) -> str:
        code = value.lower()
        if code not in SUPPORTED_CURRENCIES:
            raise _param_error(
                f"Invalid currency: {code}. Stripe currently supports these currencies: "
                f"{', '.join(_CURRENCIES_IN_ORDER)}",
                param,
            )
        return code

    @staticmethod
    def _check_descriptor(value: str, param: str) -> None:
        if len(value) > MAX_STATEMENT_DESCRIPTOR_LEN or any(c in value for c in "<>\\\"'*"):
            raise _param_error(
                f"The statement descriptor must be at most {MAX_STATEMENT_DESCRIPTOR_LEN} characters and "
                "must not contain any of these characters: < > \\ \" ' *",
                param,
            )

    @staticmethod
    def _merge_metadata(current: Mapping[str, str], update: Any, param: str) -> dict[str, str]:
        if update is None:
            return dict(current)
        if update == "":
            return {}
        merged = dict(current)
        for key, value in update.items():
            if len(key) > MAX_METADATA_KEY_LEN:
                raise _param_error(
                    f"Metadata keys can have up to {MAX_METADATA_KEY_LEN} characters, but you passed in "
                    f"a key with {len(key)} characters.",
                    f"{param}[{key}]",
                )
            if len(value) > MAX_METADATA_VALUE_LEN:
                raise _param_error(
                    f"Metadata values can have up to {MAX_METADATA_VALUE_LEN} characters, but you passed "
                    f"in a value that is {len(value)} characters.",
                    f"{param}[{key}]",
                )
            if value == "":
                merged.pop(key, None)
            else:
                merged[key] = value
        if len(merged) > MAX_METADATA_KEYS:
            raise _param_error(
                f"Metadata can have up to {MAX_METADATA_KEYS} keys, but you passed in {len(merged)} keys.",
                param,
            )
        return merged

    # customers, subscriptions, webhook endpoints -----------------------------------

    def _execute_billing(
        self,
        kind: str,
        action: str,
        obj_id: str | None,
        p: JSON,
        expand: list[str],
        acct: _Account,
        mode: str,
    ) -> JSON:
        if action == "create":
            if kind == "customer":
                created = self._create_customer(p, acct, mode)
                self._emit(acct, mode, "customer.created", kind, created)
            elif kind == "subscription":
                created = self._create_subscription(p, acct, mode)
            elif kind == "checkout_session":
                created = self._create_checkout_session(p, acct, mode)
            else:
                created = self._create_webhook_endpoint(p, acct, mode)
            return self._render(kind, created, expand, acct, show_secret=True)
        assert obj_id is not None
        obj = acct.store(kind).get(obj_id)
        if obj is None:
            raise _no_such(_KIND_NAMES.get(kind, kind), obj_id, "id")
        if action == "retrieve":
            return self._render(kind, obj, expand, acct)
        if action == "delete":  # webhook endpoints
            del acct.webhook_endpoints[obj_id]
            acct.order.pop(obj_id, None)
            return {"id": obj_id, "object": kind, "deleted": True}
        if action == "expire":
            self._expire_session(obj, acct, mode)
            return self._render(kind, obj, expand, acct)
        before = self._snapshot(kind, obj, acct)
        if action == "cancel":
            self._cancel_subscription(obj, p)
            self._emit(acct, mode, "customer.subscription.deleted", kind, obj)
        elif kind == "customer":
            self._apply_customer(obj, p)
            self._emit_update(acct, mode, kind, obj, before)
        elif kind == "subscription":
            self._update_subscription(obj, p, acct)
            self._emit_update(acct, mode, kind, obj, before)
        else:
            self._update_webhook_endpoint(obj, p, mode)
        return self._render(kind, obj, expand, acct)

    def _store_new(self, kind: str, obj: JSON, acct: _Account) -> None:
        acct.store(kind)[obj["id"]] = obj
        acct.order[obj["id"]] = self._next_seq()

    # customers -------------------------------------------------------------------

    def _create_customer(self, p: JSON, acct: _Account, mode: str) -> JSON:
        customer: JSON = {
            "id": self._fresh_id(acct, "cus_", 14),
            "object": "customer",
            "address": None,
            "balance": 0,
            "business_name": None,
            "created": int(time.time()),
            "currency": None,
            "customer_account": None,
            "default_source": None,
            "delinquent": False,
            "description": None,
            "discount": None,
            "email": None,
            "individual_name": None,
            "invoice_prefix": "".join(
                secrets.choice(string.ascii_uppercase + string.digits) for _ in range(8)
            ),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": mode == "live",
            "metadata": {},
            "name": None,
            "next_invoice_sequence": 1,
            "phone": None,
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }
        self._apply_customer(customer, p)
        self._store_new("customer", customer, acct)
        return customer

    def _apply_customer(self, customer: JSON, p: JSON) -> None:
        """Check every change first, then apply them all (a rejected update changes nothing)."""
        changes: JSON = {}
        for key in ("business_name", "description", "individual_name", "name", "phone"):
            if key in p:
                changes[key] = p[key] or None
        if "email" in p:
            email = p["email"] or None
            if email is not None and (len(email) > 512 or not _EMAIL_RE.match(email)):
                raise _param_error(f"Invalid email address: {email}", "email", "email_invalid")
            changes["email"] = email
        if "balance" in p:
            changes["balance"] = p["balance"]
        if "invoice_prefix" in p:
            prefix = p["invoice_prefix"]
            if not _INVOICE_PREFIX_RE.match(prefix):
                raise _param_error(
                    "Invalid invoice_prefix: it must be 3 to 12 uppercase letters or numbers.",
                    "invoice_prefix",
                )
            changes["invoice_prefix"] = prefix
        if "next_invoice_sequence" in p:
            if p["next_invoice_sequence"] < 1:
                raise _param_error(
                    "This value must be greater than or equal to 1.",
                    "next_invoice_sequence",
                    "parameter_invalid_integer",
                )
            changes["next_invoice_sequence"] = p["next_invoice_sequence"]
        if "preferred_locales" in p:
            changes["preferred_locales"] = list(p["preferred_locales"] or [])
        if "tax_exempt" in p:
            changes["tax_exempt"] = p["tax_exempt"] or "none"
        if "address" in p:
            changes["address"] = self._address(p["address"]) if p["address"] else None
        if "shipping" in p:
            ship = p["shipping"]
            changes["shipping"] = (
                {
                    "address": self._address(ship["address"]),
                    "carrier": None,
                    "name": ship["name"],
                    "phone": ship.get("phone") or None,
                    "tracking_number": None,
                }
                if ship
                else None
            )
        if "metadata" in p:
            changes["metadata"] = self._merge_metadata(customer["metadata"], p["metadata"], "metadata")
        customer.update(changes)

    @staticmethod
    def _address(given: JSON) -> JSON:
        keys = ("city", "country", "line1", "line2", "postal_code", "state")
        return {k: given.get(k) or None for k in keys}

    # subscriptions ---------------------------------------------------------------

    def _create_subscription(self, p: JSON, acct: _Account, mode: str) -> JSON:
        if "customer" not in p:
            raise _missing("customer")
        customer = acct.customers.get(p["customer"])
        if customer is None:
            raise _no_such("customer", p["customer"], "customer", status=400)
        if not p.get("items"):
            raise _missing("items")
        now = int(time.time())
        sub_id = self._fresh_id(acct, "sub_", 24)
        items: list[JSON] = []
        for i, given in enumerate(p["items"]):
            self._check_item_params(given, "subscription.create", i)
            if "price" not in given:
                raise _missing(f"items[{i}][price]")
            price = self._subscribable_price(acct, given["price"], f"items[{i}][price]")
            item = self._new_item(acct, sub_id, price, now)
            self._apply_item(item, given, price, f"items[{i}]")
            items.append(item)
        currency = self._check_items(items, acct, customer, None)
        behavior = p.get("payment_behavior", "allow_incomplete")
        if behavior == "pending_if_incomplete":
            raise _param_error(
                "payment_behavior=pending_if_incomplete can only be used when updating a subscription.",
                "payment_behavior",
            )
        sub = self._build_subscription(
            sub_id, customer, items, currency, mode, now, p.get("metadata"), p.get("description")
        )
        self._set_cancel_at_period_end(sub, bool(p.get("cancel_at_period_end", False)), now)
        customer["currency"] = customer["currency"] or currency
        if behavior != "default_incomplete":
            # The customer has no payment method here (API customers carry none), so Stripe would charge
            # nothing it could: kept as before, active without a first invoice (see the module notes).
            self._store_new("subscription", sub, acct)
            self._emit(acct, mode, "customer.subscription.created", "subscription", sub)
            return sub
        invoice = self._build_invoice(acct, mode, sub, "subscription_create", now, now)
        sub["status"] = "incomplete" if invoice["amount_due"] > 0 else "active"
        self._store_new("subscription", sub, acct)
        self._emit(acct, mode, "customer.subscription.created", "subscription", sub)
        self._emit(acct, mode, "invoice.created", "invoice", invoice)
        self._finalize_invoice(invoice, acct, mode)
        if invoice["amount_due"] == 0:
            self._mark_paid(invoice, acct, mode)
        return sub

    def _build_subscription(
        self,
        sub_id: str,
        customer: JSON,
        items: list[JSON],
        currency: str,
        mode: str,
        now: int,
        metadata: Any,
        description: str | None,
        metadata_param: str = "metadata",
    ) -> JSON:
        return {
            "id": sub_id,
            "object": "subscription",
            "application": None,
            "application_fee_percent": None,
            "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
            "billing_cycle_anchor": now,
            "billing_cycle_anchor_config": None,
            # Flexible is the default billing mode of subscriptions created since API 2025-09-30.clover.
            "billing_mode": {
                "flexible": {"proration_discounts": "included"},
                "type": "flexible",
                "updated_at": now,
            },
            "billing_schedules": [],
            "billing_thresholds": None,
            "cancel_at": None,
            "cancel_at_period_end": False,
            "canceled_at": None,
            "cancellation_details": {"comment": None, "feedback": None, "reason": None},
            "collection_method": "charge_automatically",
            "created": now,
            "currency": currency,
            "customer": customer["id"],
            "customer_account": None,
            "days_until_due": None,
            "default_payment_method": None,
            "default_source": None,
            "default_tax_rates": [],
            "description": description,
            "discounts": [],
            "ended_at": None,
            "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
            "items": items,  # stored with price ids; rendered as a list object with full prices
            "latest_invoice": None,
            "livemode": mode == "live",
            "metadata": self._merge_metadata({}, metadata, metadata_param),
            "next_pending_invoice_item_invoice": None,
            "on_behalf_of": None,
            "pause_collection": None,
            "payment_settings": {
                "payment_method_options": None,
                "payment_method_types": None,
                "save_default_payment_method": "off",
            },
            "pending_invoice_item_interval": None,
            "pending_setup_intent": None,
            "pending_update": None,
            "schedule": None,
            "start_date": now,
            "status": "active",
            "test_clock": None,
            "transfer_data": None,
            "trial_end": None,
            "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
            "trial_start": None,
        }

    @staticmethod
    def _check_item_params(given: JSON, route: str, i: int) -> None:
        for key in given:
            if key not in _MODELLED_ITEM_PARAMS[route]:
                raise _unmodelled(f"items[{i}][{key}]")

    @staticmethod
    def _subscribable_price(acct: _Account, price_id: str, param: str) -> JSON:
        price = acct.prices.get(price_id)
        if price is None:
            raise _no_such("price", price_id, param, status=400)
        if not price["active"]:
            raise StripeError(
                400, "The price specified is inactive. This field only accepts active prices.", param=param
            )
        if price["type"] != "recurring":
            raise StripeError(
                400,
                "The price specified is set to `type=one_time` but this field only accepts prices with "
                "`type=recurring`.",
                param=param,
            )
        product = acct.products.get(price["product"])
        if product is not None and not product["active"]:
            raise StripeError(
                400,
                f"The product `{product['id']}` is marked as inactive, and thus no new subscriptions can be "
                f"created with any of its prices. You provided the price `{price_id}`.",
                param=param,
            )
        return price

    def _new_item(self, acct: _Account, sub_id: str, price: JSON, now: int) -> JSON:
        return {
            "id": self._fresh_id(acct, "si_", 14),
            "object": "subscription_item",
            "billing_thresholds": None,
            "created": now,
            "current_period_end": _period_end(now, price["recurring"]),
            "current_period_start": now,
            "discounts": [],
            "metadata": {},
            "price": price["id"],
            "quantity": 1,
            "subscription": sub_id,
            "tax_rates": [],
        }

    def _apply_item(self, item: JSON, given: JSON, price: JSON, prefix: str) -> None:
        """Set an item's price, quantity and metadata from its request entry (already checked)."""
        metered = price["recurring"]["usage_type"] == "metered"
        if metered and "quantity" in given:
            raise _param_error(
                f"Quantity should not be specified where usage_type is `metered`. Remove quantity from "
                f"`{prefix}`.",
                f"{prefix}[quantity]",
            )
        quantity = given.get("quantity", item["quantity"] if item["price"] == price["id"] else 1)
        if quantity is not None and quantity < 0:
            raise _param_error(
                "This value must be greater than or equal to 0.",
                f"{prefix}[quantity]",
                "parameter_invalid_integer",
            )
        item["quantity"] = None if metered else quantity
        item["metadata"] = self._merge_metadata(
            item["metadata"], given.get("metadata"), f"{prefix}[metadata]"
        )

    def _check_items(
        self, items: list[JSON], acct: _Account, customer: JSON | None, sub_id: str | None
    ) -> str:
        """Stripe's rules over a subscription's whole item set; returns its currency."""
        if len(items) > MAX_SUBSCRIPTION_ITEMS:
            raise _param_error(f"A subscription can have at most {MAX_SUBSCRIPTION_ITEMS} items.", "items")
        seen: set[str] = set()
        currencies: set[str] = set()
        for item in items:
            if item["price"] in seen:
                raise _param_error(
                    f"Cannot add multiple subscription items with the same plan: {item['price']}", "items"
                )
            seen.add(item["price"])
            currencies.add(acct.prices[item["price"]]["currency"])
        if len(currencies) > 1:
            raise _param_error(
                "All prices on a subscription must have the same currency; got "
                f"{', '.join(sorted(currencies))}.",
                "items",
            )
        currency = currencies.pop()
        if customer is not None:
            others = {
                s["currency"]
                for s in acct.subscriptions.values()
                if s["customer"] == customer["id"]
                and s["id"] != sub_id
                and s["status"] not in ("canceled", "incomplete_expired")
            }
            held = next(iter(others - {currency}), None)
            if held is not None:
                raise _param_error(
                    "You cannot combine currencies on a single customer. This customer has an active "
                    f"subscription, subscription schedule, discount, quote, or invoice item with currency "
                    f"{held}.",
                    "currency",
                )
        return currency

    @staticmethod
    def _set_cancel_at_period_end(sub: JSON, flag: bool, now: int) -> None:
        sub["cancel_at_period_end"] = flag
        if flag:
            sub["cancel_at"] = max(int(i["current_period_end"]) for i in sub["items"])
            sub["canceled_at"] = now
            sub["cancellation_details"] = {**sub["cancellation_details"], "reason": "cancellation_requested"}
        else:
            sub["cancel_at"] = None
            sub["canceled_at"] = None
            sub["cancellation_details"] = {"comment": None, "feedback": None, "reason": None}

    def _update_subscription(self, sub: JSON, p: JSON, acct: _Account) -> None:
        if sub["status"] == "canceled" and set(p) - {"metadata"}:
            raise StripeError(
                400, "A canceled subscription can only update its cancellation_details and metadata."
            )
        now = int(time.time())
        items = [dict(i) for i in sub["items"]]
        if "items" in p:
            by_id = {i["id"]: i for i in items}
            for n, given in enumerate(p["items"]):
                prefix = f"items[{n}]"
                self._check_item_params(given, "subscription.update", n)
                if "id" in given:
                    item = by_id.get(given["id"])
                    if item is None:
                        raise _no_such("subscription item", given["id"], f"{prefix}[id]", status=400)
                    if given.get("deleted"):
                        items.remove(item)
                        del by_id[item["id"]]
                        continue
                    price = (
                        self._subscribable_price(acct, given["price"], f"{prefix}[price]")
                        if "price" in given and given["price"] != item["price"]
                        else acct.prices[item["price"]]
                    )
                    old = acct.prices[item["price"]]["recurring"]
                    if price["recurring"]["interval"] != old["interval"] or (
                        price["recurring"]["interval_count"] != old["interval_count"]
                    ):  # a new billing interval starts a new period now
                        item["current_period_start"] = now
                        item["current_period_end"] = _period_end(now, price["recurring"])
                    self._apply_item(item, given, price, prefix)
                    item["price"] = price["id"]
                else:
                    if given.get("deleted"):
                        raise _missing(f"{prefix}[id]")
                    if "price" not in given:
                        raise _missing(f"{prefix}[price]")
                    price = self._subscribable_price(acct, given["price"], f"{prefix}[price]")
                    item = self._new_item(acct, sub["id"], price, now)
                    self._apply_item(item, given, price, prefix)
                    items.append(item)
            if not items:
                raise _param_error("A subscription must have at least one item.", "items")
        currency = self._check_items(items, acct, acct.customers.get(sub["customer"]), sub["id"])
        metadata = (
            self._merge_metadata(sub["metadata"], p["metadata"], "metadata")
            if "metadata" in p
            else sub["metadata"]
        )
        # All checked: apply.
        sub["items"] = items
        sub["currency"] = currency
        sub["metadata"] = metadata
        if "description" in p:
            sub["description"] = p["description"] or None
        if "cancel_at_period_end" in p:
            self._set_cancel_at_period_end(sub, p["cancel_at_period_end"], now)
        elif sub["cancel_at_period_end"]:
            sub["cancel_at"] = max(int(i["current_period_end"]) for i in items)

    @staticmethod
    def _cancel_subscription(sub: JSON, p: JSON) -> None:
        if sub["status"] == "canceled":
            raise StripeError(
                400,
                f"The subscription `{sub['id']}` has already been canceled; a canceled subscription can "
                "only update its cancellation_details and metadata.",
            )
        now = int(time.time())
        details = p.get("cancellation_details") or {}
        sub["status"] = "canceled"
        sub["canceled_at"] = now
        sub["ended_at"] = now
        sub["cancellation_details"] = {
            "comment": details.get("comment") or None,
            "feedback": details.get("feedback") or None,
            "reason": "cancellation_requested",
        }

    # webhook endpoints -----------------------------------------------------------

    @staticmethod
    def _check_webhook_url(url: str, mode: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _param_error(
                f"Invalid URL: {url}. The URL must be absolute and start with https:// (or http:// in test "
                "mode).",
                "url",
                "url_invalid",
            )
        if mode == "live" and parts.scheme != "https":
            raise _param_error(
                f"Invalid URL: {url}. Webhook endpoints in live mode must use https://.", "url", "url_invalid"
            )

    def _create_webhook_endpoint(self, p: JSON, acct: _Account, mode: str) -> JSON:
        if len(acct.webhook_endpoints) >= MAX_WEBHOOK_ENDPOINTS:
            raise StripeError(
                400,
                f"You have reached the maximum of {MAX_WEBHOOK_ENDPOINTS} webhook endpoints for this "
                f"account in {mode} mode.",
            )
        self._check_webhook_url(p["url"], mode)
        if not p["enabled_events"]:
            raise _missing("enabled_events")
        endpoint: JSON = {
            "id": self._fresh_id(acct, "we_", 24),
            "object": "webhook_endpoint",
            "api_version": p.get("api_version"),
            "application": None,
            "created": int(time.time()),
            "description": p.get("description") or None,
            "enabled_events": list(dict.fromkeys(p["enabled_events"])),
            "livemode": mode == "live",
            "metadata": self._merge_metadata({}, p.get("metadata"), "metadata"),
            "secret": _random_id("whsec_", 32),
            "status": "enabled",
            "url": p["url"],
        }
        self._store_new("webhook_endpoint", endpoint, acct)
        return endpoint

    def _update_webhook_endpoint(self, endpoint: JSON, p: JSON, mode: str) -> None:
        changes: JSON = {}
        if "url" in p:
            self._check_webhook_url(p["url"], mode)
            changes["url"] = p["url"]
        if "enabled_events" in p:
            if not p["enabled_events"]:
                raise _empty("enabled_events")
            changes["enabled_events"] = list(dict.fromkeys(p["enabled_events"]))
        if "disabled" in p:
            changes["status"] = "disabled" if p["disabled"] else "enabled"
        if "description" in p:
            changes["description"] = p["description"] or None
        if "metadata" in p:
            changes["metadata"] = self._merge_metadata(endpoint["metadata"], p["metadata"], "metadata")
        endpoint.update(changes)

    # rendering of the billing objects ----------------------------------------------

    def _render_billing(
        self,
        kind: str,
        obj: JSON,
        expand: list[str],
        acct: _Account,
        depth: int,
        *,
        show_secret: bool = False,
    ) -> JSON:
        out = dict(obj)
        if kind == "webhook_endpoint" and not show_secret:
            out.pop("secret", None)  # Stripe returns the signing secret only when creating the endpoint
        item_expand: list[str] = []
        groups: dict[str, list[str]] = {}
        for path in expand:
            head, _, rest = path.partition(".")
            groups.setdefault(head, [])
            if rest:
                groups[head].append(rest)
        for head, rests in groups.items():
            if kind == "subscription" and head == "items":
                for rest in rests:
                    if not rest.startswith("data."):
                        raise _param_error(
                            f"This property cannot be expanded (items.{rest}). You may want to try "
                            f"expanding 'items.data.{rest}' instead.",
                            "expand",
                        )
                    item_expand.append(rest[len("data.") :])
                continue
            if kind == "checkout_session" and head == "line_items" and not rests:
                out["line_items"] = self._session_line_items(obj, acct)
                continue
            target_kind = _EXPANDABLE.get(kind, {}).get(head)
            if target_kind is None:
                raise _param_error(f"This property cannot be expanded ({head}).", "expand")
            if depth + 1 >= MAX_EXPAND_DEPTH and rests:
                raise _param_error(
                    f"You cannot expand more than {MAX_EXPAND_DEPTH} levels of a property.", "expand"
                )
            ref = obj.get(head)
            target = acct.store(target_kind).get(ref) if ref is not None and target_kind else None
            if target is not None:
                out[head] = self._render(target_kind, target, rests, acct, depth + 1)
        if kind == "subscription":
            out["items"] = {
                "object": "list",
                "data": [self._render_item(i, item_expand, acct, depth + 1) for i in obj["items"]],
                "has_more": False,
                "total_count": len(obj["items"]),
                "url": f"/v1/subscription_items?subscription={obj['id']}",
            }
        if kind == "invoice":
            out["lines"] = {
                "object": "list",
                "data": [_ordered(line) for line in obj["lines"]],
                "has_more": False,
                "total_count": len(obj["lines"]),
                "url": f"/v1/invoices/{obj['id']}/lines",
            }
        return _ordered(out)

    def _render_item(self, item: JSON, expand: list[str], acct: _Account, depth: int) -> JSON:
        out = dict(item)
        price_expand: list[str] = []
        for path in expand:
            head, _, rest = path.partition(".")
            if head != "price" or not rest:  # the price is always a full object, never expandable
                raise _param_error(f"This property cannot be expanded ({path}).", "expand")
            price_expand.append(rest)
        price = acct.prices[item["price"]]
        out["price"] = self._render("price", price, price_expand, acct, depth + 1)
        out["plan"] = _plan_of(price)
        return _ordered(out)

    # lists --------------------------------------------------------------------------

    def _list(self, kind: str, p: JSON, expand: list[str], acct: _Account) -> JSON:
        store = acct.store(kind)
        limit = p.get("limit", 10)
        if not 1 <= limit <= 100:
            raise _param_error("Invalid limit: must be between 1 and 100", "limit")
        if "starting_after" in p and "ending_before" in p:
            raise _param_error(
                "You may only specify one of these parameters: ending_before, starting_after.",
                "ending_before",
                "parameters_exclusive",
            )

        def rank(obj: JSON) -> tuple[int, int]:
            return int(obj["created"]), acct.order.get(obj["id"], 0)

        cursor_rank: tuple[int, int] | None = None
        for cursor_param in ("starting_after", "ending_before"):
            if cursor_param in p:
                cursor = store.get(p[cursor_param])
                if cursor is None:
                    raise _no_such(_KIND_NAMES.get(kind, kind), p[cursor_param], cursor_param, status=400)
                cursor_rank = rank(cursor)
        items = sorted((o for o in store.values() if self._matches(kind, o, p)), key=rank, reverse=True)
        if "starting_after" in p:
            assert cursor_rank is not None
            newer_cut = cursor_rank
            items = [o for o in items if rank(o) < newer_cut]
            page, has_more = items[:limit], len(items) > limit
        elif "ending_before" in p:
            assert cursor_rank is not None
            older_cut = cursor_rank
            items = [o for o in items if rank(o) > older_cut]
            page, has_more = items[-limit:], len(items) > limit
        else:
            page, has_more = items[:limit], len(items) > limit
        for path in expand:
            if not path.startswith("data."):
                raise _param_error(
                    f"This property cannot be expanded ({path}). You may want to try expanding 'data.{path}' "
                    "instead.",
                    "expand",
                )
        inner = [e[len("data.") :] for e in expand]
        return {
            "object": "list",
            "data": [self._render(kind, o, inner, acct) for o in page],
            "has_more": has_more,
            "url": f"/v1/{_PATHS[kind]}",
        }

    @staticmethod
    def _matches(kind: str, obj: JSON, p: JSON) -> bool:
        if "active" in p and obj["active"] != p["active"]:
            return False
        created = p.get("created")
        if isinstance(created, int) and obj["created"] != created:
            return False
        if isinstance(created, dict):
            c = int(obj["created"])
            checks = {
                "gt": lambda v: c > v,
                "gte": lambda v: c >= v,
                "lt": lambda v: c < v,
                "lte": lambda v: c <= v,
            }
            if not all(checks[op](v) for op, v in created.items()):
                return False
        if kind == "product":
            if "ids" in p and obj["id"] not in p["ids"]:
                return False
            return all(obj[key] == p[key] for key in ("shippable", "url", "type") if key in p)
        if kind == "customer":
            return "email" not in p or obj["email"] == p["email"]  # case-sensitive, as Stripe documents
        if kind == "subscription":
            status = p.get("status")
            if status is None and obj["status"] in ("canceled", "incomplete_expired"):
                return False
            if status == "ended" and obj["status"] not in ("canceled", "incomplete_expired"):
                return False
            if status not in (None, "all", "ended") and obj["status"] != status:
                return False
            if "customer" in p and obj["customer"] != p["customer"]:
                return False
            return "price" not in p or any(item["price"] == p["price"] for item in obj["items"])
        if kind == "webhook_endpoint":
            return True
        if kind == "checkout_session":
            return all(obj[key] == p[key] for key in ("customer", "status", "subscription") if key in p)
        if kind == "invoice":
            parent = obj.get("parent") or {}
            sub_id = (parent.get("subscription_details") or {}).get("subscription")
            if "subscription" in p and sub_id != p["subscription"]:
                return False
            return all(obj[key] == p[key] for key in ("customer", "status", "collection_method") if key in p)
        if kind == "event":
            if "types" in p and obj["type"] not in p["types"]:
                return False
            wanted = p.get("type")
            return (
                wanted is None
                or re.fullmatch(re.escape(wanted).replace(r"\*", ".*"), obj["type"]) is not None
            )
        if "product" in p and obj["product"] != p["product"]:
            return False
        if "currency" in p and obj["currency"] != str(p["currency"]).lower():
            return False
        if "type" in p and obj["type"] != p["type"]:
            return False
        if "lookup_keys" in p and obj["lookup_key"] not in p["lookup_keys"]:
            return False
        recurring = p.get("recurring")
        if recurring:
            if obj["recurring"] is None:
                return False
            for key, value in recurring.items():
                if obj["recurring"].get(key) != value:
                    return False
        return True

    # rendering and expansion --------------------------------------------------------

    def _render(
        self,
        kind: str,
        obj: JSON,
        expand: list[str],
        acct: _Account,
        depth: int = 0,
        *,
        show_secret: bool = False,
    ) -> JSON:
        if kind not in ("product", "price"):
            return self._render_billing(kind, obj, expand, acct, depth, show_secret=show_secret)
        out = dict(obj)
        if kind == "price":
            for hidden in _PRICE_INCLUDABLE:
                out.pop(hidden, None)
        groups: dict[str, list[str]] = {}
        for path in expand:
            head, _, rest = path.partition(".")
            groups.setdefault(head, [])
            if rest:
                groups[head].append(rest)
        for head, rests in groups.items():
            if kind == "price" and head in _PRICE_INCLUDABLE and not rests:
                if head == "tiers":
                    if obj["billing_scheme"] == "tiered":
                        out["tiers"] = obj["tiers"]
                else:
                    out[head] = obj[head]
                continue
            target_kind = _EXPANDABLE.get(kind, {}).get(head)
            if target_kind is None:
                raise _param_error(f"This property cannot be expanded ({head}).", "expand")
            if depth + 1 >= MAX_EXPAND_DEPTH and rests:
                raise _param_error(
                    f"You cannot expand more than {MAX_EXPAND_DEPTH} levels of a property.", "expand"
                )
            ref = obj.get(head)
            if ref is None or not target_kind:
                continue
            target_store = acct.products if target_kind == "product" else acct.prices
            target = target_store.get(ref)
            if target is not None:
                out[head] = self._render(target_kind, target, rests, acct, depth + 1)
        return _ordered(out)

    # ------------------------------------------------------------------ events

    def _snapshot(self, kind: str, obj: JSON, acct: _Account) -> JSON:
        """The object as the API shows it now, frozen (an event's `data.object`)."""
        return cast(JSON, json.loads(json.dumps(self._render(kind, obj, [], acct), default=str)))

    def _emit(
        self,
        acct: _Account,
        mode: str,
        type_: str,
        kind: str,
        obj: JSON,
        previous: JSON | None = None,
        *,
        snapshot: JSON | None = None,
    ) -> JSON:
        """Record one Event (stored at once, in creation order; delivered when the request commits)."""
        data: JSON = {"object": snapshot if snapshot is not None else self._snapshot(kind, obj, acct)}
        if previous is not None:
            data["previous_attributes"] = previous
        event: JSON = {
            "id": self._fresh_id(acct, "evt_", 24),
            "object": "event",
            "api_version": stripe.api_version,
            "created": int(time.time()),
            "data": data,
            "livemode": mode == "live",
            "pending_webhooks": 0,
            "request": dict(self._request_ctx),
            "type": type_,
        }
        self._store_new("event", event, acct)
        self._emitted.append((acct, mode, event))
        return event

    def _emit_update(
        self, acct: _Account, mode: str, kind: str, obj: JSON, before: JSON, ignore: tuple[str, ...] = ()
    ) -> None:
        """`<kind>.updated` with `previous_attributes` (the top-level fields that changed), if any did."""
        after = self._snapshot(kind, obj, acct)
        previous = {
            k: before.get(k)
            for k in sorted(set(before) | set(after))
            if before.get(k) != after.get(k) and k not in ignore
        }
        if previous:
            prefix = _EVENT_PREFIX.get(kind, kind)
            self._emit(acct, mode, f"{prefix}.updated", kind, obj, previous, snapshot=after)

    def _discard_events(self) -> None:
        """The request failed: the events it made never happened."""
        for acct, _mode, event in self._emitted:
            acct.events.pop(event["id"], None)
            acct.order.pop(event["id"], None)
        self._emitted = []

    def _commit_events(self) -> None:
        """Queue a delivery per matching enabled endpoint (sent once the lock is released)."""
        for acct, mode, event in self._emitted:
            endpoints = [
                we
                for _id, we in sorted(acct.webhook_endpoints.items(), key=lambda kv: acct.order.get(kv[0], 0))
                if we["status"] == "enabled"
                and ("*" in we["enabled_events"] or event["type"] in we["enabled_events"])
            ]
            event["pending_webhooks"] = len(endpoints)
            body = (json.dumps(event, indent=2) + "\n").encode("utf-8")
            for we in endpoints:
                self._outbox.append(
                    Job(mode, event["id"], event["type"], we["id"], we["url"], str(we["secret"]), body)
                )
        self._emitted = []

    def _take_outbox(self) -> list[Job]:
        jobs, self._outbox = self._outbox, []
        return jobs

    def _still_wanted(self, job: Job) -> bool:
        with self._lock:
            endpoint = self._accounts[job.mode].webhook_endpoints.get(job.endpoint_id)
            return endpoint is not None and endpoint["status"] == "enabled"

    def _delivered(self, job: Job) -> None:
        with self._lock, self._shared_state():
            event = self._accounts[job.mode].events.get(job.event_id)
            if event is not None and event["pending_webhooks"] > 0:
                event["pending_webhooks"] -= 1
                self._save()

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

    def close(self) -> None:
        """Stop the delivery thread (queued and scheduled deliveries are dropped)."""
        self.deliverer.stop()

    # ------------------------------------------------------------------ checkout sessions

    def _create_checkout_session(self, p: JSON, acct: _Account, mode: str) -> JSON:
        if "mode" not in p:
            raise _missing("mode")
        if p["mode"] != "subscription":
            raise _param_error(
                f"The parameter `mode={p['mode']}` is valid for Stripe, but this Stripe emulator models only "
                "`mode=subscription` Checkout Sessions.",
                "mode",
            )
        if "customer" in p and "customer_email" in p:
            raise _param_error(
                "You may only specify one of these parameters: customer, customer_email.",
                "customer_email",
                "parameters_exclusive",
            )
        customer = None
        if "customer" in p:
            customer = acct.customers.get(p["customer"])
            if customer is None:
                raise _no_such("customer", p["customer"], "customer", status=400)
        email = p.get("customer_email")
        if email is not None and (len(email) > 512 or not _EMAIL_RE.match(email)):
            raise _param_error(f"Invalid email address: {email}", "customer_email", "email_invalid")
        reference = p.get("client_reference_id")
        if reference is not None and len(reference) > 200:
            raise _param_error(
                "Invalid client_reference_id: must be at most 200 characters.", "client_reference_id"
            )
        if "success_url" not in p:
            # The SDK types it optional because embedded and custom `ui_mode`s forbid it; a hosted
            # session (the only `ui_mode` modelled here) needs it.
            raise _missing("success_url")
        for key in ("success_url", "cancel_url"):
            if key in p:
                parts = urlsplit(p[key])
                if parts.scheme not in ("http", "https") or not parts.hostname or len(p[key]) > 5000:
                    raise _param_error("Not a valid URL", key, "url_invalid")
        if not p.get("line_items"):
            raise _param_error(
                "`line_items` is required in `subscription` mode.", "line_items", "parameter_missing"
            )
        now = int(time.time())
        lines: list[JSON] = []
        currencies: set[str] = set()
        for i, given in enumerate(p["line_items"]):
            if "price" not in given:
                raise _missing(f"line_items[{i}][price]")
            price = self._subscribable_price(acct, given["price"], f"line_items[{i}][price]")
            metered = price["recurring"]["usage_type"] == "metered"
            if metered and "quantity" in given:
                raise _param_error(
                    "Quantity should not be specified where usage_type is `metered`.",
                    f"line_items[{i}][quantity]",
                )
            if not metered and "quantity" not in given:
                raise _missing(f"line_items[{i}][quantity]")
            quantity = given.get("quantity")
            if quantity is not None and not 1 <= quantity <= 999_999:
                raise _param_error(
                    "Invalid quantity: must be between 1 and 999999.",
                    f"line_items[{i}][quantity]",
                    "parameter_invalid_integer",
                )
            if any(line["price"] == price["id"] for line in lines):
                raise _param_error(
                    f"Cannot add multiple subscription items with the same plan: {price['id']}", "line_items"
                )
            currencies.add(price["currency"])
            lines.append({"price": price["id"], "quantity": quantity})
        if len(currencies) > 1:
            raise _param_error(
                "All line items of a Checkout Session must use the same currency; got "
                f"{', '.join(sorted(currencies))}.",
                "line_items",
            )
        expires_at = p.get("expires_at", now + CHECKOUT_LIFETIME)
        if not now + 1800 <= expires_at <= now + CHECKOUT_LIFETIME:
            raise _param_error(
                "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout Session "
                "creation.",
                "expires_at",
            )
        sub_data = p.get("subscription_data") or {}
        sub_metadata = self._merge_metadata({}, sub_data.get("metadata"), "subscription_data[metadata]")
        subtotal = sum(self._line_amount(acct.prices[line["price"]], line["quantity"]) for line in lines)
        session_id = self._fresh_id(acct, f"cs_{mode}_", 58)
        host = self._request_host or "127.0.0.1"
        session: JSON = {
            "id": session_id,
            "object": "checkout.session",
            "adaptive_pricing": None,
            "after_expiration": None,
            "allow_promotion_codes": None,
            "amount_subtotal": subtotal,
            "amount_total": subtotal,
            "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
            "billing_address_collection": None,
            "cancel_url": p.get("cancel_url"),
            "client_reference_id": reference,
            "client_secret": None,
            "collected_information": None,
            "consent": None,
            "consent_collection": None,
            "created": now,
            "currency": currencies.pop(),
            "currency_conversion": None,
            "custom_fields": [],
            "custom_text": {
                "after_submit": None,
                "shipping_address": None,
                "submit": None,
                "terms_of_service_acceptance": None,
            },
            "customer": customer["id"] if customer is not None else None,
            "customer_account": None,
            "customer_creation": None,
            "customer_details": None,
            "customer_email": email,
            "discounts": [],
            "expires_at": expires_at,
            "invoice": None,
            "invoice_creation": None,
            "livemode": mode == "live",
            "locale": None,
            "metadata": self._merge_metadata({}, p.get("metadata"), "metadata"),
            "mode": "subscription",
            "payment_intent": None,
            "payment_link": None,
            "payment_method_collection": "always",
            "payment_method_options": {},
            "payment_method_types": ["card"],
            "payment_status": "unpaid",
            "phone_number_collection": {"enabled": False},
            "recovered_from": None,
            "saved_payment_method_options": None,
            "setup_intent": None,
            "shipping_address_collection": None,
            "shipping_cost": None,
            "shipping_options": [],
            "status": "open",
            "submit_type": None,
            "subscription": None,
            "success_url": p.get("success_url"),
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "ui_mode": "hosted",
            "url": f"http://{host}/_emulator/checkout/{session_id}",
            # Internal (never rendered): what completing the session needs.
            "_line_items": lines,
            "_subscription_metadata": sub_metadata,
            "_subscription_description": sub_data.get("description"),
            "_api_version": self._request_version or stripe.api_version,
            "_pending_subscription": None,
        }
        self._store_new("checkout_session", session, acct)
        return session

    def _session_line_items(self, session: JSON, acct: _Account) -> JSON:
        data = []
        for n, line in enumerate(session["_line_items"]):
            price = acct.prices[line["price"]]
            product = acct.products.get(price["product"])
            amount = self._line_amount(price, line["quantity"])
            data.append(
                {
                    "id": f"li_{session['id'][-20:]}{n:04d}",
                    "object": "item",
                    "amount_discount": 0,
                    "amount_subtotal": amount,
                    "amount_tax": 0,
                    "amount_total": amount,
                    "currency": price["currency"],
                    "description": product["name"] if product is not None else None,
                    "price": self._render("price", price, [], acct),
                    "quantity": line["quantity"],
                }
            )
        return {
            "object": "list",
            "data": data,
            "has_more": False,
            "url": f"/v1/checkout/sessions/{session['id']}/line_items",
        }

    def _expire_session(self, session: JSON, acct: _Account, mode: str) -> None:
        if session["status"] != "open":
            raise StripeError(
                400,
                'Only Checkout Sessions with a status in ["open"] can be expired. This Checkout Session has '
                f"a status of `{session['status']}`.",
            )
        before = self._snapshot("checkout_session", session, acct)
        session["status"] = "expired"
        self._emit(acct, mode, "checkout.session.expired", "checkout_session", session)
        del before  # Stripe's expired event carries no previous_attributes

    def _expire_due(self, acct: _Account, mode: str) -> None:
        """Open sessions past their `expires_at` expire (lazily, when the account is next used)."""
        now = int(time.time())
        for session in list(acct.checkout_sessions.values()):
            if session["status"] == "open" and session["expires_at"] <= now:
                self._expire_session(session, acct, mode)

    # ------------------------------------------------------------------ invoices

    @staticmethod
    def _line_amount(price: JSON, quantity: int | None) -> int:
        """What `quantity` units of `price` cost, in minor units (metered: nothing up front)."""
        if quantity is None:
            return 0
        if price["billing_scheme"] == "tiered":
            tiers = price["tiers"] or []
            total = Decimal(0)
            if price["tiers_mode"] == "volume":
                tier = next((t for t in tiers if t["up_to"] is None or quantity <= t["up_to"]), tiers[-1])
                total = Decimal(tier["unit_amount_decimal"] or 0) * quantity + Decimal(
                    tier["flat_amount_decimal"] or 0
                )
            else:  # graduated
                floor = 0
                for tier in tiers:
                    top = quantity if tier["up_to"] is None else min(quantity, tier["up_to"])
                    if top > floor:
                        total += Decimal(tier["unit_amount_decimal"] or 0) * (top - floor)
                        total += Decimal(tier["flat_amount_decimal"] or 0)
                    floor = top
                    if tier["up_to"] is None or quantity <= tier["up_to"]:
                        break
            return int(total.to_integral_value(ROUND_HALF_UP))
        unit = Decimal(price["unit_amount_decimal"] or 0)
        return int((unit * quantity).to_integral_value(ROUND_HALF_UP))

    def _build_invoice(
        self, acct: _Account, mode: str, sub: JSON, reason: str, period_start: int, period_end: int
    ) -> JSON:
        """A draft invoice for `sub`'s items, stored and made the subscription's `latest_invoice`."""
        customer = acct.customers[sub["customer"]]
        invoice_id = self._fresh_id(acct, "in_", 24)
        now = int(time.time())
        lines = []
        for item in sub["items"]:
            price = acct.prices[item["price"]]
            product = acct.products.get(price["product"])
            amount = self._line_amount(price, item["quantity"])
            name = product["name"] if product is not None else price["id"]
            lines.append(
                {
                    "id": self._fresh_id(acct, "il_", 24),
                    "object": "line_item",
                    "amount": amount,
                    "currency": price["currency"],
                    "description": f"{item['quantity'] or 0} × {name}",
                    "discount_amounts": [],
                    "discountable": True,
                    "discounts": [],
                    "invoice": invoice_id,
                    "livemode": mode == "live",
                    "metadata": dict(item["metadata"]),
                    "parent": {
                        "invoice_item_details": None,
                        "subscription_item_details": {
                            "invoice_item": None,
                            "proration": False,
                            "proration_details": {"credited_items": None},
                            "subscription": sub["id"],
                            "subscription_item": item["id"],
                        },
                        "type": "subscription_item_details",
                    },
                    "period": {"end": item["current_period_end"], "start": item["current_period_start"]},
                    "pretax_credit_amounts": [],
                    "pricing": {
                        "price_details": {"price": price["id"], "product": price["product"]},
                        "type": "price_details",
                        "unit_amount_decimal": price["unit_amount_decimal"],
                    },
                    "quantity": item["quantity"],
                    "subtotal": amount,
                    "taxes": [],
                }
            )
        total = sum(int(line["amount"]) for line in lines)
        invoice: JSON = {
            "id": invoice_id,
            "object": "invoice",
            "account_country": "US",
            "account_name": "kuploy sandbox",
            "account_tax_ids": None,
            "amount_due": total,
            "amount_overpaid": 0,
            "amount_paid": 0,
            "amount_paid_off_stripe": 0,
            "amount_remaining": total,
            "amount_shipping": 0,
            "application": None,
            "attempt_count": 0,
            "attempted": False,
            "auto_advance": True,
            "automatic_tax": {
                "disabled_reason": None,
                "enabled": False,
                "liability": None,
                "provider": None,
                "status": None,
            },
            "automatically_finalizes_at": None,
            "billing_reason": reason,
            "collection_method": "charge_automatically",
            "confirmation_secret": None,
            "created": now,
            "currency": sub["currency"],
            "custom_fields": None,
            "customer": customer["id"],
            "customer_account": None,
            "customer_address": customer["address"],
            "customer_email": customer["email"],
            "customer_name": customer["name"],
            "customer_phone": customer["phone"],
            "customer_shipping": customer["shipping"],
            "customer_tax_exempt": customer["tax_exempt"],
            "customer_tax_ids": [],
            "default_payment_method": None,
            "default_source": None,
            "default_tax_rates": [],
            "description": None,
            "discounts": [],
            "due_date": None,
            "effective_at": None,
            "ending_balance": None,
            "footer": None,
            "from_invoice": None,
            "hosted_invoice_url": None,
            "invoice_pdf": None,
            "issuer": {"type": "self"},
            "last_finalization_error": None,
            "latest_revision": None,
            "lines": lines,  # rendered as a list object
            "livemode": mode == "live",
            "metadata": {},
            "next_payment_attempt": None,
            "number": None,
            "on_behalf_of": None,
            "parent": {
                "quote_details": None,
                "subscription_details": {"metadata": dict(sub["metadata"]), "subscription": sub["id"]},
                "type": "subscription_details",
            },
            "payment_settings": {
                "default_mandate": None,
                "payment_method_options": None,
                "payment_method_types": None,
            },
            "period_end": period_end,
            "period_start": period_start,
            "post_payment_credit_notes_amount": 0,
            "pre_payment_credit_notes_amount": 0,
            "receipt_number": None,
            "rendering": None,
            "shipping_cost": None,
            "shipping_details": None,
            "starting_balance": 0,
            "statement_descriptor": None,
            "status": "draft",
            "status_transitions": {
                "finalized_at": None,
                "marked_uncollectible_at": None,
                "paid_at": None,
                "voided_at": None,
            },
            "subtotal": total,
            "subtotal_excluding_tax": total,
            "test_clock": None,
            "threshold_reason": None,
            "total": total,
            "total_discount_amounts": [],
            "total_excluding_tax": total,
            "total_pretax_credit_amounts": [],
            "total_taxes": [],
            "webhooks_delivered_at": None,
        }
        self._store_new("invoice", invoice, acct)
        sub["latest_invoice"] = invoice_id
        return invoice

    def _finalize_invoice(self, invoice: JSON, acct: _Account, mode: str) -> None:
        customer = acct.customers[invoice["customer"]]
        now = int(time.time())
        invoice["status"] = "open"
        invoice["number"] = f"{customer['invoice_prefix']}-{int(customer['next_invoice_sequence']):04d}"
        customer["next_invoice_sequence"] = int(customer["next_invoice_sequence"]) + 1
        invoice["effective_at"] = now
        invoice["ending_balance"] = 0
        invoice["status_transitions"] = {**invoice["status_transitions"], "finalized_at": now}
        base = f"http://{self._request_host or '127.0.0.1'}/_emulator/invoices/{invoice['id']}"
        invoice["hosted_invoice_url"] = base
        invoice["invoice_pdf"] = base + "/pdf"
        invoice["webhooks_delivered_at"] = now
        self._emit(acct, mode, "invoice.finalized", "invoice", invoice)

    def _mark_paid(self, invoice: JSON, acct: _Account, mode: str) -> None:
        now = int(time.time())
        if invoice["amount_due"] > 0:
            invoice["attempt_count"] = int(invoice["attempt_count"]) + 1
            invoice["attempted"] = True
        invoice["status"] = "paid"
        invoice["amount_paid"] = invoice["amount_due"]
        invoice["amount_remaining"] = 0
        invoice["auto_advance"] = False
        invoice["next_payment_attempt"] = None
        invoice["status_transitions"] = {**invoice["status_transitions"], "paid_at": now}
        snapshot = self._snapshot("invoice", invoice, acct)
        self._emit(acct, mode, "invoice.paid", "invoice", invoice, snapshot=snapshot)
        self._emit(acct, mode, "invoice.payment_succeeded", "invoice", invoice, snapshot=snapshot)

    def _mark_failed(self, invoice: JSON, acct: _Account, mode: str, *, action_required: bool) -> None:
        invoice["attempt_count"] = int(invoice["attempt_count"]) + 1
        invoice["attempted"] = True
        if invoice["billing_reason"] != "subscription_create" and not action_required:
            # Stripe's retry schedule (Smart Retries) is not modelled: one retry announced, 3 days on.
            invoice["next_payment_attempt"] = int(time.time()) + 3 * 86400
        kind = "invoice.payment_action_required" if action_required else "invoice.payment_failed"
        self._emit(acct, mode, kind, "invoice", invoice)

    # ------------------------------------------------------------------ payments (test cards)

    def _set_status(self, sub: JSON, status: str, acct: _Account, mode: str) -> None:
        if sub["status"] == status:
            return
        before = self._snapshot("subscription", sub, acct)
        sub["status"] = status
        self._emit_update(acct, mode, "subscription", sub, before)

    def _new_payment_intent(
        self,
        acct: _Account,
        card: str,
        amount: int,
        currency: str,
        *,
        session: str | None,
        invoice: str | None,
    ) -> JSON:
        intent = {
            "id": self._fresh_id(acct, "pi_", 24),
            "object": "payment_intent",
            "amount": amount,
            "currency": currency,
            "card": card,
            "checkout_session": session,
            "invoice": invoice,
            "status": "requires_action",
            "created": int(time.time()),
        }
        self._store_new("payment_intent", intent, acct)
        return intent

    def _charge_invoice(self, invoice: JSON, card: str, acct: _Account, mode: str) -> JSON:
        """One payment attempt on an open invoice with a test card; the subscription follows. Returns the
        admin answer (`outcome`, and the PaymentIntent to authenticate when 3D Secure is required)."""
        outcome, decline_code = _card_outcome(card)
        sub = acct.subscriptions[invoice["parent"]["subscription_details"]["subscription"]]
        first = invoice["billing_reason"] == "subscription_create"
        answer: JSON = {"outcome": outcome, "invoice": invoice["id"], "subscription": sub["id"]}
        if outcome == "succeeded":
            sub["_card"] = card
            self._mark_paid(invoice, acct, mode)
            if sub["status"] in ("incomplete", "past_due", "unpaid"):
                self._set_status(sub, "active", acct, mode)
            return answer
        if outcome == "requires_action":
            intent = self._new_payment_intent(
                acct, card, invoice["amount_due"], invoice["currency"], session=None, invoice=invoice["id"]
            )
            answer["payment_intent"] = intent["id"]
        else:
            answer["error"] = _decline(decline_code)
        self._mark_failed(invoice, acct, mode, action_required=outcome == "requires_action")
        if not first and sub["status"] == "active":
            self._set_status(sub, "past_due", acct, mode)
        return answer

    def _checkout_customer(self, session: JSON, acct: _Account, mode: str, args: JSON) -> JSON:
        if session["customer"] is not None:
            return acct.customers[session["customer"]]
        params: JSON = {}
        email = session["customer_email"] or args.get("email")
        if email:
            params["email"] = email
        if args.get("name"):
            params["name"] = args["name"]
        try:
            customer = self._create_customer(params, acct, mode)
        except StripeError as exc:
            raise _admin_error(exc.message) from exc
        self._emit(acct, mode, "customer.created", "customer", customer)
        session["customer"] = customer["id"]
        return customer

    def _checkout_subscription(
        self, session: JSON, customer: JSON, acct: _Account, mode: str, card: str
    ) -> JSON:
        now = int(time.time())
        sub_id = self._fresh_id(acct, "sub_", 24)
        items = []
        for line in session["_line_items"]:
            price = acct.prices[line["price"]]
            item = self._new_item(acct, sub_id, price, now)
            item["quantity"] = line["quantity"]
            items.append(item)
        try:
            currency = self._check_items(items, acct, customer, None)
        except StripeError as exc:
            raise _admin_error(exc.message) from exc
        sub = self._build_subscription(
            sub_id,
            customer,
            items,
            currency,
            mode,
            now,
            session["_subscription_metadata"],
            session["_subscription_description"],
        )
        sub["default_payment_method"] = _random_id("pm_", 24)
        sub["_card"] = card
        customer["currency"] = customer["currency"] or currency
        return sub

    def _complete_session(self, session: JSON, acct: _Account, mode: str, sub: JSON, invoice: JSON) -> None:
        customer = acct.customers[sub["customer"]]
        session["status"] = "complete"
        session["payment_status"] = "paid"
        session["subscription"] = sub["id"]
        session["invoice"] = invoice["id"]
        session["customer"] = customer["id"]
        session["customer_details"] = {
            "address": customer["address"],
            "business_name": None,
            "email": customer["email"],
            "individual_name": None,
            "name": customer["name"],
            "phone": customer["phone"],
            "tax_exempt": customer["tax_exempt"],
            "tax_ids": [],
        }
        self._emit(acct, mode, "checkout.session.completed", "checkout_session", session)

    def _fulfil_session(self, session: JSON, acct: _Account, mode: str, card: str, args: JSON) -> JSON:
        """The paid session (API 2025-03-31.basil on): payment first, then customer, an active
        subscription and its paid first invoice, then `checkout.session.completed`."""
        customer = self._checkout_customer(session, acct, mode, args)
        sub = self._checkout_subscription(session, customer, acct, mode, card)
        now = int(sub["created"])
        invoice = self._build_invoice(acct, mode, sub, "subscription_create", now, now)
        self._store_new("subscription", sub, acct)
        self._emit(acct, mode, "customer.subscription.created", "subscription", sub)
        self._emit(acct, mode, "invoice.created", "invoice", invoice)
        self._finalize_invoice(invoice, acct, mode)
        self._mark_paid(invoice, acct, mode)
        self._complete_session(session, acct, mode, sub, invoice)
        return {"outcome": "succeeded", "subscription": sub["id"], "invoice": invoice["id"]}

    def _complete_checkout(self, acct: _Account, mode: str, session: JSON, args: JSON) -> JSON:
        card = _card_arg(args)
        if session["status"] != "open":
            raise _admin_error(f"The Checkout Session {session['id']} is {session['status']}, not open.")
        outcome, decline_code = _card_outcome(card)
        if str(session["_api_version"]) >= CHECKOUT_BASIL:
            if outcome == "succeeded":
                answer = self._fulfil_session(session, acct, mode, card, args)
            elif outcome == "declined":
                # Checkout shows the decline on its page; nothing is created and the session stays open.
                answer = {"outcome": "declined", "error": _decline(decline_code)}
            else:
                intent = self._new_payment_intent(
                    acct,
                    card,
                    session["amount_total"],
                    session["currency"],
                    session=session["id"],
                    invoice=None,
                )
                intent["args"] = {k: args[k] for k in ("email", "name") if k in args}
                answer = {"outcome": "requires_action", "payment_intent": intent["id"]}
        else:
            # Before 2025-03-31.basil, Checkout made an incomplete subscription with an open first invoice,
            # then attempted the payment; a declined card left them for the next attempt.
            sub_id = session["_pending_subscription"]
            if sub_id is None:
                customer = self._checkout_customer(session, acct, mode, args)
                sub = self._checkout_subscription(session, customer, acct, mode, card)
                now = int(sub["created"])
                invoice = self._build_invoice(acct, mode, sub, "subscription_create", now, now)
                sub["status"] = "incomplete"
                self._store_new("subscription", sub, acct)
                session["_pending_subscription"] = sub["id"]
                self._emit(acct, mode, "customer.subscription.created", "subscription", sub)
                self._emit(acct, mode, "invoice.created", "invoice", invoice)
                self._finalize_invoice(invoice, acct, mode)
            else:
                sub = acct.subscriptions[sub_id]
                invoice = acct.invoices[sub["latest_invoice"]]
            answer = self._charge_invoice(invoice, card, acct, mode)
            if answer["outcome"] == "requires_action":
                acct.payment_intents[answer["payment_intent"]]["checkout_session"] = session["id"]
            if answer["outcome"] == "succeeded":
                self._complete_session(session, acct, mode, sub, invoice)
        answer["checkout_session"] = self._render("checkout_session", session, [], acct)
        return answer

    def _authenticate_payment(self, acct: _Account, mode: str, intent: JSON, args: JSON) -> JSON:
        if intent["status"] != "requires_action":
            raise _admin_error(
                f"The PaymentIntent {intent['id']} is {intent['status']}, not requires_action."
            )
        result = args.get("outcome", "succeeded")
        if result not in ("succeeded", "failed"):
            raise _admin_error('"outcome" must be "succeeded" or "failed".')
        intent["status"] = "succeeded" if result == "succeeded" else "requires_payment_method"
        session = acct.checkout_sessions.get(intent["checkout_session"] or "")
        answer: JSON = {"payment_intent": intent["id"], "outcome": result}
        if intent["invoice"] is None:  # a Checkout payment (basil): nothing exists before it succeeds
            assert session is not None
            if result == "succeeded":
                if session["status"] != "open":
                    raise _admin_error(f"The Checkout Session {session['id']} is {session['status']}.")
                answer.update(
                    self._fulfil_session(session, acct, mode, intent["card"], intent.get("args", {}))
                )
        else:
            invoice = acct.invoices[intent["invoice"]]
            sub = acct.subscriptions[invoice["parent"]["subscription_details"]["subscription"]]
            if result == "succeeded" and invoice["status"] == "open":
                sub["_card"] = intent["card"]
                self._mark_paid(invoice, acct, mode)
                if sub["status"] in ("incomplete", "past_due", "unpaid"):
                    self._set_status(sub, "active", acct, mode)
                if session is not None and session["status"] == "open":
                    self._complete_session(session, acct, mode, sub, invoice)
            elif result == "failed":
                self._mark_failed(invoice, acct, mode, action_required=False)
            answer.update({"invoice": invoice["id"], "subscription": sub["id"]})
        if session is not None:
            answer["checkout_session"] = self._render("checkout_session", session, [], acct)
        return answer

    def _pay_invoice(self, acct: _Account, mode: str, invoice: JSON, args: JSON) -> JSON:
        if invoice["status"] != "open":
            raise _admin_error(f"The invoice {invoice['id']} is {invoice['status']}, not open.")
        return self._charge_invoice(invoice, _card_arg(args), acct, mode)

    def _renew(self, acct: _Account, mode: str, sub: JSON, args: JSON) -> JSON:
        """The end of the current period: a new period and a `subscription_cycle` invoice, charged."""
        if sub["status"] not in ("active", "past_due", "unpaid", "trialing"):
            raise _admin_error(f"The subscription {sub['id']} is {sub['status']}: it does not renew.")
        if "card" in args and "outcome" in args:
            raise _admin_error('Give "card" or "outcome", not both.')
        if "outcome" in args:
            outcomes = {
                "paid": "4242424242424242",
                "failed": "4000000000000002",
                "requires_action": "4000000000003220",
            }
            if args["outcome"] not in outcomes:
                raise _admin_error('"outcome" must be "paid", "failed" or "requires_action".')
            card = outcomes[args["outcome"]]
        else:
            card = _card_arg(args) if "card" in args else str(sub.get("_card") or "4242424242424242")
        if sub["cancel_at_period_end"]:
            before = self._snapshot("subscription", sub, acct)
            self._cancel_subscription(sub, {})
            sub["cancellation_details"] = {**sub["cancellation_details"], "reason": "cancellation_requested"}
            sub["canceled_at"] = before["canceled_at"] or sub["canceled_at"]
            self._emit(acct, mode, "customer.subscription.deleted", "subscription", sub)
            return {"outcome": "canceled", "subscription": sub["id"]}
        before = self._snapshot("subscription", sub, acct)
        period_start = min(int(i["current_period_start"]) for i in sub["items"])
        period_end = max(int(i["current_period_end"]) for i in sub["items"])
        for item in sub["items"]:
            start = int(item["current_period_end"])
            item["current_period_start"] = start
            item["current_period_end"] = _period_end(start, acct.prices[item["price"]]["recurring"])
        invoice = self._build_invoice(acct, mode, sub, "subscription_cycle", period_start, period_end)
        self._emit_update(acct, mode, "subscription", sub, before)
        self._emit(acct, mode, "invoice.created", "invoice", invoice)
        self._finalize_invoice(invoice, acct, mode)
        if invoice["amount_due"] == 0:
            self._mark_paid(invoice, acct, mode)
            return {"outcome": "succeeded", "invoice": invoice["id"], "subscription": sub["id"]}
        return self._charge_invoice(invoice, card, acct, mode)

    def _admin_cancel(self, acct: _Account, mode: str, sub: JSON, args: JSON) -> JSON:
        try:
            self._cancel_subscription(sub, {})
        except StripeError as exc:
            raise _admin_error(exc.message) from exc
        self._emit(acct, mode, "customer.subscription.deleted", "subscription", sub)
        return {"outcome": "canceled", "subscription": self._render("subscription", sub, [], acct)}

    # ------------------------------------------------------------------ admin actions

    def _find(self, kind: str, obj_id: str) -> tuple[_Account, str, JSON] | None:
        for mode, acct in self._accounts.items():
            obj = acct.store(kind).get(obj_id)
            if obj is not None:
                return acct, mode, obj
        return None

    def _admin_action(
        self,
        kind: str,
        obj_id: str,
        body: bytes,
        hdrs: Mapping[str, str],
        action: typing.Callable[[_Account, str, JSON, JSON], JSON],
    ) -> Reply:
        """Run one state-changing admin action like a request: under the lock, saved, events delivered
        after the lock is released. Never subject to faults."""
        try:
            args = json.loads(body.decode("utf-8") or "{}")
        except (UnicodeDecodeError, ValueError):
            args = None
        if not isinstance(args, dict):
            return Reply(400, _admin_error("The body must be a JSON object.").body())
        with self._lock:
            with self._shared_state():
                found = self._find(kind, obj_id)
                if found is None:
                    return Reply(404, _no_such(_KIND_NAMES.get(kind, kind), obj_id, "id").body())
                acct, mode, obj = found
                self._request_host = hdrs.get("host")
                self._emitted = []
                self._expire_due(acct, mode)
                self._commit_events()
                try:
                    result = action(acct, mode, obj, args)
                except StripeError as exc:
                    self._discard_events()
                    self._save()
                    return Reply(exc.status, exc.body())
                finally:
                    self._request_host = None
                self._commit_events()
                self._save()
            jobs = self._take_outbox()
        self.deliverer.enqueue(jobs)
        return Reply(200, result)

    def _admin_flows(self, method: str, path: str, body: bytes, hdrs: Mapping[str, str]) -> Reply | None:
        parts = path.split("/")[2:]  # after "/_emulator/"
        if method == "GET" and path == "/_emulator/deliveries":
            return Reply(200, {"attempts": self.deliveries(), "pending": self.deliverer.pending()})
        if method == "POST" and path == "/_emulator/deliveries/flush":
            try:
                args = json.loads(body.decode("utf-8") or "{}")
                timeout = float(args.get("timeout", 10.0)) if isinstance(args, dict) else -1.0
            except (UnicodeDecodeError, ValueError, TypeError):
                timeout = -1.0
            if not 0 <= timeout <= MAX_FLUSH_SECONDS:
                return Reply(
                    400, _admin_error(f'"timeout" must be between 0 and {MAX_FLUSH_SECONDS:g}.').body()
                )
            idle = self.flush_deliveries(timeout)
            return Reply(200, {"idle": idle, "pending": self.deliverer.pending()})
        if len(parts) == 2 and parts[0] == "checkout" and method == "GET":
            with self._lock, self._shared_state():
                found = self._find("checkout_session", parts[1])
                if found is None:
                    return Reply(404, _no_such("checkout.session", parts[1], "id").body())
                acct, _mode, session = found
                return Reply(
                    200,
                    {
                        "checkout_session": self._render("checkout_session", session, ["line_items"], acct),
                        "complete_with": f"POST /_emulator/checkout/{session['id']}/complete "
                        '{"card": "4242424242424242"}',
                        "test_cards": {number: outcome for number, (outcome, _code) in _TEST_CARDS.items()},
                    },
                )
        if method != "POST" or len(parts) != 3:
            return None
        kind_of: dict[tuple[str, str], tuple[str, typing.Callable[[_Account, str, JSON, JSON], JSON]]] = {
            ("checkout", "complete"): ("checkout_session", self._complete_checkout),
            ("payment_intents", "authenticate"): ("payment_intent", self._authenticate_payment),
            ("invoices", "pay"): ("invoice", self._pay_invoice),
            ("subscriptions", "renew"): ("subscription", self._renew),
            ("subscriptions", "cancel"): ("subscription", self._admin_cancel),
        }
        found_action = kind_of.get((parts[0], parts[2]))
        if found_action is None:
            return None
        kind, action = found_action
        return self._admin_action(kind, unquote(parts[1]), body, hdrs, action)


# ---------------------------------------------------------------------------------------- HTTP


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
        try:
            body = self._read_body()
        except _BodyError as exc:
            self._send(
                Reply(
                    400, StripeError(400, str(exc)).body(), {"Request-Id": _random_id("req_", 14)}, close=True
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
        payload = (json.dumps(reply.body, indent=2, default=str) + "\n").encode("utf-8")
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
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
    latency_ms: int = 0,
    rate_limit: float | None = None,
    error_rate: float = 0.0,
    timeout_rate: float = 0.0,
    seed: int | None = None,
    hang_seconds: float = 30.0,
    delivery_retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
    delivery_timeout: float = DEFAULT_TIMEOUT,
    shuffle_deliveries: bool = False,
) -> RunningEmulator:
    emulator = Emulator(
        state_file=state_file,
        latency_ms=latency_ms,
        rate_limit=rate_limit,
        error_rate=error_rate,
        timeout_rate=timeout_rate,
        seed=seed,
        hang_seconds=hang_seconds,
        delivery_retry_delays=delivery_retry_delays,
        delivery_timeout=delivery_timeout,
        shuffle_deliveries=shuffle_deliveries,
    )
    server = _Server((host, port), emulator)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="stripe-emulator", daemon=True
    )
    thread.start()
    return RunningEmulator(_url(server, host), emulator, server, thread)


def serve(
    *,
    host: str,
    port: int,
    state_file: Path | None = None,
    latency_ms: int = 0,
    rate_limit: float | None = None,
    error_rate: float = 0.0,
    timeout_rate: float = 0.0,
    seed: int | None = None,
    hang_seconds: float = 30.0,
) -> None:
    """Serve until interrupted (Ctrl-C stops cleanly)."""
    emulator = Emulator(
        state_file=state_file,
        latency_ms=latency_ms,
        rate_limit=rate_limit,
        error_rate=error_rate,
        timeout_rate=timeout_rate,
        seed=seed,
        hang_seconds=hang_seconds,
    )
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
