"""The Claude Code stream-json decoder, without any I/O: recorded transcripts, edge cases, fuzzing."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.backends.claude_code.content import BLOCK_SEPARATOR
from orchestrator.backends.claude_code.decode import ClaudeDecoder
from orchestrator.backends.claude_code.lines import LineSplitter
from orchestrator.backends.claude_code.outcome import (
    Outcome,
    classify_api_error,
    classify_exit,
    classify_result,
)
from orchestrator.errors import BackendError, FatalError, RetryableError
from orchestrator.events import (
    STREAM_EVENTS,
    AssistantMessage,
    AttemptStarted,
    JobFailed,
    JobSucceeded,
    SessionStarted,
    StreamEvent,
    StreamFinished,
    StreamWarning,
    SystemNotice,
    Tagged,
    TextBlock,
    TextDelta,
    TextRetracted,
    ThinkingDelta,
    Tokens,
    ToolCall,
    ToolResult,
    ToolUseBlock,
    Unrecognized,
    UsageReported,
)
from orchestrator.record.aggregate import fold
from tests.fuzz import check_events, stream_of

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "claude"
TRANSCRIPTS = sorted(p.stem for p in FIXTURES.glob("*.jsonl"))


def lines_of(name: str) -> list[bytes]:
    return (FIXTURES / f"{name}.jsonl").read_bytes().splitlines()


def meta_of(name: str) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return meta


def decode(
    lines: Iterable[bytes | str], *, returncode: int | None = 0, stderr: str = "", **kwargs: Any
) -> tuple[list[StreamEvent], Outcome]:
    decoder = ClaudeDecoder(**kwargs)
    events: list[StreamEvent] = []
    for line in lines:
        events.extend(decoder.feed(line))
    outcome = decoder.finish(returncode, stderr)
    return [*events, *outcome.events], outcome


def replay(name: str, **kwargs: Any) -> tuple[list[StreamEvent], Outcome]:
    return decode(lines_of(name), returncode=meta_of(name)["returncode"], **kwargs)


def text_of(events: Sequence[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def of_type(events: Sequence[StreamEvent], cls: type) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def notices(events: Sequence[StreamEvent]) -> list[str]:
    return [e.subtype for e in events if isinstance(e, SystemNotice)]


def line(**fields: Any) -> str:
    return json.dumps(fields)


def result_of(name: str) -> dict[str, Any]:
    """The transcript's ``result`` line."""
    results: list[dict[str, Any]] = [o for o in map(json.loads, lines_of(name)) if o.get("type") == "result"]
    [result] = results
    return result


def tokens_of(usage: dict[str, Any]) -> Tokens:
    return Tokens(
        usage["input_tokens"],
        usage["output_tokens"],
        usage["cache_read_input_tokens"],
        usage["cache_creation_input_tokens"],
    )


def result_tokens_of(result: dict[str, Any]) -> Tokens:
    """A result line's tokens: its ``usage``, or its ``modelUsage`` summed where ``usage`` is zeros."""
    tokens = tokens_of(result["usage"])
    if tokens.total:
        return tokens
    return sum(
        (
            Tokens(
                m["inputTokens"], m["outputTokens"], m["cacheReadInputTokens"], m["cacheCreationInputTokens"]
            )
            for m in result["modelUsage"].values()
        ),
        Tokens(),
    )


def usage_sum(events: Sequence[StreamEvent]) -> tuple[Tokens, float | None]:
    """The tokens and the stated cost the attempt's usage events add up to."""
    reported = of_type(events, UsageReported)
    costs = [u.cost_usd for u in reported if u.cost_usd is not None]
    return sum((u.tokens for u in reported), Tokens()), sum(costs) if costs else None


def tagged_attempt(attempt: int, events: Sequence[StreamEvent], first_seq: int) -> list[Tagged]:
    """One attempt's events as the runner would tag them (the terminal event is the caller's)."""
    started = [AttemptStarted(backend="claude-code"), *events]
    return [Tagged("j", attempt, first_seq + i, float(attempt), e) for i, e in enumerate(started)]


