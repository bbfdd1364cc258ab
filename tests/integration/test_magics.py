"""The magics end to end: a notebook run by nbclient, and the widgets panel on a real engine."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from jupyter_sandbox import Client
from jupyter_sandbox.jupyter.widgets import Panel
from tests.conftest import TEST_LABEL, labelled_objects, remove_labelled

pytestmark = pytest.mark.docker


def outputs(cell: nbformat.NotebookNode) -> list[dict[str, object]]:
    return [dict(o) for o in cell.outputs]


def test_notebook_with_magics_runs_end_to_end(
    home: Path, test_label: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_SANDBOX_HOME", str(home))
    monkeypatch.setenv("JUPYTER_SANDBOX_EXTRA_LABELS", json.dumps({TEST_LABEL: test_label}))
    sources = [
        "%load_ext jupyter_sandbox",
        "%sandbox create --name nbclient --memory 512m",
        "%%sandbox\nimport time\nfor i in range(3):\n    print(i, flush=True)\n"
        "    time.sleep(0.05)",
        "%%sandbox\nimport pandas as pd\npd.DataFrame({'a': [1, 2]})",
        "%%sandbox\nimport matplotlib.pyplot as plt\nplt.plot([1, 2]); plt.show()",
        "%%sandbox\n1/0",
        "%sandbox create --memory 3g",
        "%sandbox nonsense",
        "%%sandbox --timeout 1\nwhile True: pass",
        "%sandbox list",
        "%sandbox delete",
    ]
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "P"}
    NotebookClient(nb, timeout=120, allow_errors=True, kernel_name="python3").execute()
    cells = nb.cells

    assert "now in use" in cells[1].outputs[0]["text"]
    streamed = "".join(o["text"] for o in cells[2].outputs)
    assert streamed == "0\n1\n2\n"
    (table,) = outputs(cells[3])
    assert table["output_type"] == "execute_result"
    assert "<table" in table["data"]["text/html"]  # type: ignore[index]
    (plot,) = outputs(cells[4])
    assert plot["output_type"] == "display_data"
    assert "image/png" in plot["data"]  # type: ignore[operator]
    (error,) = outputs(cells[5])
    assert (error["output_type"], error["ename"], error["evalue"]) == (
        "error",
        "ZeroDivisionError",
        "division by zero",
    )
    assert any("1/0" in line or "1\x1b" in line for line in error["traceback"])  # type: ignore[attr-defined]
    assert "UsageError: Invalid memory_limit" in cells[6].outputs[0]["text"]
    assert "invalid choice: 'nonsense'" in cells[7].outputs[0]["text"]
    (timeout,) = outputs(cells[8])
    assert (timeout["output_type"], timeout["ename"]) == ("error", "SandboxTimeout")
    listing = cells[9].outputs[0]["text"]
    assert "* " in listing
    assert "nbclient" in listing
    assert cells[10].outputs[0]["text"].startswith("Deleted sandbox cntr_")
    assert not labelled_objects(f"{TEST_LABEL}={test_label}")
    remove_labelled(f"{TEST_LABEL}={test_label}")


def test_panel_lists_creates_and_deletes(client: Client) -> None:
    panel = Panel(client=client, refresh_seconds=None)
    try:
        assert "No sandboxes" in panel.rows.children[0].value
        panel.name_input.value = "from-panel"
        panel.memory_input.value = "512m"
        panel.create_button.click()
        (container,) = list(client.containers.list())
        assert (container.name, container.memory_limit) == ("from-panel", "512m")
        assert panel.selected == container.id
        header, row = panel.rows.children
        columns = ("ID", "NAME", "STATUS", "MEMORY", "NETWORK", "TIME LEFT")
        titles = [re.findall(r'title="([^"]*)"', cell.value) for cell in header.children]
        assert titles[1:7] == [[name] for name in columns]
        text = " ".join(cell.value for cell in row.children if hasattr(cell, "value"))
        assert container.id in text
        assert "512m" in text
        assert "disabled" in text
        assert "19m" in text or "20m" in text
        assert container.id in panel.files_title.value

        panel.network_input.value = "allow=not a domain"
        panel.create_button.click()
        assert "Invalid" in panel.message.value

        (delete_button,) = [c for c in row.children if getattr(c, "description", "") == "Delete"]
        delete_button.click()
        assert list(client.containers.list()) == []
        assert panel.selected is None
        assert "No sandboxes" in panel.rows.children[0].value
    finally:
        panel.close()


def test_snapshot_then_fork_in_a_notebook_gives_an_independent_second_sandbox(
    home: Path, test_label: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_SANDBOX_HOME", str(home))
    monkeypatch.setenv("JUPYTER_SANDBOX_EXTRA_LABELS", json.dumps({TEST_LABEL: test_label}))
    sources = [
        "%load_ext jupyter_sandbox",
        "%sandbox create --name source",
        "%%sandbox\nimport pandas as pd\ndf = pd.DataFrame({'a': [1, 2, 3]})",
        "source = get_ipython().magics_manager.registry['SandboxMagics'].current",
        "%sandbox snapshot --name nb",
        "%sandbox fork --name forked",
        "%%sandbox\nint(df['a'].sum())",
        "%%sandbox\ndf['a'] = 0\nint(df['a'].sum())",
        "%%sandbox $source\nint(df['a'].sum())",
        "%sandbox snapshots $source",
        "%sandbox delete",
        "%sandbox delete $source",
    ]
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "P"}
    NotebookClient(nb, timeout=180, allow_errors=False, kernel_name="python3").execute()
    cells = nb.cells
    assert cells[4].outputs[0]["text"].startswith("Snapshot snap_")
    assert "1 variables, 1 imports" in cells[4].outputs[0]["text"]
    forked = cells[5].outputs[0]["text"]
    assert re.match(r"Forked snap_\w+ into sandbox cntr_\w+ \(forked\); now in use", forked)
    assert cells[6].outputs[0]["data"]["text/plain"] == "6"  # the fork holds the DataFrame
    assert cells[7].outputs[0]["data"]["text/plain"] == "0"  # and changes only its own
    assert cells[8].outputs[0]["data"]["text/plain"] == "6"  # the source is untouched
    assert cells[9].outputs[0]["text"].startswith("snap_")
    assert not labelled_objects(f"{TEST_LABEL}={test_label}").get("container")
