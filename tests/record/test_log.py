"""The log file itself: appending after a crash, reading a torn tail."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import codec
from orchestrator.errors import ErrorKind
from orchestrator.events import (
    AttemptStarted,
    BatchStarted,
    Event,
    JobCancelled,
    JobFailed,
    JobQueued,
    JobSucceeded,
    LimiterChanged,
    RetryScheduled,
    StreamFinished,
    Tagged,
    TextDelta,
    TextRetracted,
    ThinkingDelta,
    Tokens,
    UsageReported,
)
from orchestrator.record.aggregate import fold
from orchestrator.record.coalesce import HeldLines
from orchestrator.record.log import (
    COMMIT_INTERVAL,
    HEADER_KIND,
    LogError,
    LogHeader,
    LogRecord,
    LogWriter,
    read_log,
)
from orchestrator.report.fold import fold_runs, read_report
from tests.helpers import as_logged

HEADER = LogHeader(schema=1, version="t", run_id="r", started_at="now", job_file=None, jobs=1, settings={})


def line(job: str) -> bytes:
    return codec.encode_tagged(Tagged(job, 1, 0, 1.0, JobSucceeded(attempts=1)))


def header_line() -> bytes:
    return orjson.dumps({"kind": HEADER_KIND, **codec.to_jsonable(HEADER)}) + b"\n"


def test_appending_after_a_torn_line_drops_only_the_torn_part(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    log.write_bytes(header_line() + line("a") + line("b")[:20])
    writer = LogWriter(str(log))
    writer.open(HEADER)
    writer.close()
    records = list(read_log(log))
    assert [r.tagged.job_id for r in records if r.tagged] == ["a"]
    assert records[-1].header is not None


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    log.write_bytes(header_line() + line("a") + line("b").rstrip(b"\n"))
    assert [r.tagged.job_id for r in read_log(log) if r.tagged] == ["a", "b"]
    writer = LogWriter(str(log))
    writer.open(HEADER)
    writer.close()
    assert [r.tagged.job_id for r in read_log(log) if r.tagged] == ["a", "b"]  # not cut on append


NOT_LOGS = {
    "job file": b'[defaults]\nbackend = "sim"\n[[jobs]]\nprompt = "hi"\n',
    "job file without a final newline": b'[[jobs]]\nprompt = "hi"',
    "prompts file": b'"one prompt"\n{"prompt": "two"}\n',
    "prompts file of one line": b'"one prompt"',
    "an event line first": line("a"),
    "a blank first line": b"\n" + header_line(),
    "binary": bytes(range(256)),
}


@pytest.mark.parametrize("content", NOT_LOGS.values(), ids=NOT_LOGS.keys())
def test_a_file_that_is_not_a_log_is_neither_read_nor_modified(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "not-a-log"
    path.write_bytes(content)
    with pytest.raises(LogError, match="not a log written by orchestrate"):
        list(read_log(path))
    with pytest.raises(LogError, match="not a log"):
        LogWriter(str(path)).open(HEADER)
    assert path.read_bytes() == content


@pytest.mark.parametrize("cut", [0, 1, 10, 19, 40])
def test_a_header_cut_by_a_crash_is_an_empty_log(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "run.jsonl"
    path.write_bytes(header_line()[:cut])
    assert list(read_log(path)) == []
    writer = LogWriter(str(path))
    writer.open(HEADER)
    writer.close()
    assert [r.header for r in read_log(path)] == [HEADER]


@pytest.mark.parametrize(
    "bad, message",
    [(b"[1, 2]", "line 3: expected a JSON object, got list"), (b'"text"', "line 3: expected a JSON object")],
)
def test_a_hand_edited_line_that_is_not_an_object_names_file_and_line(
    tmp_path: Path, bad: bytes, message: str
) -> None:
    path = tmp_path / "run.jsonl"
    path.write_bytes(header_line() + line("a") + bad + b"\n" + line("b"))
    with pytest.raises(LogError, match=f"{path}: {message}"):
        list(read_log(path))


# --- the log coalesces runs of deltas: folding it gives what folding the live events gives ----

ATTEMPT_EVENTS = st.lists(
    st.one_of(
        st.text(max_size=4).map(TextDelta),
        st.text(max_size=4).map(ThinkingDelta),
        st.integers(0, 6).map(TextRetracted),
        st.just(UsageReported(Tokens(input=3, output=1))),
    ),
    max_size=12,
)


@st.composite
def live_batches(draw: st.DrawFn) -> list[list[Tagged]]:
    """Tagged events of a few jobs (some retried, some failing), interleaved at random and cut
    into the batches the bus would deliver."""
    streams: list[list[Event]] = []
    for _ in range(draw(st.integers(1, 4))):
        attempts = draw(st.lists(ATTEMPT_EVENTS, min_size=1, max_size=3))
        events: list[Event] = [JobQueued(backend="sim", model=None, content_hash="h")]
        for n, stream in enumerate(attempts, start=1):
            events += [AttemptStarted(backend="sim"), *stream]
            if n < len(attempts):
                events.append(RetryScheduled(1.0, ErrorKind.CONNECTION, "reset"))
        end = draw(st.sampled_from(["succeeded", "failed", "cancelled", "none"]))
        if end == "succeeded":
            events += [StreamFinished(cost_usd=0.01), JobSucceeded(attempts=len(attempts))]
        elif end == "failed":
            events.append(JobFailed(ErrorKind.CONNECTION, "reset", True, len(attempts)))
        elif end == "cancelled":  # a stop (Ctrl-C, a deadline) ended it mid-stream
            events.append(JobCancelled("interrupted", len(attempts)))
        else:  # a torn-down run: the job, waiting to retry, never ends (the writer's close writes it)
            # (not a delta last: a joined run keeps its first ts, so the log could not say
            # when an unended job's last delta came)
            events.append(RetryScheduled(1.0, ErrorKind.CONNECTION, "reset"))
        streams.append(events)
    positions = [0] * len(streams)
    attempt = [0] * len(streams)
    order: list[Tagged] = [
        Tagged(None, 0, 0, 0.0, BatchStarted(run_id="r", jobs=len(streams), started_at="t"))
    ]
    ts = 0.0
    while any(p < len(s) for p, s in zip(positions, streams, strict=True)):
        j = draw(st.sampled_from([i for i, s in enumerate(streams) if positions[i] < len(s)]))
        event = streams[j][positions[j]]
        attempt[j] += isinstance(event, AttemptStarted)
        ts += draw(st.sampled_from([0.0, 0.000_001, 0.25]))
        order.append(Tagged(f"j{j}", attempt[j], positions[j], ts, event))
        positions[j] += 1
        if draw(st.integers(0, 5)) == 0:  # a batch-level event (a spend cap, a halt) mid-stream
            order.append(
                Tagged(None, 0, len(order), ts, LimiterChanged("sim", "spend_cap", None, None, "cap"))
            )
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=6)))
    return [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True)]


def write_log(path: Path, batches: list[list[Tagged]]) -> list[Tagged]:
    writer = LogWriter(str(path), fsync="never")
    writer.open(HEADER)

    async def deliver() -> None:
        for batch in batches:
            await writer.deliver(batch)

    trio.run(deliver)
    writer.close()
    return [r.tagged for r in read_log(path) if r.tagged is not None]


@given(live_batches())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_folding_the_written_log_equals_folding_the_live_events(
    tmp_path: Path, batches: list[list[Tagged]]
) -> None:
    path = tmp_path / "run.jsonl"
    path.unlink(missing_ok=True)
    live = [t for batch in batches for t in batch]
    logged = write_log(path, batches)
    assert len(logged) <= len(live)
    assert as_logged(logged) == as_logged(live)  # the same events, runs of deltas joined
    assert fold(logged).results == fold(live).results  # texts (retractions applied), ttft, tokens
    assert fold(logged).summary(9.0) == fold(live).summary(9.0)
    header = (str(path), LogRecord(1, header=HEADER))
    records = [header, *((str(path), LogRecord(n, tagged=t)) for n, t in enumerate(live, start=2))]
    assert fold_runs(records) == read_report([path])  # what report shows, from the log alone
    for job in {t.job_id for t in live if t.job_id is not None}:
        spans = [(t.seq, t.last_seq) for t in logged if t.job_id == job]
        covered = [seq for first, last in spans for seq in range(first, last + 1)]
        assert covered == list(range(len(covered)))  # gap-free seq, each once
        assert covered[-1] == max(t.seq for t in live if t.job_id == job)


def test_a_run_of_deltas_is_one_record_with_the_first_seq_and_ts_and_seq_end(tmp_path: Path) -> None:
    batch = [
        Tagged("a", 1, 1, 0.1, AttemptStarted(backend="sim")),
        Tagged("a", 1, 2, 0.2, TextDelta("Hel")),
        Tagged("b", 1, 5, 0.25, TextDelta("other")),
        Tagged("a", 1, 3, 0.3, TextDelta("lo")),
        Tagged("a", 1, 4, 0.4, ThinkingDelta("hm")),
        Tagged("a", 1, 5, 0.5, JobSucceeded(attempts=1)),
    ]
    path = tmp_path / "run.jsonl"
    logged = write_log(path, [batch])
    lines = [orjson.loads(raw) for raw in path.read_bytes().splitlines()[1:]]
    # a's records share a line: each after the first is [kind, microseconds after the one before,
    # fields]; seq 2 and attempt 1 follow from the record before (see test_lines.py)
    assert lines[0] == {
        "job": "a",
        "seq": 1,
        "ts": 0.1,
        "kind": "attempt_started",
        "backend": "sim",
        "then": [
            ["text_delta", 100_000, {"seq_end": 3, "text": "Hello"}],
            ["thinking_delta", 200_000, {"text": "hm"}],
            ["job_succeeded", 100_000],
        ],
    }
    assert logged[1] == Tagged("a", 1, 2, 0.2, TextDelta("Hello"), seq_end=3)
    # A job's line is written when the job ends; b's, still open, when the writer closes.
    assert lines[1] == {"job": "b", "attempt": 1, "seq": 5, "ts": 0.25, "kind": "text_delta", "text": "other"}
    assert [(t.job_id, t.event.kind) for t in logged] == [
        ("a", "attempt_started"),
        ("a", "text_delta"),
        ("a", "thinking_delta"),
        ("a", "job_succeeded"),
        ("b", "text_delta"),
    ]


def test_a_jobs_records_are_held_at_most_about_a_second_of_later_events() -> None:
    held = HeldLines(hold_s=1.0)
    assert held.feed([Tagged("a", 1, 2, 0.5, TextDelta("x"))]) == []
    assert (
        held.feed([Tagged("a", 1, 3, 1.0, TextDelta("y")), Tagged("b", 1, 0, 1.4, AttemptStarted("sim"))])
        == []
    )
    written = held.feed([Tagged("b", 1, 1, 1.5, TextDelta("z"))])
    assert written == [[Tagged("a", 1, 2, 0.5, TextDelta("xy"), 3)]]  # 1 s after its first record
    assert held.drain() == [
        [Tagged("b", 1, 0, 1.4, AttemptStarted("sim")), Tagged("b", 1, 1, 1.5, TextDelta("z"))]
    ]
    assert held.drain() == []


def test_new_jobs_are_written_with_their_batch_in_the_order_they_were_queued() -> None:
    held = HeldLines(hold_s=1.0)
    a0, a1 = (
        Tagged("a", 0, 0, 0.1, JobQueued("sim", None, "h")),
        Tagged("a", 1, 1, 0.2, AttemptStarted("sim")),
    )
    b0, b1 = (
        Tagged("b", 0, 0, 0.1, JobQueued("sim", None, "h")),
        Tagged("b", 0, 1, 0.2, JobFailed(ErrorKind.AUTH, "m", False, 0)),
    )
    c1 = Tagged("c", 1, 1, 0.3, TextDelta("x"))
    # b ends first, yet a was queued first: a's line comes first; c (queued earlier) waits.
    assert held.feed([a0, b0, c1, a1, b1]) == [[a0, a1], [b0, b1]]
    c2 = Tagged("c", 1, 2, 0.4, UsageReported(Tokens(1, 1)))
    started = Tagged(None, 0, 1, 0.4, BatchStarted("r", 1, "t"))
    assert held.feed([c2, started]) == [[c1, c2], [started]]  # batch-level records stay in place


@pytest.mark.parametrize("seq_end", [2, 1, "3", 2.5, True])
def test_a_bad_seq_end_is_refused(seq_end: object) -> None:
    line = {
        "job": "a",
        "attempt": 1,
        "seq": 2,
        "seq_end": seq_end,
        "ts": 0.0,
        "kind": "text_delta",
        "text": "x",
    }
    with pytest.raises(codec.DecodeError, match="seq_end"):
        codec.decode_tagged(line)


def test_only_deltas_may_carry_seq_end() -> None:
    line = {
        "job": "a",
        "attempt": 1,
        "seq": 2,
        "seq_end": 3,
        "ts": 0.0,
        "kind": "job_succeeded",
        "attempts": 1,
    }
    with pytest.raises(codec.DecodeError, match="seq_end"):
        codec.decode_tagged(line)


async def test_fsyncs_start_at_least_the_commit_interval_apart(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    writer = LogWriter(str(tmp_path / "run.jsonl"))
    writer.open(HEADER)
    ended: list[float] = []
    for job, at in [("a", 0.0), ("b", 0.001), ("c", 1.0)]:
        await trio.sleep_until(at)
        await writer.deliver([Tagged(job, 1, 0, at, JobSucceeded(attempts=1))])
        ended.append(trio.current_time())
    await writer.deliver([Tagged("d", 1, 0, 1.0, TextDelta("x"))])  # nothing to fsync: no wait
    ended.append(trio.current_time())
    writer.close()
    # the first at once; the second waits for the interval; after a quiet spell, at once again
    assert ended == pytest.approx([0.0, COMMIT_INTERVAL, 1.0, 1.0])
    assert [r.tagged.job_id for r in read_log(tmp_path / "run.jsonl") if r.tagged] == ["a", "b", "c", "d"]


def test_with_fsync_always_every_event_is_written_with_its_batch(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    writer = LogWriter(str(path), fsync="always")
    writer.open(HEADER)
    started = Tagged("a", 1, 1, 0.1, AttemptStarted(backend="sim"))

    async def deliver() -> None:
        await writer.deliver([started, Tagged("a", 1, 2, 0.2, TextDelta("Hel"))])
        # on disk before the attempt goes on: nothing is held back for a shared line
        assert [r.tagged for r in read_log(path) if r.tagged is not None] == [
            started,
            Tagged("a", 1, 2, 0.2, TextDelta("Hel")),
        ]

    trio.run(deliver)
    writer.close()
