"""The fake Anthropic Messages API itself, seen as raw HTTP bytes on 127.0.0.1.

The backends' tests trust the fake to speak the API's wire format; these check that format
directly, with a hand-written HTTP/1.1 client on a trio socket (no HTTP library between the test
and the bytes): the framing of a streamed reply, JSON error responses, and the non-streaming mode.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs
import pytest
import trio

from orchestrator.testing.anthropic.limits import Charge, Meter
from orchestrator.testing.anthropic.server import (
    AnthropicLimits,
    ErrorMidStream,
    HttpError,
    Reply,
    Text,
    ToolUse,
    open_fake_anthropic,
)

MODEL = "claude-test"


@attrs.frozen
class RawResponse:
    """A response as read off the socket: the body de-chunked, and its chunks kept when chunked."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes
    chunks: tuple[bytes, ...] | None


def parse_response(raw: bytes) -> RawResponse:
    """Parse a whole HTTP/1.1 response, strictly: a chunked body must end with its last chunk,
    any other body must be exactly ``content-length`` bytes."""
    head, separator, rest = raw.partition(b"\r\n\r\n")
    assert separator, "no end of head"
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, status, reason = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {}
    for header in header_lines:
        name, _, value = header.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") != "chunked":
        assert int(headers["content-length"]) == len(rest)
        return RawResponse(int(status), reason, headers, rest, None)
    chunks: list[bytes] = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        data, end, rest = rest[:size], rest[size : size + 2], rest[size + 2 :]
        assert end == b"\r\n", "chunk not followed by CRLF"
        if size == 0:
            assert rest == b"", "bytes after the last chunk"
            return RawResponse(int(status), reason, headers, b"".join(chunks), tuple(chunks))
        chunks.append(data)


async def post_messages(port: int, body: Mapping[str, Any]) -> RawResponse:
    """``POST /v1/messages?beta=true`` as the Claude Code CLI sends it; reads until the fake closes."""
    payload = json.dumps(body).encode()
    request = (
        f"POST /v1/messages?beta=true HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nx-api-key: test\r\n"
        f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    received = bytearray()
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(request)
            while data := await stream.receive_some(65536):
                received += data
    return parse_response(bytes(received))


def request_body(*, stream: bool) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 100,
        "stream": stream,
        "messages": [{"role": "user", "content": "Say hello."}],
    }


