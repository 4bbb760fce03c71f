"""Text from outside, made safe to show: the one rule every sink (terminal, rich, diagnostics) calls.

Model replies, job ids, tool output and server errors are data. Shown on a terminal they must
never act: an escape sequence from a server must not retitle the window or clear the screen, a
bidi override must not reorder what a person reads, and ``[/INST]`` in a Llama-style reply must
not be parsed as rich markup (it would raise mid-batch, or ``[link=...]`` would become a link).

:func:`visible` writes every control character as an escape (``\\x1b``, ``\\u202e``) and leaves
all other text alone; :func:`as_text` wraps the result in a rich ``Text``, which rich never
parses as markup; :func:`as_html` escapes it for the HTML report. The JSON log keeps the text
exactly as it came.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import Text

# C0 controls, DEL and C1 controls; the bidi embeddings, overrides, isolates and marks; the
# Unicode line and paragraph separators (a terminal may break lines at them).
_OTHERS = "\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_ANY = re.compile(f"[\x00-\x1f{_OTHERS}]")
_BUT_LINES = re.compile(f"[\x00-\x08\x0b-\x1f{_OTHERS}]")  # keeps \t (09) and \n (0a)


_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, *, lines: bool = False) -> str:
    """``text`` with every control character written as an escape (ESC becomes ``\\x1b``).

    With ``lines``, newlines and tabs stay as they are (for multi-line text such as a reply
    in a job's story); a carriage return is always escaped, since it would let text overwrite
    what came before it on the same line.
    """
    pattern = _BUT_LINES if lines else _ANY
    if pattern.search(text) is None:
        return text
    return pattern.sub(_escape, text)


def as_text(text: str, style: str = "", *, lines: bool = False) -> Text:
    """``text`` made :func:`visible`, as a rich ``Text`` (which rich never reads as markup)."""
    from rich.text import Text

    return Text(visible(text, lines=lines), style=style)


def as_html(text: str) -> str:
    """``text`` made :func:`visible`, as HTML text (``<``, ``&`` and quotes escaped)."""
    return html.escape(visible(text))
