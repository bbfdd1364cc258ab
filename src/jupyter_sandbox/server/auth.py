"""API keys: each one belongs to a project (tenant); only their SHA-256 digests are kept.

A key file has one entry per line (blank lines and `#` comments skipped); the environment
variable `JUPYTER_SANDBOX_API_KEYS` holds the same entries separated by commas or newlines:

    sk-local-abc123                  a key of the project "default" (the CLI's project)
    team-a:sk-local-def456           a key of the project "team-a"
    team-b:sha256:<64 hex>           a key given by its digest, so the file holds no secret

A presented key is hashed and compared with every digest in constant time, so neither the
key's content nor which entry matched shows in the timing. Keys are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

ENV_VAR = "JUPYTER_SANDBOX_API_KEYS"
DEFAULT_PROJECT = "default"
MIN_KEY_LENGTH = 8
_PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DIGEST = re.compile(r"^sha256:([0-9a-fA-F]{64})$")


@dataclass(frozen=True)
class ApiKey:
    """One accepted key: its project and digest (never the key itself)."""

    project: str
    digest: bytes

    @property
    def key_id(self) -> str:
        """A short, non-secret name for the key (rate limiting, logs)."""
        return self.digest.hex()[:12]


def digest(key: str) -> bytes:
    """The SHA-256 of a key (what is stored and compared)."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def parse_entry(entry: str) -> ApiKey:
    """One `[project:]key` or `[project:]sha256:<hex>` entry, or ValueError (never echoing it)."""
    text = entry.strip()
    project = DEFAULT_PROJECT
    prefix, sep, rest = text.partition(":")
    if sep and prefix.strip() != "sha256" and _PROJECT.match(prefix.strip()):
        project, text = prefix.strip(), rest.strip()
    hashed = _DIGEST.match(text)
    if hashed:
        return ApiKey(project, bytes.fromhex(hashed.group(1)))
    if len(text) < MIN_KEY_LENGTH or any(ch.isspace() for ch in text):
        raise ValueError(
            f"an API key of project {project!r} is shorter than {MIN_KEY_LENGTH} characters "
            "or contains spaces"
        )
    return ApiKey(project, digest(text))


class KeyRing:
    """The accepted keys."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._keys = tuple(keys)
        if not self._keys:
            raise ValueError("no API keys configured")

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> KeyRing:
        """Keys from `[project:]key` entries (comments and blanks skipped)."""
        parsed = [
            parse_entry(line)
            for line in entries
            if line.strip() and not line.strip().startswith("#")
        ]
        return cls(parsed)

    @classmethod
    def load(cls, key_file: Path | None = None, env: str | None = None) -> KeyRing:
        """Keys from a file and/or the environment value (`JUPYTER_SANDBOX_API_KEYS`)."""
        entries: list[str] = []
        if key_file is not None:
            mode = key_file.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                logger.warning("API key file %s is readable by other users; chmod 600 it", key_file)
            entries.extend(key_file.read_text().splitlines())
        if env:
            entries.extend(re.split(r"[,\n]", env))
        return cls.from_entries(entries)

    @classmethod
    def from_environment(cls, key_file: Path | None = None) -> KeyRing:
        """`load` with the environment variable."""
        return cls.load(key_file, os.environ.get(ENV_VAR))

    @property
    def projects(self) -> list[str]:
        """Every project with at least one key."""
        return sorted({key.project for key in self._keys})

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, presented: str) -> ApiKey | None:
        """The key matching `presented`, compared with every entry in constant time."""
        candidate = digest(presented)
        found: ApiKey | None = None
        for key in self._keys:
            if hmac.compare_digest(candidate, key.digest):
                found = key
        return found
