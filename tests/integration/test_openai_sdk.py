"""The official openai SDK, unchanged but for base_url, against a real `serve` process."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from tests.integration.server_harness import RunningServer, serving

pytestmark = pytest.mark.docker


@pytest.fixture
def server(tmp_path: Path, test_label: str) -> Iterator[RunningServer]:
    with serving(tmp_path / "home", test_label) as running:
        yield running


def _create_seed_container(client: openai.OpenAI, file_id: str) -> tuple[object, bool]:
    """The seed's create; the allowlist is used when this host can enforce it."""
    try:
        return client.containers.create(
            name="data-processor",
            memory_limit="2g",  # type: ignore[arg-type]  # a seed tier the SDK's Literal lacks
            network_policy={"type": "allowlist", "domains": ["api.weatherapi.com"]},  # type: ignore[arg-type]  # the seed's spelling
            file_ids=[file_id],
        ), True
    except openai.BadRequestError as exc:
        # Fail closed: without the egress proxy the allowlist is refused, never ignored.
        if exc.param != "network_policy":
            raise
        return client.containers.create(
            name="data-processor",
            memory_limit="2g",  # type: ignore[arg-type]
            network_policy={"type": "disabled"},
            file_ids=[file_id],
        ), False


def test_seed_complete_example(server: RunningServer, tmp_path: Path) -> None:
    client = server.sdk()
    data = client.files.create(file=("data.csv", b"city,temp\nOslo,3\n"), purpose="user_data")
    assert data.id.startswith("file-")
    assert data.bytes == 17

    container, has_allowlist = _create_seed_container(client, data.id)
    assert container.id.startswith("cntr_")  # type: ignore[attr-defined]
    container_id: str = container.id  # type: ignore[attr-defined]
    assert (container.status, container.memory_limit) == ("ready", "2g")  # type: ignore[attr-defined]
    if has_allowlist:
        assert container.network_policy.allowed_domains == ["api.weatherapi.com"]  # type: ignore[attr-defined]
    assert client.containers.retrieve(container_id).name == "data-processor"

    script = tmp_path / "process.py"
    script.write_text("import csv\nrows = list(csv.DictReader(open('/mnt/data/data.csv')))\n")
    with script.open("rb") as handle:
        uploaded = client.containers.files.create(
            container_id, file=handle, extra_body={"path": "/workspace/process.py"}
        )
    assert (uploaded.path, uploaded.bytes, uploaded.source) == (
        "/workspace/process.py",
        script.stat().st_size,
        "user",
    )
    assert uploaded.id.startswith("cfile_")
    assert uploaded.model_extra == {"size": uploaded.bytes}

    # "Process the uploaded data": our execute extension instead of the Responses API.
    execution = client.post(
        f"/containers/{container_id}/execute",
        body={"code": "exec(open('/workspace/process.py').read()); print(rows[0]['city'])"},
        cast_to=dict,
    )
    assert (execution["status"], execution["stdout"]) == ("ok", "Oslo\n")

    # list auto-paging over several pages (limit=2), both orders
    for n in range(5):
        client.containers.files.create(container_id, file=(f"part{n}.txt", b"x" * n))
    listed = {(f.path, f.bytes) for f in client.containers.files.list(container_id, limit=2)}
    assert {("/mnt/data/data.csv", 17), ("/workspace/process.py", script.stat().st_size)} <= listed
    assert {(f"/mnt/data/part{n}.txt", n) for n in range(5)} <= listed
    ascending = [f.id for f in client.containers.files.list(container_id, limit=3, order="asc")]
    assert len(ascending) == len(set(ascending)) == len(listed)

    # content round trip: 3 MiB of every byte value, streamed in chunks
    payload = bytes(range(256)) * (3 * 4096)
    blob = client.containers.files.create(container_id, file=("blob.bin", payload))
    content = client.containers.files.content.retrieve(blob.id, container_id=container_id)
    assert content.content == payload
    assert client.containers.files.retrieve(blob.id, container_id=container_id).bytes == len(
        payload
    )
    assert client.files.content(data.id).content == b"city,temp\nOslo,3\n"

    client.containers.files.delete(blob.id, container_id=container_id)
    with pytest.raises(openai.NotFoundError):
        client.containers.files.retrieve(blob.id, container_id=container_id)

    # Cleanup
    client.containers.delete(container_id)  # 200 with a JSON body, which the SDK drops
    with pytest.raises(openai.NotFoundError):
        client.containers.retrieve(container_id)
    assert [c.id for c in client.containers.list()] == []
    client.files.delete(data.id)


def test_seed_error_example_raises_bad_request(server: RunningServer) -> None:
    client = server.sdk()
    with pytest.raises(openai.BadRequestError) as caught:
        client.containers.create(name="test", memory_limit="3g")  # type: ignore[arg-type]
    error = caught.value
    assert (error.status_code, error.param, error.type) == (
        400,
        "memory_limit",
        "invalid_request_error",
    )
    assert "memory_limit" in error.message
    assert str(error.request_id).startswith("req_")
    with pytest.raises(openai.BadRequestError) as missing:
        client.post("/containers", body={"memory_limit": "1g"}, cast_to=dict)
    assert missing.value.param == "name"
    assert list(client.containers.list()) == []


