"""The pure core of the local backend: llama.cpp's chunks in, stream events out, no model."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.backends.local.decode import ChunkDecoder, StopMatcher
from orchestrator.errors import BackendError, FatalError, RetryableError
from orchestrator.events import (
    SessionStarted,
    StreamEvent,
    StreamFinished,
    StreamWarning,
    TextDelta,
    Tokens,
    UsageReported,
)
from tests.fuzz import JSON, check_events, stream_of


def chunk(**fields: object) -> str:
    return orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", **fields}).decode()


def content(text: str, *, predicted: int) -> str:
    timings = {"prompt_n": 30, "cache_n": 5, "predicted_n": predicted}
    return chunk(choices=[{"index": 0, "delta": {"content": text}, "finish_reason": None}], timings=timings)


def finish(reason: str) -> str:
    return chunk(choices=[{"index": 0, "delta": {}, "finish_reason": reason}])


USAGE = chunk(
    choices=[],
    usage={
        "completion_tokens": 3,
        "prompt_tokens": 35,
        "total_tokens": 38,
        "prompt_tokens_details": {"cached_tokens": 5},
    },
)
ROLE = chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}])


def decode(chunks: Sequence[str], stops: Sequence[str] = ()) -> tuple[ChunkDecoder, list[StreamEvent]]:
    decoder = ChunkDecoder("m", stops)
    events = [e for c in chunks for e in decoder.feed([c])]
    return decoder, events + decoder.finish(1.0)


def test_decoder_streams_text_then_usage_and_finish() -> None:
    _, events = decode([ROLE, content("Hel", predicted=1), content("lo", predicted=2), finish("stop"), USAGE])
    assert events[0] == SessionStarted(session_id="chatcmpl-1", model="m")
    assert events[1:3] == [TextDelta("Hel"), TextDelta("lo")]
    assert events[3] == UsageReported(Tokens(input=30, output=3, cache_read=5))
    assert events[4] == StreamFinished("end_turn", Tokens(30, 3, 5), 0.0, 1.0, 1, "chatcmpl-1")


def test_decoder_merges_the_text_of_one_batch() -> None:
    decoder = ChunkDecoder("m")
    events = decoder.feed(
        [ROLE, content("a", predicted=1), content("b", predicted=2), content("c", predicted=3)]
    )
    assert events[1:] == [TextDelta("abc")]


def test_decoder_maps_length_to_max_tokens() -> None:
    _, events = decode([ROLE, content("x", predicted=1), finish("length"), USAGE])
    assert isinstance(events[-1], StreamFinished) and events[-1].stop_reason == "max_tokens"


def test_decoder_counts_tokens_up_to_the_stop_string() -> None:
    chunks = [ROLE, content("1, 2", predicted=2), content(", 3", predicted=4), content(", 4", predicted=6)]
    decoder, events = decode(chunks, stops=[", 3"])
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["1, 2"]
    assert events[-1] == StreamFinished("stop_sequence", Tokens(30, 4, 5), 0.0, 1.0, 1, "chatcmpl-1")
    assert decoder.stop_matched


def test_decoder_a_prompt_over_the_context_is_fatal_context_length() -> None:
    error = {"code": 400, "type": "exceed_context_size_error", "message": "request (731 tokens) exceeds..."}
    with pytest.raises(FatalError) as caught:
        ChunkDecoder("m").feed([orjson.dumps({"error": error}).decode()])
    assert caught.value.kind == "context_length"


def test_decoder_warns_about_a_chunk_that_is_not_json() -> None:
    events = ChunkDecoder("m").feed(["data: [DONE]"])
    assert len(events) == 1 and isinstance(events[0], StreamWarning)


def test_a_stream_without_finish_reason_is_retryable() -> None:
    decoder = ChunkDecoder("m")
    decoder.feed([ROLE, content("x", predicted=1)])
    with pytest.raises(Exception) as caught:
        decoder.finish(1.0)
    assert getattr(caught.value, "retryable", False)


@given(
    text=st.text(alphabet="ab, ", max_size=40),
    stops=st.lists(st.text(alphabet="ab, ", min_size=1, max_size=4), max_size=3),
    cuts=st.lists(st.integers(0, 40), max_size=8),
)
def test_stop_matcher_output_is_the_text_before_the_first_stop_whatever_the_chunking(
    text: str, stops: list[str], cuts: list[int]
) -> None:
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    matcher = StopMatcher(stops)
    out = "".join(matcher.push(text[a:b]) for a, b in itertools.pairwise(bounds))
    out += matcher.flush()
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    assert out == (text[: min(hits)] if hits else text)
    assert matcher.matched == bool(hits)


SEED_STREAM = [
    orjson.loads(c)
    for c in [
        ROLE,
        chunk(choices=[{"index": 0, "delta": {"reasoning_content": "hmm"}, "finish_reason": None}]),
        content("Hel", predicted=1),
        content("lo", predicted=2),
        finish("stop"),
        USAGE,
    ]
]


def decode_any(chunks: Sequence[Any], stops: Sequence[str]) -> None:
    decoder = ChunkDecoder("m", stops)
    try:
        for value in chunks:
            check_events(decoder.feed([json.dumps(value)]))
        check_events(decoder.finish(1.0))
    except BackendError:
        pass  # the attempt ends with a classified error: allowed


@given(stream_of(SEED_STREAM), st.sampled_from([(), ("lo",), ("x", "el")]))
def test_the_decoder_is_total_on_mutated_streams(chunks: list[Any], stops: tuple[str, ...]) -> None:
    decode_any(chunks, stops)


@given(st.lists(JSON, max_size=8))
def test_the_decoder_is_total_on_random_json(chunks: list[Any]) -> None:
    decode_any(chunks, ())


@pytest.mark.parametrize(
    "fields",
    [
        {"choices": "oops"},
        {"choices": ["oops"]},
        {"choices": [{"delta": "oops"}]},
        {"choices": [{"delta": {"content": ["part"]}}]},
        {"choices": [{"delta": {}, "finish_reason": 3}]},
    ],
)
def test_a_wrong_typed_field_is_a_protocol_error(fields: dict[str, Any]) -> None:
    with pytest.raises(RetryableError, match="malformed stream") as caught:
        ChunkDecoder("m").feed([chunk(**fields)])
    assert caught.value.kind == "protocol"


def test_an_error_chunk_that_is_not_an_object_is_still_an_error() -> None:
    with pytest.raises(FatalError, match="out of cheese"):
        ChunkDecoder("m").feed([orjson.dumps({"error": "out of cheese"}).decode()])


def test_odd_token_counts_read_as_zero() -> None:
    timings = {"prompt_n": "30", "cache_n": -5, "predicted_n": 2.5}
    _, events = decode([chunk(choices=[], timings=timings), finish("stop")])
    assert events[-1] == StreamFinished("end_turn", Tokens(), 0.0, 1.0, 1, "chatcmpl-1")