FAILED_WITH_RESULT = [
    name
    for name in TRANSCRIPTS
    if any(b'"type":"result"' in raw for raw in lines_of(name)) and result_of(name)["is_error"]
]


# --- every transcript ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_every_transcript_decodes_without_warnings_or_unrecognized_lines(name: str) -> None:
    events, _ = replay(name)
    assert of_type(events, StreamWarning) == []
    assert of_type(events, Unrecognized) == []
    assert isinstance(events[0], SessionStarted)


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_a_transcript_finishes_at_most_once_and_last(name: str) -> None:
    events, outcome = replay(name)
    finished = of_type(events, StreamFinished)
    assert len(finished) == (1 if outcome.ok else 0)
    if finished:
        assert events[-1] is finished[0]


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_success_matches_the_exit_code_except_for_an_interrupt(name: str) -> None:
    meta = meta_of(name)
    _, outcome = replay(name)
    if meta["signal"] is None:
        assert outcome.ok == (meta["returncode"] == 0)
    else:
        assert not outcome.ok  # SIGINT still exits 0, with an error_during_execution result


# --- what each scenario means ------------------------------------------------------------------------


def test_plain_text_gives_the_reply_usage_cost_and_session() -> None:
    events, outcome = replay("plain_text")
    result = json.loads(lines_of("plain_text")[-1])
    assert outcome.ok
    assert text_of(events) == "Hello there!"
    started = events[0]
    assert isinstance(started, SessionStarted)
    assert started.session_id == result["session_id"]
    assert "Bash" in started.tools
    finished = events[-1]
    assert isinstance(finished, StreamFinished)
    usage = result["usage"]
    tokens = Tokens(
        usage["input_tokens"],
        usage["output_tokens"],
        usage["cache_read_input_tokens"],
        usage["cache_creation_input_tokens"],
    )
    assert finished == StreamFinished(
        stop_reason="end_turn",
        tokens=tokens,
        cost_usd=result["total_cost_usd"],
        duration_s=result["duration_ms"] / 1000,
        turns=1,
        session_id=result["session_id"],
        result_text="Hello there!",
    )
    assert usage_sum(events) == (tokens, None)  # per message as it came, then the rest


def test_two_text_blocks_make_one_message_and_a_paragraph_break() -> None:
    events, _ = replay("two_text_blocks")
    assert text_of(events) == "First block." + BLOCK_SEPARATOR + "Second block."
    [message] = of_type(events, AssistantMessage)
    assert message.content == (TextBlock("First block."), TextBlock("Second block."))


def test_thinking_comes_as_thinking_deltas_not_text() -> None:
    events, _ = replay("thinking_text")
    assert "".join(e.text for e in of_type(events, ThinkingDelta)) == "Let me think."
    assert text_of(events) == "The answer."


@pytest.mark.parametrize("name", ["tool_use", "partial_tool_use"])
def test_a_tool_round_trip_shows_the_call_then_its_result(name: str) -> None:
    events, outcome = replay(name)
    assert outcome.ok
    [call] = of_type(events, ToolCall)
    [result] = of_type(events, ToolResult)
    assert (call.name, call.input["command"]) == ("Bash", "echo hi")
    assert result == ToolResult(call_id=call.call_id, content="hi", is_error=False)
    assert events.index(call) < events.index(result)
    assert text_of(events) == "I will run it." + BLOCK_SEPARATOR + "It printed hi."
    first, second = of_type(events, AssistantMessage)
    assert isinstance(first.content[1], ToolUseBlock)
    assert events.index(first) < events.index(result) < events.index(second)
    finished = events[-1]
    assert isinstance(finished, StreamFinished) and finished.turns == 2


def test_a_denied_tool_is_an_error_result_and_a_notice_but_the_job_succeeds() -> None:
    events, outcome = replay("tool_denied")
    assert outcome.ok
    [result] = of_type(events, ToolResult)
    assert result.is_error
    assert "permission_denied" in notices(events)


