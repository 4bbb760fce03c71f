"""Attempts cut short (timeout, Ctrl-C, crash) before the CLI's result line are not free.

The usage the CLI told along the way (per message) reaches the bus as ``usage`` events before the
attempt ends: the job's tokens are a lower bound, its cost is unknown, and the spend cap counts
the estimated cost of what was used.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from orchestrator.backends.claude_code.backend import message_price
from orchestrator.backends.claude_code.decode import ClaudeDecoder
from orchestrator.events import JobFailed, Tagged, Tokens, UsageReported
from orchestrator.record.aggregate import fold
from orchestrator.record.cost import AttemptMeter
from orchestrator.testing.anthropic.server import Reply, Stall, Usage, open_fake_anthropic
from tests.backends.claude_code.test_claude_code import LIMIT, echo_tool, events, job, jump_once, run
from tests.backends.claude_code.test_decode import lines_of, meta_of, of_type, tagged_attempt
from tests.backends.claude_code.test_decode_reply import complete, message_start, stream_line, text_delta

MODEL = "claude-sonnet-4-5"  # in the built-in price table: $3 in, $15 out per million


def flat_price(model: str | None, tokens: Tokens) -> float:
    return tokens.total / 1e6


def cut(lines: list[str | bytes]) -> tuple[list[UsageReported], AttemptMeter]:
    """Decode ``lines`` of an attempt killed before its result; its usage events and meter."""
    decoder = ClaudeDecoder(price=flat_price)
    got = [e for raw in lines for e in decoder.feed(raw)]
    outcome = decoder.finish(-15)
    assert outcome.error is not None and outcome.error.retryable
    meter = AttemptMeter()
    for event in [*got, *outcome.events]:
        if isinstance(event, UsageReported):
            meter.add_usage(event)
    return of_type(got, UsageReported), meter


def test_streamed_usage_of_a_killed_attempt_is_a_lower_bound_with_unknown_cost() -> None:
    start = message_start("m1").replace(
        '"input_tokens": 10, "output_tokens": 1',
        '"input_tokens": 1000, "output_tokens": 1, "cache_read_input_tokens": 200',
    )
    delta = stream_line(
        "m1", {"type": "message_delta", "delta": {"stop_reason": None}, "usage": {"output_tokens": 40}}
    )
    reported, meter = cut([start, text_delta("m1", 0, "Working"), delta])
    assert sum((u.tokens for u in reported), Tokens()) == Tokens(1000, 40, 200)
    spent = meter.cost()
    assert spent.tokens == Tokens(1000, 40, 200)
    assert spent.cost_usd is None  # unknown, never $0
    assert spent.at_least_usd == pytest.approx(1240 / 1e6)


def test_a_messages_usage_repeated_on_each_of_its_lines_counts_once() -> None:
    lines = [complete("m1", "one"), complete("m1", "two"), complete("m2", "three")]
    reported, meter = cut(lines)
    # complete() lines carry no usage; add it the way the CLI prints it, once per block line
    assert reported == [] and meter.cost().cost_usd == 0.0
    with_usage = [
        line.replace(
            '"role": "assistant"', '"role": "assistant", "usage": {"input_tokens": 10, "output_tokens": 3}'
        )
        for line in lines
    ]
    reported, meter = cut(with_usage)
    assert meter.cost().tokens == Tokens(20, 6)


def test_a_recorded_tool_transcript_cut_before_its_result_reports_what_its_messages_used() -> None:
    lines = [raw for raw in lines_of("tool_use") if b'"type":"result"' not in raw]
    _, meter = cut(lines)
    assert meter.cost().tokens.input == 20  # two API calls of 10 prompt tokens each
    assert meter.cost().cost_usd is None


def test_the_result_adds_only_what_the_messages_did_not_show() -> None:
    decoder = ClaudeDecoder(price=flat_price)
    got = [e for raw in lines_of("max_turns") for e in decoder.feed(raw)]
    outcome = decoder.finish(meta_of("max_turns")["returncode"])
    tagged = tagged_attempt(1, [*got, *outcome.events], 0)
    assert outcome.error is not None
    failed = JobFailed(outcome.error.kind, outcome.error.message, False, attempts=1)
    result = fold([*tagged, Tagged("j", 1, len(tagged), 1.0, failed)]).results["j"]
    assert result.cost_usd is not None and result.cost_usd > 0  # the CLI's own total, once


def test_the_message_price_knows_claude_models() -> None:
    price = message_price()
    assert price(MODEL, Tokens(100_000, 0)) == pytest.approx(0.3)
    assert price("no-such-model", Tokens(10, 10)) is None


# --- the real CLI ---------------------------------------------------------------------------------------


async def test_a_timed_out_attempt_reports_its_answered_calls_and_the_spend_cap_counts_them(
    claude_cli: str, home: Path, mock_clock: trio.testing.MockClock
) -> None:
    # The first call is answered (100k prompt tokens, $0.30 at list price), the second stalls
    # until the attempt timeout kills the CLI: no result line, no total_cost_usd.
    answered = attrs.evolve(echo_tool(), usage=Usage(input_tokens=100_000, output_tokens=50))
    mock_clock.rate = 1.0  # the wall clock's pace, but for one jump past the attempt's limit
    async with open_fake_anthropic() as fake, trio.open_nursery() as nursery:
        fake.script(answered, Stall(), Reply.text("never asked"))
        nursery.start_soon(jump_once, mock_clock, lambda: len(fake.requests) >= 2)  # the second stalls
        result, recorder = await run(
            fake,
            home,
            claude_cli,
            [job(model=MODEL), {"id": "second", "prompt": "Say hello.", "model": MODEL}],
            timeouts={"attempt": LIMIT},
            batch={"concurrency": 1, "max_cost_usd": 0.10, "dedupe": False},  # two runs of one prompt
        )
    [failed] = events(recorder, "j", JobFailed)
    assert failed.error_kind == "timeout_attempt"
    usage = events(recorder, "j", UsageReported)
    assert sum((u.tokens for u in usage), Tokens()).input >= 100_000
    first = result.jobs["j"]
    assert first.tokens.input >= 100_000 and first.cost_usd is None  # a lower bound, cost unknown
    # $0.30 spent by the cut attempt is over the $0.10 cap: the second job never starts.
    assert result.jobs["second"].status == "skipped"
    assert result.summary.stopped == "spend cap"
    assert len(fake.requests) == 2
