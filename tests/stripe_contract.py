"""Stripe's published OpenAPI contract, as a validator for requests and responses.

Reads the copy in `tests/stripe-openapi/` (its README says where it comes from; KUPLOY_STRIPE_OPENAPI_DIR
points at another copy).
The spec is API 2023-08-16, older than the SDK's pinned version. Every place where the current API
legitimately differs, and how it is accepted, is listed in ACCEPTED_DIFFERENCES, and nowhere else.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import referencing
import referencing.jsonschema
from jsonschema import Draft7Validator

SPEC_URI = "urn:stripe-openapi:spec3"
SPEC_FILE = "spec3.subset.json"
FIXTURES_FILE = "fixtures3.subset.json"

ACCEPTED_DIFFERENCES: dict[str, str] = {
    "product.features": (
        "Required in 2023-08-16; renamed to `marketing_features` in a later API version (the SDK's Product "
        "has only `marketing_features`). Dropped from the product schema's `required`."
    ),
    "product.marketing_features, product.type, price.recurring.meter, price.recurring.trial_period_days": (
        "Response fields of the current API the 2023 spec does not list. Accepted because the spec's "
        "object schemas allow additional properties; their presence is checked by the emulator tests."
    ),
    "price.recurring.aggregate_usage": (
        "Removed from the API after 2023-08-16; optional in the spec, so its absence validates as is."
    ),
    "POST /v1/products marketing_features, POST /v1/products/{id} marketing_features": (
        "Request parameter of the current API replacing `features`; added to those request schemas."
    ),
    "subscription.current_period_start, subscription.current_period_end": (
        "Required on the subscription in 2023-08-16; moved to each subscription item in API 2025-03-31.basil "
        "(the SDK's Subscription has neither, its SubscriptionItem has both). Dropped from the subscription "
        "schema's `required`; the items carry them (additional properties, checked by the emulator tests)."
    ),
    "subscription.billing_mode, subscription.billing_schedules, subscription.customer_account, "
    "subscription.discounts, subscription.invoice_settings, subscription_item.current_period_*, "
    "subscription_item.discounts, subscription_item.plan, customer.business_name, "
    "customer.individual_name, customer.customer_account": (
        "Response fields of the current API the 2023 spec does not list; accepted as additional properties."
    ),
    "POST /v1/webhook_endpoints api_version": (
        "The 2023 enum of API versions stops at 2023-08-16; the SDK's list goes on to the version it pins. "
        "Widened to any `YYYY-MM-DD[.name]` version string."
    ),
    "invoice.paid, invoice.paid_out_of_band, invoice.total_tax_amounts": (
        "Required on the invoice in 2023-08-16; removed in API 2025-03-31.basil (`paid` became `status`, "
        "`total_tax_amounts` became `total_taxes`; the SDK's Invoice has none of them). Dropped from the "
        "invoice schema's `required`."
    ),
    "invoice.threshold_reason": (
        "A non-nullable object in 2023-08-16; the current API sends null when no threshold was reached "
        "(the SDK types it Optional). Made nullable."
    ),
    "line_item.type, line_item.proration": (
        "Required on invoice line items in 2023-08-16; removed in API 2025-03-31.basil (replaced by `parent` "
        "with `subscription_item_details.proration`). Dropped from the line_item schema's `required`."
    ),
    "invoice.parent, invoice.issuer, invoice.total_taxes, invoice.amount_overpaid, line_item.parent, "
    "line_item.pricing, line_item.taxes, checkout.session.ui_mode, checkout.session.adaptive_pricing, ...": (
        "Response fields of the current API the 2023 spec does not list; accepted as additional properties."
    ),
    "GET /v1/checkout/sessions status": (
        "A list filter of the current API (the SDK's SessionListParams has it) that the 2023 spec does not "
        "list; added to that request schema as the enum open | complete | expired."
    ),
    "DELETE /v1/subscriptions/{id} parameters": (
        "The spec describes DELETE parameters (cancellation_details, expand, invoice_now, prorate) as a "
        "form body; the SDK sends them in the query string, which Stripe reads too. The validator takes "
        "a DELETE's allowed parameters from both places."
    ),
}

# Request parameters of the current API, added to the 2023 request schemas (see ACCEPTED_DIFFERENCES).
_MARKETING_FEATURES = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 5000}},
        "required": ["name"],
        "additionalProperties": False,
    },
}
_REQUEST_ADDITIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/products"): {"marketing_features": _MARKETING_FEATURES},
    ("post", "/v1/products/{id}"): {
        "marketing_features": {"anyOf": [_MARKETING_FEATURES, {"type": "string", "enum": [""]}]}
    },
    ("get", "/v1/checkout/sessions"): {"status": {"type": "string", "enum": ["open", "complete", "expired"]}},
    ("post", "/v1/webhook_endpoints"): {
        "api_version": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$"}
    },
}


def spec_dir() -> Path:
    override = os.environ.get("KUPLOY_STRIPE_OPENAPI_DIR")
    return Path(override) if override else Path(__file__).resolve().parent / "stripe-openapi"


def _translate(node: Any, *, in_properties: bool = False) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema: `nullable`, local `$ref`s made absolute, `x-` keys dropped."""
    if isinstance(node, list):
        return [_translate(v) for v in node]
    if not isinstance(node, dict):
        return node
    if in_properties:  # keys are property names, not keywords
        return {k: _translate(v) for k, v in node.items()}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-"):
            continue
        if key == "$ref" and isinstance(value, str) and value.startswith("#"):
            out[key] = SPEC_URI + value
        else:
            out[key] = _translate(value, in_properties=key in ("properties", "patternProperties"))
    if out.pop("nullable", False):
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        if "type" in out:
            out["type"] = [out["type"], "null"]
        elif "anyOf" in out:
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


