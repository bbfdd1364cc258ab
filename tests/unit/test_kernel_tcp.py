"""The tcp channel's keys and connection file (no Docker): fresh per sandbox, host-only secrets."""

from __future__ import annotations

import stat
from pathlib import Path
from unittest.mock import MagicMock

import pytest
import zmq

from jupyter_sandbox import BadRequestError
from jupyter_sandbox.backends import kernel_tcp
from jupyter_sandbox.backends.docker_backend import DockerBackend
from jupyter_sandbox.backends.remote_egress import RemoteEgressNetworks
from jupyter_sandbox.settings import Settings


def test_master_key_is_private_and_stable(tmp_path: Path) -> None:
    first = kernel_tcp.master_key(tmp_path)
    assert len(first) == 32
    assert kernel_tcp.master_key(tmp_path) == first
    assert stat.S_IMODE((tmp_path / kernel_tcp.MASTER_KEY_FILE).stat().st_mode) == 0o600


def test_keys_are_fresh_per_sandbox_and_form_pairs(tmp_path: Path) -> None:
    master = kernel_tcp.master_key(tmp_path)
    one = kernel_tcp.sandbox_keys(master, "cntr_one")
    two = kernel_tcp.sandbox_keys(master, "cntr_two")
    assert one == kernel_tcp.sandbox_keys(master, "cntr_one")  # a restarted host reconnects
    assert {one.server_secret, one.client_secret}.isdisjoint({two.server_secret, two.client_secret})
    assert one.server_secret != one.client_secret
    assert zmq.curve_public(one.server_secret) == one.server_public
    assert zmq.curve_public(one.client_secret) == one.client_public


def test_the_connection_file_never_holds_the_client_secret(tmp_path: Path) -> None:
    keys = kernel_tcp.sandbox_keys(kernel_tcp.master_key(tmp_path), "cntr_x")
    info = kernel_tcp.tcp_connection_info("k" * 64, keys)
    assert info["transport"] == "tcp"
    assert info["ip"] == "127.0.0.1"
    assert info["curve_secretkey"] == keys.server_secret.decode()
    assert info[kernel_tcp.CLIENT_KEY_FIELD] == keys.client_public.decode()
    assert keys.client_secret.decode() not in str(info)


@pytest.mark.parametrize(
    ("runtime", "chosen", "channel"),
    [
        (None, "auto", "ipc"),
        ("runc", "auto", "ipc"),
        ("runsc", "auto", "tcp"),
        (None, "tcp", "tcp"),
        ("runsc", "ipc", "ipc"),
    ],
)
def test_auto_picks_tcp_for_gvisor(
    tmp_path: Path, runtime: str | None, chosen: str, channel: str
) -> None:
    settings = Settings(
        home=tmp_path, runtime=runtime, kernel_channel=chosen, engine_location="local"
    )
    backend = DockerBackend(settings, engine=MagicMock())  # no engine call is made
    location = backend.channel_location("cntr_" + "0" * 48)
    assert (Path(location).name.startswith("tcp-")) == (channel == "tcp")


def test_a_remote_engine_gets_tcp_and_refuses_ipc(tmp_path: Path) -> None:
    remote = Settings(home=tmp_path, engine_location="remote")
    backend = DockerBackend(remote, engine=MagicMock())
    assert Path(backend.channel_location("cntr_" + "0" * 48)).name.startswith("tcp-")
    ipc = DockerBackend(remote.model_copy(update={"kernel_channel": "ipc"}), engine=MagicMock())
    with pytest.raises(BadRequestError) as caught:
        ipc.channel_location("cntr_" + "0" * 48)
    assert caught.value.param == "kernel_channel"


def test_entering_a_missing_namespace_fails_closed() -> None:
    with pytest.raises(kernel_tcp.ChannelSetupError, match="network namespace") as caught:
        kernel_tcp.netns_context("/proc/0/ns/net")
    assert caught.value.param == "kernel_channel"


def test_a_remote_engine_runs_its_egress_proxy_on_that_engine(tmp_path: Path) -> None:
    backend = DockerBackend(Settings(home=tmp_path, engine_location="remote"), engine=MagicMock())
    assert isinstance(backend.egress, RemoteEgressNetworks)  # volumes there, no host paths
    assert backend.disks.mechanism == "volume"  # a host loop mount cannot reach it


def test_a_remote_deadline_goes_through_the_engine_once_the_sandbox_exists(
    tmp_path: Path,
) -> None:
    backend = DockerBackend(Settings(home=tmp_path, engine_location="remote"), engine=MagicMock())
    put = MagicMock()
    backend.runtime.put_deadline = put  # type: ignore[method-assign]
    backend.runtime.state = MagicMock(return_value=None)  # type: ignore[method-assign]
    backend.write_deadline("cntr_a", 100.0)  # before start: start puts the spec's deadline
    put.assert_not_called()
    backend.runtime.state = MagicMock(return_value=object())  # type: ignore[method-assign]
    backend.write_deadline("cntr_a", 200.0)  # a warm-pool claim
    put.assert_called_once_with("cntr_a", 200.0)
    host_file = backend.settings.deadlines_root / "cntr_a" / "deadline"
    assert float(host_file.read_text()) == 200.0  # the host's folder is kept too