def test_max_turns_fails_without_retry_by_default() -> None:
    events, outcome = replay("max_turns")
    assert isinstance(outcome.error, FatalError)
    assert outcome.error.kind == "max_turns"
    assert "Reached maximum number of turns (1)" in outcome.error.message
    assert len(of_type(events, ToolResult)) == 1  # the tool still ran
    assert "result" in notices(events)


def test_max_turns_can_be_made_retryable() -> None:
    _, outcome = replay("max_turns", retry_limits=True)
    assert isinstance(outcome.error, RetryableError)
    assert outcome.error.kind == "max_turns"


def test_max_budget_fails_without_retry() -> None:
    _, outcome = replay("max_budget")
    assert isinstance(outcome.error, FatalError)
    assert outcome.error.kind == "max_budget"


@pytest.mark.parametrize("name", ["r429_then_ok", "http500_then_ok", "drop_then_ok"])
def test_the_clis_own_retries_are_notices_and_the_attempt_succeeds(name: str) -> None:
    events, outcome = replay(name)
    assert outcome.ok
    assert notices(events).count("api_retry") == 1


@pytest.mark.parametrize(
    ("name", "kind", "retryable"),
    [
        ("r429_exhausted", "rate_limited", True),
        ("r529_always", "overloaded", True),
        ("drop_always", "connection", True),
        ("http401", "auth", False),
        ("http400", "bad_request", False),
        ("max_output_tokens", "max_output_tokens", False),
        ("sigint_during_tool", "cli_error", True),
    ],
)
def test_failures_are_classified_from_is_error_not_subtype(name: str, kind: str, retryable: bool) -> None:
    events, outcome = replay(name)
    assert outcome.error is not None
    assert (outcome.error.kind, outcome.error.retryable) == (kind, retryable)
    assert of_type(events, StreamFinished) == []


def test_an_api_failure_is_reported_as_a_notice_not_as_reply_text() -> None:
    events, _ = replay("r429_exhausted")
    assert text_of(events) == ""
    assert of_type(events, AssistantMessage) == []
    [notice] = [e for e in events if isinstance(e, SystemNotice) and e.subtype == "api_error"]
    assert notice.data["status"] == 429


def test_the_clis_own_retry_delay_is_not_taken_as_the_servers_retry_after() -> None:
    # A retry_after would pause the whole backend; the CLI's delay is its own backoff.
    events, outcome = replay("r529_always")
    retries = [e.data for e in events if isinstance(e, SystemNotice) and e.subtype == "api_retry"]
    assert retries and retries[-1]["retry_delay_ms"] > 0
    assert isinstance(outcome.error, RetryableError)
    assert outcome.error.retry_after is None


def test_an_error_event_mid_stream_recovers_through_the_fallback_answer() -> None:
    events, outcome = replay("error_mid_stream")
    assert outcome.ok
    assert text_of(events) == "Recovered."


def test_partial_messages_stream_text_once_not_again_from_the_blocks() -> None:
    events, _ = replay("partial_text")
    assert len(of_type(events, TextDelta)) > 2
    assert text_of(events) == "Hello there!" + BLOCK_SEPARATOR + "Second."
    assert "".join(e.text for e in of_type(events, ThinkingDelta)) == "Hmm."


def test_an_abandoned_stream_is_taken_back_and_the_recovered_answer_is_the_text() -> None:
    events, outcome = replay("partial_error_mid_stream")
    assert outcome.ok
    assert "abandoned_blocks" in notices(events)
    # The fragment was streamed before the CLI gave it up; the retraction removes exactly it,
    # and the recovered answer starts the reply afresh (no paragraph break before it).
    assert text_of(events) == "partial answer" + "Recovered."
    assert [e.chars for e in of_type(events, TextRetracted)] == [len("partial answer")]
    tagged = tagged_attempt(1, events, first_seq=0)
    tagged.append(Tagged("j", 1, len(tagged), 1.0, JobSucceeded(attempts=1)))
    assert fold(tagged).results["j"].text == "Recovered."


