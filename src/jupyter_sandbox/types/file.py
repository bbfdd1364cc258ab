"""The file object of `/v1/files` (OpenAI's shape: `file-` ids, `bytes`, `purpose`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

FilePurpose = Literal["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]
"""What an upload is for; every purpose is stored the same way here."""


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
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    """Deprecated upstream; always `processed` here."""
    expires_at: int | None = None


class FileDeleted(BaseModel):
    """The body a file delete returns."""

    id: str
    object: Literal["file"] = "file"
    deleted: bool = True
