"""Stripe's error shape: the exception every layer raises, and the messages Stripe words its errors with.

Also the emulator's own configuration error (`EmulatorConfigError`): the package imports nothing of the
core, so callers translate it into theirs."""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]


class EmulatorConfigError(ValueError):
    """A setting of the emulator (fault rates, state file, delivery delays) is unusable."""


class StripeError(Exception):
    """An error answered in Stripe's shape. `cacheable` is False for failures before execution began
    (parameter validation, auth, routing): Stripe saves no idempotent result for those. `kept`: what
    the request did stands, events included (a declined payment: its PaymentIntent and Charge exist).
    `extra`: more fields of the error body (a card error's charge, decline_code, payment_intent...)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        cacheable: bool = True,
        kept: bool = False,
        extra: JSON | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type_ = type_
        self.code = code
        self.param = param
        self.cacheable = cacheable
        self.kept = kept
        self.extra = extra or {}

    def body(self) -> JSON:
        err: JSON = dict(self.extra)
        if self.code is not None:
            err["code"] = self.code
            err["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        err["message"] = self.message
        if self.param is not None:
            err["param"] = self.param
        err["type"] = self.type_
        return {"error": {k: err[k] for k in sorted(err)}}


def param_error(message: str, param: str | None, code: str | None = None) -> StripeError:
    return StripeError(400, message, code=code, param=param, cacheable=False)


def unknown(param: str) -> StripeError:
    return param_error(f"Received unknown parameter: {param}", param, "parameter_unknown")


def missing(param: str) -> StripeError:
    return param_error(f"Missing required param: {param}.", param, "parameter_missing")


def empty(param: str) -> StripeError:
    return param_error(
        f"You passed an empty string for '{param}'. We assume empty values are an attempt to unset a "
        f"parameter; however '{param}' cannot be unset. You should remove '{param}' from your request or "
        "supply a non-empty value.",
        param,
        "parameter_invalid_empty",
    )


def no_such(kind: str, obj_id: str, param: str, status: int = 404) -> StripeError:
    return StripeError(status, f"No such {kind}: '{obj_id}'", code="resource_missing", param=param)


def one_of(values: tuple[str, ...]) -> str:
    if len(values) == 1:
        return values[0]
    return ", ".join(values[:-1]) + ", or " + values[-1]


def admin_error(message: str) -> StripeError:
    return StripeError(400, message, cacheable=False)


def unmodelled(param: str) -> StripeError:
    return param_error(
        f"The parameter `{param}` is valid for Stripe, but this Stripe emulator does not model its "
        "behaviour. Remove it, or extend the emulator.",
        param,
    )


def unmodelled_endpoint(method: str, path: str) -> StripeError:
    return StripeError(
        400,
        f"The endpoint `{method} {path}` is valid for Stripe, but this Stripe emulator does not model it. "
        "Remove the call, or extend the emulator.",
        cacheable=False,
    )


# Alike in shape to `unmodelled_endpoint` by design: a 404 in Stripe's own words, not the emulator's 400.
def unrecognized(method: str, path: str) -> StripeError:
    return StripeError(
        404,
        f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can "
        "help at https://support.stripe.com/.",
        cacheable=False,
    )


RATE_LIMIT_MESSAGE = (
    "Request rate limit exceeded. You can learn more about rate limits here "
    "https://stripe.com/docs/rate-limits."
)


def rate_limited() -> StripeError:
    return StripeError(429, RATE_LIMIT_MESSAGE, code="rate_limit", cacheable=False)


def api_error(request_id: str) -> StripeError:
    return StripeError(
        500,
        "An unknown error occurred while processing your request. Please try again, or contact us at "
        f"https://support.stripe.com/ with the request ID {request_id}.",
        type_="api_error",
    )
