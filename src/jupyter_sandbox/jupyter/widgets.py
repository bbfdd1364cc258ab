"""An ipywidgets panel of your sandboxes: `jupyter_sandbox.jupyter.widgets.Panel()` or
`%sandbox panel`.

It shows each sandbox's status, memory limit, network policy and time left, the files of
the selected one with upload and download, buttons to create, use and delete, and refreshes
itself while it is open. Every button calls the Client API; nothing else.
"""

from __future__ import annotations

import base64
import html
import logging
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from jupyter_sandbox._exceptions import JupyterSandboxError
from jupyter_sandbox._options import describe_network, describe_seconds, parse_network, time_left
from jupyter_sandbox.client import Client
from jupyter_sandbox.core.validation import check_seconds
from jupyter_sandbox.types.container import Container

if TYPE_CHECKING:
    from jupyter_sandbox.jupyter._magics_state import MagicsState

__all__ = ["Panel"]

logger = logging.getLogger(__name__)

MEMORY_CHOICES = ("512m", "1g", "2g", "4g")
"""The tiers offered when the client does not say which this host allows."""
_INLINE_DOWNLOAD_LIMIT = 5 * 2**20
_ROW = widgets.Layout(align_items="center", width="100%")
COLUMNS = ("", "ID", "NAME", "STATUS", "MEMORY", "NETWORK", "TIME LEFT", "", "")
"""The sandbox table's columns (the mark of the selected one first, the buttons last)."""
# Fixed tracks for short values, shrinkable ones for names and policies: about 640 px at
# least, so the table fits a notebook's output area whatever the names are.
_GRID_COLUMNS = "1.2em 9.5em minmax(5em, 1fr) 6.5em 5.5em minmax(6em, 1fr) 6.5em 4.5em 5.5em"
# Out of the flow (the HTML widget's content box is `position: relative` for this), so a
# long text never widens its column: it is cut with an ellipsis at the column's edge.
_ELLIPSIS = (
    "position:absolute;left:0;right:0;top:0;"
    "overflow:hidden;text-overflow:ellipsis;white-space:nowrap"
)