def sse_events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The events of an SSE body in which every event is exactly ``event: NAME\\ndata: JSON\\n\\n``."""
    text = body.decode("utf-8")
    assert text.endswith("\n\n")
    events = []
    for frame in text.removesuffix("\n\n").split("\n\n"):
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        events.append((event_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))))
    return events


TOOL_REPLY = Reply(
    (
        Text("Hello, world!", chunks=("Hello", ", world!")),
        ToolUse("Bash", {"command": "echo hi"}, id="toolu_1"),
    )
)


async def test_a_streamed_reply_is_a_chunked_event_stream_of_json_events() -> None:
    async with open_fake_anthropic() as fake:
        fake.script(TOOL_REPLY)
        response = await post_messages(fake.port, request_body(stream=True))
    assert (response.status, response.reason) == (200, "OK")
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["connection"] == "close"
    assert "content-length" not in response.headers
    assert response.chunks  # parse_response checked the framing down to the last chunk
    events = sse_events(response.body)
    assert all(data["type"] == name for name, data in events)


async def test_a_streamed_reply_comes_in_the_messages_api_event_order() -> None:
    async with open_fake_anthropic() as fake:
        fake.script(TOOL_REPLY)
        response = await post_messages(fake.port, request_body(stream=True))
    events = sse_events(response.body)
    names = [name for name, _ in events]
    text_block = ["content_block_start", "content_block_delta", "content_block_delta", "content_block_stop"]
    assert names[:2] == ["message_start", "ping"]
    assert names[2:6] == text_block
    assert names[6] == "content_block_start" and names[-3] == "content_block_stop"
    assert set(names[7:-3]) == {"content_block_delta"}
    assert names[-2:] == ["message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["model"] == MODEL and start["content"] == [] and start["stop_reason"] is None
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert [d["text"] for d in deltas if d["type"] == "text_delta"] == ["Hello", ", world!"]
    tool_input = "".join(d["partial_json"] for d in deltas if d["type"] == "input_json_delta")
    assert json.loads(tool_input) == {"command": "echo hi"}
    assert events[6][1]["content_block"] == {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}}
    final = events[-2][1]
    assert final["delta"]["stop_reason"] == "tool_use" and final["usage"]["output_tokens"] > 0


async def test_write_size_cuts_the_stream_inside_multibyte_characters() -> None:
    async with open_fake_anthropic() as fake:
        fake.script(Reply((Text("€€€"),), write_size=2))
        response = await post_messages(fake.port, request_body(stream=True))
    assert response.chunks is not None
    assert all(len(chunk) <= 2 for chunk in response.chunks)
    assert any(b"\xe2\x82" == chunk for chunk in response.chunks)  # a "€" cut after 2 of its 3 bytes
    texts = [d["delta"]["text"] for n, d in sse_events(response.body) if n == "content_block_delta"]
    assert "".join(texts) == "€€€"


@pytest.mark.parametrize(
    ("status", "reason", "error_type"),
    [
        (429, "Too Many Requests", "rate_limit_error"),
        (529, "Overloaded", "overloaded_error"),
        (401, "Unauthorized", "authentication_error"),
    ],
)
async def test_an_http_error_is_a_json_error_body_with_its_status_and_retry_after(
    status: int, reason: str, error_type: str
) -> None:
    async with open_fake_anthropic() as fake:
        fake.script(HttpError(status, "slow down", retry_after=2.5))
        response = await post_messages(fake.port, request_body(stream=True))
    assert (response.status, response.reason) == (status, reason)
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"] == "2.5"
    body = json.loads(response.body)
    assert body["type"] == "error"
    assert body["error"] == {"type": error_type, "message": "slow down"}
    assert body["request_id"].startswith("req_")


async def test_a_request_without_stream_gets_one_json_message() -> None:
    async with open_fake_anthropic() as fake:
        fake.script(TOOL_REPLY)
        response = await post_messages(fake.port, request_body(stream=False))
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    message = json.loads(response.body)
    assert (message["type"], message["role"], message["model"]) == ("message", "assistant", MODEL)
    assert message["content"] == [
        {"type": "text", "text": "Hello, world!"},
        {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "echo hi"}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"]["input_tokens"] == 10 and message["usage"]["output_tokens"] > 0


async def test_an_error_mid_stream_ends_the_stream_with_an_error_event_or_is_a_status_without_stream() -> (
    None
):
    async with open_fake_anthropic() as fake:
        fake.script(ErrorMidStream(partial="half"), ErrorMidStream(partial="half"))
        streamed = await post_messages(fake.port, request_body(stream=True))
        whole = await post_messages(fake.port, request_body(stream=False))
    events = sse_events(streamed.body)
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    assert "message_stop" not in [name for name, _ in events]
    assert whole.status == 529
    assert json.loads(whole.body)["error"]["type"] == "overloaded_error"


async def test_every_request_is_recorded_with_its_query_headers_body_and_response() -> None:
    async with open_fake_anthropic() as fake:
        fake.script(TOOL_REPLY)
        await post_messages(fake.port, request_body(stream=True))
        await post_messages(fake.port, request_body(stream=False))  # the script has run out
    first, second = fake.requests
    assert (first.method, first.path, first.query) == ("POST", "/v1/messages", "beta=true")
    assert first.headers["x-api-key"] == "test"
    assert first.body == request_body(stream=True) and first.stream and first.prompt() == "Say hello."
    assert (first.response, second.response) == ("Reply", "HttpError")


def test_the_meter_counts_uncached_input_and_output_apart_and_gives_unused_output_back() -> None:
    limits = AnthropicLimits(rpm=60, input_tpm=1000, output_tpm=600)
    meter = Meter(limits, start=0.0)
    # 2,000 cached input tokens do not count; 100 uncached (50 read + 50 written to the cache) do.
    charge = Charge(input_tokens=50, cache_read=2000, cache_creation=50, max_tokens=500)
    first = meter.admit(0.0, charge, wall=0.0)
    assert first.retry_after is None
    assert first.headers["anthropic-ratelimit-input-tokens-remaining"] == "900"
    assert first.headers["anthropic-ratelimit-output-tokens-remaining"] == "100"  # the whole budget
    assert first.headers["anthropic-ratelimit-tokens-remaining"] == "100"  # the tighter of the two
    assert first.headers["anthropic-ratelimit-requests-reset"] == "1970-01-01T00:00:01Z"
    refused = meter.admit(0.0, charge, wall=0.0)
    assert refused.refused_by == "output-tokens" and refused.retry_after == pytest.approx(40.0)
    meter.settle(0.0, max_tokens=500, output_tokens=20)  # 480 of the budget come back
    assert meter.admit(0.0, charge, wall=0.0).retry_after is None
    older = Meter(attrs.evolve(limits, cache_reads_count=True), start=0.0)
    older.admit(0.0, charge, wall=0.0)  # 2,100 counted: the whole bucket
    assert older.admit(1.0, charge, wall=0.0).refused_by == "input-tokens"


async def test_a_limited_fake_sends_its_rate_limit_headers_and_a_429_over_them() -> None:
    limits = AnthropicLimits(rpm=1, input_tpm=100_000, output_tpm=100_000)
    async with open_fake_anthropic(limits=limits, default=Reply.text("hi")) as fake:
        ok = await post_messages(fake.port, request_body(stream=True))
        refused = await post_messages(fake.port, request_body(stream=True))
    assert ok.status == 200
    assert {
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
        "anthropic-ratelimit-tokens-limit",
    } <= set(ok.headers)
    assert refused.status == 429 and refused.headers["retry-after"] == "60"
    assert json.loads(refused.body)["error"]["type"] == "rate_limit_error"
    assert fake.meter is not None and (fake.meter.admitted, fake.meter.refused) == (1, 1)
