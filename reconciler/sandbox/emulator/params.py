"""Request parameters: what each route accepts (derived from the SDK's typed params, `stripe.params.*`),
which of those this emulator models, Stripe's nested form decoding, and coercion to Python values.

A resource module adds its routes' specs with `PARAM_SPECS[route] = spec_of(stripe.params.X)` and, for
the parameters it does not model, `MODELLED_PARAMS[route]`: the others are refused loudly."""

from __future__ import annotations

import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any, cast
from urllib.parse import parse_qsl

import stripe

from .errors import JSON, StripeError, empty, missing, one_of, param_error, unknown

MAX_FORM_FIELDS = 5000
INT64_MAX = (1 << 63) - 1
_FORM_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_INT_RE = re.compile(r"^-?\d{1,19}$")


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


def spec_of(cls: type) -> Spec:
    hints = _hints(cls)
    required = frozenset(cast(frozenset[str], cls.__required_keys__)) - _REQUEST_OPTION_KEYS  # type: ignore[attr-defined]
    return Spec("object", fields={k: _spec(v) for k, v in hints.items()}, required=required & set(hints))


def _spec(tp: Any) -> Spec:
    """The spec of one annotation: wrappers unwrapped, literals as enums, unions merged, containers
    by their items, nested TypedDicts as objects, the remaining types as scalars."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.NotRequired, typing.Required):
        return _spec(args[0])
    if origin is typing.Literal:
        values = tuple(str(a) for a in args if a != "")
        return Spec("enum", enum=values, emptyable="" in args) if values else Spec("str", emptyable=True)
    if origin in (typing.Union, types.UnionType):
        return _union_spec(args)
    if origin is list:
        return Spec("list", item=_spec(args[0]))
    if origin is dict:
        return Spec("map", item=_spec(args[1]))
    if isinstance(origin, type) and origin.__name__ == "UntypedStripeObject":
        return Spec("map", item=_spec(args[0]))
    if _is_typeddict(tp):
        return spec_of(tp)
    return next((spec for scalar, spec in _SCALAR_SPECS if tp is scalar), Spec("str"))


_SCALAR_SPECS = ((bool, Spec("bool")), (int, Spec("int")), (float, Spec("float")), (Decimal, Spec("decimal")))


def _union_spec(args: tuple[Any, ...]) -> Spec:
    """A union's spec: its literals (one enum; `""` among them makes it emptyable) and other members;
    a union left with one option is that option."""
    literals = [v for a in args if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)]
    others = [a for a in args if typing.get_origin(a) is not typing.Literal]
    emptyable = "" in literals
    specs = _union_options(tuple(str(v) for v in literals if v != ""), others)
    if len(specs) == 1:
        return replace(specs[0], emptyable=emptyable or specs[0].emptyable)
    return Spec("union", options=tuple(specs), emptyable=emptyable)


def _union_options(literal_values: tuple[str, ...], others: list[Any]) -> list[Spec]:
    """The options a union's value may take: its literals as one enum (or plain `str`), then the
    specs of its other members (`None` dropped; one map for `Dict[str, X] | UntypedStripeObject[X]`,
    which are the same on the wire)."""
    specs: list[Spec] = []
    if literal_values:
        specs.append(Spec("enum", enum=literal_values))
    elif str in others:
        specs.append(Spec("str"))
    for other in others:
        if other is str or other is type(None):
            continue
        spec = _spec(other)
        if spec.kind == "map" and any(s.kind == "map" for s in specs):
            continue
        specs.append(spec)
    return specs


_P = stripe.params
PARAM_SPECS: dict[str, Spec] = {
    "product.create": spec_of(_P.ProductCreateParams),
    "product.update": spec_of(_P.ProductUpdateParams),
    "product.list": spec_of(_P.ProductListParams),
    "product.retrieve": spec_of(_P.ProductRetrieveParams),
    "product.delete": spec_of(_P.ProductDeleteParams),
    "price.create": spec_of(_P.PriceCreateParams),
    "price.update": spec_of(_P.PriceUpdateParams),
    "price.list": spec_of(_P.PriceListParams),
    "price.retrieve": spec_of(_P.PriceRetrieveParams),
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
        "customer.create": spec_of(_P.CustomerCreateParams),
        "customer.update": spec_of(_P.CustomerUpdateParams),
        "customer.list": spec_of(_P.CustomerListParams),
        "customer.retrieve": spec_of(_P.CustomerRetrieveParams),
        "subscription.create": spec_of(_P.SubscriptionCreateParams),
        "subscription.update": spec_of(_P.SubscriptionUpdateParams),
        "subscription.list": spec_of(_P.SubscriptionListParams),
        "subscription.retrieve": spec_of(_P.SubscriptionRetrieveParams),
        "subscription.cancel": spec_of(_P.SubscriptionCancelParams),
        "webhook_endpoint.create": spec_of(_P.WebhookEndpointCreateParams),
        "webhook_endpoint.update": spec_of(_P.WebhookEndpointUpdateParams),
        "webhook_endpoint.list": spec_of(_P.WebhookEndpointListParams),
        "webhook_endpoint.retrieve": spec_of(_P.WebhookEndpointRetrieveParams),
        "webhook_endpoint.delete": spec_of(_P.WebhookEndpointDeleteParams),
        "checkout_session.create": spec_of(_P.checkout.SessionCreateParams),
        "checkout_session.list": spec_of(_P.checkout.SessionListParams),
        "checkout_session.retrieve": spec_of(_P.checkout.SessionRetrieveParams),
        "checkout_session.expire": spec_of(_P.checkout.SessionExpireParams),
        "invoice.list": spec_of(_P.InvoiceListParams),
        "invoice.retrieve": spec_of(_P.InvoiceRetrieveParams),
        "invoice.create": spec_of(_P.InvoiceCreateParams),
        "invoice.update": spec_of(_P.InvoiceUpdateParams),
        "invoice.delete": spec_of(_P.InvoiceDeleteParams),
        "invoice.finalize_invoice": spec_of(_P.InvoiceFinalizeInvoiceParams),
        "invoice.pay": spec_of(_P.InvoicePayParams),
        "invoice.void_invoice": spec_of(_P.InvoiceVoidInvoiceParams),
        "invoice.mark_uncollectible": spec_of(_P.InvoiceMarkUncollectibleParams),
        "invoice.list_lines": spec_of(_P.InvoiceListLinesParams),
        "invoiceitem.create": spec_of(_P.InvoiceItemCreateParams),
        "invoiceitem.update": spec_of(_P.InvoiceItemUpdateParams),
        "invoiceitem.list": spec_of(_P.InvoiceItemListParams),
        "invoiceitem.retrieve": spec_of(_P.InvoiceItemRetrieveParams),
        "invoiceitem.delete": spec_of(_P.InvoiceItemDeleteParams),
        "subscription.resume": spec_of(_P.SubscriptionResumeParams),
        "event.list": spec_of(_P.EventListParams),
        "event.retrieve": spec_of(_P.EventRetrieveParams),
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
    "customer.create": _CUSTOMER_FIELDS | {"invoice_settings", "payment_method"},
    "customer.update": _CUSTOMER_FIELDS | {"invoice_settings"},
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
            "payment_settings",  # save_default_payment_method only (subscriptions.create checks)
            "proration_behavior",
            "default_payment_method",
        }
    ),
    "subscription.update": frozenset(
        {
            "items",
            "metadata",
            "cancel_at_period_end",
            "description",
            "expand",
            "proration_behavior",
            "payment_behavior",
            "default_payment_method",
        }
    ),
    "subscription.resume": frozenset({"expand"}),
    "subscription.list": _PAGING | {"customer", "price", "status"},
    "subscription.cancel": frozenset({"cancellation_details", "expand", "prorate"}),
    "webhook_endpoint.create": frozenset(
        {"url", "enabled_events", "description", "metadata", "api_version", "expand"}
    ),
    "webhook_endpoint.update": frozenset(
        {"url", "enabled_events", "disabled", "description", "metadata", "expand"}
    ),
    "invoice.list": _PAGING | {"collection_method", "customer", "status", "subscription"},
    "invoice.create": frozenset(
        {
            "auto_advance",
            "collection_method",
            "customer",
            "days_until_due",
            "default_payment_method",
            "description",
            "expand",
            "metadata",
            "pending_invoice_items_behavior",
            "subscription",
        }
    ),
    "invoice.update": frozenset(
        {
            "auto_advance",
            "collection_method",
            "days_until_due",
            "default_payment_method",
            "description",
            "expand",
            "metadata",
        }
    ),
    "invoice.pay": frozenset({"expand", "off_session", "paid_out_of_band", "payment_method"}),
    "invoice.list_lines": frozenset({"ending_before", "expand", "limit", "starting_after"}),
    "invoiceitem.create": frozenset(
        {
            "amount",
            "currency",
            "customer",
            "description",
            "expand",
            "invoice",
            "metadata",
            "pricing",
            "quantity",
        }
    ),
    "invoiceitem.update": frozenset({"amount", "description", "expand", "metadata", "pricing", "quantity"}),
    # (`created` is not: an invoice item has `date` instead)
    "invoiceitem.list": (_PAGING - {"created"}) | {"customer", "invoice", "pending"},
    "event.list": _PAGING | {"type", "types"},
}
MODELLED_ITEM_PARAMS = {
    "subscription.create": frozenset({"price", "quantity", "metadata"}),
    "subscription.update": frozenset({"id", "price", "quantity", "metadata", "deleted"}),
}


def decode_form(text: str) -> JSON:
    """Decode Stripe-style nested form/query encoding (`a[b][0]=x`, `expand[]=y`) into nested values.

    Leaves are strings; a node whose keys are exactly 0..n-1 becomes a list."""
    try:
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=MAX_FORM_FIELDS)
    except UnicodeDecodeError as exc:
        raise param_error("Invalid request: the body or query string is not valid UTF-8.", None) from exc
    except ValueError as exc:
        raise param_error(f"Invalid request: {exc}.", None) from exc
    root: JSON = {}
    for raw_key, value in pairs:
        m = _FORM_KEY_RE.match(raw_key)
        if m is None:
            raise unknown(raw_key)
        segments = [m.group(1), *re.findall(r"\[([^\[\]]*)\]", m.group(2))]
        node = root
        shown = segments[0]
        for i, seg in enumerate(segments):
            key = str(len(node)) if seg == "" else seg
            if i == len(segments) - 1:
                if isinstance(node.get(key), dict):
                    raise param_error(f"Invalid hash: {shown} was sent both as a value and a hash", shown)
                node[key] = value
            else:
                child = node.setdefault(key, {})
                if not isinstance(child, dict):
                    raise param_error(f"Invalid hash: {shown} was sent both as a value and a hash", shown)
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


def join(prefix: str, key: str) -> str:
    return f"{prefix}[{key}]" if prefix else key


def validate_params(spec: Spec, data: Mapping[str, Any]) -> JSON:
    """Check decoded params against a top-level spec; return them coerced to Python types."""
    return _coerce_fields(spec, data, "")


def _coerce_fields(spec: Spec, data: Mapping[str, Any], prefix: str) -> JSON:
    for key in data:
        if key not in spec.fields:
            raise unknown(join(prefix, key))
    for key in sorted(spec.required):
        if key not in data:
            raise missing(join(prefix, key))
    return {key: _coerce(spec.fields[key], value, join(prefix, key)) for key, value in data.items()}


def _coerce(spec: Spec, value: Any, name: str, *, in_map: bool = False) -> Any:
    """One parameter's value as its spec says: `""` where it may be unset, containers by their items,
    scalars from their one string."""
    if value == "" and (spec.emptyable or (in_map and spec.kind == "str")):
        return ""
    container = _CONTAINERS.get(spec.kind)
    if container is not None:
        return container(spec, value, name)
    if not isinstance(value, str):
        raise param_error(f"Invalid {name}: expected a single value, not a hash or array", name)
    if value == "":
        raise empty(name)
    return _coerce_scalar(spec, value, name)


def _coerce_union(spec: Spec, value: Any, name: str) -> Any:
    """The value as the first option that takes it; otherwise the first option's error."""
    first: StripeError | None = None
    for option in spec.options:
        try:
            return _coerce(option, value, name)
        except StripeError as exc:
            first = first or exc
    assert first is not None
    raise first


