"""Sandbox outputs made safe to show in a person's Jupyter page.

Sandbox code chooses every byte of its outputs. A frontend treats the outputs of a cell the
user ran as *trusted*: JupyterLab runs `application/javascript`, runs `<script>` and event
handlers in `text/html` and in markdown's raw HTML, and typesets math (whose `\\href` makes a
`javascript:` link). So every surface that shows a sandbox output to a person passes its MIME
bundle through `safe_bundle` first:

- kept as is: `text/plain`, `application/json`, `image/png`, `image/jpeg`, `image/gif`;
- `text/html` is cleaned by `nh3` (ammonia): no script, no event handler, no frame, form,
  object, style sheet, SVG or MathML; links only to http(s)/mailto; images only inline
  (`data:` raster), so showing an output never makes the browser contact a host the sandbox
  chose (which would carry data past the sandbox's network policy); `style` attributes keep
  only layout and colour properties;
- `text/markdown` is rendered to HTML here (markdown-it, math kept aside) and cleaned the same
  way: it arrives as `text/html`, because the frontend's own markdown renderer would insert
  raw HTML from a trusted output unsanitized;
- `text/latex` and the math in HTML lose the TeX commands that make links or styles;
- `image/svg+xml` is shown as an `<img>` of it (a browser runs no script and loads nothing in
  an SVG image) when the bundle has no other picture, else dropped;
- everything else is dropped: `application/javascript`, widget views, and any type not named.

Metadata keeps only known presentation keys (image size, JSON expansion, `isolated: true`).
The raw outputs stay in `Execution` for programs; this module is for rendering.
"""

from __future__ import annotations

import base64
import html
import re
import secrets
from collections.abc import Mapping
from typing import Any

import nh3
from markdown_it import MarkdownIt

__all__ = [
    "KEPT_TYPES",
    "safe_bundle",
    "safe_html",
    "safe_markdown",
    "safe_metadata",
    "safe_tex",
]

KEPT_TYPES = (
    "text/plain",
    "text/html",
    "text/markdown",
    "text/latex",
    "application/json",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/svg+xml",
)
"""MIME types a sandbox output may keep (markdown and SVG are turned into HTML)."""

_RASTER = ("image/png", "image/jpeg", "image/gif")
_TAGS = set(nh3.ALLOWED_TAGS) - {"area", "map"}
_ATTRIBUTES: dict[str, set[str]] = {
    **{tag: set(names) for tag, names in nh3.ALLOWED_ATTRIBUTES.items()},
    "*": {"title", "lang", "dir", "style"},
    "table": {"border", "summary", "align", "cellpadding", "cellspacing", "width"},
    "th": {"colspan", "rowspan", "scope", "align", "valign"},
    "td": {"colspan", "rowspan", "align", "valign"},
}
_STYLE_PROPERTIES = {
    "text-align", "vertical-align", "white-space", "color", "background-color",
    "font-weight", "font-style", "font-size", "font-family", "text-decoration",
    "border", "border-collapse", "border-color", "border-style", "border-width",
    "padding", "padding-left", "padding-right", "padding-top", "padding-bottom",
    "margin", "margin-left", "margin-right", "margin-top", "margin-bottom",
    "width", "height", "max-width", "max-height", "min-width",
}  # fmt: skip
# No position, z-index or url()-taking property: an output cannot cover the page or load.
_DATA_IMAGE = re.compile(r"data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]*\Z")
_LINK = re.compile(r"(https?://|mailto:)", re.IGNORECASE)
_CSS_FUNCTION = re.compile(r"[a-z-]+\s*\(|\\|@|expression", re.IGNORECASE)
# TeX commands that make links, styles, classes, ids or load code in MathJax.
_TEX_COMMANDS = frozenset(
    {"href", "url", "style", "class", "cssId", "bbox", "data", "require", "mmlToken", "html"}
)
_TEX_TOKEN = re.compile(r"\\([A-Za-z]+|.)", re.DOTALL)
_MATH = re.compile(r"\$\$.+?\$\$|\$[^$\n]+?\$|\\\(.+?\\\)|\\\[.+?\\\]", re.DOTALL)
_METADATA_KEYS: dict[str, tuple[str, ...]] = {
    "image/png": ("width", "height", "unconfined", "needs_background"),
    "image/jpeg": ("width", "height", "unconfined", "needs_background"),
    "image/gif": ("width", "height", "unconfined", "needs_background"),
    "application/json": ("expanded", "root"),
    "text/html": (),
}


