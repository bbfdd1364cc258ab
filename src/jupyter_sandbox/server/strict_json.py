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

    def __init__(self, why: str, param: str | None = None) -> None:
        super().__init__(why)
        self.why, self.param = why, param


class _Bad:
    """Stands where the parser met a value we refuse, so the walk can name its place."""

    def __init__(self, why: str) -> None:
        self.why = why


_MAX_DIGITS: Final = 4300  # Python's int-string limit (sys.get_int_max_str_digits)


def _constant(name: str) -> _Bad:
    return _Bad(f"{name} is not a valid JSON number")


def _float(text: str) -> float | _Bad:
    value = float(text)
    return value if math.isfinite(value) else _Bad(f"{text[:20]} is out of range")


def _int(text: str) -> int | _Bad:
    if len(text.lstrip("-")) > _MAX_DIGITS:
        return _Bad(f"an integer of {len(text)} digits is out of range")
    return int(text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Refused(f"the key {key[:40]!r} appears twice in one object", key[:100])
        result[key] = value
    return result


def _name(path: tuple[str | int, ...]) -> str | None:
    """`a.b` for a place in the body, as validation errors name parameters (no indexes)."""
    parts = [part for part in path if isinstance(part, str)]
    return ".".join(parts)[:200] or None


def _problem(value: Any, limit: int) -> tuple[str, str | None] | None:
    """What is wrong with a parsed body and where: a refused value (NaN, an overflow),
    nesting past `limit` levels, or a string that is no Unicode text (a lone surrogate
    escape such as "\\ud800"); None if nothing. Iterative: no recursion to exhaust."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, _Bad):
            return item.why, _name(path)
        if isinstance(item, str):
            if not _encodable(item):
                return "a string that is not valid Unicode (a lone surrogate)", _name(path)
            continue
        if isinstance(item, dict | list) and len(path) >= limit:
            return f"nested deeper than {limit} levels", _name(path)
        if isinstance(item, dict):
            for key, child in item.items():
                if not _encodable(key):
                    return "a key that is not valid Unicode (a lone surrogate)", _name(path)
                stack.append((child, (*path, key)))
        elif isinstance(item, list):
            stack.extend((child, (*path, index)) for index, child in enumerate(item))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse(raw: bytes) -> Any:
    """The value of a JSON body, or BadRequestError saying what is wrong and where (`param`
    names the field when the body is an object and the fault is inside it)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestError(f"{_UNPARSABLE} The body is not valid UTF-8.") from None
    try:
        value = json.loads(
            text,
            parse_constant=_constant,
            parse_float=_float,
            parse_int=_int,
            object_pairs_hook=_object,
        )
    except _Refused as exc:
        raise _invalid(exc.why, exc.param) from None
    except RecursionError:
        raise BadRequestError(f"{_UNPARSABLE} It is nested too deeply.") from None
    except ValueError as exc:  # JSONDecodeError
        raise BadRequestError(f"{_UNPARSABLE} {str(exc)[:200]}.") from None
    problem = _problem(value, MAX_DEPTH)
    if problem is not None:
        raise _invalid(*problem)
    return value


def _invalid(why: str, param: str | None) -> BadRequestError:
    if param is None:
        return BadRequestError(f"{_UNPARSABLE} The problem: {why}.")
    return BadRequestError(f"Invalid {param} in the JSON body: {why}", param=param)


def is_json_type(content_type: str | None) -> bool:
    """Whether FastAPI would parse a body of this Content-Type as JSON (none counts)."""
    if not content_type:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    main, _, sub = media.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))
