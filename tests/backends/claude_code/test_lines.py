"""Reading one line of the CLI's stdout as JSON, lone UTF-16 surrogate escapes included."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.backends.claude_code.lines import parse_line


def test_a_lone_high_surrogate_escape_becomes_a_replacement_character() -> None:
    assert parse_line(b'{"text": "smile \\ud83d"}') == {"text": "smile \ufffd"}


def test_a_lone_low_surrogate_escape_becomes_a_replacement_character() -> None:
    assert parse_line('{"text": "\\ude00 smile"}') == {"text": "\ufffd smile"}


def test_a_surrogate_pair_next_to_a_lone_half_stays_its_character() -> None:
    got = parse_line(b'{"a": ["\\ud83d\\ude00", "\\ud83d"], "\\udc00k": 1}')
    assert got == {"a": ["\U0001f600", "\ufffd"], "\ufffdk": 1}


def test_an_escaped_backslash_before_u_is_not_a_surrogate_escape() -> None:
    assert parse_line(b'{"path": "C:\\\\ud83d"}') == {"path": "C:\\ud83d"}


@pytest.mark.parametrize(
    "raw",
    [b'{"text": "\\ud83d"', b'{"n": NaN, "t": "\\ud83d"}', b'{"t": "\\ud83d", "b": "\xff"}', b"not json"],
)
def test_a_line_that_is_not_json_still_raises_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_line(raw)


def test_a_deeply_nested_line_with_a_lone_surrogate_raises_value_error_not_recursion() -> None:
    with pytest.raises(ValueError):
        parse_line(b"[" * 100_000 + b'"\\ud83d"' + b"]" * 100_000)


def replaced(value: Any) -> Any:
    """``value`` with every lone surrogate replaced by U+FFFD (pairs were joined by the parser)."""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    if isinstance(value, list):
        return [replaced(v) for v in value]
    if isinstance(value, dict):
        return {replaced(k): replaced(v) for k, v in value.items()}
    return value


# Text with surrogate halves mixed in (plain st.text() never draws one).
texts = st.lists(st.text(max_size=5) | st.sampled_from(["\ud83d", "\ude00", "\udbff"]), max_size=6).map(
    "".join
)
json_trees = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


@given(json_trees)
def test_any_json_reads_as_its_value_with_lone_surrogates_replaced(value: Any) -> None:
    raw = json.dumps(value)  # ASCII: every surrogate in the text is written as an escape
    assert parse_line(raw.encode()) == replaced(json.loads(raw))
