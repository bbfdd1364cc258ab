"""The model behind `/v1/responses`: any OpenAI-compatible chat completions server.

Its failures are mapped here, once: unreachable, an error status or an answer that is not a
chat completion is `UpstreamError` (502), no answer within `model_timeout` is
`UpstreamTimeoutError` (504). Both carry a readable message (never the API key).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from jupyter_sandbox._exceptions import APIStatusError
from jupyter_sandbox.settings import Settings

__all__ = [
    "ChatCompletion",
    "ChatMessage",
    "ChatToolCall",
    "ChatUpstream",
    "UpstreamError",
    "UpstreamTimeoutError",
]

logger = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 32 * 2**20
"""A model answer past this is refused (502)."""


class UpstreamError(APIStatusError):
    """The model server is unreachable or answered something unusable (502)."""

    status_code = 502
    type = "server_error"
    code = "upstream_error"
    public_message: ClassVar[bool] = True
    """The message is meant for the caller (it names no internals of ours)."""


class UpstreamTimeoutError(UpstreamError):
    """The model server did not answer in time (504)."""

    status_code = 504
    code = "upstream_timeout"


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChatFunction(_Loose):
    name: str
    arguments: str = ""


class ChatToolCall(_Loose):
    id: str
    type: Literal["function"] = "function"
    function: ChatFunction


class ChatMessage(_Loose):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ChatToolCall] | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts(cls, value: Any) -> Any:
        """Some servers answer with content parts: keep their text."""
        if isinstance(value, list):
            return "".join(
                str(p.get("text", ""))
                for p in value
                if isinstance(p, dict) and p.get("type") == "text"
            )
        return value


class ChatChoice(_Loose):
    message: ChatMessage
    finish_reason: str | None = None


class ChatUsage(_Loose):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatCompletion(_Loose):
    """The part of a chat completion the tool loop reads."""

    choices: list[ChatChoice] = Field(min_length=1)
    usage: ChatUsage | None = None


class ChatUpstream:
    """A chat completions client for the operator's model server."""

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None) -> None:
        if settings.model_base_url is None:
            raise UpstreamError("No model server is configured (serve --model-base-url URL)")
        self.base_url = settings.model_base_url.rstrip("/")
        self.model_map = dict(settings.model_map)
        self.timeout = settings.model_timeout
        headers = {"content-type": "application/json"}
        if settings.model_api_key is not None:
            headers["authorization"] = f"Bearer {settings.model_api_key.get_secret_value()}"
        self._http = httpx.Client(
            timeout=httpx.Timeout(self.timeout),
            headers=headers,
            transport=transport,
            follow_redirects=False,
            trust_env=False,
        )

    def model_name(self, model: str) -> str:
        """The upstream's name for a requested model."""
        return self.model_map.get(model, model)

    def complete(self, body: dict[str, Any]) -> ChatCompletion:
        """One `POST /chat/completions`.

        Raises:
            UpstreamError: unreachable, an error status, or not a chat completion.
            UpstreamTimeoutError: no answer within `model_timeout`.
        """
        url = f"{self.base_url}/chat/completions"
        where = f"The model server ({self.base_url})"
        late = UpstreamTimeoutError(f"{where} did not answer within {self.timeout:g} s")
        # httpx's timeout is per read: a server trickling bytes would never trip it, so the
        # whole answer is also held to one deadline, and to a size.
        deadline = time.monotonic() + self.timeout
        try:
            with self._http.stream("POST", url, json=body) as answer:
                chunks, size = [], 0
                for chunk in answer.iter_bytes():
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        raise UpstreamError(f"{where} answered more than {MAX_ANSWER_BYTES} bytes")
                    if time.monotonic() > deadline:
                        raise late
                    chunks.append(chunk)
        except httpx.TimeoutException as exc:
            raise late from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{where} is unreachable: {type(exc).__name__}: {exc}") from exc
        content = b"".join(chunks)
        if answer.status_code >= 400:
            raise UpstreamError(
                f"{where} answered HTTP {answer.status_code}: {_error_text(content)}"
            )
        try:
            return ChatCompletion.model_validate_json(content)
        except ValidationError as exc:
            snippet = content[:200].decode(errors="replace").replace("\n", " ")
            logger.warning("unusable model answer: %s", exc)
            raise UpstreamError(f"{where} answered something that is not a chat completion: "
                                f"{snippet!r}") from exc  # fmt: skip

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()


def _error_text(content: bytes) -> str:
    """The upstream's error message, else the start of its body."""
    start = repr(content[:200].decode(errors="replace"))
    try:
        body = json.loads(content)
    except ValueError:
        return start
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:500]
    return start
