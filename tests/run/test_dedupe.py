"""Identical requests are sent once (orchestrator/run/dedupe.py), on trio's virtual clock with sim."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import codec
from orchestrator.config.jobfile import Overrides, load_data_file, load_job_file
from orchestrator.config.library import library_batch
from orchestrator.errors import ErrorKind
from orchestrator.events import (
    AttemptStarted,
    BatchSummary,
    JobCancelled,
    JobDeduplicated,
    JobFailed,
    JobSucceeded,
    Tagged,
)
from orchestrator.record.log import read_log
from orchestrator.record.results import jsonl_line, result_row
from orchestrator.record.results_file import ResultsFile
from orchestrator.record.resume import plan
from orchestrator.report.export import log_rows
from orchestrator.report.fold import read_report
from orchestrator.report.html import render_html
from orchestrator.run import runner
from orchestrator.run.dedupe import Dedupe
from tests.helpers import Recorder, job_ends, make_spec, run_virtual

SIM = {"ttft": 1.0, "tokens_per_s": 40.0, "reply_tokens": 8}
# What a follower's row may differ in from its leader's: its own identity and the price it paid.
OWN_COLUMNS = ("id", "metadata", "cost_usd", "deduplicated_from")


def attempts_of(events: list[Tagged]) -> list[str]:
    return [t.job_id for t in events if isinstance(t.event, AttemptStarted) and t.job_id is not None]


def shared_columns(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in OWN_COLUMNS and not k.startswith("row.")}


@pytest.fixture
def late(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The job with id ``late`` is announced 10 s into the run (its leader has ended by then,
    if it came in an earlier chunk of announcements: with concurrency 1, the first job alone)."""
    announce_one = runner.Run.announce_one

    async def slowly(self: runner.Run, job: Any) -> bool:
        if job.spec.id == "late":
            await trio.sleep(10)
        return await announce_one(self, job)

    monkeypatch.setattr(runner.Run, "announce_one", slowly)
    yield


# --- the rule ------------------------------------------------------------------------------------


def test_the_first_job_announced_with_a_hash_leads_and_later_ones_follow_it() -> None:
    dedupe: Dedupe[str] = Dedupe(True)
    assert dedupe.announce("a", "a", "h1") is None
    assert dedupe.announce("c", "c", "h2") is None
    follow = dedupe.announce("b", "b", "h1")
    assert follow is not None and follow.event == JobDeduplicated(leader="a") and follow.ended is None
    assert dedupe.leader_ended("h1", JobSucceeded(attempts=2)) == ["b"]
    after = dedupe.announce("d", "d", "h1")  # announced after its leader ended: ends at once
    assert after is not None and after.ended == JobSucceeded(attempts=2)
    assert list(dedupe.leader_ended("h2", JobSucceeded(attempts=1))) == []


def test_a_leader_that_ends_without_an_outcome_leaves_its_followers_waiting() -> None:
    dedupe: Dedupe[str] = Dedupe(True)
    dedupe.announce("a", "a", "h")
    dedupe.announce("b", "b", "h")
    assert list(dedupe.leader_ended("h", JobCancelled(reason="deadline", attempts=1))) == []
    follow = dedupe.announce("c", "c", "h")
    assert follow is not None and follow.ended is None  # still waiting, for the stop to end


def test_with_dedupe_off_every_job_leads() -> None:
    dedupe: Dedupe[str] = Dedupe(False)
    assert dedupe.announce("a", "a", "h") is None and dedupe.announce("b", "b", "h") is None


# --- what the content hash covers ----------------------------------------------------------------


def _hash(job: dict[str, Any], **defaults: Any) -> str:
    return make_spec([{"prompt": "Classify: good", **job}], **defaults).jobs[0].content_hash