def test_wrong_or_missing_key_is_authentication_error(server: RunningServer) -> None:
    wrong = server.sdk()
    wrong.api_key = "sk-not-a-real-key-123"
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.containers.list()
    assert caught.value.code == "invalid_api_key"
    assert "sk-not-a-real" not in str(caught.value)
    assert caught.value.request_id.startswith("req_")  # type: ignore[union-attr]
    with pytest.raises(openai.AuthenticationError):
        wrong.files.create(file=("a.txt", b"a"), purpose="user_data")


def test_another_tenants_ids_are_not_found(server: RunningServer) -> None:
    alice, bob = server.sdk("alice"), server.sdk("bob")
    container = alice.containers.create(name="private")
    data = alice.files.create(file=("secret.txt", b"secret"), purpose="user_data")
    cfile = alice.containers.files.create(container.id, file=("s.txt", b"s"))
    skill = alice.skills.create(files=[("tool/SKILL.md", b"---\nname: tool\n---\n")])
    attempts: list[Callable[[], object]] = [
        lambda: bob.containers.retrieve(container.id),
        lambda: bob.containers.delete(container.id),
        lambda: bob.containers.files.list(container.id),
        lambda: bob.containers.files.create(container.id, file=("x.txt", b"x")),
        lambda: bob.containers.files.create(container.id, file_id=data.id),
        lambda: bob.containers.files.retrieve(cfile.id, container_id=container.id),
        lambda: bob.containers.files.content.retrieve(cfile.id, container_id=container.id),
        lambda: bob.containers.files.delete(cfile.id, container_id=container.id),
        lambda: bob.files.retrieve(data.id),
        lambda: bob.files.content(data.id),
        lambda: bob.files.delete(data.id),
        lambda: bob.skills.retrieve(skill.id),
        lambda: bob.skills.delete(skill.id),
        lambda: bob.skills.versions.list(skill.id),
        lambda: bob.post(
            f"/containers/{container.id}/execute",
            body={"code": "1"},
            cast_to=dict,
        ),
    ]
    for attempt in attempts:
        with pytest.raises(openai.NotFoundError):
            attempt()
    bob_container = bob.containers.create(name="private", file_ids=[])
    with pytest.raises(openai.NotFoundError):
        bob.containers.create(name="steal", file_ids=[data.id])
    assert [c.id for c in bob.containers.list()] == [bob_container.id]
    assert [c.id for c in alice.containers.list()] == [container.id]
    assert list(bob.files.list()) == []
    assert list(bob.skills.list()) == []
    assert (
        alice.containers.files.content.retrieve(cfile.id, container_id=container.id).content == b"s"
    )


def test_upload_over_the_limit_is_413(tmp_path: Path, test_label: str) -> None:
    with serving(
        tmp_path / "home",
        test_label,
        server_max_body_bytes=256 * 1024,
        file_size_limit=64 * 1024,
    ) as server:
        client = server.sdk()
        container = client.containers.create(name="small")
        for size in (100 * 1024, 1024 * 1024):  # past the file limit; past the body limit
            with pytest.raises(openai.APIStatusError) as caught:
                client.containers.files.create(container.id, file=("big.bin", os.urandom(size)))
            assert caught.value.status_code == 413, caught.value
            assert caught.value.code == "request_too_large"
            with pytest.raises(openai.APIStatusError) as caught:
                client.files.create(file=("big.bin", os.urandom(size)), purpose="user_data")
            assert caught.value.status_code == 413
        assert [f.path for f in client.containers.files.list(container.id)] == []
        small = client.containers.files.create(container.id, file=("ok.bin", b"k" * 1000))
        assert small.bytes == 1000


def test_domain_secrets_are_refused_clearly_and_never_echoed(server: RunningServer) -> None:
    """Issue 17: the SDK's `domain_secrets` shape is understood (no more "unknown parameter"
    echoing the value); a secret for an unlisted domain names the parameter; while injection
    at the proxy is not built, a valid one is refused naming `network_policy.domain_secrets`
    (never a sandbox whose secret silently does not work). No answer and no server log line
    holds the value."""
    client = server.sdk()
    secret = "sk-test-secret-0d6f3a9b8c7e"
    attempts = {
        "valid": [{"domain": "allowed.test", "name": "API_KEY", "value": secret}],
        "unlisted": [{"domain": "other.test", "name": "API_KEY", "value": secret}],
        "extra": [{"domain": "allowed.test", "name": "API_KEY", "value": secret, "x": secret}],
    }
    for case, secrets in attempts.items():
        with pytest.raises(openai.BadRequestError) as caught:
            client.containers.create(
                name="secrets",
                network_policy={
                    "type": "allowlist",
                    "allowed_domains": ["allowed.test"],
                    "domain_secrets": secrets,  # type: ignore[typeddict-item]
                },
            )
        assert (caught.value.param or "").startswith("network_policy"), case
        assert secret not in caught.value.message, case
        assert secret not in caught.value.response.text, case
        if case != "extra":
            assert caught.value.param in ("network_policy.domain_secrets", "network_policy"), case
    # An unknown top-level parameter holding a secret is not echoed either.
    with pytest.raises(openai.BadRequestError) as caught:
        client.containers.create(name="secrets", extra_body={"api_key": secret})
    assert caught.value.param == "api_key"
    assert secret not in caught.value.response.text
    assert client.containers.list().data == []
    assert not [line for line in server.log if secret in line]
