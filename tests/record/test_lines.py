"""The log's compact lines: whatever a line leaves out, a reader that reads the log in order puts
back exactly; a line that leaves out what no earlier line says is refused, never guessed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator import codec
from orchestrator.events import (
    AttemptStarted,
    BatchStarted,
    JobCancelled,
    JobFailed,
    JobQueued,
    JobSucceeded,
    SessionStarted,
    StreamFinished,
    Tagged,
    TextDelta,
    Tokens,
    UsageReported,
)
from orchestrator.record.lines import LogLines
from tests.test_codec import events

# Events that earlier lines of a job speak for, weighted up among all the kinds.
_related = st.sampled_from(
    [
        JobQueued("sim", None, "h"),
        AttemptStarted("sim"),
        AttemptStarted("other"),
        SessionStarted("s1"),
        SessionStarted(None),
        UsageReported(Tokens(1, 2)),
        StreamFinished("end_turn", Tokens(1, 2), session_id="s1"),
        StreamFinished("end_turn", None, session_id=None),
        StreamFinished("end_turn", Tokens(2, 4)),
        JobSucceeded(attempts=1),
        JobSucceeded(attempts=2),
        TextDelta("x"),
        BatchStarted("r", 1, "t"),
    ]
)


@st.composite
def records(draw: st.DrawFn) -> list[Tagged]:
    """Records of a few jobs, mostly in the order a run writes them (seq one up, attempts
    counted by attempt_started), sometimes not."""
    out: list[Tagged] = []
    state: dict[Any, list[int]] = {}
    for _ in range(draw(st.integers(0, 40))):
        job = draw(st.sampled_from([None, "a", "b"]))
        event = draw(_related | events)
        seq, attempt = state.setdefault(job, [0, 0])
        if isinstance(event, AttemptStarted):
            attempt += 1
        if draw(st.integers(0, 9)) == 0:  # an odd one: a gap, a repeat, another attempt
            seq, attempt = draw(st.integers(0, 5)), draw(st.integers(0, 3))
        span = draw(st.integers(1, 3)) if isinstance(event, TextDelta) else 1
        seq_end = seq + span - 1 if span > 1 else None
        out.append(Tagged(job, attempt, seq, float(draw(st.integers(0, 10**6))) / 1e3, event, seq_end))
        state[job] = [seq + span, attempt]
    return out


def _write_and_read(written: list[Tagged]) -> tuple[list[bytes], list[Tagged]]:
    writer, reader = LogLines(), LogLines()
    lines = [writer.encode(t) for t in written]
    return lines, [reader.decode(orjson.loads(line)) for line in lines]


@given(records())
def test_every_record_reads_back_as_it_was_written(written: list[Tagged]) -> None:
    _, read = _write_and_read(written)
    assert read == written


@given(records())
def test_a_line_standing_on_its_own_reads_the_same_in_the_stream(written: list[Tagged]) -> None:
    reader = LogLines()
    assert [reader.decode(orjson.loads(codec.encode_tagged(t))) for t in written] == written


def test_a_jobs_lines_leave_out_what_earlier_lines_say() -> None:
    tokens = Tokens(10, 24)
    written = [
        Tagged("q", 0, 0, 0.1, JobQueued("sim", None, "h")),
        Tagged("q", 1, 1, 0.2, AttemptStarted("sim")),
        Tagged("q", 1, 2, 0.3, SessionStarted("s-1", "m")),
        Tagged("q", 1, 3, 0.4, TextDelta("Hello"), seq_end=9),
        Tagged("q", 1, 10, 0.5, UsageReported(tokens)),
        Tagged("q", 1, 11, 0.6, StreamFinished("end_turn", tokens, 0.01, session_id="s-1")),
        Tagged("q", 1, 12, 0.7, JobSucceeded(attempts=1)),
    ]
    lines, read = _write_and_read(written)
    assert read == written
    assert [orjson.loads(line) for line in lines] == [
        {"job": "q", "ts": 0.1, "kind": "job_queued", "backend": "sim", "content_hash": "h"},
        {"job": "q", "ts": 0.2, "kind": "attempt_started"},
        {"job": "q", "ts": 0.3, "kind": "session_started", "session_id": "s-1", "model": "m"},
        {"job": "q", "seq_end": 9, "ts": 0.4, "kind": "text_delta", "text": "Hello"},
        {"job": "q", "ts": 0.5, "kind": "usage", "tokens": {"input": 10, "output": 24}},
        {"job": "q", "ts": 0.6, "kind": "stream_finished", "stop_reason": "end_turn", "cost_usd": 0.01},
        {"job": "q", "ts": 0.7, "kind": "job_succeeded"},
    ]


def test_what_differs_from_the_earlier_lines_is_written() -> None:
    written = [
        Tagged("q", 0, 0, 0.1, JobQueued("sim", None, "h")),
        Tagged("q", 2, 5, 0.2, AttemptStarted("other")),
        Tagged("q", 2, 6, 0.3, UsageReported(Tokens(1, 1))),
        Tagged("q", 2, 7, 0.4, StreamFinished("end_turn", None, session_id="s")),
        Tagged("q", 2, 8, 0.5, JobSucceeded(attempts=3)),
    ]
    lines, read = _write_and_read(written)
    assert read == written
    objs = [orjson.loads(line) for line in lines]
    assert objs[1] == {
        "job": "q",
        "attempt": 2,
        "seq": 5,
        "ts": 0.2,
        "kind": "attempt_started",
        "backend": "other",
    }
    assert objs[3]["tokens"] is None and objs[3]["session_id"] == "s"  # null written: not the usage's sum
    assert objs[4]["attempts"] == 3


def test_a_new_run_counts_afresh_at_its_header_and_at_batch_started() -> None:
    first = [
        Tagged(None, 0, 0, 0.0, BatchStarted("r1", 1, "t")),
        Tagged("q", 0, 0, 0.1, JobQueued("sim", None, "h")),
    ]
    second = [
        Tagged(None, 0, 0, 0.0, BatchStarted("r2", 1, "t")),
        Tagged("q", 0, 0, 0.1, JobQueued("sim", None, "h")),
    ]
    one, other = LogLines(), LogLines()
    lines = [one.encode(t) for t in first] + [other.encode(t) for t in second]  # two runs joined by hand
    reader = LogLines()
    assert [reader.decode(orjson.loads(line)) for line in lines] == first + second


@pytest.mark.parametrize(
    "obj",
    [
        {"job": "q", "ts": 0.1, "kind": "attempt_started"},  # no earlier line names a backend
        {"job": ["q"], "ts": 0.1, "kind": "job_succeeded"},
        {"job": "q", "kind": "job_succeeded"},
        {"job": "q", "ts": 0.1, "kind": "job_failed", "error_kind": "auth", "message": "m"},
    ],
)
def test_a_line_that_leaves_out_what_cannot_be_known_is_refused(obj: dict[str, Any]) -> None:
    with pytest.raises(codec.DecodeError):
        LogLines().decode(obj)


def test_a_line_that_does_not_decode_still_counts_for_the_lines_after_it() -> None:
    reader = LogLines()
    reader.decode({"job": "q", "ts": 0.1, "kind": "job_queued", "backend": "sim", "content_hash": "h"})
    with pytest.raises(codec.DecodeError):
        reader.decode({"job": "q", "ts": 0.2, "kind": "from_a_newer_version"})
    assert reader.decode({"job": "q", "ts": 0.3, "kind": "text_delta", "text": "x"}).seq == 2


@st.composite
def lines_of(draw: st.DrawFn) -> list[list[Tagged]]:
    """Records (as :func:`records` makes them, some with a ``ts`` of any float) cut into lines:
    each line a run of consecutive records of one job, as long as the draw likes."""
    written = draw(records())
    written = [
        t._replace(ts=draw(st.floats(0, 1e4, allow_nan=False))) if draw(st.integers(0, 7)) == 0 else t
        for t in written
    ]
    out: list[list[Tagged]] = []
    for tagged in written:
        if out and out[-1][-1].job_id == tagged.job_id and tagged.job_id is not None and draw(st.booleans()):
            out[-1].append(tagged)
        else:
            out.append([tagged])
    return out


@given(lines_of())
def test_records_sharing_lines_read_back_as_they_were_written(lines: list[list[Tagged]]) -> None:
    writer, reader = LogLines(), LogLines()
    encoded = [writer.encode_line(line) for line in lines]
    assert [reader.decode_line(orjson.loads(raw)) for raw in encoded] == lines
    each = LogLines()
    assert [each.decode_each(orjson.loads(raw)) for raw in encoded] == lines
    for raw, line in zip(encoded, lines, strict=True):
        assert raw.count(b"\n") == 1 and ("then" in orjson.loads(raw)) == (len(line) > 1)


class _PlainWriter(LogLines):
    """The writer's rules spelled out plainly, as a reference: a line standing on its own
    (:func:`codec.tagged_to_dict`) with what the reader knows deleted from it."""

    def encode_line(self, records: Sequence[Tagged]) -> bytes:
        line = self._compact(records[0])
        micros = round(records[0].ts * 1e6) if math.isfinite(records[0].ts * 1e6) else None
        then: list[list[Any]] = []
        for tagged in records[1:]:
            fields = self._compact(tagged)
            del fields["job"], fields["kind"]
            ts = fields.pop("ts")
            item: list[Any] = [tagged.event.kind]
            at = round(ts * 1e6) if math.isfinite(ts * 1e6) else None
            if at is not None and micros is not None and at / 1e6 == ts:
                if at != micros:
                    item.append(at - micros)
            else:
                fields["ts"] = ts
            micros = at
            if fields:
                item.append(fields)
            then.append(item)
        if then:
            line["then"] = then
        return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)

    def _compact(self, tagged: Tagged) -> dict[str, Any]:
        line = codec.tagged_to_dict(tagged)
        event = tagged.event
        if isinstance(event, BatchStarted):
            self._jobs.clear()
        stated = self._jobs.get(tagged.job_id)
        known: Any = stated or SimpleNamespace(
            next_seq=0, attempt=0, backend=None, session_id=None, usage=None
        )
        if tagged.seq == known.next_seq:
            del line["seq"]
        if tagged.attempt == known.attempt + isinstance(event, AttemptStarted):
            del line["attempt"]
        if isinstance(event, AttemptStarted) and event.backend == known.backend:
            del line["backend"]
        if isinstance(event, StreamFinished):
            if event.tokens == known.usage:
                del line["tokens"]
            if event.session_id == known.session_id:
                del line["session_id"]
        if isinstance(event, JobSucceeded | JobFailed | JobCancelled) and event.attempts == tagged.attempt:
            del line["attempts"]
        self._observe(tagged, stated)
        return line


@given(lines_of())
def test_the_writer_writes_the_bytes_the_plain_rules_give(lines: list[list[Tagged]]) -> None:
    writer, plain = LogLines(), _PlainWriter()
    assert [writer.encode_line(line) for line in lines] == [plain.encode_line(line) for line in lines]


def test_a_line_of_several_records_states_each_after_the_first_in_then() -> None:
    tokens = Tokens(10, 24)
    line = [
        Tagged("q", 1, 1, 0.2, AttemptStarted("sim")),
        Tagged("q", 1, 2, 0.5, SessionStarted("s-1", "m")),
        Tagged("q", 1, 3, 0.5, TextDelta("Hello"), seq_end=9),
        Tagged("q", 1, 10, 1.100001, UsageReported(tokens)),
        Tagged("q", 1, 11, 1.1000014, StreamFinished("end_turn", tokens, 0.01, session_id="s-1")),
        Tagged("q", 1, 12, 1.2, JobSucceeded(attempts=1)),
    ]
    writer, reader = LogLines(), LogLines()
    queued = Tagged("q", 0, 0, 0.1, JobQueued("sim", None, "h"))
    raw = writer.encode(queued) + writer.encode_line(line)
    assert [r for text in raw.splitlines() for r in reader.decode_line(orjson.loads(text))] == [queued, *line]
    assert orjson.loads(raw.splitlines()[1]) == {
        "job": "q",
        "ts": 0.2,
        "kind": "attempt_started",
        "then": [
            ["session_started", 300_000, {"session_id": "s-1", "model": "m"}],
            ["text_delta", {"seq_end": 9, "text": "Hello"}],  # the same microsecond: no dt
            ["usage", 600_001, {"tokens": {"input": 10, "output": 24}}],
            ["stream_finished", {"ts": 1.1000014, "stop_reason": "end_turn", "cost_usd": 0.01}],
            ["job_succeeded", 99_999],  # after the record before, in whole microseconds
        ],
    }


@pytest.mark.parametrize(
    "then",
    [
        "x",
        [[]],
        [["usage"]],  # no tokens
        [["job_succeeded", 1.5]],
        [["job_succeeded", True]],
        [["job_succeeded", 1, 2]],
        [["job_succeeded", {}, 1]],
        [["job_succeeded", 1, {"ts": 0.3}]],  # a dt and a ts
        [["job_succeeded", {"job": "other"}]],
        [["from_a_newer_version"]],
    ],
)
def test_a_line_whose_then_does_not_fit_is_refused(then: Any) -> None:
    obj = {"job": "q", "ts": 0.1, "kind": "job_queued", "backend": "sim", "content_hash": "h", "then": then}
    with pytest.raises(codec.DecodeError):
        LogLines().decode_line(obj)


def test_records_after_one_that_does_not_decode_still_count() -> None:
    reader = LogLines()
    line = {
        "job": "q",
        "ts": 0.1,
        "kind": "job_queued",
        "backend": "sim",
        "content_hash": "h",
        "then": [
            ["from_a_newer_version"],
            ["text_delta", {"text": "x"}],
            ["text_delta", {"seq_end": 5, "text": "y"}],
        ],
    }
    with pytest.raises(codec.DecodeError):
        reader.decode_line(line)
    assert reader.decode_line({"job": "q", "ts": 0.3, "kind": "text_delta", "text": "z"})[0].seq == 6
    each = LogLines()
    entries = each.decode_each(line)
    assert isinstance(entries[1], codec.DecodeError)
    assert [(t.seq, t.seq_end, t.ts) for t in entries[2:]] == [(2, None, 0.1), (3, 5, 0.1)]  # type: ignore[union-attr]
    assert each.decode_line({"job": "q", "ts": 0.3, "kind": "text_delta", "text": "z"})[0].seq == 6


def test_records_after_a_first_record_that_does_not_decode_still_count() -> None:
    reader = LogLines()
    line = {
        "job": "q",
        "ts": 0.1,
        "kind": "from_a_newer_version",
        "then": [["text_delta", {"text": "x"}], ["text_delta", 5, {"seq_end": 4, "text": "y"}]],
    }
    with pytest.raises(codec.DecodeError):
        reader.decode_line(line)
    assert reader.decode_line({"job": "q", "ts": 0.3, "kind": "text_delta", "text": "z"})[0].seq == 5


_kinds = st.sampled_from([*sorted(codec.CONTEXT_FIELDS), "job_queued", "text_delta", "usage", "nope"])
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=3)
    | _kinds,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["seq", "seq_end", "attempt", "ts", "text"]), inner, max_size=3)
    ),
    max_leaves=6,
)
_item = st.lists(_json, max_size=4) | st.tuples(
    _kinds | _json, st.integers(-(2**63), 2**64 - 1) | _json, _json
).map(list)


@given(
    st.lists(
        st.fixed_dictionaries(
            {"job": st.sampled_from([None, "q"]) | _json, "ts": st.floats() | _json, "kind": _kinds | _json},
            optional={"then": st.lists(_item, max_size=4) | _json, "seq": _json, "attempt": _json},
        ),
        min_size=1,
        max_size=4,
    )
)
def test_any_line_decodes_or_is_refused_with_a_decode_error(lines: list[dict[str, Any]]) -> None:
    # Any JSON in any field (a kind that is a list, a ts near the float limit, garbage in then):
    # `orchestrate tail` shows a DecodeError and goes on; anything else would stop it.
    reader, each = LogLines(), LogLines()
    for obj in lines:
        try:
            reader.decode_line(obj)
        except codec.DecodeError:
            pass
        try:
            entries = each.decode_each(obj)
        except codec.DecodeError:
            continue
        then = obj.get("then")
        assert len(entries) == 1 + (len(then) if type(then) is list else 0)


def test_a_kind_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(codec.DecodeError):
        LogLines().decode_line(
            {"job": "q", "ts": 0.1, "kind": ["job_queued"], "backend": "sim", "content_hash": "h"}
        )


def test_a_ts_near_the_float_limit_reads_and_the_record_after_it_needs_its_own_ts() -> None:
    reader = LogLines()
    first = {
        "job": "q",
        "ts": 1.7e308,
        "kind": "job_queued",
        "backend": "sim",
        "content_hash": "h",
        "then": [],
    }
    assert reader.decode_line(first)[0].ts == 1.7e308
    line = {
        "job": "q",
        "ts": 0.1,
        "kind": "attempt_started",
        "then": [["job_cancelled", {"ts": 1.7e308, "reason": "x"}], ["stream_finished"]],
    }
    with pytest.raises(codec.DecodeError, match="lacks 'ts'"):
        reader.decode_line(line)
