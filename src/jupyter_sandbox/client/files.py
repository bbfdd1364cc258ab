"""`client.files` and `client.containers.files`: resources mirror the URLs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from jupyter_sandbox._boundary import api_errors
from jupyter_sandbox.types.binary import BinaryContent
from jupyter_sandbox.types.container_file import (
    ContainerFile,
    ContainerFileDeleted,
    ContainerFilePage,
)
from jupyter_sandbox.types.file import FileDeleted, FileObject, FilePurpose
from jupyter_sandbox.types.page import CursorPage
from jupyter_sandbox.types.params import (
    NOT_GIVEN,
    FileExpiresAfterParam,
    FileInput,
    NotGiven,
    given,
)

if TYPE_CHECKING:
    from jupyter_sandbox.client._services import ClientServices

__all__ = [
    "BinaryContent",
    "ContainerFiles",
    "ContainerFilesContent",
    "Files",
    "FilesContent",
]


def list_params(limit: int, order: str, after: str | NotGiven | None) -> dict[str, Any]:
    """A list call's paging parameters, `after` only when given."""
    params: dict[str, Any] = {"limit": limit, "order": order}
    if given(after) is not None:
        params["after"] = after
    return params


@api_errors
class FilesContent:
    """`client.files.content`."""

    def __init__(self, client: ClientServices) -> None:
        self._client = client

    def retrieve(self, file_id: str) -> BinaryContent:
        """The file's bytes (`.read()`, `.iter_bytes()`, `.write_to_file(path)`)."""
        return self._client._files.content(file_id, project=self._client.project)


@api_errors
class Files:
    """`client.files`: upload once, then copy into sandboxes by id (`file_ids=[...]`)."""

    def __init__(self, client: ClientServices) -> None:
        self._client = client
        self.content = FilesContent(client)

    def create(
        self,
        *,
        file: FileInput,
        purpose: FilePurpose = "user_data",
        expires_after: FileExpiresAfterParam | NotGiven | None = NOT_GIVEN,
    ) -> FileObject:
        """Upload a file (a Path, bytes, a binary stream, or `(filename, content)`).

        Raises:
            RequestTooLargeError: the file is larger than `file_size_limit` (default 512 MiB).
            BadRequestError: `purpose` or `file` is invalid.
        """
        return self._client._files.create(
            file,
            purpose=purpose,
            expires_after=given(expires_after),
            project=self._client.project,
        )

    def retrieve(self, file_id: str) -> FileObject:
        """One file's metadata."""
        return self._client._files.retrieve(file_id, project=self._client.project)

    def list(
        self,
        *,
        limit: int = 10000,
        order: Literal["asc", "desc"] = "desc",
        after: str | NotGiven | None = NOT_GIVEN,
        purpose: str | NotGiven | None = NOT_GIVEN,
    ) -> CursorPage[FileObject]:
        """A page of files (newest first); iterating it walks every page."""
        params = list_params(limit, order, after)
        if given(purpose) is not None:
            params["purpose"] = purpose
        return self._client._files.list(params, project=self._client.project)

    def delete(self, file_id: str) -> FileDeleted:
        """Forget a file (copies already in sandboxes stay)."""
        return self._client._files.delete(file_id, project=self._client.project)


@api_errors
class ContainerFilesContent:
    """`client.containers.files.content`."""

    def __init__(self, client: ClientServices) -> None:
        self._client = client

    def retrieve(self, file_id: str, *, container_id: str) -> BinaryContent:
        """The file's bytes, streamed from the sandbox."""
        self._client.sweep()
        return self._client._container_files.content(
            container_id, file_id, project=self._client.project
        )


@api_errors
class ContainerFiles:
    """`client.containers.files`: files under /mnt/data and /workspace of one sandbox."""

    def __init__(self, client: ClientServices) -> None:
        self._client = client
        self.content = _PositionalContent(client)

    def create(
        self,
        container_id: str,
        *,
        file: FileInput | NotGiven | None = NOT_GIVEN,
        file_id: str | NotGiven | None = NOT_GIVEN,
        path: str | NotGiven | None = NOT_GIVEN,
    ) -> ContainerFile:
        """Put a file in the sandbox (default path `/mnt/data/<its name>`).

        Args:
            file: a Path, bytes, a binary stream, or `(filename, content)`.
            file_id: instead of `file`, an uploaded file's id (`client.files`).
            path: absolute, under /mnt/data or /workspace (an extension, as in the seed).

        Raises:
            BadRequestError: the path is invalid or goes through a link (`param="path"`).
            RequestTooLargeError: over `file_size_limit`, or the sandbox's disk is full.
        """
        self._client.sweep()
        return self._client._container_files.create(
            container_id,
            file=given(file),
            file_id=given(file_id),
            path=given(path),
            project=self._client.project,
        )

    def retrieve(self, container_id: str, file_id: str) -> ContainerFile:
        """One file's metadata."""
        self._client.sweep()
        return self._client._container_files.retrieve(
            container_id, file_id, project=self._client.project
        )

    def list(
        self,
        container_id: str,
        *,
        limit: int = 20,
        order: Literal["asc", "desc"] = "desc",
        after: str | NotGiven | None = NOT_GIVEN,
    ) -> ContainerFilePage:
        """A page of the sandbox's files, including those its code wrote (`source="assistant"`).

        The first page walks the sandbox's folders; if the walk reached a cap (100,000 files
        and folders), `truncated` on that page says so and only the files seen are listed."""
        self._client.sweep()
        return self._client._container_files.list(
            container_id, list_params(limit, order, after), project=self._client.project
        )

    def delete(self, container_id: str, file_id: str) -> ContainerFileDeleted:
        """Remove the file from the sandbox."""
        self._client.sweep()
        return self._client._container_files.delete(
            container_id, file_id, project=self._client.project
        )


@api_errors
class _PositionalContent(ContainerFilesContent):
    """Accepts the seed's `content.retrieve(container_id, file_id)` and the SDK's
    `content.retrieve(file_id, container_id=...)`."""

    def retrieve(
        self, first: str, second: str | None = None, *, container_id: str | None = None
    ) -> BinaryContent:
        """The file's bytes, streamed from the sandbox."""
        if container_id is None:
            if second is None:
                raise TypeError(
                    "retrieve(container_id, file_id) or retrieve(file_id, container_id=)"
                )
            container_id, file_id = first, second
        else:
            file_id = first
        return super().retrieve(file_id, container_id=container_id)
