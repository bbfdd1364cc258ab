"""The shapes the client's methods take, typed as openai-python types them: TypedDicts for
nested parameters, `NOT_GIVEN` for an omitted keyword, `FileInput` for uploads.

These are for type checkers and editors; every value is still validated at run time by the
pydantic models (`types.container.ContainerCreateParams`, ...), which also accept the seed's
spellings listed here as optional keys.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import IO, Literal, TypeVar, Union

from typing_extensions import Required, TypedDict

__all__ = [
    "NOT_GIVEN",
    "ContainerSkillParam",
    "DomainSecretParam",
    "ExpiresAfterParam",
    "FileContent",
    "FileExpiresAfterParam",
    "FileInput",
    "InlineSkillFileParam",
    "InlineSkillFilesSourceParam",
    "InlineSkillParam",
    "InlineSkillSourceParam",
    "NetworkPolicyAllowlistParam",
    "NetworkPolicyDisabledParam",
    "NetworkPolicyParam",
    "NotGiven",
    "SkillFilesInput",
    "SkillReferenceParam",
    "given",
]

_T = TypeVar("_T")


class NotGiven:
    """The type of `NOT_GIVEN`: a keyword the caller left out (as openai-python's), told apart
    from one passed as None."""

    def __bool__(self) -> Literal[False]:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN = NotGiven()
"""The default of every optional keyword of the client's methods."""


def given(value: _T | NotGiven | None) -> _T | None:
    """`value`, or None when it was not given."""
    return None if isinstance(value, NotGiven) else value


# Union, as the original core alias: evaluated at import, on every supported Python.
FileContent = Union[os.PathLike[str], bytes, IO[bytes]]  # noqa: UP007
"""A local path, bytes, or a binary stream."""
FileInput = Union[FileContent, tuple[str, FileContent]]  # noqa: UP007
"""An upload: a local path, bytes, a binary stream, or `(filename, one of those)`."""
SkillFilesInput = Union[FileInput, Sequence[FileInput]]  # noqa: UP007
"""A skill's files: a folder (a path), a zip (any `FileInput` named `*.zip`), or a list of
files (paths, or `(relative path, content)` pairs)."""


class ExpiresAfterParam(TypedDict, total=False):
    """A sandbox's idle expiry: `{"anchor": "last_active_at", "minutes": 20}`."""

    anchor: Literal["last_active_at"]
    minutes: int
    """1 to 1440."""
    seconds: float
    """The seed's spelling, instead of `minutes` (rounded up to whole minutes)."""


class FileExpiresAfterParam(TypedDict):
    """An uploaded file's expiry: `{"anchor": "created_at", "seconds": 3600}`."""

    anchor: Literal["created_at"]
    seconds: int


class NetworkPolicyDisabledParam(TypedDict):
    """No network at all (the default)."""

    type: Literal["disabled"]


class DomainSecretParam(TypedDict):
    """A secret the egress proxy puts on requests to `domain`; the sandbox sees only a
    placeholder in its variable `name`."""

    domain: str
    name: str
    value: str


class NetworkPolicyAllowlistParam(TypedDict, total=False):
    """Only HTTP(S) to the listed domains (`host` or `*.host`), through the egress proxy."""

    type: Required[Literal["allowlist"]]
    allowed_domains: Sequence[str]
    domains: Sequence[str]
    """The seed's spelling of `allowed_domains`."""
    domain_secrets: Iterable[DomainSecretParam]


NetworkPolicyParam = NetworkPolicyDisabledParam | NetworkPolicyAllowlistParam


class SkillReferenceParam(TypedDict, total=False):
    """A stored skill: `{"type": "skill_reference", "skill_id": ..., "version": "latest"}`;
    the seed's bare `{"skill_id": ...}` too."""

    type: Literal["skill_reference"]
    skill_id: Required[str]
    version: str
    """Left out: the skill's default version; `"latest"`: the newest."""


class InlineSkillSourceParam(TypedDict, total=False):
    """The hosted API's inline source: a base64 zip of the skill's folder."""

    type: Required[Literal["base64"]]
    media_type: Literal["application/zip"]
    data: Required[str]


class InlineSkillFileParam(TypedDict):
    """One file of a seed-style inline skill."""

    path: str
    content: str


class InlineSkillFilesSourceParam(TypedDict, total=False):
    """The seed's inline source: `{"files": [{"path", "content"}]}`."""

    type: Literal["files"]
    files: Required[Sequence[InlineSkillFileParam]]


class InlineSkillParam(TypedDict, total=False):
    """A skill defined in the create request itself, installed in that sandbox only."""

    type: Required[Literal["inline"]]
    name: str
    description: str
    source: Required[InlineSkillSourceParam | InlineSkillFilesSourceParam]


ContainerSkillParam = SkillReferenceParam | InlineSkillParam
"""One entry of `containers.create(skills=[...])`."""
