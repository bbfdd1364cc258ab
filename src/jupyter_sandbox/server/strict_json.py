"""One strict JSON parser for every request body, checked before any route sees it.

Python's `json` accepts what a hostile client can turn into a crash or a surprise: nesting
deep enough to raise RecursionError, `NaN`/`Infinity`, numbers that overflow to `inf`,
integers too long to convert (ValueError), duplicate keys (the last one silently wins).
`parse` refuses all of them with one BadRequestError.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from jupyter_sandbox._exceptions import BadRequestError

MAX_DEPTH: Final = 32
"""Deepest nesting a request body may have (ours need 4)."""
_UNPARSABLE: Final = (
    "We could not parse the JSON body of your request. The request body must be a "
    "JSON object (check the Content-Type header and the syntax)."
)


class _Refused(ValueError):
    """A JSON construct we refuse (raised from the parser's hooks)."""


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not valid JSON")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:20]}... is out of range")
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Refused(f"the key {key[:40]!r} appears twice in one object")
        result[key] = value
    return result


def _problem(value: Any, limit: int) -> str | None:
    """What is wrong with a parsed body: nesting past `limit` levels, or a string that is no
    Unicode text (a lone surrogate escape such as "\\ud800"); None if nothing. Iterative."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not _encodable(item):
                return "It holds a string that is not valid Unicode (a lone surrogate)."
            continue
        if isinstance(item, dict | list) and depth > limit:
            return f"It is nested deeper than {limit} levels."
        if isinstance(item, dict):
            for key, child in item.items():
                if not _encodable(key):
                    return "It holds a key that is not valid Unicode (a lone surrogate)."
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse(raw: bytes) -> Any:
    """The value of a JSON body, or BadRequestError saying what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestError(f"{_UNPARSABLE} The body is not valid UTF-8.") from None
    try:
        value = json.loads(
            text, parse_constant=_constant, parse_float=_float, object_pairs_hook=_object
        )
    except _Refused as exc:
        raise BadRequestError(f"{_UNPARSABLE} {str(exc)[:200]}.") from None
    except RecursionError:
        raise BadRequestError(f"{_UNPARSABLE} It is nested too deeply.") from None
    except ValueError as exc:  # JSONDecodeError, and integers over the digit limit
        raise BadRequestError(f"{_UNPARSABLE} {str(exc)[:200]}.") from None
    problem = _problem(value, MAX_DEPTH)
    if problem is not None:
        raise BadRequestError(f"{_UNPARSABLE} {problem}")
    return value


def is_json_type(content_type: str | None) -> bool:
    """Whether FastAPI would parse a body of this Content-Type as JSON (none counts)."""
    if not content_type:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    main, _, sub = media.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))
