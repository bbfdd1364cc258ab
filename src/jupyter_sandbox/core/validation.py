"""Turn pydantic validation errors into `BadRequestError`s that name the parameter."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from jupyter_sandbox._exceptions import BadRequestError

M = TypeVar("M", bound=BaseModel)


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
    value = error.get("input")
    shown = "" if error["type"] == "missing" or isinstance(value, dict) else f" (got {value!r:.80})"
    return BadRequestError(f"Invalid {param or 'request'}: {message}{shown}", param=param)
