"""Files without Docker: path rules, blobs, the host-side walk, tar building, skills parsing."""

from __future__ import annotations

import base64
import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from jupyter_sandbox import BadRequestError, NotFoundError, RequestTooLargeError, Settings
from jupyter_sandbox.backends.blobs import BlobStore
from jupyter_sandbox.backends.engine_files import tar_stream
from jupyter_sandbox.backends.file_store import FileStore
from jupyter_sandbox.backends.host_files import HostFiles
from jupyter_sandbox.backends.store import Store
from jupyter_sandbox.core.files import FileService
from jupyter_sandbox.core.resolved_skills import install
from jupyter_sandbox.core.skill_files import check_relative, front_matter
from jupyter_sandbox.core.skills import SkillService
from jupyter_sandbox.types.container_file import ContainerFile, check_path
from jupyter_sandbox.types.skill import InlineSkill, SkillParams, SkillReference


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("/mnt/data/x.csv", True),
        ("/workspace/a/b/c.py", True),
        ("/mnt/data/" + "n" * 255, True),
        ("/mnt/data", False),
        ("/mnt/data/", False),
        ("mnt/data/x", False),
        ("/mnt/data/../etc/passwd", False),
        ("/mnt/data/a/../../etc/passwd", False),
        ("/mnt/data/./x", False),
        ("/mnt/data//x", False),
        ("/mnt/data/x\x00.txt", False),
        ("/mnt/data/x\n", False),
        ("/etc/passwd", False),
        ("/mnt/database/x", False),
        ("/tmp/x", False),
        ("/mnt/data/" + "n" * 256, False),
        ("/mnt/data/" + "a/" * 600 + "x", False),
        ("", False),
    ],
)
def test_path_rules(path: str, ok: bool) -> None:
    if ok:
        assert check_path(path) == path
    else:
        with pytest.raises(ValueError, match="path"):
            check_path(path)


def test_container_file_has_seed_size_and_openai_fields() -> None:
    wire = ContainerFile(
        id="cfile_" + "0" * 32,
        container_id="cntr_x",
        path="/mnt/data/a",
        bytes=3,
        created_at=1,
        source="user",
    ).model_dump()
    assert wire["object"] == "container.file"
    assert (wire["bytes"], wire["size"]) == (3, 3)


