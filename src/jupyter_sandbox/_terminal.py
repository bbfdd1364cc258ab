"""Untrusted text made safe to print on a terminal: sandbox file names, paths, outputs, errors.

Sandbox code chooses file names and everything its programs print. Written raw to the
operator's terminal, such text can clear the screen (`ESC [2J`), move the cursor and overwrite
earlier lines, set the window title, plant a hyperlink (OSC 8), write the clipboard (OSC 52),
ring the bell, hide itself behind bidi overrides, or (as rich markup) crash a table. Two rules,
used by the CLI and the magics' text output:

- `inert(text)`: every C0 and C1 control character, DEL and the bidi/line-separator format
  characters are shown as `\\xNN` / `\\uNNNN`, except those the caller keeps (newlines in an
  error message). Names, paths, errors, logs.
- `program_output(text, colors=...)`: a program's stdout/stderr: newlines, tabs and carriage
  returns (progress bars) are kept, and SGR colour sequences (`ESC [ ... m`) when `colors` is
  true (a terminal); every other sequence (cursor moves, screen clears, OSC hyperlinks,
  clipboard and titles, DCS, BEL, backspace, C1 controls) is shown escaped, so it is inert.

Escaping the ESC (or C1) character is enough: the rest of a sequence is printable text.
"""

from __future__ import annotations

import re

__all__ = ["RESET", "inert", "program_output"]

RESET = "\x1b[0m"
"""Ends any colour a program's output left on."""
_SGR = re.compile(r"\x1b\[[0-9;:]*m")
_FORMAT = "\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f{_FORMAT}]")


def _shown(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def inert(text: str, *, keep: str = "") -> str:
    """`text` with every control and bidi character shown escaped, except those in `keep`."""
    return _UNSAFE.sub(lambda m: m.group() if m.group() in keep else _shown(m.group()), text)


def program_output(text: str, *, colors: bool) -> str:
    """A sandbox program's output for a terminal: lines, tabs, carriage returns and (when
    `colors`) SGR colours kept; every other control sequence shown escaped."""
    parts: list[str] = []
    last = 0
    for match in _SGR.finditer(text):
        parts.append(inert(text[last : match.start()], keep="\n\t\r"))
        if colors:
            parts.append(match.group())
        last = match.end()
    parts.append(inert(text[last:], keep="\n\t\r"))
    return "".join(parts)