def test_multibyte_text_split_across_deltas_is_reassembled_exactly() -> None:
    events, _ = replay("partial_utf8")
    assert text_of(events) == "Grüße, 世界! 👋🏽 e\u0301"


@pytest.mark.parametrize("name", FAILED_WITH_RESULT)
def test_a_failed_attempt_still_reports_the_clis_tokens_and_cost(name: str) -> None:
    events, outcome = replay(name)
    result = result_of(name)
    assert not outcome.ok
    assert usage_sum(events) == (result_tokens_of(result), result["total_cost_usd"])


def test_a_failed_result_without_usage_still_reports_its_cost() -> None:
    events, _ = decode([line(type="result", subtype="error_max_turns", is_error=True, total_cost_usd=0.5)])
    assert of_type(events, UsageReported) == [UsageReported(Tokens(), cost_usd=0.5)]


def test_a_job_failing_on_max_turns_costs_what_the_cli_reported() -> None:
    events, outcome = replay("max_turns")
    assert outcome.error is not None
    attempt = tagged_attempt(1, events, 0)
    failed = JobFailed(outcome.error.kind, outcome.error.message, outcome.error.retryable, attempts=1)
    job = fold([*attempt, Tagged("j", 1, len(attempt), 1.0, failed)]).results["j"]
    result = result_of("max_turns")
    assert job.status == "failed"
    assert job.cost_usd == result["total_cost_usd"] > 0
    assert job.tokens == tokens_of(result["usage"])


def test_a_job_retried_after_max_turns_costs_both_attempts() -> None:
    failing, _ = replay("max_turns", retry_limits=True)
    succeeding, outcome = replay("plain_text")
    assert outcome.ok
    first = tagged_attempt(1, failing, 0)
    second = tagged_attempt(2, succeeding, len(first))
    job = fold([*first, *second, Tagged("j", 2, len(first) + len(second), 2.0, JobSucceeded(attempts=2))])
    total = result_of("max_turns")["total_cost_usd"] + result_of("plain_text")["total_cost_usd"]
    assert job.results["j"].cost_usd == pytest.approx(total)


def test_killed_while_waiting_on_the_api_is_a_retryable_process_error() -> None:
    _, outcome = replay("sigterm_waiting_api")
    assert isinstance(outcome.error, RetryableError)
    assert outcome.error.kind == "process"
    assert "143 (SIGTERM)" in outcome.error.message


# --- single lines --------------------------------------------------------------------------------------


def test_a_line_that_is_not_json_is_a_warning_and_decoding_goes_on() -> None:
    events, outcome = decode(["not json at all", "[1, 2]", *lines_of("plain_text")])
    warnings = of_type(events, StreamWarning)
    assert len(warnings) == 2
    assert "not JSON" in warnings[0].message and "'not json at all'" in warnings[0].message
    assert outcome.ok and text_of(events) == "Hello there!"


def test_blank_lines_are_ignored() -> None:
    assert decode(["", "  ", "\r"], returncode=None)[0] == []


def test_an_unknown_type_is_kept_whole() -> None:
    raw = {"type": "tool_progress", "elapsed": 3, "nested": {"a": [1]}}
    events, _ = decode([json.dumps(raw)])
    assert events == [Unrecognized(raw)]


def test_an_unknown_system_subtype_is_a_notice_with_its_fields() -> None:
    events, _ = decode([line(type="system", subtype="model_fallback", uuid="u", session_id="s", to="haiku")])
    assert events == [SystemNotice("model_fallback", {"to": "haiku"})]


def test_a_rate_limit_event_is_a_notice() -> None:
    info = {"status": "allowed_warning", "rateLimitType": "five_hour"}
    events, _ = decode([line(type="rate_limit_event", rate_limit_info=info, uuid="u")])
    assert events == [SystemNotice("rate_limit", {"rate_limit_info": info})]


