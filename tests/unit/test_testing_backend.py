"""`jupyter_sandbox.testing`: the public LocalBackend's promises that need no kernel, and the
test backends keep to the protocol."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import jupyter_sandbox.testing
from jupyter_sandbox import BadRequestError, Client
from jupyter_sandbox.backends.base import Backend
from jupyter_sandbox.testing import LocalBackend
from jupyter_sandbox.types.container import NetworkPolicyAllowlist
from tests.unit.core.fake_backend import FakeBackend

README = Path(__file__).parents[2] / "README.md"


@pytest.mark.parametrize("implementation", [LocalBackend, FakeBackend])
def test_the_test_backends_have_every_member_of_the_protocol(implementation: type) -> None:
    members = {name for name, _ in inspect.getmembers(Backend) if not name.startswith("_")}
    members |= set(Backend.__annotations__)
    assert sorted(m for m in members if not hasattr(implementation, m)) == []
    for name in members - set(Backend.__annotations__):
        ours = inspect.signature(getattr(implementation, name))
        theirs = inspect.signature(getattr(Backend, name))
        assert list(ours.parameters) == list(theirs.parameters), name


def test_no_isolation_is_said_first() -> None:
    for doc in (jupyter_sandbox.testing.__doc__, LocalBackend.__doc__):
        assert doc is not None
        assert "NO ISOLATION AT ALL" in doc.splitlines()[0]
    section = README.read_text().split("## Testing your own code without Docker\n", 1)[1]
    first = section.strip().splitlines()[0]
    assert "no isolation at all" in first.lower()


def test_an_allowlist_is_refused_naming_network_policy(tmp_path: Path) -> None:
    policy = NetworkPolicyAllowlist(type="allowlist", allowed_domains=["pypi.org"])
    with LocalBackend() as backend:
        assert isinstance(backend, Backend)
        with pytest.raises(BadRequestError) as direct:
            backend.check_network(policy)
        assert direct.value.param == "network_policy"
        with Client(home=tmp_path / "home", backend=backend) as client:
            with pytest.raises(BadRequestError) as caught:
                client.containers.create(
                    name="net", network_policy={"type": "allowlist", "allowed_domains": ["a.b"]}
                )
            assert caught.value.param == "network_policy"
            assert "no isolation" in caught.value.message
            assert list(client.containers.list()) == []
        assert backend.existing() == []


def test_a_client_given_a_local_backend_keeps_its_store_there() -> None:
    backend = LocalBackend()
    with Client(backend=backend) as client:
        assert client.settings.home == backend.default_home
        assert client.settings.store_path.is_relative_to(backend.root)
    root = backend.root
    backend.close()
    assert not root.exists()


def test_the_local_backend_is_found_by_name(tmp_path: Path) -> None:
    with Client(home=tmp_path / "home", backend="local") as client:
        assert client._backend.name == "local"
        root = client._backend.root  # type: ignore[attr-defined]
    assert not root.exists()  # built by name, so closed with the client


def test_by_name_it_refuses_the_default_state_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("JUPYTER_SANDBOX_HOME", raising=False)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(BadRequestError) as caught:
        Client(backend="local")
    assert caught.value.param == "home"


def test_a_given_root_is_kept(tmp_path: Path) -> None:
    backend = LocalBackend(root=tmp_path / "mine")
    assert backend.channel_location("cntr_0123456789abcdef").startswith(str(tmp_path / "mine"))
    backend.close()
    assert (tmp_path / "mine").is_dir()


def test_the_readme_example_runs_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent")  # no Docker needed
    section = README.read_text().split("## Testing your own code without Docker\n", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})  # our own documentation