@pytest.mark.parametrize(
    "change",
    [
        {"backend": "anthropic", "model": "m"},
        {"model": "other"},
        {"system": "Be terse."},
        {"messages": [{"role": "user", "content": "Earlier."}, {"role": "assistant", "content": "Yes."}]},
        {"max_tokens": 7},
        {"temperature": 0.5},
        {"seed": 42},
        {"output_schema": {"type": "object"}},
        {"prompt": "Classify: bad"},
        {"sim": {"reply_tokens": 3}},
    ],
    ids=lambda change: next(iter(change)),
)
def test_everything_that_shapes_the_reply_is_in_the_hash(change: dict[str, Any]) -> None:
    assert _hash(change) != _hash({})


@pytest.mark.parametrize(
    "option", [{"tools": [{"name": "t", "input_schema": {"type": "object"}}]}, {"extra_body": {"top_k": 5}}]
)
def test_a_backends_tools_and_extra_body_are_in_the_hash(option: dict[str, Any]) -> None:
    plain = _hash({"backend": "anthropic", "model": "m"})
    assert _hash({"backend": "anthropic", "model": "m", "anthropic": option}) != plain


def test_the_id_and_metadata_are_not_in_the_hash() -> None:
    assert _hash({"id": "x", "metadata": {"source": "a"}}) == _hash({"id": "y", "metadata": {"b": 1}})


