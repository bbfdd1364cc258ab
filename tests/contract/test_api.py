"""What a user of `Client` can rely on, whatever the backend: one spec, run on each."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from jupyter_sandbox import (
    BadRequestError,
    Client,
    ConflictError,
    NotFoundError,
)
from jupyter_sandbox.types.execution import ErrorOutput, Execution


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_create_retrieve_list_and_delete(api: Client) -> None:
    box = api.containers.create(name="contract")
    assert box.id.startswith("cntr_")
    assert box.status == "ready"
    assert box.name == "contract"
    assert box.memory_limit == "1g"
    assert api.containers.retrieve(box.id).status == "ready"
    assert [c.id for c in api.containers.list()] == [box.id]
    deleted = api.containers.delete(box.id)
    assert deleted.id == box.id
    assert deleted.deleted
    with pytest.raises(NotFoundError) as caught:
        api.containers.retrieve(box.id)
    assert caught.value.param == "container_id"
    with pytest.raises(NotFoundError):
        api.containers.delete(box.id)
    assert list(api.containers.list()) == []


def test_execute_keeps_state_across_calls(api: Client) -> None:
    box = api.containers.create(name="state")
    first = api.containers.execute(box.id, "x = 6 * 7")
    assert first.status == "ok"
    assert first.outputs == []
    second = api.containers.execute(box.id, "print(x)\nx + 1")
    assert second.status == "ok"
    assert second.stdout == "42\n"
    assert [o.type for o in second.outputs] == ["stream", "execute_result"]
    assert second.execution_count == 2
    api.containers.delete(box.id)


def test_a_failing_cell_is_data_not_an_exception(api: Client) -> None:
    box = api.containers.create(name="errors")
    result = api.containers.execute(box.id, "print('before')\n1 / 0")
    assert result.status == "error"
    assert result.stdout == "before\n"
    error = result.outputs[-1]
    assert isinstance(error, ErrorOutput)
    assert error.ename == "ZeroDivisionError"
    assert api.containers.execute(box.id, "print('still alive')").stdout == "still alive\n"
    api.containers.delete(box.id)


def test_files_upload_list_download_and_delete(api: Client) -> None:
    box = api.containers.create(name="files")
    uploaded = api.containers.files.create(box.id, file=("notes.txt", io.BytesIO(b"hello")))
    assert uploaded.path == "/mnt/data/notes.txt"
    assert uploaded.bytes == 5
    seen = api.containers.execute(box.id, "print(open('notes.txt').read())")
    assert seen.stdout == "hello\n"  # the kernel's working folder is /mnt/data
    api.containers.execute(box.id, "open('made.csv', 'w').write('a,b\\n1,2\\n')")
    listed = {f.path: f for f in api.containers.files.list(box.id)}
    assert sorted(listed) == ["/mnt/data/made.csv", "/mnt/data/notes.txt"]
    made = listed["/mnt/data/made.csv"]
    assert made.source == "assistant"
    content = api.containers.files.content.retrieve(made.id, container_id=box.id)
    assert content.read() == b"a,b\n1,2\n"
    api.containers.files.delete(box.id, uploaded.id)
    assert [f.path for f in api.containers.files.list(box.id)] == ["/mnt/data/made.csv"]
    gone = api.containers.execute(box.id, "import os; print(os.path.exists('notes.txt'))")
    assert gone.stdout == "False\n"
    api.containers.delete(box.id)


def test_file_paths_are_checked_and_named(api: Client) -> None:
    box = api.containers.create(name="paths")
    for path in ("/etc/passwd", "/mnt/data/../../etc/passwd", "relative.txt"):
        with pytest.raises(BadRequestError) as caught:
            api.containers.files.create(box.id, file=("x", io.BytesIO(b"x")), path=path)
        assert caught.value.param == "path"
    api.containers.execute(box.id, "import os; os.symlink('/etc/passwd', 'link')")
    with pytest.raises(BadRequestError) as refused:
        api.containers.files.create(box.id, file=("x", io.BytesIO(b"x")), path="/mnt/data/link")
    assert refused.value.param == "path"
    with pytest.raises(NotFoundError) as missing:
        api.containers.files.retrieve(box.id, "cfile_missing")
    assert missing.value.param == "file_id"
    api.containers.delete(box.id)


def test_file_ids_are_copied_in_at_create(api: Client) -> None:
    stored = api.files.create(file=("data.csv", io.BytesIO(b"n\n1\n2\n")))
    box = api.containers.create(name="with-files", file_ids=[stored.id])
    assert [f.path for f in api.containers.files.list(box.id)] == ["/mnt/data/data.csv"]
    counted = api.containers.execute(box.id, "print(len(open('data.csv').readlines()))")
    assert counted.stdout == "3\n"
    api.containers.delete(box.id)
    with pytest.raises(NotFoundError) as caught:
        api.containers.create(name="bad", file_ids=["file_missing"])
    assert caught.value.param == "file_ids"
    assert list(api.containers.list()) == []


def test_skills_are_installed_and_importable(api: Client, tmp_path: Path) -> None:
    folder = tmp_path / "csv-tools"
    folder.mkdir()
    (folder / "SKILL.md").write_text("---\nname: csv-tools\ndescription: Count rows\n---\n")
    (folder / "csvtools.py").write_text("def count(text):\n    return len(text.splitlines())\n")
    skill = api.skills.create(files=folder)
    box = api.containers.create(name="skills", skills=[{"skill_id": skill.id}])
    (installed,) = api.containers.retrieve(box.id).skills
    assert installed.name == "csv-tools"
    assert installed.path == "/mnt/skills/csv-tools"
    assert installed.skill_md == "/mnt/skills/csv-tools/SKILL.md"
    result = api.containers.execute(box.id, "import csvtools; print(csvtools.count('a\\nb'))")
    assert result.stdout == "2\n"
    manual = api.containers.execute(box.id, "print(open('../skills/csv-tools/SKILL.md').read())")
    assert "Count rows" in manual.stdout
    api.containers.delete(box.id)


def test_a_timeout_interrupts_and_keeps_the_kernel(api: Client) -> None:
    box = api.containers.create(name="timeout")
    api.containers.execute(box.id, "kept = 1")
    started = time.monotonic()
    result = api.containers.execute(box.id, "import time; time.sleep(30)", timeout=1)
    assert time.monotonic() - started < 15
    assert result.status == "timeout"
    assert result.message == "Execution timed out after 1 s and was interrupted"
    assert api.containers.execute(box.id, "print(kept)").stdout == "1\n"
    api.containers.delete(box.id)


def test_a_timeout_the_code_ignores_restarts_the_kernel(make_api: Callable[..., Client]) -> None:
    api = make_api(interrupt_grace=1.0)
    box = api.containers.create(name="stuck")
    api.containers.files.create(box.id, file=("kept.txt", io.BytesIO(b"kept")))
    api.containers.execute(box.id, "lost = 1")
    stubborn = (
        "import signal, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "while True:\n    time.sleep(0.05)"
    )
    result = api.containers.execute(box.id, stubborn, timeout=1)
    assert result.status == "timeout"
    assert result.message is not None
    assert "the kernel was restarted" in result.message
    after = api.containers.execute(box.id, "print('lost' in globals(), open('kept.txt').read())")
    assert after.stdout == "False kept\n"
    api.containers.delete(box.id)


def test_interrupt_stops_a_running_execution(api: Client) -> None:
    box = api.containers.create(name="interrupt")
    started = threading.Event()
    results: list[Execution] = []

    def run() -> None:
        code = "print('started', flush=True)\nimport time\ntime.sleep(60)"
        results.append(api.containers.execute(box.id, code, on_output=lambda _: started.set()))

    runner = threading.Thread(target=run)
    runner.start()
    assert started.wait(20)
    api.containers.interrupt(box.id)
    runner.join(timeout=20)
    assert not runner.is_alive()
    (result,) = results
    assert result.status == "error"
    assert result.stdout == "started\n"
    error = result.outputs[-1]
    assert isinstance(error, ErrorOutput)
    assert error.ename == "KeyboardInterrupt"
    assert api.containers.execute(box.id, "print('next')").stdout == "next\n"
    api.containers.delete(box.id)


def test_restart_loses_variables_and_keeps_files(api: Client) -> None:
    box = api.containers.create(name="restart")
    api.containers.execute(box.id, "lost = 1\nopen('kept.txt', 'w').write('kept')")
    api.containers.restart(box.id)
    after = api.containers.execute(box.id, "print('lost' in globals(), open('kept.txt').read())")
    assert after.stdout == "False kept\n"
    api.containers.delete(box.id)


def test_a_dead_kernel_is_reported_and_restarted(api: Client) -> None:
    box = api.containers.create(name="death")
    died = api.containers.execute(box.id, "import os; os._exit(1)")
    assert died.status == "died"
    assert died.message == "The kernel died unexpectedly and was restarted"
    assert api.containers.execute(box.id, "print('back')").stdout == "back\n"
    api.containers.delete(box.id)


def test_the_hard_lifetime_expires_the_sandbox(api: Client) -> None:
    box = api.containers.create(name="short", lifetime_seconds=5)
    assert box.expires_at - box.created_at in (4, 5, 6)
    assert api.containers.execute(box.id, "print(1)").stdout == "1\n"
    assert wait_until(lambda: api.containers.retrieve(box.id).status == "expired", 30)
    with pytest.raises(ConflictError) as caught:
        api.containers.execute(box.id, "print(1)")
    assert caught.value.param == "container_id"
    api.containers.delete(box.id)


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"memory_limit": "3g"}, "memory_limit"),
        ({"lifetime_seconds": 1}, "lifetime_seconds"),
        ({"expires_after": {"anchor": "last_active_at", "minutes": 0}}, "expires_after.minutes"),
        ({"network_policy": {"type": "open"}}, "network_policy"),
    ],
)
def test_bad_create_parameters_are_named(
    api: Client, params: dict[str, object], param: str
) -> None:
    with pytest.raises(BadRequestError) as caught:
        api.containers.create(name="bad", **params)  # type: ignore[arg-type]
    assert str(caught.value.param).startswith(param)
    assert list(api.containers.list()) == []


def test_bad_execute_parameters_are_named(api: Client) -> None:
    with pytest.raises(NotFoundError) as unknown:
        api.containers.execute("cntr_missing", "1")
    assert unknown.value.param == "container_id"
    box = api.containers.create(name="params")
    with pytest.raises(BadRequestError) as timeout:
        api.containers.execute(box.id, "1", timeout=-1)
    assert timeout.value.param == "timeout"
    with pytest.raises(BadRequestError) as code:
        api.containers.execute(box.id, 1)  # type: ignore[arg-type]
    assert code.value.param == "code"
    api.containers.delete(box.id)
