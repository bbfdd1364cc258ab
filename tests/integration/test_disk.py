"""The disk cap: a sparse ext4 image per sandbox; ENOSPC past it; nothing left after a crash."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jupyter_sandbox import Client, RequestTooLargeError, Settings
from jupyter_sandbox.backends.disk import Disks, describe
from tests.conftest import mounts_under

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="the loop-mounted disk cap needs root"),
]

CAP = 64 * 2**20

FILL = """
import errno, subprocess
dd = subprocess.run(['dd', 'if=/dev/zero', 'of=/mnt/data/fill', 'bs=1M', 'count=100'],
                    capture_output=True, text=True)
print(dd.returncode, 'No space left on device' in dd.stderr)
try:
    with open('/workspace/more', 'wb') as handle:
        handle.write(b'x' * 2**20)
        handle.flush()
except OSError as exc:
    print(errno.errorcode[exc.errno])
"""


def test_writing_past_the_cap_fails_with_enospc(make_client: object) -> None:
    client: Client = make_client(disk_limit=CAP)  # type: ignore[operator]
    mechanism, detail, capped = describe(client.settings)
    assert (mechanism, capped) == ("loop", True), detail
    container = client.containers.create(name="disk-cap")
    execution = client.containers.execute(container.id, FILL, timeout=60)
    assert execution.stdout.split() == ["1", "True", "ENOSPC"], execution.outputs
    image = client.settings.home / "sandboxes" / container.id / "disk.img"
    assert image.stat().st_blocks * 512 <= CAP  # the host spent no more than the cap
    with pytest.raises(RequestTooLargeError, match="disk is full"):
        client.containers.files.create(container.id, file=("more.bin", b"x" * 2**20))
    # Freeing space makes the sandbox usable again.
    check = "import os; os.remove('/mnt/data/fill'); open('/mnt/data/ok','w').write('ok'); print(1)"
    assert client.containers.execute(container.id, check).stdout == "1\n"
    client.containers.delete(container.id)
    assert not image.exists()


def test_default_cap_is_ten_gib_and_sparse(client: Client) -> None:
    container = client.containers.create(name="default-cap")
    size = client.containers.execute(
        container.id, "import os; s = os.statvfs('/mnt/data'); print(s.f_blocks * s.f_frsize)"
    ).stdout
    assert 0.97 * 10 * 2**30 <= int(size) <= 10 * 2**30
    image = client.settings.home / "sandboxes" / container.id / "disk.img"
    assert image.stat().st_size == 10 * 2**30
    assert image.stat().st_blocks * 512 < 64 * 2**20  # sparse: almost nothing used yet
    client.containers.delete(container.id)


CRASH = """
import os, sys
from jupyter_sandbox import Client
from jupyter_sandbox.core.kernels import Kernels

def crash(*args, **kwargs):
    print("crashing", flush=True)
    os._exit(1)  # no cleanup at all, like a kill -9 in the middle of create

Kernels.open = crash  # after the disk is mounted and the container started
client = Client(home=sys.argv[1], extra_labels={"org.jupyter-sandbox.test": sys.argv[2]},
                disk_limit=%d)
client.containers.create(name="crashing")
"""


def test_reconcile_unmounts_and_removes_disks_left_by_a_crash(
    home: Path, test_label: str, make_client: object
) -> None:
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CRASH % CAP), str(home), test_label],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.stdout.strip() == "crashing", child.stderr
    [folder] = (home / "sandboxes").iterdir()
    assert mounts_under(folder)
    orphan = "cntr_" + "0" * 48  # a folder no record owns
    Disks(_settings(home)).create(orphan)
    client: Client = make_client(disk_limit=CAP)  # type: ignore[operator]  # reconciles
    record = client._store.get(folder.name)
    assert record is not None
    assert record.status == "failed"
    assert mounts_under(home) == []
    assert list((home / "sandboxes").iterdir()) == []
    assert client.reconcile().storage == []


def _settings(home: Path) -> Settings:
    return Settings(home=home, disk_limit=CAP)