@functools.cache
def _spec() -> dict[str, Any]:
    raw = json.loads((spec_dir() / SPEC_FILE).read_text(encoding="utf-8"))
    translated: dict[str, Any] = _translate(raw)
    schemas = translated["components"]["schemas"]
    schemas["product"]["required"] = [r for r in schemas["product"]["required"] if r != "features"]
    moved = ("current_period_start", "current_period_end")
    schemas["subscription"]["required"] = [r for r in schemas["subscription"]["required"] if r not in moved]
    removed = ("paid", "paid_out_of_band", "total_tax_amounts")
    schemas["invoice"]["required"] = [r for r in schemas["invoice"]["required"] if r not in removed]
    threshold = schemas["invoice"]["properties"]["threshold_reason"]
    schemas["invoice"]["properties"]["threshold_reason"] = {"anyOf": [threshold, {"type": "null"}]}
    gone = ("type", "proration")
    schemas["line_item"]["required"] = [r for r in schemas["line_item"]["required"] if r not in gone]
    return translated


@functools.cache
def _registry() -> referencing.Registry[Any]:
    resource = referencing.Resource.from_contents(
        _spec(), default_specification=referencing.jsonschema.DRAFT7
    )
    registry: referencing.Registry[Any] = referencing.Registry().with_resource(SPEC_URI, resource)
    return registry


def _validator(schema: Mapping[str, Any]) -> Draft7Validator:
    return Draft7Validator(schema, registry=_registry())


def _pointer(*parts: str) -> str:
    return SPEC_URI + "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _match(path: str) -> str | None:
    for template in _spec()["paths"]:
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            return str(template)
    return None


def _resolve(schema: Any) -> Any:
    while isinstance(schema, dict) and "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith(SPEC_URI + "#/")
        node: Any = _spec()
        for part in ref[len(SPEC_URI) + 2 :].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        schema = node
    return schema


def _coerce(schema: Any, value: Any) -> Any:
    """Form values arrive as strings and nested dicts: give them the JSON types the schema names."""
    schema = _resolve(schema)
    if not isinstance(schema, dict):
        return value
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            return _coerce_to_an_option(schema[combinator], value)
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if isinstance(value, str):
        return _coerce_string(kinds, value)
    return _coerce_collection(schema, kinds, value)


def _coerce_to_an_option(options: list[Any], value: Any) -> Any:
    """The value coerced to the first option it then satisfies; as it came if none."""
    for option in options:
        candidate = _coerce(option, value)
        if _validator(option).is_valid(candidate):
            return candidate
    return value


