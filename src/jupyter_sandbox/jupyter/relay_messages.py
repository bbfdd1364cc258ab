"""Which kernel messages from a sandbox may reach the Jupyter server, and in what shape.

The kernel relay (`kernel_relay`) calls `filter_reply` on every message the sandbox's kernel
sends, after checking its signature. Only known message types pass (fail closed); every MIME
bundle in them goes through `output_safety.safe_bundle`; comm (widget) traffic is dropped,
because a widget's state is HTML and code the frontend would render as trusted.
"""

from __future__ import annotations

import re
from typing import Any

from jupyter_sandbox.jupyter.output_safety import safe_bundle

__all__ = ["IOPUB_TYPES", "REPLY_TYPES", "filter_reply"]

IOPUB_TYPES = frozenset(
    {
        "status",
        "stream",
        "display_data",
        "update_display_data",
        "execute_result",
        "execute_input",
        "error",
        "clear_output",
        "debug_event",
        "iopub_welcome",
        "shutdown_reply",
    }
)
"""iopub message types a sandbox may publish; `comm_*` and anything unknown are dropped."""

REPLY_TYPES = frozenset(
    {
        "execute_reply",
        "inspect_reply",
        "complete_reply",
        "history_reply",
        "is_complete_reply",
        "comm_info_reply",
        "kernel_info_reply",
        "shutdown_reply",
        "interrupt_reply",
        "debug_reply",
        "input_request",
    }
)
"""shell, control and stdin message types a sandbox may send."""

_BUNDLE_TYPES = frozenset({"display_data", "update_display_data", "execute_result"})
_HTTP = re.compile(r"https?://", re.IGNORECASE)


def _bundle(content: dict[str, Any]) -> None:
    """Replace content's `data`/`metadata` with their safe part, in place."""
    data = content.get("data")
    metadata = content.get("metadata")
    content["data"], content["metadata"] = safe_bundle(
        data if isinstance(data, dict) else {}, metadata if isinstance(metadata, dict) else {}
    )


def _payload(item: Any) -> dict[str, Any] | None:
    if not isinstance(item, dict):
        return None
    source = item.get("source")
    if source == "page":
        page = {"source": "page", "data": item.get("data"), "start": item.get("start", 0)}
        if not isinstance(page["start"], int):
            page["start"] = 0
        _bundle(page)
        page.pop("metadata", None)
        return page
    if source == "set_next_input" and isinstance(item.get("text"), str):
        return {"source": source, "text": item["text"], "replace": item.get("replace") is True}
    if source == "ask_exit":
        return {"source": source, "keepkernel": item.get("keepkernel") is True}
    return None  # edit_magic and anything unknown


def _display(content: dict[str, Any]) -> dict[str, Any]:
    _bundle(content)
    transient = content.get("transient")
    display_id = transient.get("display_id") if isinstance(transient, dict) else None
    content["transient"] = {"display_id": display_id} if isinstance(display_id, str) else {}
    return content


def _debug_body(content: dict[str, Any]) -> None:
    body = content.get("body")
    if isinstance(body, dict) and "data" in body:
        _bundle(body)


def _execute_reply(content: dict[str, Any]) -> None:
    payload = content.get("payload")
    items = payload if isinstance(payload, list) else []
    content["payload"] = [p for p in (_payload(item) for item in items) if p is not None]
    expressions = content.get("user_expressions")
    if isinstance(expressions, dict):
        for value in expressions.values():
            if isinstance(value, dict) and "data" in value:
                _bundle(value)


def _kernel_info_reply(content: dict[str, Any]) -> None:
    links = content.get("help_links")
    content["help_links"] = [
        {"text": str(link.get("text", "")), "url": link["url"]}
        for link in (links if isinstance(links, list) else [])
        if isinstance(link, dict) and isinstance(link.get("url"), str)
        if _HTTP.match(link["url"])
    ]


def _no_comms(content: dict[str, Any]) -> None:
    content["comms"] = {}  # comms from a sandbox never reach the frontend


_REPLY_FILTERS = {
    "execute_reply": _execute_reply,
    "inspect_reply": _bundle,
    "debug_reply": _debug_body,
    "kernel_info_reply": _kernel_info_reply,
    "comm_info_reply": _no_comms,
}
"""What each reply type needs made safe, in place; the other types pass as they are."""


def filter_reply(channel: str, msg_type: str, content: dict[str, Any]) -> dict[str, Any] | None:
    """The content to forward for a sandbox's message, or None to drop it.

    Args:
        channel: "iopub", "shell", "control" or "stdin".
        msg_type: the message header's type.
        content: the parsed content (modified in place).
    """
    if channel == "iopub":
        if msg_type not in IOPUB_TYPES:
            return None
        if msg_type in _BUNDLE_TYPES:
            return _display(content)
        if msg_type == "debug_event":
            _debug_body(content)
        return content
    if msg_type not in REPLY_TYPES:
        return None
    make_safe = _REPLY_FILTERS.get(msg_type)
    if make_safe is not None:
        make_safe(content)
    return content
