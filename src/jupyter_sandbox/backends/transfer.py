"""Moving bytes in and out of a sandbox's /mnt/data and /workspace, safely and streaming.

Two channels, one interface (`SandboxFiles`, in `sandbox_files`):

- `HostFiles` (loop mode, the default as root, in `host_files`): the host opens files on the
  sandbox's mounted disk image directly. Every path is walked one name at a time from the root
  folder with `O_NOFOLLOW` relative to the parent's descriptor, so a symbolic link planted by
  sandbox code is refused (never followed, on the host or anywhere), even if it is swapped in
  mid-walk. FIFOs and devices are refused (`O_NONBLOCK`, then `fstat` must say regular file).
  Bytes move with `sendfile` or 1 MiB chunks: nothing is held in memory whole.
- `EngineFiles` (volume mode, in `engine_files`): Docker's archive API, with only uncompressed
  tar built by us on upload (compressed uploads have run the container's decompressors as host
  root) and, on download, the tar read as a stream on the host: one member, vetted by
  `tarfile`'s `data` filter, a regular file, within the byte cap. Listing and deleting run
  `find`/`rm` in the sandbox as its own user, so any link resolves inside the container, never
  on the host.

This module gathers them: import from here.
"""

from __future__ import annotations

from jupyter_sandbox.backends.engine_files import EngineFiles, tar_stream
from jupyter_sandbox.backends.host_files import HostFiles
from jupyter_sandbox.backends.sandbox_files import (
    MAX_SCAN_ENTRIES,
    MAX_SCAN_PATH_BYTES,
    SANDBOX_UID,
    UPLOAD_PREFIX,
    BinaryContent,
    FoundFile,
    SandboxFiles,
    Scan,
    copy_stream,
)

__all__ = [
    "MAX_SCAN_ENTRIES",
    "MAX_SCAN_PATH_BYTES",
    "SANDBOX_UID",
    "UPLOAD_PREFIX",
    "BinaryContent",
    "EngineFiles",
    "FoundFile",
    "HostFiles",
    "SandboxFiles",
    "Scan",
    "copy_stream",
    "tar_stream",
]