def _coerce_object(spec: Spec, value: Any, name: str) -> Any:
    if not isinstance(value, dict):
        raise param_error(f"Invalid hash: {name} must be a hash of parameters", name)
    return _coerce_fields(spec, value, name)


def _coerce_map(spec: Spec, value: Any, name: str) -> Any:
    if isinstance(value, list):
        value = {str(i): v for i, v in enumerate(value)}
    if not isinstance(value, dict):
        raise param_error(f"Invalid hash: {name} must be a hash of key-value pairs", name)
    assert spec.item is not None
    return {k: _coerce(spec.item, v, f"{name}[{k}]", in_map=True) for k, v in value.items()}


def _coerce_list(spec: Spec, value: Any, name: str) -> Any:
    if isinstance(value, dict) and all(k.isdigit() for k in value):
        value = [value[k] for k in sorted(value, key=int)]
    if not isinstance(value, list):
        raise param_error(f"Invalid array: {name} must be an array", name)
    assert spec.item is not None
    return [_coerce(spec.item, v, f"{name}[{i}]") for i, v in enumerate(value)]


_CONTAINERS: dict[str, Callable[[Spec, Any, str], Any]] = {
    "union": _coerce_union,
    "object": _coerce_object,
    "map": _coerce_map,
    "list": _coerce_list,
}


