"""The one attempt-cost rule (its properties), and every consumer of it agreeing on the cases
where copies of the rule used to disagree: the summary, the runner's spend cap, the live panel,
the report's rows and spans, and the HTML tooltip's data."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.backends import register, unregister
from orchestrator.cli.display import Progress
from orchestrator.errors import FatalError, RetryableError
from orchestrator.events import Event, StreamFinished, TextDelta, Tokens, UsageReported
from orchestrator.record.cost import AttemptMeter, attempt_cost
from orchestrator.report.fold import read_report
from orchestrator.report.html import FIELDS, timeline_data
from orchestrator.run.batch import BatchResult
from tests.helpers import FakeBackendKind, make_spec, run_virtual

tokens = st.builds(
    Tokens,
    st.integers(0, 10_000),
    st.integers(0, 10_000),
    st.integers(0, 1000),
    st.integers(0, 1000),
)
costs = st.none() | st.floats(0, 100, allow_nan=False)
usages = st.lists(st.builds(UsageReported, tokens, costs), max_size=6)
finishes = st.none() | st.builds(StreamFinished, tokens=st.none() | tokens, cost_usd=costs)


def metered(usage: Sequence[UsageReported], finished: StreamFinished | None) -> AttemptMeter:
    meter = AttemptMeter()
    for event in usage:
        meter.add_usage(event)
    if finished is not None:
        meter.finish(finished)
    return meter


def _sum(usage: Sequence[UsageReported]) -> Tokens:
    total = Tokens()
    for event in usage:
        total = total + event.tokens
    return total


@given(usages, finishes)
def test_the_streams_own_total_wins_for_tokens_else_the_usage_sum(
    usage: list[UsageReported], finished: StreamFinished | None
) -> None:
    spent = metered(usage, finished).cost()
    own = finished.tokens if finished is not None else None
    assert spent.tokens == (own if own is not None else _sum(usage))


@given(usages, st.builds(StreamFinished, tokens=st.none() | tokens, cost_usd=st.floats(0, 100)))
def test_the_streams_own_cost_wins_over_the_usage_events(
    usage: list[UsageReported], finished: StreamFinished
) -> None:
    assert metered(usage, finished).cost().cost_usd == finished.cost_usd


@given(usages, finishes)
def test_without_a_stream_cost_the_usage_events_stated_costs_add_up(
    usage: list[UsageReported], finished: StreamFinished | None
) -> None:
    stated = [u.cost_usd for u in usage if u.cost_usd is not None]
    if (finished is not None and finished.cost_usd is not None) or not stated:
        return
    cost = metered(usage, finished).cost().cost_usd
    assert cost is not None and math.isclose(cost, math.fsum(stated), abs_tol=1e-9)


@given(usages, finishes, st.booleans())
def test_a_cost_nobody_stated_is_unknown_never_zero_once_anything_was_consumed(
    usage: list[UsageReported], finished: StreamFinished | None, streamed: bool
) -> None:
    meter = metered(usage, finished)
    meter.streamed = streamed  # it produced output, perhaps cut before it said what it used
    spent = meter.cost()
    if finished is not None and finished.cost_usd is not None:
        return
    if any(u.cost_usd is not None for u in usage):
        return
    consumed = finished is not None or spent.tokens.total > 0 or streamed
    assert spent.cost_usd is None if consumed else spent.cost_usd == 0.0


@given(usages, finishes, st.randoms())
def test_the_order_of_usage_events_does_not_matter(
    usage: list[UsageReported], finished: StreamFinished | None, rng: Any
) -> None:
    shuffled = list(usage)
    rng.shuffle(shuffled)
    a, b = metered(usage, finished).cost(), metered(shuffled, finished).cost()
    assert a.tokens == b.tokens
    assert (a.cost_usd is None) == (b.cost_usd is None)
    if a.cost_usd is not None and b.cost_usd is not None:
        assert math.isclose(a.cost_usd, b.cost_usd, abs_tol=1e-9)


def test_the_function_and_the_meter_are_one_rule() -> None:
    usage = UsageReported(Tokens(output=4), cost_usd=0.25)
    assert metered([usage], None).cost() == attempt_cost(Tokens(output=4), 0.25, None)


def test_an_estimated_cost_leaves_the_cost_unknown_but_is_what_the_spend_cap_counts() -> None:
    cut = metered([UsageReported(Tokens(input=100), estimated_cost_usd=0.3)], None).cost()
    assert cut.cost_usd is None and cut.at_least_usd == pytest.approx(0.3)


def test_a_stated_cost_wins_over_estimates_for_the_spend_cap_too() -> None:
    usage = [UsageReported(Tokens(input=100), estimated_cost_usd=0.3), UsageReported(Tokens(), cost_usd=0.5)]
    assert metered(usage, None).cost().at_least_usd == 0.5
    finished = StreamFinished(tokens=Tokens(input=100), cost_usd=0.4)
    assert metered(usage, finished).cost().at_least_usd == 0.4


# Each case: per attempt, the events the backend sends and how the attempt ends; then the cost
# every consumer must show for each attempt and for the job.
@attrs.frozen
class Case:
    attempts: tuple[tuple[tuple[Event, ...], str], ...]  # (events, "ok" | "retry" | "fail")
    attempt_costs: tuple[float | None, ...]
    job_cost: float | None
    job_tokens: Tokens


CASES = {
    # The summary said $1.00 and the live panel $0.00.
    "usage costs, stream total without cost": Case(
        (
            (
                (
                    UsageReported(Tokens(input=10, output=5), cost_usd=0.5),
                    UsageReported(Tokens(output=5), cost_usd=0.5),
                    StreamFinished(stop_reason="end_turn"),
                ),
                "ok",
            ),
        ),
        (1.0,),
        1.0,
        Tokens(input=10, output=10),
    ),
    # The HTML tooltip said "cost ?" for the first attempt.
    "a retried attempt that reported its cost": Case(
        (
            ((UsageReported(Tokens(output=4), cost_usd=0.25),), "retry"),
            ((StreamFinished(tokens=Tokens(input=3, output=9), cost_usd=0.5),), "ok"),
        ),
        (0.25, 0.5),
        0.75,
        Tokens(input=3, output=13),
    ),
    "a failed job that reported its cost": Case(
        (((UsageReported(Tokens(output=4), cost_usd=0.125),), "fail"),),
        (0.125,),
        0.125,
        Tokens(output=4),
    ),
    "the stream's own total wins": Case(
        (
            (
                (
                    UsageReported(Tokens(output=4), cost_usd=0.25),
                    StreamFinished(tokens=Tokens(output=50), cost_usd=2.0),
                ),
                "ok",
            ),
        ),
        (2.0,),
        2.0,
        Tokens(output=50),
    ),
    "no cost stated anywhere is unknown": Case(
        (((StreamFinished(tokens=Tokens(output=3)),), "ok"),),
        (None,),
        None,
        Tokens(output=3),
    ),
    "refused before it consumed anything is free": Case(
        (((), "retry"), ((StreamFinished(cost_usd=0.5),), "ok")),
        (0.0, 0.5),
        0.5,
        Tokens(),
    ),
}


@attrs.frozen
class _Scripted(FakeBackendKind):
    """A backend that plays each job's case, attempt by attempt."""

    name = "scripted"

    async def stream(self, job: Any, attempt: int, emit: Any) -> None:
        events, end = CASES[job.prompt].attempts[attempt - 1]
        if events or end != "retry":  # an attempt refused at once (a 429) streams nothing
            await emit(TextDelta("x"))
        for event in events:
            await emit(event)
        if end == "retry":
            raise RetryableError("try again", kind="overloaded")
        if end == "fail":
            raise FatalError("no", kind="max_turns")


