"""Wire shapes real servers send, replayed through the real HTTP stack (the loopback fakes'
:class:`~orchestrator.testing.raw.Raw` responses): streams that end oddly, errors in unusual
places, bodies that are not event streams."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import orjson
import pytest
import trio

from orchestrator.cli.display import print_summary
from orchestrator.events import RetryScheduled, SessionStarted, StreamWarning, Tokens
from orchestrator.jobs import Alike
from orchestrator.record.results import result_row
from orchestrator.report.fold import read_report
from orchestrator.report.html import render_html
from orchestrator.testing.anthropic.server import open_fake_anthropic
from orchestrator.testing.openai.server import Disconnect, Raw, Reply, open_fake_openai
from tests.http_helpers import events_of, run_jobs

FAST = {"max_attempts": 2, "base_delay": 0.01, "max_delay": 0.05}


@pytest.fixture(autouse=True)
def api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-0123456789")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789")


def chunk(delta: str, finish: str | None = None, **extra: object) -> str:
    choice = {"index": 0, "delta": {"content": delta} if delta else {}, "finish_reason": finish}
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m", "choices": [choice], **extra}
    return "data: " + orjson.dumps(body).decode() + "\n\n"


async def openai_job(
    *responses: object, timeouts: dict[str, float] | None = None, **settings: object
) -> tuple[object, object]:
    async with open_fake_openai() as fake:
        fake.script(*responses)  # type: ignore[arg-type]
        more = {} if timeouts is None else {"timeouts": timeouts}
        result, recorder = await run_jobs(
            "openai", {"base_url": fake.base_url, **settings}, ["q"], model="gpt-4o", retry=FAST, **more
        )
    return next(iter(result.jobs.values())), recorder


# --- 1. [DONE] is not proof of success -----------------------------------------------------------------

LLAMA_CPP_CONTEXT_ERROR = (
    'error: {"code":400,"message":"the request exceeds the available context size, try increasing it",'
    '"type":"exceed_context_size_error","n_prompt_tokens":9000,"n_ctx":4096}\n\n'
)


async def test_an_error_field_line_then_done_fails_with_the_servers_message() -> None:
    job, _ = await openai_job(Raw.events(LLAMA_CPP_CONTEXT_ERROR, "data: [DONE]\n\n"))
    assert (job.status, job.error_kind, job.attempts) == ("failed", "context_length", 1)  # type: ignore[attr-defined]
    assert "exceeds the available context size" in job.error  # type: ignore[attr-defined]


async def test_an_error_field_line_of_a_server_failure_is_retried() -> None:
    line = 'error: {"code":500,"message":"slot crashed","type":"server_error"}\n\n'
    job, recorder = await openai_job(Raw.events(line, "data: [DONE]\n\n"), Reply("fine"))
    assert [r.error_kind for r in events_of(recorder, RetryScheduled)] == ["server_error"]  # type: ignore[arg-type]
    assert job.ok and job.text == "fine"  # type: ignore[attr-defined]


async def test_done_after_nothing_is_a_retryable_protocol_failure_not_an_empty_success() -> None:
    empty_start = 'data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
    job, recorder = await openai_job(Raw.events(empty_start, "data: [DONE]\n\n"), Reply("real answer"))
    (retry,) = events_of(recorder, RetryScheduled)  # type: ignore[arg-type]
    assert retry.error_kind == "protocol" and "without a reply" in retry.message
    assert job.ok and job.text == "real answer"  # type: ignore[attr-defined]


# --- 2. "error": null is not an error ------------------------------------------------------------------


async def test_a_null_error_key_on_every_chunk_is_no_error() -> None:
    stream = [chunk("Hel", error=None), chunk("lo", error=None), chunk("", "stop", error=None)]
    job, _ = await openai_job(Raw.events(*stream, "data: [DONE]\n\n"))
    assert job.ok and job.text == "Hello" and job.attempts == 1  # type: ignore[attr-defined]


# --- 4. a data event that is not JSON fails the attempt ------------------------------------------------


async def test_a_data_event_that_is_not_json_fails_the_attempt_as_retryable_protocol() -> None:
    stream = [chunk("Hel"), 'data: {"choices": [{"delta": {"content": "lo\n\n', chunk("", "stop")]
    job, recorder = await openai_job(Raw.events(*stream, "data: [DONE]\n\n"), Reply("Hello"))
    (retry,) = events_of(recorder, RetryScheduled)  # type: ignore[arg-type]
    assert retry.error_kind == "protocol" and "not a JSON object" in retry.message
    assert job.ok and job.attempts == 2  # type: ignore[attr-defined]


async def test_an_anthropic_event_that_is_not_json_fails_the_attempt_as_retryable_protocol() -> None:
    from orchestrator.testing.anthropic.server import Reply as AnthropicReply

    start = (
        'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","model":"claude-x",'
        '"usage":{"input_tokens":5,"output_tokens":1}}}\n\n'
    )
    async with open_fake_anthropic() as fake:
        fake.script(
            Raw.events(start, "event: content_block_delta\ndata: <html>\n\n"), AnthropicReply.text("ok")
        )
        result, recorder = await run_jobs(
            "anthropic", {"base_url": fake.base_url}, ["q"], model="claude-haiku-4-5", retry=FAST
        )
    assert [r.error_kind for r in events_of(recorder, RetryScheduled)] == ["protocol"]
    assert next(iter(result.jobs.values())).text == "ok"


async def test_stream_warnings_are_counted_in_the_summary_the_report_and_the_html(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    async with open_fake_openai(default=Reply("no usage here", usage=False)) as fake:
        result, _ = await run_jobs(
            "openai", {"base_url": fake.base_url}, ["a", "b"], model="gpt-4o", log=str(log)
        )
    assert result.summary.stream_warnings == 2  # "the server reported no usage", once a job
    report = read_report([log])
    assert report.summary.stream_warnings == 2
    assert "stream warnings" in render_html(report)
    out = io.StringIO()
    print_summary(report.summary, [], stream=out, log=str(log))
    assert "2 stream warnings" in out.getvalue()


# --- 3. a 200 that is not an event stream --------------------------------------------------------------


def json_200(payload: object) -> Raw:
    body = orjson.dumps(payload)
    return Raw((body,), headers={"content-type": "application/json", "content-length": str(len(body))})


async def test_a_json_error_body_with_status_200_fails_at_once_with_the_servers_message() -> None:
    error = {
        "error": {"message": "Invalid model name passed in model=gpt-4o", "type": "invalid_request_error"}
    }
    job, _ = await openai_job(json_200(error))
    assert (job.status, job.error_kind, job.attempts) == ("failed", "bad_request", 1)  # type: ignore[attr-defined]
    assert "Invalid model name" in job.error  # type: ignore[attr-defined]


async def test_a_whole_json_reply_from_a_server_that_ignored_stream_true_is_the_reply() -> None:
    completion = {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Paris.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a":1}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
    job, _ = await openai_job(json_200(completion))
    assert job.ok and job.text == "Paris." and job.stop_reason == "tool_calls"  # type: ignore[attr-defined]
    assert [(c.name, dict(c.input)) for c in job.tool_calls] == [("f", {"a": 1})]  # type: ignore[attr-defined]
    assert job.tokens == Tokens(input=12, output=3)  # type: ignore[attr-defined]


async def test_an_anthropic_whole_message_from_a_server_that_ignored_stream_true_is_the_reply() -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 20, "output_tokens": 7},
    }
    async with open_fake_anthropic() as fake:
        fake.script(json_200(message))
        result, _ = await run_jobs("anthropic", {"base_url": fake.base_url}, ["q"], model="claude-haiku-4-5")
    job = next(iter(result.jobs.values()))
    assert job.ok and job.text == "Let me check." and job.stop_reason == "tool_use"
    assert [(c.call_id, c.name, dict(c.input)) for c in job.tool_calls] == [("toolu_1", "lookup", {"q": "x"})]
    assert job.tokens == Tokens(input=20, output=7)


async def test_an_html_page_with_status_200_is_a_fatal_protocol_error_quoting_it() -> None:
    page = b"<html><head><title>Sign in to the network</title></head><body>Portal</body></html>"
    job, _ = await openai_job(Raw((page,), headers={"content-type": "text/html; charset=utf-8"}))
    assert (job.status, job.error_kind, job.attempts) == ("failed", "protocol", 1)  # type: ignore[attr-defined]
    assert "text/html" in job.error and "Sign in to the network" in job.error  # type: ignore[attr-defined]


async def test_a_gzip_encoded_event_stream_is_decoded_and_identity_is_asked_for() -> None:
    stream = (chunk("Hello, ") + chunk("gzip", "stop") + "data: [DONE]\n\n").encode()
    packed = gzip.compress(stream)
    raw = Raw(
        (packed[:10], packed[10:]), headers={"content-type": "text/event-stream", "content-encoding": "gzip"}
    )
    async with open_fake_openai() as fake:
        fake.script(raw)
        result, _ = await run_jobs("openai", {"base_url": fake.base_url}, ["q"], model="gpt-4o")
    job = next(iter(result.jobs.values()))
    assert job.ok and job.text == "Hello, gzip"
    assert fake.requests[0].headers["accept-encoding"] == "identity"


async def test_an_encoding_the_client_cannot_decode_is_a_fatal_protocol_error() -> None:
    raw = Raw(
        (b"\x28\xb5\x2f\xfd",), headers={"content-type": "text/event-stream", "content-encoding": "zstd"}
    )
    job, _ = await openai_job(raw)
    assert (job.status, job.error_kind, job.attempts) == ("failed", "protocol", 1)  # type: ignore[attr-defined]
    assert "zstd" in job.error  # type: ignore[attr-defined]


# --- 5. Anthropic: the final message_delta without message_stop ----------------------------------------

ANTHROPIC_OPENING = (
    'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
    '"role":"assistant","model":"claude-haiku-4-5","content":[],"stop_reason":null,'
    '"usage":{"input_tokens":25,"output_tokens":1}}}\n\n',
    'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    '"content_block":{"type":"text","text":""}}\n\n',
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    '"delta":{"type":"text_delta","text":"Complete answer."}}\n\n',
    'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n',
)
ANTHROPIC_FINAL_DELTA = (
    'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
    '"stop_sequence":null},"usage":{"output_tokens":15}}\n\n'
)


async def anthropic_job(*responses: object) -> tuple[object, object]:
    async with open_fake_anthropic() as fake:
        fake.script(*responses)  # type: ignore[arg-type]
        result, recorder = await run_jobs(
            "anthropic", {"base_url": fake.base_url}, ["q"], model="claude-haiku-4-5", retry=FAST
        )
    return next(iter(result.jobs.values())), recorder


async def test_an_anthropic_reply_with_its_final_delta_but_no_message_stop_is_accepted_with_a_warning() -> (
    None
):
    job, recorder = await anthropic_job(Raw.events(*ANTHROPIC_OPENING, ANTHROPIC_FINAL_DELTA))
    assert job.ok and job.attempts == 1 and job.text == "Complete answer."  # type: ignore[attr-defined]
    assert job.stop_reason == "end_turn" and job.tokens == Tokens(input=25, output=15)  # type: ignore[attr-defined]
    assert any("without message_stop" in w.message for w in events_of(recorder, StreamWarning))  # type: ignore[arg-type]


async def test_an_anthropic_reply_cut_before_its_final_delta_is_retried() -> None:
    from orchestrator.testing.anthropic.server import Reply as AnthropicReply

    job, recorder = await anthropic_job(Raw.events(*ANTHROPIC_OPENING), AnthropicReply.text("again"))
    assert [r.error_kind for r in events_of(recorder, RetryScheduled)] == ["connection"]  # type: ignore[arg-type]
    assert job.ok and job.text == "again"  # type: ignore[attr-defined]


# --- 6. keep-alives and the first event ----------------------------------------------------------------


async def test_keep_alive_comments_between_events_reset_the_idle_watch(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Silence between the two text events is 1.0 s, twice the idle timeout, filled with comments.
    stream = Raw.events(
        chunk("Hel"), *[": keep-alive\n\n"] * 4, chunk("lo", "stop") + "data: [DONE]\n\n", gap=0.2
    )
    job, recorder = await openai_job(stream, timeouts={"idle": 0.5})
    assert events_of(recorder, RetryScheduled) == []  # type: ignore[arg-type]
    assert job.ok and job.text == "Hello"  # type: ignore[attr-defined]


async def test_anthropic_pings_reset_the_idle_watch(autojump_clock: trio.abc.Clock) -> None:
    ping = 'event: ping\ndata: {"type": "ping"}\n\n'
    stop = 'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    stream = Raw.events(*ANTHROPIC_OPENING, ping, ping, ping, ping, ANTHROPIC_FINAL_DELTA + stop, gap=0.2)
    async with open_fake_anthropic() as fake:
        fake.script(stream)
        result, recorder = await run_jobs(
            "anthropic", {"base_url": fake.base_url}, ["q"], model="claude-haiku-4-5", timeouts={"idle": 0.5}
        )
    assert events_of(recorder, RetryScheduled) == []
    assert next(iter(result.jobs.values())).text == "Complete answer."


async def test_a_slow_first_event_is_first_event_timeouts_to_judge_not_idles(
    autojump_clock: trio.abc.Clock,
) -> None:
    # The session starts at once, then the model thinks for 1.2 s (idle is 0.5 s) before its text.
    role = (
        'data: {"id":"c","model":"o3","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    )
    stream = Raw.events(role, chunk("Thought it through.", "stop") + "data: [DONE]\n\n", gap=1.2)
    job, recorder = await openai_job(stream, timeouts={"idle": 0.5})
    assert events_of(recorder, RetryScheduled) == []  # type: ignore[arg-type]
    assert job.ok and job.text == "Thought it through."  # type: ignore[attr-defined]


async def test_the_first_event_timeout_still_ends_a_wait_that_only_keep_alives_fill(
    autojump_clock: trio.abc.Clock,
) -> None:
    stream = Raw.events(*[": keep-alive\n\n"] * 6, gap=0.1)
    job, recorder = await openai_job(stream, Reply("later"), first_event_timeout=0.3)
    assert [r.error_kind for r in events_of(recorder, RetryScheduled)] == ["timeout_first_event"]  # type: ignore[arg-type]
    assert job.ok and job.text == "later"  # type: ignore[attr-defined]


# --- 8. oversized events --------------------------------------------------------------------------------


async def test_an_event_over_max_event_bytes_fails_the_job_at_once_as_protocol() -> None:
    huge = chunk("x" * 5000)
    job, _ = await openai_job(
        Raw.events(chunk("ok"), huge, chunk("", "stop"), "data: [DONE]\n\n"), max_event_bytes=4096
    )
    assert (job.status, job.error_kind, job.attempts) == ("failed", "protocol", 1)  # type: ignore[attr-defined]
    assert "max_event_bytes" in job.error  # type: ignore[attr-defined]


async def test_max_event_bytes_is_a_setting_that_admits_a_bigger_event() -> None:
    huge = chunk("x" * 5000)
    job, _ = await openai_job(Raw.events(huge, chunk("", "stop"), "data: [DONE]\n\n"), max_event_bytes=8192)
    assert job.ok and job.text == "x" * 5000  # type: ignore[attr-defined]


# --- 9. compatibility ----------------------------------------------------------------------------------


def error_response(status: int, message: str, **headers: str) -> Raw:
    body = orjson.dumps({"error": {"message": message, "type": "api_error"}})
    return Raw(
        (body,),
        status=status,
        headers={"content-type": "application/json", "content-length": str(len(body)), **headers},
    )


async def test_x_should_retry_false_makes_a_5xx_fatal_and_true_makes_a_4xx_retried() -> None:
    job, _ = await openai_job(error_response(500, "do not retry this", **{"x-should-retry": "false"}))
    assert (job.status, job.error_kind, job.attempts) == ("failed", "server_error", 1)  # type: ignore[attr-defined]
    job, recorder = await openai_job(
        error_response(409, "lock timeout", **{"x-should-retry": "true"}), Reply("ok")
    )
    assert [r.error_kind for r in events_of(recorder, RetryScheduled)] == ["conflict"]  # type: ignore[arg-type]
    job, _ = await openai_job(error_response(400, "try again", **{"x-should-retry": "true"}), Reply("ok"))
    assert job.ok and job.attempts == 2  # type: ignore[attr-defined]


async def test_the_providers_request_id_is_recorded_on_each_attempt() -> None:
    stream = chunk("hi", "stop") + "data: [DONE]\n\n"
    ok = Raw((stream.encode(),), headers={"content-type": "text/event-stream", "x-request-id": "req_abc123"})
    failed = error_response(503, "busy", **{"x-request-id": "req_first"})
    job, recorder = await openai_job(failed, ok)
    (retry,) = events_of(recorder, RetryScheduled)  # type: ignore[arg-type]
    assert "req_first" in retry.message
    assert [s.request_id for s in events_of(recorder, SessionStarted)] == ["req_abc123"]  # type: ignore[arg-type]
    # The final attempt's id reaches the job's result and its results-file row.
    assert job.request_id == "req_abc123"  # type: ignore[attr-defined]
    assert result_row(job)["request_id"] == "req_abc123"  # type: ignore[arg-type]


async def test_anthropics_request_id_header_is_recorded() -> None:
    stop = 'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    body = "".join((*ANTHROPIC_OPENING, ANTHROPIC_FINAL_DELTA, stop)).encode()
    raw = Raw((body,), headers={"content-type": "text/event-stream", "request-id": "req_011CRk"})
    _, recorder = await anthropic_job(raw)
    assert [s.request_id for s in events_of(recorder, SessionStarted)] == ["req_011CRk"]  # type: ignore[arg-type]


async def test_groqs_usage_under_x_groq_is_read() -> None:
    usage = {"usage": {"prompt_tokens": 30, "completion_tokens": 4, "total_tokens": 34}}
    last = chunk("", "stop", x_groq={"id": "req_01", **usage})
    job, _ = await openai_job(Raw.events(chunk("Fast."), last, "data: [DONE]\n\n"))
    assert job.tokens == Tokens(input=30, output=4)  # type: ignore[attr-defined]


async def test_extra_headers_are_sent_their_env_values_hidden_and_the_query_kept_after_the_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = "azure-secret-value-0123456789"
    monkeypatch.setenv("GATEWAY_CRED_FOR_TEST", secret)
    monkeypatch.delenv("OPENAI_API_KEY")
    log = tmp_path / "run.jsonl"
    async with open_fake_openai(default=error_response(401, f"bad api-key {secret}")) as fake:
        fake.script(Reply("hi"))
        settings = {
            "base_url": fake.base_url + "?api-version=2024-10-21",
            "api_key_required": False,
            "extra_headers": {"OpenAI-Organization": "org-123"},
            "extra_headers_env": {"api-key": "GATEWAY_CRED_FOR_TEST"},
        }
        result, _ = await run_jobs("openai", settings, ["a", "b"], model="gpt-4o", log=str(log))
    first = fake.requests[0]
    assert first.headers["api-key"] == secret and first.headers["openai-organization"] == "org-123"
    assert "authorization" not in first.headers
    assert first.path == "/v1/chat/completions"
    failed = [job for job in result.jobs.values() if not job.ok]
    assert len(failed) == 1 and secret not in (failed[0].error or "")
    assert secret not in log.read_text()


def test_an_unset_header_variable_and_a_bad_header_name_stop_the_batch_before_it_starts() -> None:
    from orchestrator.backends.http.openai import KIND, Settings

    settings = Settings(
        extra_headers={"bad name": "x"}, extra_headers_env={"api-key": "NO_SUCH_VARIABLE_SET"}
    )
    problems = KIND.preflight(settings, [])
    assert any("'bad name' is not a valid HTTP header name" in p for p in problems)
    assert any("NO_SUCH_VARIABLE_SET is not set" in p for p in problems)


def test_the_sdks_base_url_variables_are_honoured_when_the_settings_leave_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from orchestrator.backends.http import anthropic, openai
    from orchestrator.backends.http.endpoint import with_base_url

    monkeypatch.setenv("OPENAI_BASE_URL", "https://gateway.example/v1")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "https://claude-proxy.example")
    assert with_base_url("openai", openai.Settings()).base_url == "https://gateway.example/v1"
    assert with_base_url("anthropic", anthropic.Settings()).base_url == "https://claude-proxy.example"
    mine = openai.Settings(base_url="http://127.0.0.1:8000/v1")
    assert with_base_url("openai", mine).base_url == "http://127.0.0.1:8000/v1"


async def test_openai_base_url_from_the_environment_reaches_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with open_fake_openai(default=Reply("via env")) as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        result, _ = await run_jobs("openai", {}, ["q"], model="gpt-4o")
    assert next(iter(result.jobs.values())).text == "via env" and len(fake.requests) == 1


@pytest.mark.parametrize(
    ("name", "url", "warned"),
    [
        ("anthropic", "https://api.anthropic.com/v1", True),
        ("anthropic", "https://api.anthropic.com", False),
        ("openai", "http://127.0.0.1:8000", True),
        ("openai", "https://openrouter.ai/api/v1", False),
        ("openai", "https://api.groq.com/openai/v1/", False),
    ],
)
def test_a_base_url_against_the_convention_is_a_warning(name: str, url: str, warned: bool) -> None:
    from orchestrator.backends.http.endpoint import base_url_warnings

    assert bool(base_url_warnings(name, url)) == warned


def test_a_thinking_budget_not_below_max_tokens_stops_the_batch_before_it_starts() -> None:
    from orchestrator.backends.http.anthropic import KIND, Options, Settings
    from orchestrator.spec import JobSpec

    jobs = [
        JobSpec(
            id="deep",
            prompt="q",
            backend="anthropic",
            model="claude-sonnet-4-5",
            max_tokens=2000,
            options=Options(thinking_budget=4000),
        ),
        JobSpec(
            id="fine",
            prompt="q",
            backend="anthropic",
            model="claude-sonnet-4-5",
            max_tokens=8000,
            options=Options(thinking_budget=4000),
        ),
    ]
    (problem,) = KIND.preflight(Settings(), Alike.each(jobs))
    assert problem.startswith("jobs.deep: anthropic.thinking_budget (4000) must be below max_tokens (2000)")


def test_context_size_errors_of_llama_cpp_are_context_length_whatever_the_type() -> None:
    from orchestrator.backends.status import is_context_length

    assert is_context_length(
        "the request exceeds the available context size, try increasing it", "server_error"
    )


async def test_a_refusal_is_kept_apart_from_the_text_and_flagged() -> None:
    delta = {"refusal": "I can't help with that."}
    body = {"id": "c", "model": "gpt-4o", "choices": [{"index": 0, "delta": delta}]}
    refusal = "data: " + orjson.dumps(body).decode() + "\n\n"
    job, _ = await openai_job(Raw.events(refusal, chunk("", "stop"), "data: [DONE]\n\n"))
    assert job.ok and job.text == "" and job.refused  # type: ignore[attr-defined]
    assert job.refusal == "I can't help with that."  # type: ignore[attr-defined]


# --- 7. n > 1 --------------------------------------------------------------------------------------------


def choice_chunk(index: int, content: str, finish: str | None = None) -> str:
    choice = {"index": index, "delta": {"content": content} if content else {}, "finish_reason": finish}
    return "data: " + orjson.dumps({"id": "c", "model": "m", "choices": [choice]}).decode() + "\n\n"


async def test_with_several_choices_only_choice_zero_makes_the_reply() -> None:
    stream = [
        choice_chunk(0, "Red"),
        choice_chunk(1, "Blue"),
        choice_chunk(1, " sky", "stop"),
        choice_chunk(0, " apple"),
        choice_chunk(0, "", "length"),
        'data: {"id":"c","choices":[{"index":2,"delta":{"content":"Green"}},{"index":0,"delta":{}}]}\n\n',
        "data: [DONE]\n\n",
    ]
    job, _ = await openai_job(Raw.events(*stream))
    assert job.ok and job.text == "Red apple" and job.stop_reason == "length"  # type: ignore[attr-defined]


# --- 10. unknown usage is unknown ----------------------------------------------------------------------


async def test_a_reply_without_usage_has_unknown_tokens_cost_counted_never_zero() -> None:
    async with open_fake_openai(default=Reply("no usage", usage=False)) as fake:
        result, _ = await run_jobs("openai", {"base_url": fake.base_url}, ["a", "b"], model="gpt-4o-mini")
    assert all(job.cost_usd is None for job in result.jobs.values())
    assert result.summary.cost_unknown_jobs == 2 and result.summary.cost_usd == 0.0
    out = io.StringIO()
    print_summary(result.summary, [], stream=out, log=None)
    assert "unknown for 2 jobs" in out.getvalue()


async def test_a_whole_json_reply_without_usage_has_an_unknown_cost() -> None:
    completion = {
        "id": "x",
        "model": "gpt-4o",
        "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
    }
    job, _ = await openai_job(json_200(completion))
    assert job.ok and job.cost_usd is None  # type: ignore[attr-defined]


async def test_a_stream_cut_before_it_reported_usage_has_an_unknown_cost_not_zero() -> None:
    # Text was streamed (and billed), then the connection dropped before any usage was sent.
    job, _ = await openai_job(Disconnect(partial="half an answer"), Disconnect(partial="again"))
    assert job.status == "failed"  # type: ignore[attr-defined]
    assert job.cost_usd is None  # type: ignore[attr-defined]