def _coerce_scalar(spec: Spec, value: str, name: str) -> Any:
    """A scalar from its (non-empty) string: a boolean, an integer, a number, an enum value or a string."""
    kind = spec.kind
    if kind == "bool":
        if value not in ("true", "false"):
            raise param_error(f"Invalid boolean: {value}", name)
        return value == "true"
    if kind == "int":
        if not _INT_RE.match(value) or abs(int(value)) > INT64_MAX:
            raise param_error(f"Invalid integer: {value}", name, "parameter_invalid_integer")
        return int(value)
    if kind in ("decimal", "float"):
        number = _decimal(value, name)
        return number if kind == "decimal" else float(number)
    if kind == "enum":
        return _enum_value(spec, value, name)
    if len(value) > 40000:
        raise param_error(f"Invalid string: {name} is too long", name)
    return value


def _decimal(value: str, name: str) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite() or len(value) > 40:
        raise param_error(f"Invalid decimal: {value}", name)
    return number


def _enum_value(spec: Spec, value: str, name: str) -> str:
    if value not in spec.enum:
        last = re.findall(r"([^\[\]]+)\]?$", name)[-1]
        if last.isdigit():  # an item of a list: name the whole path (`enabled_events[0]`)
            last = name
        raise param_error(f"Invalid {last}: must be one of {one_of(spec.enum)}", name)
    return value