def test_blobs_are_content_addressed_and_capped(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    first = blobs.put(io.BytesIO(b"hello"), limit=10)
    assert blobs.put(io.BytesIO(b"hello"), limit=10) == first
    assert blobs.path(first[0]).read_bytes() == b"hello"
    with pytest.raises(RequestTooLargeError):
        blobs.put(io.BytesIO(b"x" * 11), limit=10)  # size unknown up front: caught mid-stream
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []


@pytest.fixture
def services(tmp_path: Path) -> tuple[FileService, SkillService]:
    settings = Settings(home=tmp_path / "home", file_size_limit=1000)
    store = Store(settings.store_path)
    records = FileStore(store)
    blobs = BlobStore(settings.home / "blobs")
    return FileService(settings, records, blobs), SkillService(settings, records, blobs)


def test_files_create_list_page_content_delete(
    services: tuple[FileService, SkillService], tmp_path: Path
) -> None:
    files, _ = services
    local = tmp_path / "data.csv"
    local.write_bytes(b"a,b\n1,2\n")
    made = [files.create(local, purpose="user_data", project="default") for _ in range(3)]
    assert made[0].id.startswith("file-")
    assert made[0].filename == "data.csv"
    assert made[0].bytes == 8
    listed = files.list({"limit": 2}, project="default")
    assert len(listed.data) == 2
    assert listed.has_more
    assert [f.id for f in listed] == [f.id for f in reversed(made)]  # auto-paging, newest first
    assert files.content(made[0].id, project="default").read() == b"a,b\n1,2\n"
    files.delete(made[0].id, project="default")
    with pytest.raises(NotFoundError):
        files.retrieve(made[0].id, project="default")
    assert (
        files.content(made[1].id, project="default").read() == b"a,b\n1,2\n"
    )  # the shared blob stays
    with pytest.raises(RequestTooLargeError):
        files.create(("big.bin", b"x" * 1001), purpose="user_data", project="default")
    with pytest.raises(BadRequestError):
        files.create(local, purpose="nonsense", project="default")
    with pytest.raises(BadRequestError):
        files.create(str(local), purpose="user_data", project="default")


def test_host_files_refuse_links_fifos_and_escape(tmp_path: Path) -> None:
    data, workspace = tmp_path / "data", tmp_path / "workspace"
    data.mkdir()
    workspace.mkdir()
    secret = tmp_path / "secret"
    secret.write_text("host secret")
    host = HostFiles({"/mnt/data": data, "/workspace": workspace}, uploads=tmp_path / "uploads")
    assert host.write("/mnt/data/a/b.txt", io.BytesIO(b"hi"), limit=10, size=2) == 2
    assert host.open("/mnt/data/a/b.txt").read() == b"hi"
    (data / "link").symlink_to(secret)
    (data / "dirlink").symlink_to(tmp_path)
    os.mkfifo(data / "fifo")
    for path in ("/mnt/data/link", "/mnt/data/dirlink/secret", "/mnt/data/fifo"):
        with pytest.raises(BadRequestError):
            host.open(path)
    with pytest.raises(BadRequestError):
        host.write("/mnt/data/dirlink/new", io.BytesIO(b"x"), limit=10, size=1)
    assert not (tmp_path / "new").exists()
    with pytest.raises(BadRequestError, match="link"):  # a link at the name: refused
        host.write("/mnt/data/link", io.BytesIO(b"mine"), limit=10, size=4)
    assert secret.read_text() == "host secret"
    assert (data / "link").is_symlink()
    with pytest.raises(RequestTooLargeError):
        host.write("/mnt/data/big", io.BytesIO(b"x" * 20), limit=10, size=None)
    assert sorted(f.path for f in host.scan().files) == ["/mnt/data/a/b.txt"]
    host.delete("/mnt/data/a/b.txt")
    with pytest.raises(NotFoundError):
        host.delete("/mnt/data/a/b.txt")


def test_tar_stream_is_plain_tar_owned_by_the_sandbox() -> None:
    raw = b"".join(tar_stream(["d", "e", "f.bin"], io.BytesIO(b"\x00\x01" * 700), 1400, mtime=0))
    assert raw[:2] != b"\x1f\x8b"  # not gzip
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as archive:
        members = archive.getmembers()
        assert [m.name for m in members] == ["d", "d/e", "d/e/f.bin"]
        assert {(m.uid, m.gid) for m in members} == {(1000, 1000)}
        handle = archive.extractfile(members[-1])
        assert handle is not None
        assert handle.read() == b"\x00\x01" * 700


@pytest.mark.parametrize(
    "path", ["../x", "/abs", "a/../../x", "a//b", "a\\b", "nul\x00", "./a", "a/" + "b" * 256]
)
def test_skill_paths_must_be_relative_and_clean(path: str) -> None:
    with pytest.raises(ValueError, match=r"paths|path or a name|NUL"):
        check_relative(path)


def test_front_matter() -> None:
    text = "---\nname: csv-tools\ndescription: 'Reads CSV'\n---\n# Body\nname: not this\n"
    assert front_matter(text) == {"name": "csv-tools", "description": "Reads CSV"}
    assert front_matter("no fences") == {}


def test_skill_params_accept_seed_and_real_forms() -> None:
    params = SkillParams.model_validate(
        {
            "skills": [
                {"skill_id": "skill_abc"},
                {"type": "skill_reference", "skill_id": "skill_abc", "version": 2},
                {"type": "inline", "source": {"files": [{"path": "h.py", "content": "x=1"}]}},
                {
                    "type": "inline",
                    "name": "zipped",
                    "description": "d",
                    "source": {"type": "base64", "media_type": "application/zip", "data": "UEs="},
                },
            ]
        }
    )
    first, second, third, fourth = params.skills
    assert isinstance(first, SkillReference)
    assert first.version is None
    assert isinstance(second, SkillReference)
    assert second.version == "2"
    assert isinstance(third, InlineSkill)
    assert isinstance(fourth, InlineSkill)


def _zip(entries: dict[str, bytes], *, link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
        if link is not None:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def test_skills_from_folder_list_and_zip(
    services: tuple[FileService, SkillService], tmp_path: Path
) -> None:
    _, skills = services
    folder = tmp_path / "csv-tools"
    folder.mkdir()
    (folder / "SKILL.md").write_text("---\nname: csv-tools\ndescription: CSV\n---\n")
    (folder / "tool.py").write_text("X = 1\n")
    made = skills.create(folder, project="default")
    assert (made.name, made.description, made.default_version) == ("csv-tools", "CSV", "1")
    second = skills.create_version(
        made.id, [folder / "SKILL.md", folder / "tool.py"], project="default"
    )
    assert second.version == "2"
    assert skills.retrieve(made.id, project="default").latest_version == "2"
    assert skills.retrieve(made.id, project="default").default_version == "1"
    assert [v.version for v in skills.list_versions(made.id, {}, project="default")] == ["2", "1"]
    with zipfile.ZipFile(io.BytesIO(skills.content(made.id, project="default").read())) as archive:
        assert sorted(archive.namelist()) == ["csv-tools/SKILL.md", "csv-tools/tool.py"]
    zipped = skills.create(
        ("pack.zip", _zip({"pack/SKILL.md": b"---\nname: pack\n---\n"})), project="default"
    )
    assert zipped.name == "pack"
    resolved = skills.resolve(
        [
            {"skill_id": made.id},
            {"type": "inline", "source": {"files": [{"path": "helper.py", "content": "y=2"}]}},
        ],
        project="default",
    )
    target = tmp_path / "installed"
    target.mkdir()
    installed = install(resolved, target)
    assert [s.path for s in installed] == ["/mnt/skills/csv-tools", "/mnt/skills/inline-1"]
    assert installed[0].skill_md == "/mnt/skills/csv-tools/SKILL.md"
    assert (target / "inline-1" / "helper.py").read_text() == "y=2"
    skills.delete(made.id, project="default")
    with pytest.raises(NotFoundError):
        skills.resolve([{"skill_id": made.id}], project="default")


@pytest.mark.parametrize(
    ("entries", "link", "message"),
    [
        ({"../evil.py": b"x"}, None, "'..'"),
        ({"/abs.py": b"x"}, None, "relative"),
        ({"ok.py": b"x"}, "link", "regular files"),
        ({"big.bin": b"x" * 2000}, None, "size limit"),
    ],
)
def test_inline_zip_skills_are_checked(
    tmp_path: Path, entries: dict[str, bytes], link: str | None, message: str
) -> None:
    settings = Settings(home=tmp_path / "home", skill_size_limit=1024)
    store = Store(settings.store_path)
    skills = SkillService(settings, FileStore(store), BlobStore(settings.home / "blobs"))
    data = base64.b64encode(_zip(entries, link=link)).decode()
    inline = {
        "type": "inline",
        "name": "z",
        "description": "d",
        "source": {"type": "base64", "media_type": "application/zip", "data": data},
    }
    with pytest.raises(BadRequestError, match=message) as caught:
        skills.resolve([inline], project="default")
    assert caught.value.param == "skills"


def test_duplicate_and_bad_inline_names_are_refused(
    services: tuple[FileService, SkillService],
) -> None:
    _, skills = services
    inline = {"type": "inline", "source": {"files": [{"path": "a.py", "content": ""}]}}
    with pytest.raises(BadRequestError, match="two skills"):
        skills.resolve([{**inline, "name": "same"}, {**inline, "name": "same"}], project="default")
    with pytest.raises(BadRequestError):
        skills.resolve([{**inline, "name": "../up"}], project="default")
