"""Ids with OpenAI's prefixes."""

from __future__ import annotations

import secrets


def container_id() -> str:
    """`cntr_` + 48 hex, as the hosted API mints them."""
    return "cntr_" + secrets.token_hex(24)


def file_id() -> str:
    """`file-` + 24 hex (the hosted API spells it with a hyphen)."""
    return "file-" + secrets.token_hex(12)


def container_file_id() -> str:
    """`cfile_` + 32 hex."""
    return "cfile_" + secrets.token_hex(16)


def skill_id() -> str:
    """`skill_` + 32 hex."""
    return "skill_" + secrets.token_hex(16)
