"""The HTTP backends pace themselves by the server's rate limits, over loopback on trio's
virtual clock (the fake server's meter and our pacer both read it, so every time is exact).

The fake OpenAI server meters requests and tokens (:mod:`orchestrator.testing.openai.limits`) with buckets
holding half a second's worth: small enough that a batch of a few dozen jobs runs into them.
How close to the ideal makespan a real-time batch comes is measured in ``benchmarks/ratelimit.py``.
"""

from __future__ import annotations

import time

import orjson
import pytest
import trio

from orchestrator.events import AttemptStarted, LimiterChanged, RateLimitInfo, RetryScheduled
from orchestrator.http import open_pool
from orchestrator.testing.anthropic.server import AnthropicLimits, open_fake_anthropic
from orchestrator.testing.anthropic.server import Reply as AnthropicReply
from orchestrator.testing.anthropic.server import Usage as AnthropicUsage
from orchestrator.testing.openai.limits import Meter
from orchestrator.testing.openai.server import RateLimits, Reply, open_fake_openai, timed_reply
from tests.http_helpers import REQUEST, events_of, post_and_read, run_jobs

RPM, TPM, WINDOW = 1200, 36000, 0.5  # 20 requests and 600 tokens a second; buckets of 10 and 300
WORDS = 20  # a reply's tokens; with the prompt's (question NN: 3 tokens) 23 a request


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-ratelimit")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-ratelimit")


def questions(n: int) -> list[object]:
    return [f"question {i:02d}" for i in range(n)]


def test_the_meter_admits_a_full_bucket_then_refuses_until_one_request_refilled() -> None:
    meter = Meter(RateLimits(rpm=600, window=1.0), start=0.0)  # 10 a second, 10 in the bucket
    admitted = [meter.admit(0.0, 1) for _ in range(10)]
    assert all(a.retry_after is None for a in admitted)
    assert admitted[0].headers == {
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-remaining-requests": "9",
        "x-ratelimit-reset-requests": "100ms",
    }
    refused = meter.admit(0.0, 1)
    assert refused.refused_by == "requests" and refused.retry_after == pytest.approx(0.1)
    assert "(RPM): Limit 600" in refused.message
    assert meter.admit(0.1, 1).retry_after is None
    assert (meter.admitted, meter.refused) == (11, 1)


def test_the_meter_charges_tokens_and_says_which_limit_refused() -> None:
    meter = Meter(RateLimits(rpm=600, tpm=6000, window=1.0), start=0.0)  # 100 tokens in the bucket
    assert meter.admit(0.0, 80).headers["x-ratelimit-remaining-tokens"] == "20"
    refused = meter.admit(0.0, 50)
    assert refused.refused_by == "tokens" and refused.retry_after == pytest.approx(0.3)
    assert refused.headers["x-ratelimit-reset-tokens"] == "800ms"


def test_a_fixed_window_meter_refuses_until_the_window_ends_and_says_so_in_its_headers() -> None:
    meter = Meter(RateLimits(rpm=600, window=1.0, fixed=True), start=0.0)  # 10 a one-second window
    assert [meter.admit(0.5, 1).retry_after for _ in range(10)] == [None] * 10
    refused = meter.admit(0.6, 1)
    assert refused.retry_after == pytest.approx(0.4)  # nothing comes back before the window ends
    assert refused.headers == {
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "400ms",
    }
    assert meter.admit(0.99, 1).retry_after is not None
    fresh = meter.admit(1.0, 1)
    assert fresh.retry_after is None and fresh.headers["x-ratelimit-remaining-requests"] == "9"


