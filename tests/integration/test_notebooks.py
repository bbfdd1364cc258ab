"""The notebooks in notebooks/ still run and still show what they say (`pytest --nbval`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_LABEL, labelled_objects, remove_labelled

pytestmark = pytest.mark.docker

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@pytest.mark.parametrize("notebook", ["magics_tour.ipynb", "jupyterlab_kernel.ipynb"])
def test_notebook_passes_nbval(notebook: str, home: Path, test_label: str, tmp_path: Path) -> None:
    env = dict(
        os.environ,
        JUPYTER_SANDBOX_HOME=str(home),
        JUPYTER_SANDBOX_EXTRA_LABELS=json.dumps({TEST_LABEL: test_label}),
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbval",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--rootdir={NOTEBOOKS.parent}",
            str(NOTEBOOKS / notebook),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    leaked = remove_labelled(f"{TEST_LABEL}={test_label}")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
    assert not leaked, f"the notebook left {leaked}"
    assert not labelled_objects(f"{TEST_LABEL}={test_label}")
