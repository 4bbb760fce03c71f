"""The reply a Claude Code attempt ends with: its text, the CLI's own result, what was refused.

Hand-written lines in the shapes the CLI prints (see ``tests/fixtures/claude/``), through the real
decoder.
"""

from __future__ import annotations

from orchestrator.events import StreamWarning, ToolResult
from tests.backends.claude_code.test_decode import decode, of_type, text_of


def assistant_line(message_id: str, text: str) -> bytes:
    """An ``assistant`` line carrying one text block, written as the CLI writes it (escaped)."""
    return (
        b'{"type":"assistant","message":{"id":"' + message_id.encode() + b'","type":"message",'
        b'"role":"assistant","model":"claude-opus-5-5","content":[{"type":"text","text":"'
        + text.encode()
        + b'"}],"usage":{"input_tokens":10,"output_tokens":1}},"parent_tool_use_id":null}'
    )


def test_a_lone_surrogate_escape_keeps_the_lines_text_with_a_replacement_character() -> None:
    events, _ = decode([assistant_line("m1", "Done \\ud83d")])
    assert text_of(events) == "Done \ufffd"
    assert of_type(events, StreamWarning) == []


def test_a_lone_surrogate_escape_in_a_tool_result_keeps_the_result() -> None:
    raw = (
        b'{"type":"user","message":{"role":"user","content":[{"tool_use_id":"toolu_1",'
        b'"type":"tool_result","content":"smile \\ud83d end","is_error":false}]},"parent_tool_use_id":null}'
    )
    events, _ = decode([raw])
    assert of_type(events, ToolResult) == [ToolResult(call_id="toolu_1", content="smile \ufffd end")]
