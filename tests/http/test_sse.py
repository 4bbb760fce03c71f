"""The SSE decoder: the standard's line and field rules, and any split of a stream decodes alike."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.http.sse import ServerSentEvent, SSEDecoder, SSEError
from tests.fuzz import JSON

# A recorded Anthropic-style stream: named events, a comment, a multi-line data field, an id,
# a retry, multi-byte characters (2, 3 and 4 bytes), and a field without a colon.
RECORDED = (
    ": keep-alive comment\n"
    "event: message_start\n"
    'data: {"type":"message_start","message":{"id":"msg_1"}}\n'
    "\n"
    "event: content_block_delta\n"
    'data: {"type":"content_block_delta","delta":{"text":"caf\u00e9 \u2603 \U0001f600"}}\n'
    "\n"
    "id: 7\n"
    "retry: 1500\n"
    "data: first line\n"
    "data:second line\n"
    "data\n"
    "\n"
    ": another comment\n"
    "event: ping\n"
    "data: {}\n"
    "\n"
)
EXPECTED = [
    ServerSentEvent('{"type":"message_start","message":{"id":"msg_1"}}', "message_start"),
    ServerSentEvent(
        '{"type":"content_block_delta","delta":{"text":"caf\u00e9 \u2603 \U0001f600"}}', "content_block_delta"
    ),
    ServerSentEvent("first line\nsecond line\n", "message", "7", 1500),
    ServerSentEvent("{}", "ping", "7"),
]
LINE_ENDS = {"lf": "\n", "crlf": "\r\n", "cr": "\r"}


def decode_all(pieces: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    out: list[ServerSentEvent] = []
    for piece in pieces:
        out.extend(decoder.feed(piece))
    assert not decoder.has_partial
    return out


def recorded(line_end: str, bom: bool = False) -> bytes:
    return (b"\xef\xbb\xbf" if bom else b"") + RECORDED.replace("\n", line_end).encode()


@pytest.mark.parametrize("line_end", LINE_ENDS)
def test_a_recorded_stream_decodes_whole(line_end: str) -> None:
    assert decode_all([recorded(LINE_ENDS[line_end])]) == EXPECTED


@given(
    line_end=st.sampled_from(sorted(LINE_ENDS.values())),
    bom=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=len(recorded("\r\n", True))), max_size=40),
)
def test_any_split_of_a_recorded_stream_decodes_to_the_same_events(
    line_end: str, bom: bool, cuts: list[int]
) -> None:
    data = recorded(line_end, bom)
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert decode_all(pieces) == EXPECTED


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=20))
def test_arbitrary_bytes_decode_the_same_however_split(data: bytes, cuts: list[int]) -> None:
    whole = SSEDecoder().feed(data)
    decoder = SSEDecoder()
    points = sorted({min(c, len(data)) for c in cuts})
    split: list[ServerSentEvent] = []
    for a, b in zip([0, *points], [*points, len(data)], strict=True):
        split.extend(decoder.feed(data[a:b]))
    assert split == whole


def test_a_character_split_between_feeds_comes_out_whole() -> None:
    data = "data: \U0001f600\n\n".encode()
    decoder = SSEDecoder()
    assert decoder.feed(data[:8]) == []
    assert decoder.feed(data[8:]) == [ServerSentEvent("\U0001f600")]


def test_a_crlf_split_between_feeds_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n\r\n") == [ServerSentEvent("a")]


def test_an_event_without_data_is_not_dispatched_but_its_id_counts() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: x\nid: 3\n\ndata: y\n\n") == [ServerSentEvent("y", "message", "3")]


def test_an_id_with_nul_is_ignored_and_retry_needs_digits() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"id: a\x00b\nretry: 1.5\ndata: z\n\n") == [ServerSentEvent("z")]
    assert decoder.retry is None


def test_invalid_utf8_becomes_replacement_characters() -> None:
    assert SSEDecoder().feed(b"data: \xff\n\n") == [ServerSentEvent("\ufffd")]


def test_a_cut_event_is_dropped_and_reported_as_partial() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: complete\n\ndata: cut") == [ServerSentEvent("complete")]
    assert decoder.has_partial


def test_an_oversized_line_or_event_is_refused() -> None:
    with pytest.raises(SSEError):
        SSEDecoder(max_event_bytes=10).feed(b"data: " + b"x" * 20)
    with pytest.raises(SSEError):
        SSEDecoder(max_event_bytes=10).feed(b"data: 12345\ndata: 12345\n")


SSE_PIECES = st.lists(
    st.sampled_from(
        [
            b"data:",
            b"data: ",
            b"event: ",
            b"id: ",
            b"retry: ",
            b"retry: 15",
            b":",
            b"\n",
            b"\r",
            b"\r\n",
            b"\xef\xbb\xbf",
            b"\x00",
        ]
    )
    | st.binary(max_size=12)
    | JSON.map(lambda value: json.dumps(value, ensure_ascii=False).encode()),
    max_size=40,
)


@given(SSE_PIECES, st.integers(min_value=1, max_value=64))
def test_the_decoder_is_total_whatever_the_bytes(pieces: list[bytes], max_event_bytes: int) -> None:
    decoder = SSEDecoder(max_event_bytes=max_event_bytes)
    try:
        for piece in pieces:
            for event in decoder.feed(piece):
                assert isinstance(event, ServerSentEvent)
                assert isinstance(event.data, str) and isinstance(event.event, str) and event.event
                assert isinstance(event.id, str) and "\x00" not in event.id
                assert event.retry is None or (type(event.retry) is int and event.retry >= 0)
    except SSEError:
        pass  # a line or an event over the limit: the decoder's one declared error


def test_an_error_field_line_is_an_error_event_not_dropped() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b'error: {"message":"boom"}\n\ndata: [DONE]\n\n')
    assert events == [ServerSentEvent('{"message":"boom"}', "error"), ServerSentEvent("[DONE]")]
