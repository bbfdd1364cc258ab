"""Ids with OpenAI's prefixes."""

from __future__ import annotations

import secrets


def container_id() -> str:
    """`cntr_` + 48 hex, as the hosted API mints them."""
    return "cntr_" + secrets.token_hex(24)
