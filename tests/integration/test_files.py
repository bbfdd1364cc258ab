"""Files on the real engine: uploads, file_ids, listing what code wrote, downloads, attacks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jupyter_sandbox import BadRequestError, Client, NotFoundError, RequestTooLargeError
from jupyter_sandbox.backends.file_store import FileStore
from tests.conftest import mounts_under

pytestmark = pytest.mark.docker


def run(client: Client, container_id: str, code: str) -> str:
    execution = client.containers.execute(container_id, code, timeout=60)
    assert execution.status == "ok", execution.outputs
    return execution.stdout


def test_seed_example_round_trip_and_assistant_files(client: Client, tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("city,temp\nParis,21\n")
    uploaded = client.files.create(file=data, purpose="user_data")
    assert uploaded.id.startswith("file-")
    assert uploaded.bytes == data.stat().st_size

    container = client.containers.create(name="with-data", file_ids=[uploaded.id])
    assert run(client, container.id, "print(open('/mnt/data/data.csv').read(), end='')") == (
        data.read_text()
    )

    script = tmp_path / "script.py"
    script.write_text("print('hello from the script')\n")
    created = client.containers.files.create(container.id, file=script, path="/workspace/script.py")
    assert created.path == "/workspace/script.py"
    assert created.id.startswith("cfile_")
    assert len(created.id) == 6 + 32
    assert (created.source, created.bytes, created.size) == ("user", 31, 31)

    blob = os.urandom(3 * 2**20 + 7)
    binary = client.containers.files.create(container.id, file=("random.bin", blob))
    assert binary.path == "/mnt/data/random.bin"
    assert client.containers.files.content.retrieve(container.id, binary.id).read() == blob

    run(
        client,
        container.id,
        "import os\nos.makedirs('/workspace/out/deep', exist_ok=True)\n"
        "open('/workspace/out/deep/result.txt', 'w').write('42')\n"
        "open('/mnt/data/chart.png', 'wb').write(b'\\x89PNG' + bytes(100))",
    )
    listed = {f.path: f for f in client.containers.files.list(container.id, limit=2)}
    assert set(listed) == {
        "/mnt/data/data.csv",
        "/workspace/script.py",
        "/mnt/data/random.bin",
        "/workspace/out/deep/result.txt",
        "/mnt/data/chart.png",
    }
    assert listed["/mnt/data/data.csv"].source == "user"
    result = listed["/workspace/out/deep/result.txt"]
    assert (result.source, result.size, result.bytes) == ("assistant", 2, 2)
    assert client.containers.files.content.retrieve(container.id, result.id).read() == b"42"
    assert client.containers.files.retrieve(container.id, result.id).path == result.path

    # The code sees the upload, and a deleted file is gone for the code too.
    assert run(client, container.id, "exec(open('/workspace/script.py').read())") == (
        "hello from the script\n"
    )
    client.containers.files.delete(container.id, created.id)
    assert run(
        client, container.id, "import os; print(os.path.exists('/workspace/script.py'))"
    ) == ("False\n")
    with pytest.raises(NotFoundError):
        client.containers.files.retrieve(container.id, created.id)
    # Files the code removes vanish from the list; the sandbox user can replace our uploads.
    run(client, container.id, "import os; os.remove('/mnt/data/chart.png')")
    run(client, container.id, "open('/mnt/data/random.bin', 'w').write('mine')")
    listed = {f.path: f for f in client.containers.files.list(container.id)}
    assert "/mnt/data/chart.png" not in listed
    assert listed["/mnt/data/random.bin"].bytes == 4

    records = FileStore(client._store)
    assert records.container_files(container.id)
    client.containers.delete(container.id)
    assert records.container_files(container.id) == {}
    assert not (client.settings.home / "sandboxes" / container.id).exists()
    assert mounts_under(client.settings.home) == []


def test_unknown_file_id_fails_creation_and_leaves_nothing(client: Client) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.containers.create(name="bad", file_ids=["file-doesnotexist"])
    assert caught.value.param == "file_ids"
    assert client._store.all() == []
    assert list((client.settings.home / "sandboxes").glob("*")) == []
    assert mounts_under(client.settings.home) == []


@pytest.mark.parametrize(
    "path",
    [
        "../../etc/passwd",
        "/mnt/data/../../etc/passwd",
        "/etc/passwd",
        "/mnt/data/x\x00y",
        "/mnt/data/" + "a" * 4096,
        "relative.txt",
    ],
)
def test_bad_upload_paths_are_refused(client: Client, path: str) -> None:
    container = client.containers.create(name="paths")
    with pytest.raises(BadRequestError) as caught:
        client.containers.files.create(container.id, file=("x", b"x"), path=path)
    assert caught.value.param == "path"
    assert run(client, container.id, "import os; print(os.listdir('/mnt/data'))") == "[]\n"
    client.containers.delete(container.id)


SYMLINK_ATTACK = """
import os
os.symlink('/etc/passwd', '/mnt/data/passwd')            # a container path
os.symlink({canary!r}, '/mnt/data/canary')               # a host path, if the host followed it
os.symlink('/', '/workspace/root')                       # a folder link to climb through
os.symlink('../../../../../../{canary_rel}', '/mnt/data/relative')
open('/mnt/data/innocent.txt', 'w').write('ok')
"""

SWAP = """
import os
os.remove('/mnt/data/innocent.txt')
os.symlink({canary!r}, '/mnt/data/innocent.txt')
"""


def test_symlinks_planted_by_sandbox_code_are_never_followed(
    client: Client, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    canary.write_text("host secret")
    canary_rel = str(canary).lstrip("/")
    container = client.containers.create(name="attack")
    run(client, container.id, SYMLINK_ATTACK.format(canary=str(canary), canary_rel=canary_rel))

    listed = {f.path: f for f in client.containers.files.list(container.id)}
    assert set(listed) == {"/mnt/data/innocent.txt"}  # links are not files

    for path in ("/workspace/root/etc/evil", "/mnt/data/canary", "/mnt/data/relative"):
        with pytest.raises(BadRequestError):
            client.containers.files.create(container.id, file=("x", b"pwned"), path=path)
    assert canary.read_text() == "host secret"
    assert not Path("/etc/evil").exists()

    # Swap a listed file for a link after the host recorded it: the download is refused.
    innocent = listed["/mnt/data/innocent.txt"]
    run(client, container.id, SWAP.format(canary=str(canary)))
    with pytest.raises(BadRequestError, match="link"):
        client.containers.files.content.retrieve(container.id, innocent.id).read()
    assert canary.read_text() == "host secret"
    client.containers.delete(container.id)


def test_file_size_limit_and_file_object_copy(make_client: object, tmp_path: Path) -> None:
    client = make_client(file_size_limit=1024)  # type: ignore[operator]
    with pytest.raises(RequestTooLargeError):
        client.files.create(file=("big.bin", b"x" * 1025), purpose="user_data")
    container = client.containers.create(name="limits")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 2048)
    with pytest.raises(RequestTooLargeError, match="1024 bytes"):
        client.containers.files.create(container.id, file=big)
    # A stream of unknown length is stopped while streaming.
    with big.open("rb") as stream, pytest.raises(RequestTooLargeError):
        client.containers.files.create(container.id, file=stream, path="/mnt/data/s")
    small = client.files.create(file=("notes.txt", b"remember"), purpose="assistants")
    copied = client.containers.files.create(container.id, file_id=small.id)
    assert copied.path == "/mnt/data/notes.txt"
    assert run(client, container.id, "print(open('/mnt/data/notes.txt').read())") == ("remember\n")
    assert [f.path for f in client.containers.files.list(container.id)] == ["/mnt/data/notes.txt"]
    client.containers.delete(container.id)


def test_volume_mode_moves_files_through_the_engine_archive_api(
    make_client: object, tmp_path: Path
) -> None:
    client = make_client(disk_mechanism="volume")  # type: ignore[operator]
    uploaded = client.files.create(file=("in.txt", b"from file_ids"), purpose="user_data")
    container = client.containers.create(name="volumes", file_ids=[uploaded.id])
    assert client._store.get(container.id).extra["storage"] == "volume"  # type: ignore[union-attr]
    blob = os.urandom(2**20 + 3)
    made = client.containers.files.create(
        container.id, file=("r.bin", blob), path="/workspace/a/r.bin"
    )
    assert client.containers.files.content.retrieve(container.id, made.id).read() == blob
    run(
        client,
        container.id,
        "import os; open('/mnt/data/out.txt','w').write('done'); "
        "os.symlink('/etc/passwd', '/mnt/data/link'); print(os.stat('/workspace/a/r.bin').st_uid)",
    )
    listed = {f.path: f for f in client.containers.files.list(container.id)}
    assert set(listed) == {"/mnt/data/in.txt", "/workspace/a/r.bin", "/mnt/data/out.txt"}
    assert listed["/mnt/data/out.txt"].source == "assistant"
    assert (
        client.containers.files.content.retrieve(
            container.id, listed["/mnt/data/out.txt"].id
        ).read()
        == b"done"
    )
    run(
        client,
        container.id,
        "import os; os.remove('/mnt/data/out.txt'); os.symlink('/etc/passwd', '/mnt/data/out.txt')",
    )
    with pytest.raises(BadRequestError):
        client.containers.files.content.retrieve(container.id, listed["/mnt/data/out.txt"].id)
    client.containers.files.delete(container.id, made.id)
    assert (
        run(client, container.id, "import os; print(os.path.exists('/workspace/a/r.bin'))")
        == "False\n"
    )
    client.containers.delete(container.id)