def test_an_unknown_content_block_is_unrecognized_and_the_rest_of_the_message_kept() -> None:
    content = [{"type": "server_tool_use", "id": "s"}, {"type": "text", "text": "hi"}]
    message = {"id": "m1", "model": "x", "content": content}
    events, _ = decode([line(type="assistant", message=message)])
    assert events == [
        Unrecognized({"type": "server_tool_use", "id": "s"}),
        TextDelta("hi"),
        AssistantMessage((TextBlock("hi"),), message_id="m1"),
    ]


def test_subagent_text_is_not_reply_text_but_its_tool_calls_are_events() -> None:
    message = {
        "id": "m2",
        "content": [
            {"type": "text", "text": "sub"},
            {"type": "tool_use", "id": "t", "name": "Read", "input": {}},
        ],
    }
    events, _ = decode([line(type="assistant", message=message, parent_tool_use_id="toolu_1")])
    assert text_of(events) == ""
    assert of_type(events, ToolCall) == [ToolCall("t", "Read", {})]


def test_tool_result_content_given_as_blocks_is_joined_as_text() -> None:
    content = [{"type": "text", "text": "a"}, {"type": "image", "source": {}}, {"type": "text", "text": "b"}]
    message = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": content}]}
    events, _ = decode([line(type="user", message=message)])
    assert events == [ToolResult("t", "a\n[image]\nb")]


def test_a_second_result_line_is_ignored_with_a_warning() -> None:
    result = lines_of("plain_text")[-1]
    events, outcome = decode([result, result])
    assert len(of_type(events, StreamWarning)) == 1
    assert len(of_type(events, StreamFinished)) == 1 and outcome.ok


def test_bytes_and_str_lines_decode_the_same() -> None:
    raw = lines_of("tool_use")
    assert decode(raw)[0] == decode([b.decode() for b in raw])[0]


# --- classification --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "code", "text", "expected"),
    [
        (429, None, None, "", ("rate_limited", True)),
        (529, None, None, "", ("overloaded", True)),
        (503, None, None, "", ("server_error", True)),
        (500, "overloaded_error", None, "", ("overloaded", True)),
        (401, None, None, "", ("auth", False)),
        (403, None, None, "", ("permission", False)),
        (400, None, None, "", ("bad_request", False)),
        (404, None, None, "", ("not_found", False)),
        (413, None, None, "", ("too_large", False)),
        (408, None, None, "", ("timeout", True)),
        (409, None, None, "", ("conflict", True)),
        (400, "invalid_request_error", None, "prompt is too long: 210000 tokens", ("context_length", False)),
        (None, "overloaded_error", None, "", ("overloaded", True)),
        (None, "authentication_error", None, "", ("auth", False)),
        (None, None, "connection_failed", "", ("connection", True)),
        (None, None, "max_output_tokens", "", ("max_output_tokens", False)),
        (None, None, None, "API Error: Request rejected (429) · slow down", ("rate_limited", True)),
        (None, None, None, "API Error: 400 bad body", ("bad_request", False)),
        (None, None, None, "API Error: Repeated 529 Overloaded errors", ("overloaded", True)),
        (None, None, None, "Request timed out. Set API_TIMEOUT_MS above 3000.", ("timeout", True)),
        (None, None, None, "API Error: Connection dropped (ECONNRESET).", ("connection", True)),
        (None, None, None, "Invalid API key · Fix external API key", ("auth", False)),
        (None, None, None, "something new went wrong", ("api_error", True)),
    ],
)
def test_api_errors_are_classified_by_status_then_type_then_code_then_text(
    status: int | None, error_type: str | None, code: str | None, text: str, expected: tuple[str, bool]
) -> None:
    kind = classify_api_error(status, error_type, code, text)
    assert (kind, kind.retryable) == expected


def test_success_is_decided_by_is_error_whatever_the_subtype() -> None:
    assert classify_result({"subtype": "something_new", "is_error": False}) is None
    error = classify_result({"subtype": "success", "is_error": True, "api_error_status": 503, "result": "x"})
    assert isinstance(error, RetryableError) and error.kind == "server_error"
    assert classify_result({"subtype": "success"}) is None  # no is_error at all: trust the subtype