async def test_a_request_over_the_limit_gets_openais_429_and_its_scripted_reply_waits(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_fake_openai(limits=RateLimits(rpm=600, window=0.1)) as fake:  # one request
        fake.script(Reply("first"), Reply("second"))
        url = fake.base_url + "/chat/completions"
        statuses: list[int] = []
        async with open_pool(None) as pool:
            for _ in range(2):
                async with pool.open_stream("POST", url, body=REQUEST) as response:
                    statuses.append(response.status)
                    head = dict(response.headers)
                    body = await response.read_all()
            await trio.sleep(float(head[b"retry-after-ms"]) / 1000)
            statuses.append((await post_and_read(pool, url))[0])
    # The third got "second": the 429 left the script alone (an empty one answers 500).
    assert statuses == [200, 429, 200]
    assert [r.response for r in fake.requests] == ["Reply", "HttpError", "Reply"]
    assert head[b"x-ratelimit-limit-requests"] == b"600" and head[b"x-ratelimit-remaining-requests"] == b"0"
    assert (head[b"retry-after"], head[b"retry-after-ms"]) == (b"1", b"100")  # a request refills in 0.1 s
    error = orjson.loads(body)["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert fake.meter is not None and fake.meter.refused == 1


async def test_a_batch_paced_to_the_servers_rpm_and_tpm_gets_no_429(autojump_clock: trio.abc.Clock) -> None:
    n = 30
    async with open_fake_openai(
        default=timed_reply(WORDS, 0.05), limits=RateLimits(RPM, TPM, WINDOW)
    ) as fake:
        started = trio.current_time()
        result, recorder = await run_jobs(
            "openai",
            {"base_url": fake.base_url, "rpm": RPM, "tpm": TPM, "burst": "none"},
            questions(n),
            model="gpt-4o",
            max_tokens=WORDS,
            concurrency=8,
        )
        elapsed = trio.current_time() - started
    assert result.summary.succeeded == n and result.summary.retries == 0
    assert fake.meter is not None and fake.meter.refused == 0
    # Paced, not let through in a burst: one start every 60/RPM s, then the last reply's latency.
    assert elapsed == pytest.approx((n - 1) * 60 / RPM + 0.05)
    assert events_of(recorder, RateLimitInfo)[0].requests_limit == RPM  # what the server said


async def test_openai_keeps_unused_completion_budgets_spent_so_the_pace_gets_no_429(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Each request asks for 3x the tokens its reply uses; OpenAI charges the whole budget on
    # arrival. Giving the unused two thirds back to the pace would run into the token limit.
    n = 24
    async with open_fake_openai(
        default=timed_reply(WORDS, 0.05), limits=RateLimits(None, TPM, WINDOW)
    ) as fake:
        result, _ = await run_jobs(
            "openai",
            {"base_url": fake.base_url, "tpm": TPM, "burst": "none"},
            questions(n),
            model="gpt-4o",
            max_tokens=3 * WORDS,
            concurrency=8,
        )
    assert result.summary.succeeded == n and result.summary.retries == 0
    assert fake.meter is not None and fake.meter.refused == 0


async def test_without_configured_limits_the_backend_learns_them_from_the_headers(
    autojump_clock: trio.abc.Clock,
) -> None:
    n, concurrency = 60, 16  # a first burst of 16 requests would hit a bucket of 10
    async with open_fake_openai(
        default=timed_reply(WORDS, 0.05), limits=RateLimits(RPM, TPM, WINDOW)
    ) as fake:
        result, recorder = await run_jobs(
            "openai",
            {"base_url": fake.base_url},
            questions(n),
            model="gpt-4o",
            max_tokens=WORDS,
            concurrency=concurrency,
        )
    assert result.summary.succeeded == n
    learned = {(c.change, c.value) for c in events_of(recorder, LimiterChanged)}
    assert {("rpm", RPM), ("tpm", TPM)} <= learned
    assert fake.meter is not None
    # The first request's headers came before the rest went, so the first burst did not run
    # into the wall (6 of 16 would); the even pace after it keeps 2% below the limits. (Seldom,
    # the clock's jumps over loopback sockets cost a 429 or a few: fewer than that burst.)
    starts = sorted(t.ts for t in recorder.events if isinstance(t.event, AttemptStarted))
    assert starts[1] - starts[0] >= 0.05  # not before the first reply (its latency)
    assert fake.meter.refused < concurrency - 10
    assert len(events_of(recorder, RetryScheduled)) == fake.meter.refused


async def test_a_429_with_retry_after_pauses_every_worker_of_the_backend(
    autojump_clock: trio.abc.Clock,
) -> None:
    # 100 tokens a second, a bucket of 60; a request costs 50 (1 prompt + 49 words). The first
    # reply takes longer than the pacer waits for its headers, so the next 4 go unpaced at 1 s:
    # the first of them goes through, the 3 others are told to wait ~0.4 s for the tokens.
    async with open_fake_openai(
        default=timed_reply(49, 2.0), limits=RateLimits(tpm=6000, window=0.6)
    ) as fake:
        result, recorder = await run_jobs(
            "openai",
            {"base_url": fake.base_url},
            ["q"] * 7,
            model="gpt-4o",
            max_tokens=49,
            concurrency=5,
            dedupe=False,
        )
    assert result.summary.succeeded == 7
    assert fake.meter is not None and fake.meter.refused >= 3
    pauses = [
        (t.ts, t.event)
        for t in recorder.events
        if isinstance(t.event, LimiterChanged) and t.event.change == "paused"
    ]
    assert pauses and "the server asked to wait" in pauses[0][1].reason
    first_until = pauses[0][1].until_s or 0.0
    assert first_until - pauses[0][0] == pytest.approx(0.4)  # what retry-after-ms said
    starts = [t.ts for t in recorder.events if isinstance(t.event, AttemptStarted)]
    for since, pause in pauses:
        until = pause.until_s or 0.0
        assert not [ts for ts in starts if since < ts < until - 1e-3]
    assert len([ts for ts in starts if ts >= first_until - 1e-3]) >= 4


async def serve_one_429_with_anthropic_headers(stream: trio.SocketStream) -> None:
    """Answer a request with Anthropic's 429: rate-limit headers and a Retry-After."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive_some(65536)
    reset = time.time() + 30
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(reset)) + f".{int(reset % 1 * 1000):03d}Z"
    body = b'{"type":"error","error":{"type":"rate_limit_error","message":"Number of requests exceeded"}}'
    head = (
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
        "anthropic-ratelimit-requests-limit: 50\r\nanthropic-ratelimit-requests-remaining: 0\r\n"
        f"anthropic-ratelimit-requests-reset: {stamp}\r\nretry-after: 1\r\n"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    await stream.send_all(head.encode() + body)
    await stream.aclose()


async def test_anthropic_headers_on_a_429_reach_the_pacer_before_the_error() -> None:
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        await nursery.start(trio.serve_listeners, serve_one_429_with_anthropic_headers, listeners)
        result, recorder = await run_jobs(
            "anthropic",
            {"base_url": f"http://127.0.0.1:{port}"},
            ["q"],
            model="claude-sonnet-4-5",
            retry={"max_attempts": 1},
        )
        nursery.cancel_scope.cancel()
    assert result.summary.failed == 1
    (info,) = events_of(recorder, RateLimitInfo)
    assert (info.requests_limit, info.requests_remaining) == (50, 0)
    assert info.requests_reset_s == pytest.approx(30, abs=2)
    kinds = [t.event.kind for t in recorder.of_job(next(iter(result.jobs)))]
    assert kinds.index("rate_limit_info") < kinds.index("job_failed")
    changes = {(c.change, c.value) for c in events_of(recorder, LimiterChanged)}
    assert ("rpm", 50) in changes and ("paused", None) in changes


async def test_a_derived_in_flight_limit_rises_above_64_when_rate_and_latency_call_for_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    # 60,000 a minute (1,000 a second) at 0.5 s a reply: Little's law wants ~1,000 in flight;
    # the batch allows 150, more than the 64 the backend starts with.
    async with open_fake_openai(
        default=timed_reply(WORDS, 0.5), limits=RateLimits(rpm=60000, window=60.0)
    ) as fake:
        result, recorder = await run_jobs(
            "openai", {"base_url": fake.base_url}, questions(600), model="gpt-4o", concurrency=150
        )
    assert result.summary.succeeded == 600
    raised = [c for c in events_of(recorder, LimiterChanged) if c.change == "concurrency"]
    assert raised and raised[-1].value == 150 and "Little's law" in raised[-1].reason
    assert fake.peak_connections > 64


async def test_an_anthropic_batch_sharing_a_cached_prefix_is_paced_by_its_uncached_input(
    autojump_clock: trio.abc.Clock,
) -> None:
    # 6,000 uncached input tokens a minute. Each prompt is ~2,000 tokens, all but 20 of them a
    # cached prefix: counted as the API counts them, 30 jobs fit in the bucket at once; counted
    # whole they would take ten minutes.
    prefix = "context " * 1000
    usage = AnthropicUsage(input_tokens=20, output_tokens=5, cache_read_input_tokens=2000)
    limits = AnthropicLimits(rpm=6000, input_tpm=6000, output_tpm=60000)
    async with open_fake_anthropic(default=AnthropicReply.text("ok", usage=usage), limits=limits) as fake:
        result, recorder = await run_jobs(
            "anthropic",
            {"base_url": fake.base_url},
            [prefix + f"question {i}" for i in range(30)],
            model="claude-sonnet-4-5",
            max_tokens=5,
            concurrency=8,
        )
    assert result.summary.succeeded == 30 and result.summary.retries == 0
    assert fake.meter is not None and fake.meter.refused == 0
    learned = {c.change for c in events_of(recorder, LimiterChanged)}
    assert {"input_tpm", "output_tpm"} <= learned
    assert result.summary.wall_s < 60