def _attribute(tag: str, name: str, value: str) -> str | None:
    if name == "style":
        return value if _CSS_FUNCTION.search(value) is None else None
    if tag == "img" and name == "src":
        return value if _DATA_IMAGE.match(value) else None
    if name in ("href", "cite"):
        return value if _LINK.match(value) else None
    return value


_CLEANER = nh3.Cleaner(
    tags=_TAGS,
    clean_content_tags={"script", "style"},
    attributes=_ATTRIBUTES,
    attribute_filter=_attribute,
    url_schemes={"http", "https", "mailto", "data"},
    url_relative="deny",
    link_rel="noopener noreferrer nofollow",
    filter_style_properties=_STYLE_PROPERTIES,
    allowed_classes={"table": {"dataframe"}},
)
_MARKDOWN = MarkdownIt("commonmark", {"html": True, "linkify": False}).enable("table")


def safe_tex(text: str) -> str:
    """TeX without the commands that make links, styles or ids (MathJax would render them)."""
    while True:
        cleaned = _TEX_TOKEN.sub(lambda m: "" if m.group(1) in _TEX_COMMANDS else m.group(0), text)
        if cleaned == text:
            return cleaned
        text = cleaned  # removing one command could join a new one; repeat until none


def safe_html(source: str) -> str:
    """HTML that runs no script and loads nothing (see the module docstring)."""
    return safe_tex(_CLEANER.clean(source))


def safe_markdown(source: str) -> str:
    """Markdown rendered to clean HTML, its math kept for the frontend to typeset."""
    nonce = secrets.token_hex(8)
    math: list[str] = []

    def keep(match: re.Match[str]) -> str:
        math.append(match.group(0))
        return f"jsbxmath{nonce}x{len(math) - 1}x"

    rendered = safe_html(_MARKDOWN.render(_MATH.sub(keep, source)))
    placeholder = re.compile(rf"jsbxmath{nonce}x(\d+)x")
    return placeholder.sub(lambda m: html.escape(safe_tex(math[int(m.group(1))])), rendered)


def _svg_image(source: str) -> str:
    encoded = base64.b64encode(source.encode()).decode()
    return f'<img src="data:image/svg+xml;base64,{encoded}" alt="SVG image">'


def safe_metadata(metadata: Mapping[str, Any], kept: Mapping[str, Any]) -> dict[str, Any]:
    """Only the presentation keys of the kept types (image size, JSON view, isolation)."""
    result: dict[str, Any] = {}
    for mime, allowed in _METADATA_KEYS.items():
        entry = metadata.get(mime)
        if mime not in kept or not isinstance(entry, Mapping):
            continue
        values = {
            key: entry[key]
            for key in allowed
            if isinstance(entry.get(key), str | int | float | bool) and key in entry
        }
        if entry.get("isolated") is True:
            values["isolated"] = True
        if values:
            result[mime] = values
    return result


def safe_bundle(
    data: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The safe part of an untrusted MIME bundle and its metadata (see the module docstring).

    A bundle with nothing safe left keeps a `text/plain` line saying what was removed.
    """
    kept: dict[str, Any] = {}
    for mime in ("text/plain", "application/json", *_RASTER):
        value = data.get(mime)
        if (mime == "application/json" and isinstance(value, dict | list)) or isinstance(
            value, str
        ):
            kept[mime] = value
    html_source = data.get("text/html")
    markdown_source = data.get("text/markdown")
    svg_source = data.get("image/svg+xml")
    if isinstance(html_source, list):  # nbformat may split strings into lines
        html_source = "".join(str(line) for line in html_source)
    if isinstance(html_source, str):
        kept["text/html"] = safe_html(html_source)
    elif isinstance(markdown_source, str):
        kept["text/html"] = safe_markdown(markdown_source)
    elif isinstance(svg_source, str) and not any(mime in kept for mime in _RASTER):
        kept["text/html"] = _svg_image(svg_source)
    latex = data.get("text/latex")
    if isinstance(latex, str):
        kept["text/latex"] = safe_tex(latex)
    if not kept:
        removed = ", ".join(sorted(str(mime) for mime in data)) or "nothing"
        kept["text/plain"] = f"[output removed: {removed} cannot be shown from a sandbox]"
    return kept, safe_metadata(metadata or {}, kept)