def test_a_rate_limited_result_carries_no_retry_after() -> None:
    error = classify_result({"is_error": True, "api_error_status": 429, "result": "x"})
    assert isinstance(error, RetryableError) and error.retry_after is None


@pytest.mark.parametrize(
    ("returncode", "stderr", "kind", "retryable", "words"),
    [
        (143, "", "process", True, "exited with code 143 (SIGTERM) without a result line; stderr was empty"),
        (-9, "", "process", True, "was killed by SIGKILL"),
        (1, "line 1\nsegfault in bun", "process", True, "stderr: line 1\nsegfault in bun"),
        (1, "Error: When using --print, stream-json requires --verbose", "cli_usage", False, "verbose"),
        (1, "error: unknown option '--frobnicate'", "cli_usage", False, "frobnicate"),
        (None, "", "process", True, "claude stopped without a result line"),
    ],
)
def test_an_exit_without_a_result_line(
    returncode: int | None, stderr: str, kind: str, retryable: bool, words: str
) -> None:
    error = classify_exit(returncode, stderr)
    assert (error.kind, error.retryable) == (kind, retryable)
    assert words in error.message


# --- properties --------------------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
LINE_TYPES = ["system", "stream_event", "assistant", "user", "result", "rate_limit_event", "other"]
FIELD_NAMES = [
    "subtype",
    "message",
    "event",
    "content",
    "is_error",
    "usage",
    "api_error_status",
    "result",
    "parent_tool_use_id",
    "session_id",
    "api_message_id",
    "abandoned_blocks",
    "tools",
    "errors",
]
ALL_LINES = [raw for name in TRANSCRIPTS for raw in lines_of(name)]


def no_decoder_errors(events: Sequence[StreamEvent]) -> bool:
    return not any(isinstance(e, StreamWarning) and e.message.startswith("decoder error") for e in events)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=200), max_size=20), st.none() | st.integers(-20, 255))
def test_random_bytes_never_crash_the_decoder(lines: list[bytes], returncode: int | None) -> None:
    events, outcome = decode(lines, returncode=returncode, stderr="x")
    assert all(isinstance(e, STREAM_EVENTS) for e in events)
    assert isinstance(outcome, Outcome)


@settings(max_examples=200)
@given(
    st.lists(
        st.builds(
            lambda kind, fields: {"type": kind, **fields},
            st.sampled_from(LINE_TYPES),
            st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=6),
        ),
        max_size=4,
    )
)
def test_random_objects_of_known_types_decode_without_decoder_errors(objects: list[dict[str, Any]]) -> None:
    events, _ = decode([json.dumps(o) for o in objects])
    assert no_decoder_errors(events)


