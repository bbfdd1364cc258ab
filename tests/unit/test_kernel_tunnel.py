"""The exec tunnel's pieces that need no engine: Docker's stream framing and the remote
engine's archives (the deadline written whole, then linked; the connection file private)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from jupyter_sandbox import BadRequestError
from jupyter_sandbox.backends.kernel_tunnel import Demux
from jupyter_sandbox.backends.runtime import remote
from jupyter_sandbox.backends.runtime.base import ContainerSpec, SandboxNetworkSpec


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


BINARY = bytes(range(256)) * 3
STREAM = frame(1, BINARY) + frame(2, b"forwarder: oops\n") + frame(1, b"\r\n\x03end")


@pytest.mark.parametrize("cut", [1, 3, 7, 8, 9, 100, len(STREAM)])
def test_demux_keeps_stdout_bytes_exactly_wherever_frames_split(cut: int) -> None:
    demux = Demux()
    out = b"".join(demux.feed(STREAM[i : i + cut]) for i in range(0, len(STREAM), cut))
    assert out == BINARY + b"\r\n\x03end"
    assert demux.stderr == b"forwarder: oops\n"


def test_demux_keeps_only_a_tail_of_stderr() -> None:
    demux = Demux()
    assert demux.feed(frame(2, b"x" * 10_000 + b"the end")) == b""
    assert len(demux.stderr) == 2048
    assert demux.stderr.endswith(b"the end")


def test_demux_streams_a_frame_that_claims_more_than_arrives() -> None:
    demux = Demux()
    header = bytes([1, 0, 0, 0]) + (2**32 - 1).to_bytes(4, "big")
    assert demux.feed(header + b"partial") == b"partial"  # nothing is held back to wait


def members(archive: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return tar.getmembers()


def test_deadline_is_written_whole_then_linked_and_belongs_to_root() -> None:
    fresh, link = members(remote.deadline_tar(1234.5))
    assert (fresh.name, fresh.isfile(), fresh.uid, fresh.mode) == (".deadline.new", True, 0, 0o644)
    assert (link.name, link.islnk(), link.linkname) == ("deadline", True, ".deadline.new")
    with tarfile.open(fileobj=io.BytesIO(remote.deadline_tar(1234.5))) as tar:
        assert tar.extractfile(fresh).read() == b"1234.500"  # type: ignore[union-attr]


def test_connection_file_is_the_sandbox_users_and_private(tmp_path: Path) -> None:
    (tmp_path / "connection.json").write_text('{"key": "k"}')
    (member,) = members(remote.connection_tar(tmp_path / "connection.json", 1000))
    assert (member.name, member.uid, member.mode, member.size) == (
        "connection.json",
        1000,
        0o600,
        12,
    )


def spec(**changes: object) -> ContainerSpec:
    return ContainerSpec(
        container_id="cntr_x", image="i", memory_bytes=1, socket_dir=Path("/s"), deadline=1.0,
        labels={}, **changes,  # type: ignore[arg-type]
    )  # fmt: skip


def test_host_paths_are_refused_on_a_remote_engine() -> None:
    with pytest.raises(BadRequestError) as caught:
        remote.refuse_host_paths(spec(host_dirs={"/mnt/data": "/host/d"}))
    assert caught.value.param == "disk_mechanism"


def test_an_allowlist_network_binds_files_of_the_engines_machine() -> None:
    remote.refuse_host_paths(spec(network=SandboxNetworkSpec("n", "1.2.3.4", "1.2.3.5", "/r")))


def test_skills_are_copied_as_roots_folders_and_files_only(tmp_path: Path) -> None:
    (tmp_path / "tool").mkdir()
    (tmp_path / "tool" / "SKILL.md").write_text("x")
    (tmp_path / "tool" / "link").symlink_to("/etc/passwd")
    found = {m.name: (m.type, m.uid, m.mode) for m in members(remote.skills_tar(tmp_path))}
    assert found == {
        "tool": (tarfile.DIRTYPE, 0, 0o755),
        "tool/SKILL.md": (tarfile.REGTYPE, 0, 0o644),
    }


def test_the_image_hint_names_the_commands() -> None:
    hint = remote.image_hint("jupyter-sandbox-kernel:1", "https://10.0.0.2:2376")
    assert "docker save jupyter-sandbox-kernel:1 | docker load" in hint
    assert "https://10.0.0.2:2376" in hint
    assert "jupyter-sandbox cluster up" in hint