def test_a_data_files_other_columns_are_not_in_the_hash(tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("review_id,text,label\nr1,good,1\nr2,good,0\nr3,bad,0\n")
    spec = load_data_file(
        str(rows), {"backend": "sim", "prompt_template": "Classify: {text}", "id_column": "review_id"}
    )
    r1, r2, r3 = spec.jobs
    assert r1.content_hash == r2.content_hash != r3.content_hash
    assert (r1.row["label"], r2.row["label"]) == ("1", "0")


# --- sent once, a row each -----------------------------------------------------------------------


def _reviews(**defaults: Any) -> Any:
    return make_spec(
        [
            {"id": "a", "prompt": "Classify: good", "metadata": {"source": "web"}},
            {"id": "b", "prompt": "Classify: good", "metadata": {"source": "mail"}},
            {"id": "c", "prompt": "Classify: bad"},
            {"id": "d", "prompt": "Classify: good"},
        ],
        sim=SIM,
        **defaults,
    )


def test_identical_jobs_share_one_attempt_and_each_ends_with_its_own_events() -> None:
    recorder = Recorder()
    result = run_virtual(_reviews(), subscribers=[recorder])
    assert sorted(attempts_of(recorder.events)) == ["a", "c"]
    for follower in ("b", "d"):
        assert recorder.kinds(follower) == ["job_queued", "job_input", "job_deduplicated", "job_succeeded"]
        assert recorder.of_job(follower)[2].event == JobDeduplicated(leader="a")
    # It ends right after its leader, with a copy of the leader's terminal event.
    ends = {t.job_id: t for t in recorder.events if isinstance(t.event, JobSucceeded)}
    assert ends["b"].ts == ends["d"].ts == ends["a"].ts
    assert ends["b"].event == ends["a"].event
    assert result.summary.succeeded == 4 and result.summary.deduplicated == 2


def test_a_followers_row_is_its_leaders_but_for_its_id_row_metadata_and_cost() -> None:
    result = run_virtual(_reviews())
    rows = {row["id"]: row for row in result.rows()}
    assert rows["a"]["text"] and rows["a"]["cost_usd"] > 0 and rows["a"]["deduplicated_from"] is None
    for follower in ("b", "d"):
        assert shared_columns(rows[follower]) == shared_columns(rows["a"])
        assert rows[follower]["cost_usd"] == 0.0 and rows[follower]["deduplicated_from"] == "a"
    assert rows["b"]["metadata"] == {"source": "mail"} and rows["d"]["metadata"] == {}


def test_the_batch_pays_once_for_a_request_sent_once() -> None:
    once = run_virtual(_reviews()).summary
    both = run_virtual(_reviews(dedupe=False)).summary
    distinct = run_virtual(
        make_spec([{"id": "a", "prompt": "Classify: good"}, {"id": "c", "prompt": "Classify: bad"}], sim=SIM)
    ).summary
    assert (once.attempts, both.attempts) == (2, 4)
    assert once.cost_usd == distinct.cost_usd < both.cost_usd
    assert once.tokens == distinct.tokens
    assert both.deduplicated == 0


def test_dedupe_false_sends_every_job() -> None:
    recorder = Recorder()
    run_virtual(_reviews(dedupe=False), subscribers=[recorder])
    assert sorted(attempts_of(recorder.events)) == ["a", "b", "c", "d"]
    assert not any(isinstance(t.event, JobDeduplicated) for t in recorder.events)


def test_jobs_that_differ_in_seed_are_samples_each_sent() -> None:
    spec = make_spec([{"id": f"s{n}", "prompt": "Tell a story.", "seed": n} for n in range(3)], sim=SIM)
    recorder = Recorder()
    result = run_virtual(spec, subscribers=[recorder])
    assert sorted(attempts_of(recorder.events)) == ["s0", "s1", "s2"]
    assert result.summary.deduplicated == 0


def test_a_follower_announced_after_its_leader_ended_ends_at_once_with_its_outcome(late: None) -> None:
    spec = make_spec([{"id": "a", "prompt": "p"}, {"id": "late", "prompt": "p"}], sim=SIM, concurrency=1)
    recorder = Recorder()
    result = run_virtual(spec, subscribers=[recorder])
    ends = {t.job_id: t.ts for t in recorder.events if isinstance(t.event, JobSucceeded)}
    assert ends["a"] < 10.0 == ends["late"]
    assert attempts_of(recorder.events) == ["a"]
    assert result.jobs["late"].text == result.jobs["a"].text and result.jobs["late"].deduplicated_from == "a"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    jobs=st.lists(
        st.tuples(st.sampled_from("pqr"), st.sampled_from(("ok", "fatal", "server_error"))),
        min_size=1,
        max_size=8,
    ),
    concurrency=st.integers(1, 3),
    deadline=st.sampled_from((None, 0.5, 1.2, 3.0)),
)
def test_every_job_ends_once_and_each_distinct_request_is_sent_by_its_first_job_only(
    jobs: list[tuple[str, str]], concurrency: int, deadline: float | None
) -> None:
    queries = [
        {"id": f"j{i}", "prompt": prompt, "sim": {"faults": [fault]}}
        for i, (prompt, fault) in enumerate(jobs)
    ]
    spec = make_spec(queries, sim=SIM, concurrency=concurrency, deadline=deadline, retry={"base_delay": 0.1})
    recorder = Recorder()
    result = run_virtual(spec, subscribers=[recorder])
    ids = [job.id for job in spec.jobs]
    assert all(len(ends) == 1 for ends in job_ends(recorder.events, ids).values())
    first: dict[str, str] = {}
    for job in spec.jobs:
        first.setdefault(job.content_hash, job.id)
    leaders = set(first.values())
    assert set(attempts_of(recorder.events)) <= leaders
    terminal = {t.job_id: t.event for t in recorder.events if isinstance(t.event, JobSucceeded | JobFailed)}
    for job in spec.jobs:
        if job.id not in leaders and job.id in terminal:  # a follower that ended with an outcome
            assert terminal[job.id] == terminal[first[job.content_hash]]
            assert result.jobs[job.id].deduplicated_from == first[job.content_hash]
    assert result.summary.cost_usd == pytest.approx(
        sum(r.cost_usd or 0.0 for r in result.jobs.values() if r.job_id in leaders)
    )


# --- failures and stops --------------------------------------------------------------------------


def test_a_leader_that_fails_fails_its_followers_with_the_same_error_and_no_attempt() -> None:
    spec = make_spec(
        [{"id": "a", "prompt": "p"}, {"id": "b", "prompt": "p"}], sim={**SIM, "faults": ["fatal"]}
    )
    recorder = Recorder()
    result = run_virtual(spec, subscribers=[recorder])
    failed = {t.job_id: t.event for t in recorder.events if isinstance(t.event, JobFailed)}
    assert failed["b"] == failed["a"] and failed["a"].error_kind == ErrorKind.BAD_REQUEST
    assert attempts_of(recorder.events) == ["a"]
    row = {r["id"]: r for r in result.rows()}["b"]
    assert (row["status"], row["error_kind"], row["deduplicated_from"]) == ("failed", "bad_request", "a")
    assert result.summary.failed == 2 and result.summary.failures == {ErrorKind.BAD_REQUEST: 2}


