"""The file object of `/v1/files` (OpenAI's shape: `file-` ids, `bytes`, `purpose`)."""

from __future__ import annotations

from typing import Literal, cast, get_args

from pydantic import BaseModel, ConfigDict

FilePurpose = Literal["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]
"""What an upload is for; every purpose is stored the same way here."""

FileObjectPurpose = Literal[
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
    "fine-tune",
    "fine-tune-results",
    "vision",
    "user_data",
]
"""The purposes a file object reports (the openai SDK's `FileObject` knows no other)."""

_REPORTED_AS: dict[str, FileObjectPurpose] = {"evals": "user_data"}


def reported_purpose(purpose: str) -> FileObjectPurpose:
    """The purpose a file object shows: the caller's own when the SDK knows it, else the
    closest it knows (`evals` → `user_data`). Lists still filter by the purpose sent."""
    mapped = _REPORTED_AS.get(purpose, purpose)
    return cast(FileObjectPurpose, mapped) if mapped in get_args(FileObjectPurpose) else "user_data"


class FileObject(BaseModel):
    """An uploaded file, stored once (content-addressed) and copied into sandboxes on demand."""

    model_config = ConfigDict(extra="allow")
    id: str
    """`file-` + 24 hex."""
    object: Literal["file"] = "file"
    bytes: int
    """Size in bytes."""
    created_at: int
    filename: str
    """The name it was uploaded with (its basename is used in `/mnt/data`)."""
    purpose: FileObjectPurpose
    """As uploaded, except `evals` (unknown to the SDK's file object) reads `user_data`."""
    status: Literal["uploaded", "processed", "error"] = "processed"
    """Deprecated upstream; always `processed` here."""
    expires_at: int | None = None
    status_details: str | None = None
    """Deprecated upstream; always null here."""


class FileDeleted(BaseModel):
    """The body a file delete returns."""

    id: str
    object: Literal["file"] = "file"
    deleted: bool = True
