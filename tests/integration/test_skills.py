"""Skills on the real engine: by id and inline (seed and API forms), read-only, importable."""

from __future__ import annotations

import base64
import io
import zipfile
from pathlib import Path

import pytest

from jupyter_sandbox import BadRequestError, Client, NotFoundError
from jupyter_sandbox.types.params import InlineSkillParam

pytestmark = pytest.mark.docker


def make_skill(folder: Path) -> Path:
    folder.mkdir()
    (folder / "SKILL.md").write_text(
        "---\nname: csv-tools\ndescription: Count rows of CSV files\n---\nUse csvtools.\n"
    )
    (folder / "csvtools.py").write_text(
        "def count_rows(text):\n    return len(text.splitlines()) - 1\n"
    )
    return folder


def test_seed_skills_example(client: Client, tmp_path: Path) -> None:
    skill = client.skills.create(files=make_skill(tmp_path / "csv-tools"))
    assert skill.id.startswith("skill_")
    assert (skill.name, skill.description, skill.default_version) == (
        "csv-tools",
        "Count rows of CSV files",
        "1",
    )
    assert [s.id for s in client.skills.list()] == [skill.id]

    container = client.containers.create(
        name="with-skills",
        skills=[
            {"skill_id": skill.id},
            {
                "type": "inline",
                "source": {
                    "files": [
                        {"path": "helper.py", "content": "def process(data): return data.upper()"}
                    ]
                },
            },
        ],
    )
    execution = client.containers.execute(
        container.id, "from helper import process; print(process('abc'))"
    )
    assert execution.stdout == "ABC\n"
    assert (
        client.containers.execute(
            container.id, "import csvtools; print(csvtools.count_rows('a\\n1\\n2'))"
        ).stdout
        == "2\n"
    )
    installed = {s.name: s for s in client.containers.retrieve(container.id).skills}
    assert installed["csv-tools"].skill_md == "/mnt/skills/csv-tools/SKILL.md"
    assert (installed["csv-tools"].id, installed["csv-tools"].version) == (skill.id, "1")
    assert installed["inline-1"].path == "/mnt/skills/inline-1"
    options = client.containers.execute(
        container.id,
        "print([l.split()[3] for l in open('/proc/self/mounts') if l.split()[1] == '/mnt/skills'])",
    ).stdout
    assert options.startswith("['ro,"), options  # read-only, besides being root-owned
    client.containers.delete(container.id)


def test_hosted_api_forms_versions_and_errors(client: Client, tmp_path: Path) -> None:
    folder = make_skill(tmp_path / "csv-tools")
    skill = client.skills.create(files=folder)
    (folder / "csvtools.py").write_text("def count_rows(text):\n    return 'v2'\n")
    version = client.skills.versions.create(skill.id, files=folder)
    assert (version.version, version.skill_id, version.object) == ("2", skill.id, "skill.version")

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("zipped/SKILL.md", "---\nname: zipped\ndescription: z\n---\n")
        archive.writestr("zipped/ztool.py", "ANSWER = 42\n")
    inline: InlineSkillParam = {
        "type": "inline",
        "name": "zipped",
        "description": "z",
        "source": {
            "type": "base64",
            "media_type": "application/zip",
            "data": base64.b64encode(buffer.getvalue()).decode(),
        },
    }
    container = client.containers.create(
        name="real-forms",
        skills=[{"type": "skill_reference", "skill_id": skill.id, "version": "latest"}, inline],
    )
    out = client.containers.execute(
        container.id, "import csvtools, ztool; print(csvtools.count_rows(''), ztool.ANSWER)"
    )
    assert out.stdout == "v2 42\n"
    client.containers.delete(container.id)

    with pytest.raises(NotFoundError):
        client.containers.create(name="x", skills=[{"skill_id": "skill_missing"}])
    bad: InlineSkillParam = {
        "type": "inline",
        "source": {"files": [{"path": "../escape.py", "content": ""}]},
    }
    with pytest.raises(BadRequestError) as caught:
        client.containers.create(name="x", skills=[bad])
    assert caught.value.param == "skills"
    assert [r.status for r in client._store.all()] == ["terminated"]
    client.skills.delete(skill.id)
    with pytest.raises(NotFoundError):
        client.skills.retrieve(skill.id)