def test_a_leader_that_retries_is_waited_for_and_its_followers_make_no_attempt() -> None:
    spec = make_spec(
        [{"id": "a", "prompt": "p"}, {"id": "b", "prompt": "p"}],
        sim={**SIM, "faults": ["server_error", "server_error"]},
        retry={"base_delay": 1, "max_delay": 1},
    )
    recorder = Recorder()
    result = run_virtual(spec, subscribers=[recorder])
    assert attempts_of(recorder.events) == ["a", "a", "a"]
    assert result.jobs["b"].status == "succeeded" and result.jobs["b"].attempts == 3


def test_a_stop_before_the_leader_ends_skips_its_followers() -> None:
    spec = make_spec([{"id": "a", "prompt": "p"}, {"id": "b", "prompt": "p"}], sim=SIM, deadline=0.5)
    recorder = Recorder()
    result = run_virtual(spec, subscribers=[recorder])
    assert job_ends(recorder.events, ["a", "b"]) == {"a": ["job_cancelled"], "b": ["jobs_skipped"]}
    assert result.summary.deduplicated == 0 and result.jobs["b"].deduplicated_from is None


def test_followers_of_a_leader_the_spend_cap_kept_out_are_skipped() -> None:
    one = run_virtual(make_spec(["first"], sim=SIM)).summary.cost_usd
    spec = make_spec(
        [{"id": "x", "prompt": "first"}, {"id": "a", "prompt": "p"}, {"id": "b", "prompt": "p"}],
        sim=SIM,
        concurrency=1,
        max_cost_usd=one * 1.5,  # one job's worth: the second never starts
    )
    recorder = Recorder()
    result = run_virtual(spec, subscribers=[recorder])
    assert result.summary.stopped == "spend cap"
    assert job_ends(recorder.events, ["x", "a", "b"]) == {
        "x": ["job_succeeded"],
        "a": ["jobs_skipped"],
        "b": ["jobs_skipped"],
    }


@pytest.mark.parametrize("hard_cap", [False, True])
def test_the_spend_cap_ends_the_followers_of_leaders_that_had_ended_with_their_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hard_cap: bool
) -> None:
    # A small announce window: b (identical to x, which ended before the cap) and c (identical
    # to a, which the cap kept out) are not announced yet when the cap is reached.
    monkeypatch.setattr(runner, "ANNOUNCE_AHEAD", 2)
    monkeypatch.setattr(runner, "_ANNOUNCE_CHUNK", 2)
    one = run_virtual(make_spec(["first"], sim=SIM)).summary.cost_usd
    fillers = [{"id": f"f{n}", "prompt": f"filler {n}"} for n in range(12)]
    queries = [
        {"id": "x", "prompt": "first"},
        {"id": "a", "prompt": "p"},
        *fillers[:8],
        {"id": "b", "prompt": "first"},
        *fillers[8:],
        {"id": "c", "prompt": "p"},
        {"id": "d", "prompt": "more"},
    ]
    log = tmp_path / "run.jsonl"
    spec = make_spec(queries, sim=SIM, concurrency=1, max_cost_usd=one * 1.5, hard_cap=hard_cap)
    spec = attrs.evolve(spec, log=str(log))
    recorder = Recorder()
    result = run_virtual(spec, subscribers=[recorder])
    ids = [job.id for job in spec.jobs]
    ends = job_ends(recorder.events, ids)
    assert result.summary.stopped == "spend cap"
    assert ends["x"] == ends["b"] == ["job_succeeded"]
    assert all(ends[i] in (["job_skipped"], ["jobs_skipped"]) for i in ids if i not in ("x", "b"))
    assert attempts_of(recorder.events) == ["x"]
    assert result.jobs["b"].text == result.jobs["x"].text and result.jobs["b"].deduplicated_from == "x"
    assert (result.summary.succeeded, result.summary.skipped, result.summary.deduplicated) == (2, 15, 1)
    report = read_report([log], keep_text=True)
    assert report.summary == result.summary
    assert all(r.status == result.jobs[i].status for i, r in report.jobs.items())  # the announced jobs
    assert (report.jobs["b"].status, report.jobs["b"].deduplicated_from) == ("succeeded", "x")


