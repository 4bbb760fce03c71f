"""The reply a Claude Code attempt ends with: its text, the CLI's own result, what was refused.

Hand-written lines in the shapes the CLI prints (see ``tests/fixtures/claude/``), through the real
decoder.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from orchestrator.backends.claude_code.content import BLOCK_SEPARATOR
from orchestrator.codec import decode_tagged, encode_tagged
from orchestrator.events import (
    AssistantMessage,
    JobSucceeded,
    StreamEvent,
    StreamFinished,
    StreamWarning,
    Tagged,
    TextBlock,
    TextRetracted,
    ToolResult,
)
from orchestrator.record.aggregate import fold
from tests.backends.claude_code.test_decode import (
    TRANSCRIPTS,
    decode,
    line,
    notices,
    of_type,
    replay,
    result_of,
    tagged_attempt,
    text_of,
)


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


# --- the job's text comes from complete messages -----------------------------------------------------


def stream_line(message_id: str, event: dict[str, Any]) -> str:
    return line(type="stream_event", event=event, parent_tool_use_id=None, api_message_id=message_id)


def message_start(message_id: str) -> str:
    usage = {"input_tokens": 10, "output_tokens": 1}
    message = {"id": message_id, "type": "message", "role": "assistant", "content": [], "usage": usage}
    return stream_line(message_id, {"type": "message_start", "message": message})


def text_delta(message_id: str, index: int, text: str) -> str:
    delta = {"type": "text_delta", "text": text}
    return stream_line(message_id, {"type": "content_block_delta", "index": index, "delta": delta})


def complete(message_id: str, text: str) -> str:
    message = {"id": message_id, "role": "assistant", "content": [{"type": "text", "text": text}]}
    return line(type="assistant", message=message, parent_tool_use_id=None)


def success(text: str, **fields: Any) -> str:
    usage = {"input_tokens": 20, "output_tokens": 9}
    return line(type="result", subtype="success", is_error=False, result=text, usage=usage, **fields)


def job_text(events: list[StreamEvent]) -> str | None:
    tagged = tagged_attempt(1, events, 0)
    folded = fold([*tagged, Tagged("j", 1, len(tagged), 1.0, JobSucceeded(attempts=1))])
    return folded.results["j"].text


def test_partial_deltas_dropped_without_a_notice_are_not_in_the_text_after_a_non_streamed_retry() -> None:
    # An older CLI: the stream breaks after "The ans", no abandoned_blocks, and the
    # non-streaming fallback prints the whole answer as a new message.
    lines = [
        message_start("msg_1"),
        text_delta("msg_1", 0, "The ans"),
        complete("msg_2", "The answer is 4."),
        success("The answer is 4."),
    ]
    events, outcome = decode(lines)
    assert outcome.ok
    assert text_of(events) == "The ansThe answer is 4."  # live display saw the fragment
    assert of_type(events, TextRetracted) == [TextRetracted(len("The ans"))]
    assert "partial_text_dropped" in notices(events)
    assert job_text(events) == "The answer is 4."


def test_partial_deltas_dropped_without_a_notice_are_not_in_the_text_after_a_streamed_retry() -> None:
    lines = [
        message_start("msg_1"),
        text_delta("msg_1", 0, "The ans"),
        message_start("msg_2"),
        text_delta("msg_2", 0, "The answer"),
        text_delta("msg_2", 0, " is 4."),
        complete("msg_2", "The answer is 4."),
        stream_line("msg_2", {"type": "message_stop"}),
        success("The answer is 4."),
    ]
    events, _ = decode(lines)
    assert job_text(events) == "The answer is 4."


def test_a_message_whose_deltas_match_its_complete_lines_is_sent_once() -> None:
    lines = [
        message_start("msg_1"),
        text_delta("msg_1", 0, "Hello "),
        text_delta("msg_1", 0, "there."),
        complete("msg_1", "Hello there."),
        stream_line("msg_1", {"type": "message_stop"}),
        success("Hello there."),
    ]
    events, _ = decode(lines)
    assert of_type(events, TextRetracted) == []
    assert "partial_text_dropped" not in notices(events)
    assert text_of(events) == job_text(events) == "Hello there."


def test_deltas_that_differ_from_the_complete_message_give_way_to_it() -> None:
    lines = [
        message_start("msg_1"),
        text_delta("msg_1", 0, "Helo"),
        complete("msg_1", "Hello."),
        stream_line("msg_1", {"type": "message_stop"}),
        success("Hello."),
    ]
    events, _ = decode(lines)
    assert job_text(events) == "Hello."


def test_earlier_text_survives_when_a_later_message_is_dropped_mid_stream() -> None:
    lines = [
        message_start("msg_1"),
        text_delta("msg_1", 0, "I will look."),
        complete("msg_1", "I will look."),
        stream_line("msg_1", {"type": "message_stop"}),
        message_start("msg_2"),
        text_delta("msg_2", 0, "It is fi"),
        complete("msg_3", "It is fine."),
        success("It is fine."),
    ]
    events, _ = decode(lines)
    assert job_text(events) == f"I will look.{BLOCK_SEPARATOR}It is fine."


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_every_recorded_transcripts_text_is_its_complete_messages_text(name: str) -> None:
    events, outcome = replay(name)
    if not outcome.ok:
        return
    main = [
        block.text
        for message in of_type(events, AssistantMessage)
        for block in message.content
        if isinstance(block, TextBlock) and block.text
    ]
    assert job_text(events) == BLOCK_SEPARATOR.join(main)


# --- the CLI's own result -----------------------------------------------------------------------------


def test_the_clis_result_text_and_permission_denials_are_kept() -> None:
    events, outcome = replay("tool_denied")
    assert outcome.ok
    finished = events[-1]
    assert isinstance(finished, StreamFinished)
    result = result_of("tool_denied")
    assert finished.result_text == result["result"] == "Could not."
    assert finished.permission_denials == tuple(result["permission_denials"])
    assert finished.permission_denials[0]["tool_name"] == "Bash"
    tagged = tagged_attempt(1, events, 0)
    job = fold([*tagged, Tagged("j", 1, len(tagged), 1.0, JobSucceeded(attempts=1))]).results["j"]
    assert job.result_text == "Could not."
    assert job.permission_denials == finished.permission_denials


def test_the_result_fields_read_back_from_the_log() -> None:
    events, _ = replay("tool_denied")
    finished = events[-1]
    tagged = Tagged("j", 1, 0, 1.0, finished)
    assert decode_tagged(orjson.loads(encode_tagged(tagged))) == tagged


def test_odd_permission_denials_keep_only_the_objects() -> None:
    events, outcome = decode(
        [complete("m", "ok"), success("ok", permission_denials=[1, {"tool_name": "Edit"}, None])]
    )
    assert outcome.ok
    finished = events[-1]
    assert isinstance(finished, StreamFinished)
    assert finished.permission_denials == ({"tool_name": "Edit"},)