class Panel(widgets.VBox):  # type: ignore[misc]
    """Your sandboxes and their files, live.

    Args:
        client: the Client to use (default: a new `Client()`, or the magics' one).
        magics: the `%sandbox` magics, so "use" also selects the sandbox for `%%sandbox`.
        refresh_seconds: how often to refresh while open; None or 0 refreshes only on demand.
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        magics: MagicsState | None = None,
        refresh_seconds: float | None = 5.0,
    ) -> None:
        self._owns_client = client is None and magics is None
        self.client = client or (magics.client if magics is not None else Client())
        self.magics = magics
        self.selected: str | None = magics.current if magics is not None else None
        self.containers: list[Container] = []
        self._lock = threading.RLock()
        self._closed = threading.Event()
        if refresh_seconds:  # None or 0: only on demand
            refresh_seconds = check_seconds(refresh_seconds, "refresh_seconds", maximum=3600)

        self.message = widgets.HTML()
        self.name_input = widgets.Text(placeholder="name", value="notebook")
        self.memory_input = widgets.Dropdown(options=_memory_choices(self.client), value="1g")
        self.network_input = widgets.Text(value="disabled", placeholder="allowlist:a.com,b.com")
        self.create_button = widgets.Button(
            description="Create", icon="plus", button_style="success"
        )
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.rows = widgets.VBox()
        self.files_title = widgets.HTML()
        self.files = widgets.VBox()
        self.upload = widgets.FileUpload(multiple=True, description="Upload")
        self.download_link = widgets.HTML()

        self.create_button.on_click(lambda _: self._act(self.create))
        self.refresh_button.on_click(lambda _: self._act(self.refresh))
        self.upload.observe(lambda _: self._act(self._upload_selected), names="value")

        super().__init__(
            [
                widgets.HTML("<b>Sandboxes</b>"),
                widgets.HBox(
                    [
                        self.name_input,
                        self.memory_input,
                        self.network_input,
                        self.create_button,
                        self.refresh_button,
                    ],
                    layout=_ROW,
                ),
                self.rows,
                self.files_title,
                self.files,
                widgets.HBox([self.upload, self.download_link], layout=_ROW),
                self.message,
            ]
        )
        self.refresh()
        if refresh_seconds:
            threading.Thread(
                target=self._refresh_while_open, args=(refresh_seconds,), daemon=True
            ).start()

    # -- actions (each one Client call) --------------------------------------------------

    def create(self) -> Container:
        """Create a sandbox from the inputs, select it, refresh."""
        container = self.client.containers.create(
            name=self.name_input.value or "notebook",
            memory_limit=self.memory_input.value,
            network_policy=parse_network(self.network_input.value or "disabled"),
        )
        self.select(container.id)
        self._say(f"Created {container.id}.")
        return container

    def select(self, container_id: str) -> None:
        """Show this sandbox's files (and use it for `%%sandbox` cells)."""
        self.selected = container_id
        if self.magics is not None:
            self.magics.current = container_id
        self.refresh()

    def delete(self, container_id: str) -> None:
        """Delete a sandbox, refresh."""
        self.client.containers.delete(container_id)
        if self.selected == container_id:
            self.selected = None
        if self.magics is not None and self.magics.current == container_id:
            self.magics.current = None
        self._say(f"Deleted {container_id}.")
        self.refresh()

    def download(self, container_id: str, file_id: str, path: str) -> Path:
        """Save a sandbox file next to the notebook and offer it to the browser."""
        content: bytes = self.client.containers.files.content.retrieve(
            file_id, container_id=container_id
        ).read()
        target = Path(Path(path).name)
        target.write_bytes(content)
        link = ""
        if len(content) <= _INLINE_DOWNLOAD_LIMIT:
            encoded = base64.b64encode(content).decode()
            link = (
                f' <a download="{html.escape(target.name)}" '
                f'href="data:application/octet-stream;base64,{encoded}">download</a>'
            )
        self.download_link.value = f"Saved {html.escape(str(target))}.{link}"
        return target

    def upload_bytes(self, container_id: str, name: str, content: bytes) -> None:
        """Copy bytes into the sandbox as /mnt/data/NAME."""
        with tempfile.TemporaryDirectory() as staging:
            local = Path(staging) / Path(name).name
            local.write_bytes(content)
            self.client.containers.files.create(
                container_id, file=local, path=f"/mnt/data/{local.name}"
            )
        self._say(f"Uploaded {name}.")  # _say escapes

    def refresh(self) -> None:
        """Read the sandboxes (and the selected one's files) again."""
        with self._lock:
            self.containers = list(self.client.containers.list(limit=100))
            if self.selected not in {c.id for c in self.containers}:
                self.selected = None
            self.rows.children = [self._header()] + [self._row(c) for c in self.containers]
            if not self.containers:
                self.rows.children = [widgets.HTML("<i>No sandboxes.</i>")]
            self._refresh_files()

    def close(self) -> None:
        """Stop refreshing and close the widget (sandboxes keep running)."""
        self._closed.set()
        super().close()
        if self._owns_client:
            self.client.close()

    # -- rendering -----------------------------------------------------------------------

    def _header(self) -> widgets.GridBox:
        return _grid([_cell(_text(name, bold=True)) for name in COLUMNS])

    def _row(self, container: Container) -> widgets.GridBox:
        """One sandbox: every value escaped (names and policies are the caller's text)."""
        mark = "*" if container.id == self.selected else ""
        cells = [
            _cell(_text(mark)),
            # The whole id is in the cell (ellipsised): hover shows it, a click selects it all.
            _cell(_text(container.id, monospace=True, select_all=True)),
            _cell(_text(container.name)),
            _cell(_text(container.status)),
            _cell(_text(container.memory_limit)),
            _cell(_text(describe_network(container.network_policy))),
            _cell(_text(describe_seconds(_time_left(container)))),
        ]
        use = widgets.Button(
            description="Use", tooltip=f"use {container.id}", layout=widgets.Layout(width="auto")
        )
        delete = widgets.Button(
            description="Delete",
            tooltip=f"delete {container.id}",
            button_style="danger",
            layout=widgets.Layout(width="auto"),
        )
        use.on_click(lambda _: self._act(lambda: self.select(container.id)))
        delete.on_click(lambda _: self._act(lambda: self.delete(container.id)))
        return _grid([*cells, use, delete])

    def _refresh_files(self) -> None:
        self.upload.disabled = self.selected is None
        if self.selected is None:
            self.files_title.value = "<i>Select a sandbox (Use) to see its files.</i>"
            self.files.children = []
            return
        self.files_title.value = f"<b>Files in {html.escape(self.selected)}</b>"
        rows = []
        for item in self.client.containers.files.list(self.selected):
            button = widgets.Button(description="Download", icon="download")
            button.on_click(self._download_handler(self.selected, item.id, item.path))
            label = f"{item.bytes:>10}  {item.path}"
            rows.append(widgets.HBox([widgets.HTML(_code(label)), button]))
        self.files.children = rows or [widgets.HTML("<i>No files.</i>")]

    def _download_handler(
        self, container_id: str, file_id: str, path: str
    ) -> Callable[[Any], None]:
        return lambda _: self._act(lambda: self.download(container_id, file_id, path))

    # -- plumbing ------------------------------------------------------------------------

    def _upload_selected(self) -> None:
        if self.selected is None or not self.upload.value:
            return
        for item in self.upload.value:
            self.upload_bytes(self.selected, item["name"], bytes(item["content"]))
        self.upload.value = ()
        self.refresh()

    def _act(self, action: Callable[[], object]) -> None:
        """Run a button's action; show its error in the panel instead of losing it."""
        try:
            action()
        except JupyterSandboxError as exc:
            self._say(str(exc), error=True)

    def _say(self, text: str, *, error: bool = False) -> None:
        color = "#b00020" if error else "#1b5e20"
        self.message.value = f'<span style="color:{color}">{html.escape(text)}</span>'

    def _refresh_while_open(self, interval: float) -> None:
        while not self._closed.wait(interval):
            try:
                self.refresh()
            except JupyterSandboxError as exc:
                self._say(str(exc), error=True)
            except Exception:
                logger.exception("sandbox panel refresh failed; stopping")
                return