def _coerce_string(kinds: list[Any], value: str) -> Any:
    """A form string as the integer, number or boolean the schema takes, where it reads as one."""
    if "integer" in kinds and re.fullmatch(r"-?\d+", value):
        return int(value)
    if "number" in kinds:
        try:
            return float(value)
        except ValueError:
            return value
    if "boolean" in kinds and value in ("true", "false"):
        return value == "true"
    return value


def _coerce_collection(schema: dict[str, Any], kinds: list[Any], value: Any) -> Any:
    """Form arrays arrive as dicts keyed "0", "1", …: lists where the schema has an array (and
    back to dicts where it has an object); then every item or property, by its own schema."""
    if isinstance(value, dict) and "array" in kinds and all(k.isdigit() for k in value):
        value = [value[k] for k in sorted(value, key=int)]
    if isinstance(value, list) and "array" in kinds:
        return [_coerce(schema.get("items", {}), v) for v in value]
    if isinstance(value, list) and "object" in kinds:
        value = {str(i): v for i, v in enumerate(value)}
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", {})
        return {
            k: _coerce(props[k] if k in props else (extra if isinstance(extra, dict) else {}), v)
            for k, v in value.items()
        }
    return value


def _messages(prefix: str, validator: Draft7Validator, instance: Any) -> list[str]:
    found = []
    for err in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        where = "/".join(map(str, err.absolute_path)) or "<root>"
        found.append(f"{prefix}: {where}: {err.message[:300]}")
    return found


def _request_schema(method: str, template: str) -> dict[str, Any] | None:
    operation = _spec()["paths"][template].get(method)
    if operation is None:
        return None
    if method in ("get", "delete"):
        properties = {p["name"]: p["schema"] for p in operation.get("parameters", []) if p["in"] == "query"}
        if method == "delete":  # see ACCEPTED_DIFFERENCES: the SDK sends these in the query string
            content = operation.get("requestBody", {}).get("content", {})
            form = content.get("application/x-www-form-urlencoded", {}).get("schema", {})
            properties.update(json.loads(json.dumps(form.get("properties", {}))))
        schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    else:
        content = operation.get("requestBody", {}).get("content", {})
        form = content.get("application/x-www-form-urlencoded", {})
        schema = json.loads(json.dumps(form.get("schema", {"type": "object"})))
    additions = _REQUEST_ADDITIONS.get((method, template))
    if additions:
        schema["properties"] = {**schema.get("properties", {}), **additions}
    return schema


def validate_request(method: str, path: str, params: Mapping[str, Any]) -> list[str]:
    """Problems with decoded form/query `params` for `method path` (empty list: it fits the contract)."""
    m = method.lower()
    template = _match(path)
    prefix = f"{method.upper()} {path} request"
    if template is None:
        return [f"{prefix}: path is not in the Stripe contract"]
    schema = _request_schema(m, template)
    if schema is None:
        return [f"{prefix}: method is not in the Stripe contract"]
    return _messages(prefix, _validator(schema), _coerce(schema, dict(params)))


def validate_response(method: str, path: str, status: int, body: Any) -> list[str]:
    """Problems with a response body: 200s against the operation's schema, others against `error`."""
    m = method.lower()
    template = _match(path)
    prefix = f"{method.upper()} {path} {status} response"
    if status != 200:
        return _messages(prefix, _validator({"$ref": _pointer("components", "schemas", "error")}), body)
    if template is None or m not in _spec()["paths"][template]:
        return [f"{prefix}: a 200 for an operation that is not in the Stripe contract"]
    ref = _pointer("paths", template, m, "responses", "200", "content", "application/json", "schema")
    return _messages(prefix, _validator({"$ref": ref}), body)


def validate_object(schema_name: str, body: Any) -> list[str]:
    """Problems with `body` as the component schema `schema_name` (e.g. "product")."""
    ref = _pointer("components", "schemas", schema_name)
    return _messages(schema_name, _validator({"$ref": ref}), body)


def fixture(name: str) -> dict[str, Any]:
    """Stripe's own example object for `name` (e.g. "price")."""
    fixtures = json.loads((spec_dir() / FIXTURES_FILE).read_text(encoding="utf-8"))
    found: dict[str, Any] = fixtures["resources"][name]
    return found
