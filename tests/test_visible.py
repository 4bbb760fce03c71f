"""Text made visible: no control character survives, ordinary text is untouched."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from orchestrator.visible import as_html, as_text, visible
from tests.hostile import HOSTILE

_CONTROL = {*range(0x20), *range(0x7F, 0xA0), 0x061C, 0x200E, 0x200F, 0x2028, 0x2029}
_CONTROL |= {*range(0x202A, 0x202F), *range(0x2066, 0x206A)}


@given(st.text())
def test_no_control_character_survives(text: str) -> None:
    assert not any(ord(char) in _CONTROL for char in visible(text))
    kept = visible(text, lines=True)
    assert not any(ord(char) in _CONTROL - {0x09, 0x0A} for char in kept)
    assert kept.count("\n") == text.count("\n")


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Zl", "Zp", "Cs"))))
def test_ordinary_text_is_untouched(text: str) -> None:
    assert visible(text) == text


def test_control_characters_read_as_escapes() -> None:
    assert visible("a\x1b]0;t\x07\u202e\r\n\t\x9b") == "a\\x1b]0;t\\x07\\u202e\\r\\n\\t\\x9b"
    assert visible("x\ny\r", lines=True) == "x\ny\\r"


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_prints_through_rich_as_itself(text: str) -> None:
    console = Console(record=True, width=200, color_system=None)
    console.print(as_text(text))
    assert console.export_text().rstrip("\n") == visible(text)
    assert all(ch.isprintable() for ch in visible(text))
    assert "<" not in as_html(text) and "\x1b" not in as_html(text)