def mutate(value: Any, rng: random.Random, replacement: Any) -> Any:
    """``value`` with one randomly chosen nested value replaced."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(sorted(value))
        return {**value, key: mutate(value[key], rng, replacement)}
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        return [*value[:i], mutate(value[i], rng, replacement), *value[i + 1 :]]
    return replacement


@settings(max_examples=400)
@given(st.sampled_from(ALL_LINES), st.randoms(use_true_random=False), json_values)
def test_recorded_lines_with_a_value_swapped_for_garbage_decode_without_decoder_errors(
    raw: bytes, rng: random.Random, replacement: Any
) -> None:
    mutated = mutate(json.loads(raw), rng, replacement)
    events, _ = decode([json.dumps(mutated)])
    assert no_decoder_errors(events)


def shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


@settings(max_examples=60)
@given(st.sampled_from(TRANSCRIPTS), st.randoms(use_true_random=False))
def test_key_order_does_not_matter(name: str, rng: random.Random) -> None:
    raw = lines_of(name)
    reordered = [json.dumps(shuffled(json.loads(r), rng), ensure_ascii=False) for r in raw]
    assert comparable(decode(reordered, returncode=1)) == comparable(decode(raw, returncode=1))


def comparable(decoded: tuple[list[StreamEvent], Outcome]) -> tuple[list[StreamEvent], Any]:
    events, outcome = decoded
    error = outcome.error
    return events, (repr(error), getattr(error, "retry_after", None))


@settings(max_examples=200)
@given(st.binary(max_size=400), st.lists(st.integers(1, 50), max_size=30))
def test_lines_come_out_the_same_however_the_bytes_are_chunked(data: bytes, cuts: list[int]) -> None:
    splitter = LineSplitter()
    got: list[bytes] = []
    position = 0
    for size in cuts:
        got += splitter.feed(data[position : position + size])
        position += size
    got += splitter.feed(data[position:])
    got += splitter.finish()
    expected = data.split(b"\n")
    if expected[-1] == b"":
        expected.pop()
    expected = [x.removesuffix(b"\r") for x in expected]
    assert got == expected


def test_a_multi_megabyte_line_arriving_in_small_chunks_is_one_line() -> None:
    text = "€" * 1_500_000  # 4.5 MB of 3-byte characters, cut mid-character by the chunks
    message = {"id": "m", "content": [{"type": "text", "text": text}]}
    data = (line(type="assistant", message=message) + "\n").encode()
    splitter = LineSplitter()
    lines = [got for i in range(0, len(data), 65_537) for got in splitter.feed(data[i : i + 65_537])]
    assert len(lines) == 1
    events, _ = decode(lines)
    assert text_of(events) == text


TRANSCRIPT_OBJECTS = [[json.loads(raw) for raw in lines_of(name)] for name in TRANSCRIPTS]


@settings(max_examples=300)
@given(st.sampled_from(TRANSCRIPT_OBJECTS).flatmap(stream_of), st.none() | st.integers(-20, 255))
def test_mutated_transcripts_decode_to_well_typed_events_and_an_outcome(
    objects: list[Any], returncode: int | None
) -> None:
    events, outcome = decode([json.dumps(o) for o in objects], returncode=returncode)
    check_events(events)
    assert no_decoder_errors(events)
    assert outcome.error is None or isinstance(outcome.error, BackendError)


def test_a_results_structured_output_replaces_the_text_as_the_reply() -> None:
    events, outcome = decode(
        [
            line(type="assistant", message={"id": "m1", "content": [{"type": "text", "text": "Counting."}]}),
            line(
                type="result",
                subtype="success",
                is_error=False,
                result='{"n":4}',
                structured_output={"n": 4},
                num_turns=2,
                total_cost_usd=0.001,
            ),
        ]
    )
    assert outcome.error is None
    retracted = of_type(events, TextRetracted)
    assert [r.chars for r in retracted] == [len("Counting.")]
    assert fold_text(events) == '{"n":4}'


def test_without_structured_output_the_text_stays_the_reply() -> None:
    events, _ = decode(
        [
            line(type="assistant", message={"id": "m1", "content": [{"type": "text", "text": "Four."}]}),
            line(type="result", subtype="success", is_error=False, result="Four.", num_turns=1),
        ]
    )
    assert not of_type(events, TextRetracted) and fold_text(events) == "Four."


def fold_text(events: Sequence[StreamEvent]) -> str:
    """The reply as the runner reads it: deltas joined, retractions applied."""
    text = ""
    for event in events:
        if isinstance(event, TextDelta):
            text += event.text
        elif isinstance(event, TextRetracted):
            text = text[: len(text) - event.chars]
    return text


def test_the_clis_structured_output_retries_running_out_is_invalid_output() -> None:
    _, outcome = decode(
        [
            line(
                type="result",
                subtype="error_max_structured_output_retries",
                is_error=True,
                errors=["Failed to provide valid structured output after maximum retries"],
                num_turns=6,
            )
        ],
        returncode=1,
    )
    assert isinstance(outcome.error, RetryableError) and outcome.error.kind == "invalid_output"
