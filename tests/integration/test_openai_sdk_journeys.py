"""User journeys through the official openai SDK against `serve` that once broke (issue 17):
paging while deleting, cursors across tenants, failed creates, stable file ids, file shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from openai.types import FileObject

from tests.integration.server_harness import RunningServer, serving

pytestmark = pytest.mark.docker


@pytest.fixture
def server(tmp_path: Path, test_label: str) -> Iterator[RunningServer]:
    with serving(tmp_path / "home", test_label) as running:
        yield running


def _skill(name: str) -> list[tuple[str, bytes]]:
    return [(f"{name}/SKILL.md", f"---\nname: {name}\ndescription: d\n---\n".encode())]


def test_list_and_delete_loop_empties_files(server: RunningServer) -> None:
    client = server.sdk()
    made = {client.files.create(file=(f"f{n}.txt", b"x"), purpose="user_data").id for n in range(6)}
    deleted = []
    for item in client.files.list(limit=2):
        client.files.delete(item.id)
        deleted.append(item.id)
    assert set(deleted) == made
    assert len(deleted) == 6
    assert list(client.files.list()) == []


def test_list_and_delete_loop_empties_container_files(server: RunningServer) -> None:
    client = server.sdk()
    container = client.containers.create(name="loop")
    made = {
        client.containers.files.create(container.id, file=(f"f{n}.txt", b"x")).id for n in range(6)
    }
    deleted = []
    for item in client.containers.files.list(container.id, limit=2):
        client.containers.files.delete(item.id, container_id=container.id)
        deleted.append(item.id)
    assert set(deleted) == made
    assert len(deleted) == 6
    assert list(client.containers.files.list(container.id)) == []


def test_list_and_delete_loop_empties_skills(server: RunningServer) -> None:
    client = server.sdk()
    made = {client.skills.create(files=_skill(f"s{n}")).id for n in range(6)}
    deleted = []
    for item in client.skills.list(limit=2):
        client.skills.delete(item.id)
        deleted.append(item.id)
    assert set(deleted) == made
    assert len(deleted) == 6
    assert list(client.skills.list()) == []


def test_list_and_delete_loop_empties_containers(server: RunningServer) -> None:
    client = server.sdk()
    made = {client.containers.create(name=f"c{n}").id for n in range(3)}
    deleted = [c.id for c in client.containers.list(limit=1)]
    for container_id in deleted:
        client.containers.delete(container_id)
    assert set(deleted) == made
    assert list(client.containers.list()) == []


def test_a_cursor_from_another_tenant_is_an_unknown_cursor(server: RunningServer) -> None:
    alice, bob = server.sdk("alice"), server.sdk("bob")
    container = alice.containers.create(name="alice")
    cfile = alice.containers.files.create(container.id, file=("a.txt", b"a"))
    data = alice.files.create(file=("a.txt", b"a"), purpose="user_data")
    skill = alice.skills.create(files=_skill("a"))
    bobs = bob.containers.create(name="bob")
    bob.containers.files.create(bobs.id, file=("b.txt", b"b"))
    lists: dict[str, Callable[[str], object]] = {
        "containers": lambda after: bob.containers.list(after=after),
        "container files": lambda after: bob.containers.files.list(bobs.id, after=after),
        "files": lambda after: bob.files.list(after=after),
        "skills": lambda after: bob.skills.list(after=after),
    }
    foreign = {
        "containers": container.id,
        "container files": cfile.id,
        "files": data.id,
        "skills": skill.id,
    }
    for what, page in lists.items():
        for after in (foreign[what], "cntr_unknown", "file-unknown"):
            with pytest.raises(openai.BadRequestError) as caught:
                page(after)
            assert caught.value.param == "after", what
            assert caught.value.status_code == 400
            assert "Invalid after" in caught.value.message
    # Alice's own cursors still work, after deletes too.
    alice.containers.delete(container.id)
    assert [c.id for c in alice.containers.list(after=container.id)] == []
    alice.files.delete(data.id)
    assert list(alice.files.list(after=data.id)) == []


def test_a_failed_create_leaves_nothing_to_list(tmp_path: Path, test_label: str) -> None:
    with serving(tmp_path / "home", test_label, image="jupyter-sandbox-kernel:missing") as server:
        client = server.sdk(max_retries=0)
        with pytest.raises(openai.NotFoundError) as caught:
            client.containers.create(name="doomed")
        assert "jupyter-sandbox image build" in caught.value.message
        assert list(client.containers.list()) == []


def test_reupload_to_a_path_keeps_the_file_id(server: RunningServer) -> None:
    client = server.sdk()
    container = client.containers.create(name="ids")
    first = client.containers.files.create(
        container.id, file=("a.txt", b"one"), extra_body={"path": "/mnt/data/a.txt"}
    )
    second = client.containers.files.create(
        container.id, file=("a.txt", b"second"), extra_body={"path": "/mnt/data/a.txt"}
    )
    assert second.id == first.id
    assert second.created_at == first.created_at
    retrieved = client.containers.files.retrieve(first.id, container_id=container.id)
    assert (retrieved.path, retrieved.bytes) == ("/mnt/data/a.txt", 6)
    assert (
        client.containers.files.content.retrieve(first.id, container_id=container.id).content
        == b"second"
    )
    # Code rewriting the file keeps the id too; only a file that left its path gets a new one.
    client.post(
        f"/containers/{container.id}/execute",
        body={"code": "open('/mnt/data/a.txt', 'w').write('third!!')"},
        cast_to=dict,
    )
    [listed] = list(client.containers.files.list(container.id))
    assert (listed.id, listed.bytes) == (first.id, 7)
    client.containers.files.delete(first.id, container_id=container.id)
    again = client.containers.files.create(
        container.id, file=("a.txt", b"new"), extra_body={"path": "/mnt/data/a.txt"}
    )
    assert again.id != first.id


@pytest.mark.parametrize(
    ("purpose", "reported"),
    [
        ("evals", "user_data"),
        ("user_data", "user_data"),
        ("assistants", "assistants"),
        ("batch", "batch"),
        ("fine-tune", "fine-tune"),
        ("vision", "vision"),
    ],
)
def test_file_objects_match_the_sdk_model(
    server: RunningServer, purpose: str, reported: str
) -> None:
    client = server.sdk()
    raw = client.files.with_raw_response.create(
        file=("a.jsonl", b"{}\n"),
        purpose=purpose,  # type: ignore[arg-type]
    )
    body = raw.http_response.json()
    assert body["status_details"] is None
    checked = FileObject.model_validate(body)  # the SDK's own model, Literal purposes included
    assert checked.purpose == reported
    listed = client.files.with_raw_response.list(purpose=purpose).http_response.json()
    assert [FileObject.model_validate(item).id for item in listed["data"]] == [checked.id]


def test_memory_spellings_through_the_sdk(server: RunningServer) -> None:
    client = server.sdk()
    container = client.containers.create(name="spelled", memory_limit="1GB")  # type: ignore[arg-type]
    assert container.memory_limit == "1g"
    with pytest.raises(openai.BadRequestError) as caught:
        client.containers.create(name="large", memory_limit="16G")  # type: ignore[arg-type]
    assert caught.value.param == "memory_limit"
    assert "allowed on this host: 512m, 1g, 2g, 4g;" in caught.value.message