def _time_left(container: Container) -> float:
    return time_left(container)


def _memory_choices(client: Client) -> tuple[str, ...]:
    settings = getattr(client, "settings", None)
    return settings.memory_limits() if settings is not None else MEMORY_CHOICES


def _grid(children: list[widgets.Widget]) -> widgets.GridBox:
    """A row of the sandbox table; every row has the same tracks, so the columns line up."""
    layout = widgets.Layout(
        grid_template_columns=_GRID_COLUMNS,
        grid_gap="0 0.5em",
        align_items="center",
        width="100%",
        max_width="100%",
    )
    return widgets.GridBox(children, layout=layout)


def _cell(value: str) -> widgets.HTML:
    """A table cell holding `value` (HTML the caller escaped); it may shrink below its text."""
    return widgets.HTML(value, layout=widgets.Layout(min_width="0", overflow="hidden"))


def _text(
    text: str, *, monospace: bool = False, select_all: bool = False, bold: bool = False
) -> str:
    """`text` escaped, cut with an ellipsis where its column ends, whole on hover."""
    style = _ELLIPSIS
    if monospace:
        style += ";font-family:var(--jp-code-font-family, monospace)"
    if select_all:
        style += ";user-select:all"
    if bold:
        style += ";font-weight:bold"
    escaped = html.escape(text, quote=True)
    # The zero-width space gives the cell its line height (the span is out of the flow).
    return f'<span title="{escaped}" style="{style}">{escaped}</span>&#8203;'


def _code(text: str) -> str:
    return f'<code style="white-space:pre">{html.escape(text)}</code>'
