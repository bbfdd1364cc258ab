"""JupyterLab in headless Chromium: the sandbox kernel in the launcher, a cell run in it.

Screenshots go to the test's temporary folder; with JUPYTER_SANDBOX_UPDATE_SCREENSHOTS=1 they
also replace the ones in docs/img/.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import pytest

from jupyter_sandbox import Client
from jupyter_sandbox.jupyter.kernelspec import kernel_json
from tests.conftest import TEST_LABEL, labelled_objects, remove_labelled, wait_until
from tests.integration.jupyter_harness import jupyter_process

pytestmark = pytest.mark.docker

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
CELL = (
    "import glob, os\n"
    "path = (glob.glob('/sys/fs/cgroup/memory.max')\n"
    "        + glob.glob('/sys/fs/cgroup/memory/memory.limit_in_bytes'))[0]\n"
    "print('user', os.getuid())\n"
    "print('memory limit', int(open(path).read()) // 2**20, 'MiB')\n"
    "print('network', os.listdir('/sys/class/net'))"
)


@pytest.fixture
def lab(tmp_path: Path, home: Path, test_label: str) -> Iterator[tuple[str, str]]:
    """`jupyter lab` on a free loopback port, seeing a labelled "Python 3 (sandbox)" kernel."""
    kernels = tmp_path / "jupyter" / "kernels" / "python3-sandbox"
    kernels.mkdir(parents=True)
    spec = kernel_json(memory="512m", home=str(home), extra_labels={TEST_LABEL: test_label})
    (kernels / "kernel.json").write_text(json.dumps(spec))
    for logo in ("logo-32x32.png", "logo-64x64.png", "logo-svg.svg"):
        shutil.copy(DOCS_IMG.parents[1] / "kernelspecs/python3-sandbox" / logo, kernels)
    root = tmp_path / "work"
    root.mkdir()
    lab_options = [
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    try:
        with jupyter_process(
            "jupyterlab",
            jupyter_path=tmp_path / "jupyter",
            root=root,
            log_path=tmp_path / "lab.log",
            extra=lab_options,
        ) as (base, token):
            try:
                yield base, token
            finally:
                shutdown_kernels(base, token)
    finally:
        leaked = remove_labelled(f"{TEST_LABEL}={test_label}")
        assert not leaked, f"leaked: {leaked}"


def shutdown_kernels(base: str, token: str) -> None:
    """Shut down every kernel the server runs, so their sandboxes are deleted."""
    request = Request(f"{base}/api/kernels", headers={"Authorization": f"token {token}"})
    try:
        with urlopen(request, timeout=10) as response:
            running = json.loads(response.read())
    except OSError:
        running = []
    for kernel in running:
        delete = Request(
            f"{base}/api/kernels/{kernel['id']}",
            method="DELETE",
            headers={"Authorization": f"token {token}"},
        )
        with urlopen(delete, timeout=60):
            pass


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_jupyterlab_runs_a_cell_in_the_sandbox_kernel(
    lab: tuple[str, str], tmp_path: Path, home: Path, test_label: str
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, token = lab
    shots = tmp_path / "shots"
    shots.mkdir()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        page.goto(f"{base}/lab?token={token}")
        card = page.locator(".jp-LauncherCard[title='Python 3 (sandbox)']").first
        expect(card).to_be_visible(timeout=60_000)
        news = page.get_by_role("button", name="No", exact=True)
        if news.count():
            news.click()
        page.screenshot(path=str(shots / "jupyterlab-launcher.png"))

        card.click()
        editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
        expect(editor).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Python 3 (sandbox) | Idle")).to_be_visible(timeout=60_000)
        editor.click()
        page.keyboard.insert_text(CELL)
        page.keyboard.press("Shift+Enter")
        output = page.locator(".jp-OutputArea-output").first
        expect(output).to_contain_text("memory limit 512 MiB", timeout=60_000)
        assert "user 1000" in output.inner_text()
        assert "network ['lo']" in output.inner_text()
        page.screenshot(path=str(shots / "jupyterlab-sandbox-kernel.png"))
        browser.close()

    with Client(home=home) as client:
        (container,) = list(client.containers.list())
    assert container.memory_limit == "512m"
    assert labelled_objects(f"{TEST_LABEL}={test_label}")["container"]
    if os.environ.get("JUPYTER_SANDBOX_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        for shot in shots.iterdir():
            shutil.copy(shot, DOCS_IMG / shot.name)


# Each attack sets a marker in the page and creates a file through the server's REST API, as
# the user; the same script run by the test itself (the control) proves it would work.
def attack_script(name: str) -> str:
    """JavaScript that marks the page and PUTs `name` through /api/contents."""
    return (
        "window.__pwned = 1; document.title = 'PWNED';"
        "var x = (document.cookie.match(/_xsrf=([^;]+)/) || [])[1] || '';"
        f"fetch('/api/contents/{name}', {{method: 'PUT', credentials: 'same-origin',"
        " headers: {'Content-Type': 'application/json', 'X-XSRFToken': x},"
        " body: JSON.stringify({type: 'file', format: 'text', content: 'pwned'})});"
    )


def attack_cell(name: str) -> str:
    """Sandbox code that tries every way to get `attack_script(name)` to run in the page."""
    encoded = base64.b64encode(attack_script(name).encode()).decode()
    run = f"eval(atob('{encoded}'))"
    return (
        "from IPython.display import HTML, Javascript, Markdown, display\n"
        f'run = "{run}"\n'
        "display(Javascript(run))\n"
        "display(HTML('<script>' + run + '</script>'))\n"
        "display(HTML('<img src=x onerror=\"' + run + '\">'))\n"
        "display(HTML('<iframe srcdoc=\"<script>parent.' + run + '</script>\"></iframe>'))\n"
        "display(Markdown('md <img src=x onerror=\"' + run + '\">'))\n"
        "display(Markdown(r'$\\href{javascript:' + run + '}{clickme}$'))\n"
        "display({'image/svg+xml': '<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"'"
        " + run + '\"/>'}, raw=True)\n"
        "k = get_ipython().kernel\n"
        "k.session.send(k.iopub_socket, 'display_data', {'data': {'application/javascript':"
        " run, 'text/html': '<script>' + run + '</script>forged'}, 'metadata': {}},"
        " parent=k.get_parent())\n"
        "print('attack done')"
    )


RICH_CELL = (
    "import matplotlib.pyplot as plt, pandas as pd\n"
    "plt.plot([1, 3, 2]); plt.show()\n"
    "pd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})"
)


@pytest.fixture
def lab_for_magics(
    request: pytest.FixtureRequest, home: Path, test_label: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, str]:
    """The `lab` server, whose local kernels' `%sandbox` magics use this test's state folder."""
    monkeypatch.setenv("JUPYTER_SANDBOX_HOME", str(home))
    monkeypatch.setenv("JUPYTER_SANDBOX_EXTRA_LABELS", json.dumps({TEST_LABEL: test_label}))
    return request.getfixturevalue("lab")  # type: ignore[no-any-return]


def _run_cell(page: Any, code: str, index: int) -> None:
    editor = page.locator(".jp-Notebook .jp-Cell .cm-content").nth(index)
    editor.click()
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")


def _open_notebook(page: Any, base: str, token: str, kernel_title: str, workspace: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{base}/lab/workspaces/{workspace}?token={token}")  # its own launcher
    card = page.locator(f".jp-LauncherCard[title='{kernel_title}']").first
    expect(card).to_be_visible(timeout=60_000)
    news = page.get_by_role("button", name="No", exact=True)
    if news.count():
        news.click()
    card.click()
    expect(page.locator(".jp-Notebook .jp-Cell .cm-content").first).to_be_visible(timeout=60_000)
    expect(page.get_by_text(f"{kernel_title} | Idle")).to_be_visible(timeout=90_000)


def _assert_nothing_ran(page: Any, root: Path, name: str, control: str) -> None:
    """No marker, no file; then the control script proves the check could have failed."""
    assert page.locator("[href^='javascript' i]").count() == 0  # no link to click
    assert page.evaluate("window.__pwned") is None
    assert page.title() != "PWNED"
    page.evaluate(attack_script(control))
    wait_until((root / control).exists, 30, what="the control script to run")
    assert (root / control).read_text() == "pwned", "the control script did not run"
    assert page.evaluate("window.__pwned") == 1
    assert not (root / name).exists(), f"sandbox output created {name} on the host"


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_sandbox_outputs_run_no_script_in_jupyterlab(
    lab_for_magics: tuple[str, str], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, token = lab_for_magics
    root = tmp_path / "work"
    shots = tmp_path / "shots"
    shots.mkdir()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        # The sandbox kernel, chosen in the launcher: outputs come through the relay.
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        _open_notebook(page, base, token, "Python 3 (sandbox)", "kernel")
        _run_cell(page, attack_cell("pwned-kernel.txt"), 0)
        outputs = page.locator(".jp-OutputArea-output")
        expect(outputs.get_by_text("attack done")).to_be_visible(timeout=90_000)
        _run_cell(page, RICH_CELL, 1)
        expect(outputs.locator("table.dataframe")).to_be_visible(timeout=90_000)
        expect(outputs.locator("img[src^='data:image/png']").first).to_be_visible()
        assert outputs.locator("table.dataframe td").first.inner_text() == "1"
        page.screenshot(path=str(shots / "jupyterlab-output-safety.png"), full_page=True)
        _assert_nothing_ran(page, root, "pwned-kernel.txt", "control-kernel.txt")
        expect(outputs.get_by_text("forged")).to_be_visible()  # forged, but only its safe part

        # A local kernel whose %%sandbox cells run in a sandbox: outputs come through magics.
        magics = browser.new_page(viewport={"width": 1280, "height": 900})
        _open_notebook(magics, base, token, "Python 3 (ipykernel)", "magics")
        _run_cell(magics, "%load_ext jupyter_sandbox\n%sandbox create --memory 512m", 0)
        magic_outputs = magics.locator(".jp-OutputArea-output")
        expect(magic_outputs.get_by_text("now in use")).to_be_visible(timeout=90_000)
        _run_cell(magics, "%%sandbox\n" + attack_cell("pwned-magics.txt"), 1)
        expect(magic_outputs.get_by_text("attack done")).to_be_visible(timeout=90_000)
        _run_cell(magics, "%%sandbox\n" + RICH_CELL, 2)
        expect(magic_outputs.locator("table.dataframe")).to_be_visible(timeout=90_000)
        expect(magic_outputs.locator("img[src^='data:image/png']").first).to_be_visible()
        _assert_nothing_ran(magics, root, "pwned-magics.txt", "control-magics.txt")
        _run_cell(magics, "%sandbox delete", 3)
        expect(magic_outputs.get_by_text("Deleted sandbox")).to_be_visible(timeout=60_000)
        browser.close()


PANEL_CELL = "%load_ext jupyter_sandbox\n%sandbox panel"
PANEL_NAMES = ("analysis", "a-sandbox-with-a-rather-long-descriptive-name-for-the-panel")


@pytest.fixture
def sandbox_env(monkeypatch: pytest.MonkeyPatch, home: Path, test_label: str) -> None:
    """The lab's plain Python kernels (where `%sandbox panel` runs) see this test's store."""
    monkeypatch.setenv("JUPYTER_SANDBOX_HOME", str(home))
    monkeypatch.setenv("JUPYTER_SANDBOX_EXTRA_LABELS", json.dumps({TEST_LABEL: test_label}))


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_panel_fits_a_1280_pixel_jupyterlab(
    sandbox_env: None, lab: tuple[str, str], tmp_path: Path, home: Path, test_label: str
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, token = lab
    shots = tmp_path / "shots"
    shots.mkdir()
    with Client(home=home, extra_labels={TEST_LABEL: test_label}) as client:
        ids = [client.containers.create(name=name).id for name in PANEL_NAMES]
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
                )
                page = browser.new_page(viewport={"width": 1280, "height": 760})
                page.goto(f"{base}/lab?token={token}")
                card = page.locator(".jp-LauncherCard[title='Python 3 (ipykernel)']").first
                expect(card).to_be_visible(timeout=60_000)
                news = page.get_by_role("button", name="No", exact=True)
                if news.count():
                    news.click()
                card.click()
                editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
                expect(editor).to_be_visible(timeout=60_000)
                expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(
                    timeout=60_000
                )
                editor.click()
                page.keyboard.insert_text(PANEL_CELL)
                page.keyboard.press("Shift+Enter")
                output = page.locator(".jp-OutputArea-output").first
                deletes = output.get_by_role("button", name="Delete", exact=True)
                expect(deletes).to_have_count(2, timeout=60_000)
                area = output.bounding_box()
                assert area is not None
                header = output.locator(".widget-gridbox").first
                for column in ("ID", "NAME", "STATUS", "MEMORY", "NETWORK", "TIME LEFT"):
                    cell = header.get_by_text(column, exact=True)
                    expect(cell).to_be_visible()
                    _assert_inside(cell.bounding_box(), area, column)
                buttons = [*deletes.all(), *output.get_by_role("button", name="Use").all()]
                assert len(buttons) == 4
                for button in buttons:
                    expect(button).to_be_visible()
                    _assert_inside(button.bounding_box(), area, button.inner_text())
                page.screenshot(path=str(shots / "jupyterlab-sandbox-panel.png"))
                for container_id in ids:  # a short id shown, the whole one on hover and copy
                    cell = output.locator(f"span[title='{container_id}']")
                    expect(cell).to_have_text(container_id)
                    box = cell.bounding_box()
                    _assert_inside(box, area, container_id)
                    assert cell.evaluate("e => e.scrollWidth > e.clientWidth"), "not shortened"

                output.get_by_role("button", name="Use").first.click()
                expect(output.get_by_text("Files in cntr_")).to_be_visible(timeout=30_000)
                browser.close()
        finally:
            for container_id in ids:
                client.containers.delete(container_id)
    if os.environ.get("JUPYTER_SANDBOX_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(shots / "jupyterlab-sandbox-panel.png", DOCS_IMG)


def _assert_inside(box: dict[str, float] | None, area: dict[str, float], what: str) -> None:
    """`box` lies within `area` horizontally (a pixel of rounding allowed)."""
    assert box is not None, f"{what} is not laid out"
    assert box["x"] >= area["x"] - 1, f"{what} starts left of the output area"
    assert box["x"] + box["width"] <= area["x"] + area["width"] + 1, (
        f"{what} ends at {box['x'] + box['width']:.0f} px, past the output area's "
        f"{area['x'] + area['width']:.0f} px"
    )
