"""Two `serve` processes on one PostgreSQL store with DIFFERENT state folders, as on two
machines (issue 15): a file, a skill or a snapshot stored through one is downloaded, attached
to a sandbox or forked through the other, because a shared store keeps their bytes in the
database rather than in a server's state folder; deleting one deletes its bytes everywhere."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import openai
import psycopg
import pytest

from tests.conftest import labelled_client
from tests.integration.server_harness import RunningServer, serving

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.timeout(600)]


@pytest.fixture
def servers(
    tmp_path: Path, test_label: str, postgres_url: str
) -> Iterator[tuple[RunningServer, RunningServer]]:
    image = os.environ.get("JUPYTER_SANDBOX_IMAGE")
    shared = {
        "store_url": postgres_url,
        "server_rate_limit": 0,
        **({"image": image} if image else {}),
    }
    with (
        serving(tmp_path / "home-a", test_label, **shared) as one,
        serving(tmp_path / "home-b", test_label, **shared) as two,
    ):
        yield one, two


def stored(url: str, namespace: str) -> tuple[int, int]:
    """(blobs, chunks) the database holds for a namespace."""
    with psycopg.connect(url) as db:
        row = db.execute(
            "SELECT COUNT(DISTINCT b.sha256), COUNT(c.seq) FROM blobs b "
            "LEFT JOIN blob_chunks c ON c.storage_id = b.storage_id WHERE b.namespace = %s",
            (namespace,),
        ).fetchone()
        orphans = db.execute(
            "SELECT COUNT(*) FROM blob_chunks c WHERE NOT EXISTS "
            "(SELECT 1 FROM blobs b WHERE b.storage_id = c.storage_id)"
        ).fetchone()
    assert row is not None
    assert orphans == (0,)
    return int(row[0]), int(row[1])


def files_in(home: Path, folder: str) -> list[Path]:
    """Blob files a server left in its state folder (a shared store should leave none)."""
    return [p for p in (home / folder).rglob("*") if p.is_file()]


def execute(client: openai.OpenAI, container_id: str, code: str) -> dict[str, object]:
    result: dict[str, object] = client.post(
        f"/containers/{container_id}/execute", body={"code": code}, cast_to=dict
    )
    return result


def test_a_file_and_a_skill_stored_on_one_server_are_used_on_the_other(
    servers: tuple[RunningServer, RunningServer], postgres_url: str
) -> None:
    one, two = servers
    a, b = one.sdk(max_retries=0), two.sdk(max_retries=0)
    data = os.urandom(3 * 2**20 + 17)  # several chunks
    uploaded = a.files.create(file=("data.bin", data), purpose="user_data")
    assert b.files.content(uploaded.id).read() == data  # downloaded through the other
    with pytest.raises(openai.NotFoundError):  # tenancy as before
        two.sdk("bob", max_retries=0).files.content(uploaded.id)

    skill = a.skills.create(
        files=[
            ("tool/SKILL.md", b"---\nname: tool\ndescription: says hi\n---\n"),
            ("tool/hello.py", b"print('hi from the skill')\n"),
        ]
    )
    box = b.containers.create(
        name="attached",
        file_ids=[uploaded.id],
        extra_body={"skills": [{"type": "skill_reference", "skill_id": skill.id}]},
    )
    (attached,) = [f for f in b.containers.files.list(box.id) if f.path.endswith("data.bin")]
    copied = b.containers.files.content.retrieve(attached.id, container_id=box.id).read()
    assert hashlib.sha256(copied).digest() == hashlib.sha256(data).digest()
    ran = execute(b, box.id, "exec(open('/mnt/skills/tool/hello.py').read())")
    assert ran["stdout"] == "hi from the skill\n"
    for home in (one.home, two.home):
        assert files_in(home, "blobs") == []
    assert stored(postgres_url, "files") == (2, 4 + 1)  # 4 chunks of the file, 1 of the zip

    b.files.delete(uploaded.id)  # through the server that did not store it
    with pytest.raises(openai.NotFoundError):
        a.files.content(uploaded.id)
    assert stored(postgres_url, "files") == (1, 1)
    b.skills.delete(skill.id)
    assert stored(postgres_url, "files") == (0, 0)
    b.containers.delete(box.id)


def test_a_snapshot_taken_on_one_server_is_forked_on_the_other(
    servers: tuple[RunningServer, RunningServer], postgres_url: str
) -> None:
    one, two = servers
    a, b = one.sdk(max_retries=0), two.sdk(max_retries=0)
    source = a.containers.create(name="source")
    assert execute(a, source.id, "x = 41")["status"] == "ok"
    path = f"/containers/{source.id}/snapshots"
    snapshot = a.post(path, body={"name": "s"}, cast_to=dict)
    assert stored(postgres_url, "snapshots")[0] == 1
    assert files_in(one.home, "snapshots") == []

    fork = b.containers.create(name="fork", extra_body={"snapshot_id": snapshot["id"]})
    answer = execute(b, fork.id, "x + 1")
    assert answer["outputs"][0]["data"]["text/plain"] == "42"  # type: ignore[index]

    b.delete(f"{path}/{snapshot['id']}", cast_to=dict)
    assert stored(postgres_url, "snapshots") == (0, 0)
    b.containers.delete(fork.id)
    a.containers.delete(source.id)


def test_reconcile_sweeps_bytes_no_record_holds(
    tmp_path: Path, test_label: str, postgres_url: str
) -> None:
    """A server killed between storing an upload's bytes and writing its record leaves a
    blob nobody holds: every reconcile (and `gc`) of any server sweeps it after the grace."""
    first = labelled_client(tmp_path / "home-a", test_label, store_url=postgres_url)
    try:
        kept = first.files.create(file=("kept.txt", b"kept"), purpose="user_data")
        stray = "deadbeef" * 8
        with psycopg.connect(postgres_url) as db:
            db.execute("INSERT INTO blobs VALUES ('files', %s, 'stray', 5, 1048576, 0)", (stray,))
            db.execute("INSERT INTO blob_chunks VALUES ('stray', 0, 'lost!')")
            db.execute("INSERT INTO blob_chunks VALUES ('headless', 0, 'lost!')")
            db.execute("UPDATE blobs SET stored_at = 0")  # stored before the grace
    finally:
        first.close()
    second = labelled_client(tmp_path / "home-b", test_label, store_url=postgres_url)
    try:
        _, report = second.gc()  # the start-up reconcile's findings included
        assert report.blobs == [f"files/{stray}"]
        assert "removed orphan blob files/" + stray in report.lines()
        assert second.files.content.retrieve(kept.id).read() == b"kept"
        assert stored(postgres_url, "files") == (1, 1)
    finally:
        second.close()