# --- the log is the source of truth --------------------------------------------------------------


def test_results_written_live_equal_the_export_of_the_log_byte_for_byte(tmp_path: Path, late: None) -> None:
    log, live = tmp_path / "run.jsonl", tmp_path / "out.jsonl"
    spec = attrs.evolve(
        make_spec(
            [
                {"id": "a", "prompt": "p", "metadata": {"n": 1}},
                {"id": "b", "prompt": "p", "metadata": {"n": 2}},
                {"id": "c", "prompt": "q", "sim": {"faults": ["fatal"]}},
                {"id": "d", "prompt": "q", "sim": {"faults": ["fatal"]}},
                {"id": "late", "prompt": "p"},
            ],
            sim=SIM,
            concurrency=1,
        ),
        log=str(log),
    )
    writer = ResultsFile(live, dedupe=spec.dedupe)
    result = run_virtual(spec, subscribers=[writer])
    writer.close()
    exported = log_rows([log])
    # Rows are appended as jobs end; the export is in job order: the same lines.
    assert sorted(live.read_bytes().splitlines(keepends=True)) == sorted(jsonl_line(row) for row in exported)
    assert [row["deduplicated_from"] for row in exported] == [None, "a", None, "c", "a"]
    assert exported == result.rows()


def test_a_report_from_the_log_gives_the_live_summary_and_the_followers_rows(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    result = run_virtual(attrs.evolve(_reviews(), log=str(log)), keep_text=False)
    report = read_report([log], keep_text=True)
    assert report.summary == result.summary and report.summary.deduplicated == 2
    row = report.jobs["b"]
    assert (row.status, row.deduplicated_from, row.cost_usd, row.metadata) == (
        "succeeded",
        "a",
        0.0,
        {"source": "mail"},
    )
    assert result_row(report.runs[0].results["b"])["text"] == result_row(report.runs[0].results["a"])["text"]
    page = render_html(report)
    assert "deduplicated" in page and '\\"deduplicated_from\\":\\"a\\"' in page


def test_resume_counts_a_follower_that_ended_as_done(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    spec = attrs.evolve(_reviews(), log=str(log))
    run_virtual(spec)
    resumed = plan(spec, str(log))
    assert resumed.already_done == 4 and resumed.spec.jobs == ()


def test_a_follower_whose_leader_ended_in_an_earlier_run_is_sent_once_in_the_next(
    tmp_path: Path, late: None
) -> None:
    log = tmp_path / "run.jsonl"
    jobs = [{"id": "a", "prompt": "p"}, {"id": "late", "prompt": "p"}, {"id": "again", "prompt": "p"}]
    spec = make_spec(jobs, sim=SIM, concurrency=1)
    first = run_virtual(attrs.evolve(spec, log=str(log), deadline=5.0))
    assert first.jobs["a"].ok and first.jobs["late"].status == "skipped"
    resumed = plan(spec, str(log))
    assert [job.id for job in resumed.spec.jobs] == ["late", "again"]
    recorder = Recorder()
    second = run_virtual(
        attrs.evolve(resumed.spec, already_done=resumed.already_done), subscribers=[recorder]
    )
    assert attempts_of(recorder.events) == ["late"]  # leads in this run; "again" follows it
    assert second.jobs["again"].deduplicated_from == "late"
    merged = {row["id"]: row for row in log_rows([log])}
    assert [merged[job]["deduplicated_from"] for job in ("a", "late", "again")] == [None, None, "late"]
    combined = read_report([log]).summary
    assert (combined.succeeded, combined.deduplicated, combined.attempts) == (3, 1, 2)


def test_an_old_summary_without_the_deduplicated_count_still_reads() -> None:
    line = {"job": None, "attempt": 0, "seq": 3, "ts": 1.0, "kind": "batch_finished"}
    summary = codec.to_jsonable(BatchSummary(jobs=2, succeeded=2))
    del summary["deduplicated"]
    decoded = codec.decode_tagged({**line, "summary": summary})
    assert decoded.event.summary == BatchSummary(jobs=2, succeeded=2)  # type: ignore[union-attr]


def test_the_log_reads_back_the_followers_event(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    run_virtual(attrs.evolve(_reviews(), log=str(log)))
    events = [r.tagged.event for r in read_log(log) if r.tagged is not None and r.tagged.job_id == "b"]
    assert JobDeduplicated(leader="a") in events


# --- where it is switched off --------------------------------------------------------------------


def test_dedupe_is_on_by_default_and_off_from_a_job_file_the_command_line_or_a_keyword(
    tmp_path: Path,
) -> None:
    job_file = tmp_path / "jobs.toml"
    job_file.write_text('[defaults]\nbackend = "sim"\n\n[[jobs]]\nprompt = "p"\n')
    assert load_job_file(job_file).dedupe is True
    assert load_job_file(job_file, Overrides(dedupe=False)).dedupe is False
    job_file.write_text('[defaults]\nbackend = "sim"\ndedupe = false\n\n[[jobs]]\nprompt = "p"\n')
    assert load_job_file(job_file).dedupe is False
    assert library_batch("run_batch", ["p", "p"], {"backend": "sim", "dedupe": False}).dedupe is False
    assert library_batch("run_batch", ["p", "p"], {"backend": "sim"}).dedupe is True


# --- through the command -------------------------------------------------------------------------


def test_the_command_writes_a_results_file_equal_to_the_export_with_followers_rows(tmp_path: Path) -> None:
    from tests.cli.test_cli import orchestrate

    (tmp_path / "rows.csv").write_text("review_id,text\nr1,good\nr2,bad\nr3,good\nr4,good\n")
    args = ("rows.csv", "--prompt-template", "Classify: {text}", "--id-column", "review_id", "-b", "sim")
    run = orchestrate(*args, "--log", "run.jsonl", "--results", "out.jsonl", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert codec.converter.structure(orjson.loads(run.stdout), BatchSummary).deduplicated == 2
    export = orchestrate("export", "run.jsonl", "-o", "again.jsonl", cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    assert (tmp_path / "again.jsonl").read_bytes() == (tmp_path / "out.jsonl").read_bytes()
    rows = [orjson.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert [row["deduplicated_from"] for row in rows] == [None, None, "r1", "r1"]
    story = orchestrate("report", "run.jsonl", "--job", "r3", cwd=tmp_path)
    assert "identical to job r1's request, sent once" in story.stdout
    both = orchestrate(*args, "--no-log", "--no-dedupe", "--json", cwd=tmp_path)
    assert orjson.loads(both.stdout)["attempts"] == 4 and orjson.loads(both.stdout)["deduplicated"] == 0


def test_a_dry_run_prices_each_request_once() -> None:
    from orchestrator.run.dryrun import dry_run

    prompts = ["x" * 400, "x" * 400, "y" * 400]
    settings = {"openai": {"prices": {"a": {"input": 1.0, "output": 10.0}}, "rpm": 60}}
    once = dry_run(make_spec(prompts, backend="openai", model="a", max_tokens=10, backends=settings))
    both = dry_run(
        make_spec(prompts, backend="openai", model="a", max_tokens=10, backends=settings, dedupe=False)
    )
    (group,), (every,) = once.groups, both.groups
    assert (once.deduplicated, both.deduplicated) == (1, 0)
    assert group.jobs == every.jobs == 3
    assert (group.input_tokens, group.max_tokens) == (every.input_tokens * 2 // 3, 20)
    assert every.cost_worst_usd is not None
    assert group.cost_worst_usd == pytest.approx(every.cost_worst_usd * 2 / 3)
    assert (group.rate_limit_s, every.rate_limit_s) == pytest.approx((2.0, 3.0))  # requests at 60 rpm
