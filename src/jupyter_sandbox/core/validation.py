"""Turn pydantic validation errors into `BadRequestError`s that name the parameter, and
check the numbers callers pass outside a model (timeouts): finite and in range."""

from __future__ import annotations

import math
import numbers
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from jupyter_sandbox._exceptions import BadRequestError

M = TypeVar("M", bound=BaseModel)

MAX_TIMEOUT_SECONDS = 24 * 3600
"""The longest timeout any run accepts (a day): what the server's `timeout` field allows."""


def check_seconds(
    value: object, param: str, *, maximum: float = MAX_TIMEOUT_SECONDS
) -> float | None:
    """`value` as seconds if it is None or a finite number in (0, maximum]; else
    BadRequestError naming `param`. NaN, infinities, booleans, strings, zero, negatives and
    numbers too large for a float are refused (a NaN deadline would never be reached)."""
    if value is None:
        return None
    problem = f"must be a number of seconds greater than 0 and at most {maximum:g}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise BadRequestError(f"Invalid {param}: {problem} (got {value!r:.80})", param=param)
    try:
        seconds = float(value)
    except (OverflowError, ValueError):
        seconds = math.inf
    if not math.isfinite(seconds) or seconds <= 0 or seconds > maximum:
        raise BadRequestError(f"Invalid {param}: {problem} (got {value!r:.80})", param=param)
    return seconds


def parse(model: type[M], data: dict[str, Any]) -> M:
    """Validate `data` as `model`, or raise BadRequestError naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise bad_request(exc) from exc


def bad_request(exc: ValidationError) -> BadRequestError:
    """The first error of a ValidationError, as our error type."""
    return bad_request_from(dict(exc.errors(include_url=False)[0]))


def bad_request_from(error: dict[str, Any]) -> BadRequestError:
    """One pydantic error dict (`loc`, `msg`, `type`, `input`) as our error type."""
    location = [str(part) for part in error["loc"] if not isinstance(part, int)]
    # Discriminated unions add the tag ("allowlist") to the location; drop it.
    location = [part for part in location if part not in ("disabled", "allowlist")]
    param = ".".join(location) or None
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown parameter"
    elif error["type"] == "missing":
        message = "this parameter is required"
    elif error["type"] == "value_error":
        message = message.removeprefix("Value error, ")
    shown = f" (got {error.get('input')!r:.80})" if _may_echo(error, param) else ""
    return BadRequestError(f"Invalid {param or 'request'}: {message}{shown}", param=param)


def _may_echo(error: dict[str, Any], param: str | None) -> bool:
    """Whether an error may show what was sent: only a scalar of a known, non-secret field.

    An unknown parameter may hold anything (a key sent by mistake); a list, an object or an
    item of a list may hold a secret (`network_policy.domain_secrets`): none is echoed."""
    value = error.get("input")
    if error["type"] in ("missing", "extra_forbidden"):
        return False
    if any(isinstance(part, int) for part in error.get("loc", ())):
        return False
    if "secret" in (param or "").lower():
        return False
    return value is None or isinstance(value, str | int | float | bool)