@pytest.fixture(autouse=True)
def scripted() -> Iterator[None]:
    register("scripted", _Scripted())
    yield
    unregister("scripted")


def run_case(name: str, tmp_path: Path, **settings: Any) -> tuple[BatchResult, Progress, Path]:
    log = tmp_path / "cost.jsonl"
    progress = Progress()
    spec = make_spec(
        [{"id": "j", "prompt": name}],
        backend="scripted",
        log=str(log),
        retry={"max_attempts": 3, "base_delay": 0},
        **settings,
    )
    return run_virtual(spec, subscribers=[progress]), progress, log


@pytest.mark.parametrize("name", CASES)
def test_the_summary_charges_the_rule(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    result = run_case(name, tmp_path)[0]
    job = result.jobs["j"]
    assert (job.cost_usd, job.tokens) == (case.job_cost, case.job_tokens)
    assert result.summary.cost_usd == (case.job_cost or 0.0)
    assert result.summary.cost_unknown_jobs == (case.job_cost is None)


@pytest.mark.parametrize("name", CASES)
def test_the_live_panel_shows_what_the_summary_says(name: str, tmp_path: Path) -> None:
    result, progress, _ = run_case(name, tmp_path)
    assert progress.cost == result.summary.cost_usd
    assert len(progress.cost_unknown) == result.summary.cost_unknown_jobs
    unknown = result.summary.cost_unknown_jobs
    assert f"${result.summary.cost_usd:.4f}" + (f" (+{unknown} unknown)" if unknown else "  ") in (
        progress.status_line(1.0)
    )
    assert progress.output_tokens == result.summary.tokens.output
    assert progress.running == {}


@pytest.mark.parametrize("name", CASES)
def test_the_report_shows_what_the_summary_says_per_job_and_per_attempt(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    result, _, log = run_case(name, tmp_path)
    report = read_report([log])
    assert report.summary == result.summary
    row = report.jobs["j"]
    assert (row.cost_usd, row.tokens) == (case.job_cost, case.job_tokens)
    spans = report.runs[0].attempts["j"]
    assert tuple(span.cost_usd for span in spans) == case.attempt_costs
    total = Tokens()
    for span in spans:
        total = total + span.tokens
    assert total == row.tokens


@pytest.mark.parametrize("name", CASES)
def test_the_html_tooltip_shows_each_attempts_cost(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    log = run_case(name, tmp_path)[2]
    data = timeline_data(read_report([log]))
    width, at = len(FIELDS), FIELDS.index("cost")
    shown = [data["attempts"][i + at] for i in range(0, len(data["attempts"]), width)]
    assert shown == [-1 if cost is None else cost for cost in case.attempt_costs]  # -1 draws "?"


@pytest.mark.parametrize(
    "name", ["usage costs, stream total without cost", "a failed job that reported its cost"]
)
def test_the_spend_cap_is_charged_the_rule(name: str) -> None:
    # Four jobs of the same case, one at a time, under a cap of 2.5 jobs' cost: the third job
    # starts (2 spent) and the fourth does not (3 spent), provided the runner charges the rule.
    cost = CASES[name].job_cost
    assert cost
    spec = make_spec(
        [{"id": f"j{i}", "prompt": name} for i in range(4)],
        backend="scripted",
        concurrency=1,
        max_cost_usd=cost * 2.5,
        retry={"max_attempts": 3, "base_delay": 0},
        dedupe=False,  # the same request four times, each paid for
    )
    summary = run_virtual(spec).summary
    assert summary.stopped == "spend cap"
    assert summary.cost_usd == pytest.approx(cost * 3) and summary.skipped == 1
