"""Identical requests sent once, tried against what could break it: random batches with repeated
requests, retries, terminal failures, halts, stops at random virtual times and spend caps; the
log read back (export, report) against what the run wrote live."""

from __future__ import annotations

import random
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import attrs
import orjson
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.crash_trials import JOB_FILE, _env, _orchestrate, kill_after_ends, start_run
from orchestrator.events import AttemptStarted, JobDeduplicated, JobFailed, JobQueued, JobSucceeded, Tagged
from orchestrator.record.log import read_log
from orchestrator.record.results import jsonl_line
from orchestrator.record.results_file import ResultsFile
from orchestrator.record.resume import plan
from orchestrator.report.export import log_rows
from orchestrator.report.fold import read_report
from orchestrator.run import batch as batch_module
from orchestrator.run import runner
from orchestrator.run.control import RunControl
from tests.helpers import Recorder, as_logged, job_ends, make_spec, run_virtual

SIM = {"ttft": 1.0, "tokens_per_s": 40.0, "reply_tokens": 8}
FAULTS = ("ok", "rate_limit", "server_error", "mid_stream", "fatal", "auth")


def _queries(draw: st.DrawFn) -> list[dict[str, Any]]:
    prompts = draw(st.lists(st.sampled_from("pqrs"), min_size=1, max_size=9))
    # Sim options are part of the request: a prompt's copies share its faults, so a repeated
    # request fails, retries or succeeds as its first copy does. "r" and "s" never fail.
    faults = {p: draw(st.lists(st.sampled_from(FAULTS), max_size=3)) if p in "pq" else [] for p in "pqrs"}
    return [
        {"id": f"j{i}", "prompt": prompt, "sim": {"faults": faults[prompt]}, "metadata": {"i": i}}
        for i, prompt in enumerate(prompts)
    ]


@st.composite
def batches(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "queries": _queries(draw),
        "concurrency": draw(st.integers(1, 3)),
        "deadline": draw(st.sampled_from((None, 0.5, 1.1, 2.3, 4.0, 7.5))),
        "max_cost_usd": draw(st.sampled_from((None, 0.00005, 0.0001))),
        "halt": draw(st.sampled_from(({}, {"fatal": 1}))),
        "hard_cap": draw(st.booleans()),
        "ctrl_c_after": draw(st.sampled_from((None, 0, 1, 5, 20))),  # events seen
        # A small bus and a subscriber that stalls now and then: sends that wait, stops that
        # land while they do.
        "bus": draw(st.sampled_from((None, 1, 2, 3, 5))),
        "stall": draw(st.sampled_from((None, (0.7, 3), (2.5, 7)))),  # (seconds, every n batches)
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=batches())
def test_every_job_ends_once_and_the_log_reads_back_what_the_run_wrote_live(
    tmp_path_factory: Any, batch: dict[str, Any]
) -> None:
    tmp = tmp_path_factory.mktemp("run")
    log, live = tmp / "run.jsonl", tmp / "out.jsonl"
    halt = batch["halt"]
    spec = make_spec(
        batch["queries"],
        sim=SIM,
        concurrency=batch["concurrency"],
        deadline=batch["deadline"],
        max_cost_usd=batch["max_cost_usd"],
        retry={"base_delay": 0.1, "max_attempts": 3},
        hard_cap=batch["hard_cap"] and batch["max_cost_usd"] is not None,
        **({"halt": halt} if halt else {}),
    )
    spec = attrs.evolve(spec, log=str(log))
    recorder = Recorder()
    writer = ResultsFile(live, dedupe=spec.dedupe)
    control = RunControl()
    stopper = _CtrlC(control, batch["ctrl_c_after"])
    subscribers = [stopper, _Stalls(*batch["stall"]) if batch["stall"] else stopper, recorder, writer]
    with mock.patch.object(batch_module, "CHANNEL_SIZE", batch["bus"] or batch_module.CHANNEL_SIZE):
        result = run_virtual(spec, subscribers=subscribers, control=control)
    writer.close()
    ids = [job.id for job in spec.jobs]

    # Every job ends exactly once.
    assert all(len(ends) == 1 for ends in job_ends(recorder.events, ids).values())
    # A request is sent by the first job announced with it, never by a follower.
    first: dict[str, str] = {}
    for job in spec.jobs:
        first.setdefault(job.content_hash, job.id)
    senders = {t.job_id for t in recorder.events if isinstance(t.event, AttemptStarted)}
    assert senders <= set(first.values())
    # A follower's job_deduplicated comes before its end, and names the first job with its hash.
    hashes = {job.id: job.content_hash for job in spec.jobs}
    for tagged in _followed(recorder.events):
        assert tagged.event.leader == first[hashes[tagged.job_id]]  # type: ignore[union-attr,index]
    # A job that ends with an outcome either sent its request or names the job that did.
    named = {t.job_id for t in recorder.events if isinstance(t.event, JobDeduplicated)}
    for job_id, ended in _outcomes(recorder.events).items():
        assert job_id in senders or job_id in named, (job_id, ended)

    # The log reads back every event the run sent (runs of deltas joined).
    logged = [r.tagged for r in read_log(log) if r.tagged is not None]
    assert as_logged(logged) == as_logged(recorder.events)
    # The export of the log is the live results file, line for line (rows are appended as jobs
    # end; the export is in job order).
    exported = log_rows([log])
    assert sorted(live.read_bytes().splitlines(keepends=True)) == sorted(jsonl_line(r) for r in exported)
    # (Jobs a stop skipped before announcing them have no name in the log, hence no row.)
    announced = {t.job_id for t in recorder.events if isinstance(t.event, JobQueued)}
    assert exported == [row for row in result.rows() if row["id"] in announced]
    # A report of the log gives the live summary; cost is counted once per request sent.
    report = read_report([log])
    assert report.summary == result.summary
    paid = sum(r.cost_usd or 0.0 for r in result.jobs.values() if r.deduplicated_from is None)
    assert abs(result.summary.cost_usd - paid) < 1e-12
    assert all(r.cost_usd == 0.0 for r in result.jobs.values() if r.deduplicated_from is not None)


class _Stalls:
    """A subscriber that takes ``seconds`` (virtual) over every ``every``-th batch it is given."""

    def __init__(self, seconds: float, every: int) -> None:
        self.seconds, self.every, self.seen = seconds, every, 0

    async def deliver(self, batch: Sequence[Tagged]) -> None:
        self.seen += 1
        if self.seen % self.every == 0:
            await trio.sleep(self.seconds)


def _outcomes(events: list[Tagged]) -> dict[str | None, str]:
    return {t.job_id: t.event.kind for t in events if isinstance(t.event, JobSucceeded | JobFailed)}


class _CtrlC:
    """Stops the run (as Ctrl-C does) once it has been given ``after`` events."""

    def __init__(self, control: RunControl, after: int | None) -> None:
        self.control, self.left = control, after

    async def deliver(self, batch: Sequence[Tagged]) -> None:
        if self.left is not None:
            self.left -= len(batch)
            if self.left <= 0:
                self.control.cancel("interrupted")
                self.left = None


def _followed(events: list[Tagged]) -> list[Tagged]:
    ended: set[str | None] = set()
    out = []
    for tagged in events:
        if isinstance(tagged.event, JobSucceeded):
            ended.add(tagged.job_id)
        if isinstance(tagged.event, JobDeduplicated):
            assert tagged.job_id not in ended
            out.append(tagged)
    return out


class _StuckAfter:
    """A subscriber that, once it is given an event of ``kind``, takes until ``until`` (virtual
    seconds) to come back: the bus fills behind it."""

    def __init__(self, kind: str, until: float) -> None:
        self.kind, self.until = kind, until

    async def deliver(self, batch: Sequence[Tagged]) -> None:
        if any(t.event.kind == self.kind for t in batch):
            self.kind = ""
            await trio.sleep_until(self.until)


def test_a_follower_a_stop_caught_before_its_job_deduplicated_was_sent_is_not_ended_with_the_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A slow subscriber fills the bus from t=1. The follower "b", announced at t=2, waits to
    # send its job_deduplicated; the leader "a" times out at t=3 and its end waits, shielded;
    # the stop at t=5.5 cancels b's announcement, and a's end goes out once the bus drains.
    # "b" must not then end with "a"'s outcome without a job_deduplicated naming "a": readers
    # would take it for a job that ran and failed on its own (and without an attempt).
    monkeypatch.setattr(batch_module, "CHANNEL_SIZE", 3)
    announce_one = runner.Run.announce_one

    async def late(self: runner.Run, job: Any) -> bool:
        if job.spec.id == "b":
            await trio.sleep(2)
        return await announce_one(self, job)

    monkeypatch.setattr(runner.Run, "announce_one", late)
    spec = make_spec(
        [{"id": "a", "prompt": "p"}, {"id": "b", "prompt": "p"}],
        sim={**SIM, "faults": ["server_error"]},
        concurrency=1,
        deadline=5.5,
        timeouts={"job": 3},
        retry={"base_delay": 4, "max_delay": 4},
    )
    recorder = Recorder()
    result = run_virtual(spec, subscribers=[_StuckAfter("retry_scheduled", 6.5), recorder])
    assert job_ends(recorder.events, ["a", "b"]) == {"a": ["job_failed"], "b": ["jobs_skipped"]}
    assert recorder.kinds("b") == ["job_queued", "job_input"]
    assert result.jobs["b"].status == "skipped"


# --- kill -9 and --resume, through the command ------------------------------------------------

KILL_SEEDS = range(4100, 4104)


@pytest.mark.parametrize("seed", KILL_SEEDS)
def test_kill_9_then_resume_runs_each_job_once_and_pays_each_request_once_per_run(
    seed: int, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    jobs = 80
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(orjson.dumps(f"prompt {rng.randrange(20)}").decode() + "\n" for _ in range(jobs))
    )
    job_file = tmp_path / "batch.toml"
    job_file.write_text(JOB_FILE.format(concurrency=10, seed=seed, prompts=prompts.name))
    log, results = tmp_path / "run.jsonl", tmp_path / "out.jsonl"
    kill_after = rng.randrange(1, jobs)
    proc = start_run(str(job_file), "--log", str(log), "-q", "--results", str(results))
    kill_after_ends(proc, log, kill_after)
    resumed = subprocess.run(
        _orchestrate(str(job_file), "--resume", str(log), "-q", "--results", str(results)),
        env=_env(),
        capture_output=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr

    runs: list[dict[str, set[str]]] = []  # per run: content hash -> the jobs that sent it
    hashes: dict[str, str] = {}
    succeeded: Counter[str] = Counter()
    for record in read_log(log):
        if record.header is not None:
            runs.append({})
            continue
        tagged = record.tagged
        assert tagged is not None and runs
        if isinstance(tagged.event, JobQueued):
            hashes[tagged.job_id or ""] = tagged.event.content_hash
        elif isinstance(tagged.event, AttemptStarted):
            runs[-1].setdefault(hashes[tagged.job_id or ""], set()).add(tagged.job_id or "")
        elif isinstance(tagged.event, JobSucceeded):
            succeeded[tagged.job_id or ""] += 1
    assert all(len(senders) == 1 for run in runs for senders in run.values())
    assert len(succeeded) == jobs and set(succeeded.values()) == {1}
    rows = [orjson.loads(line) for line in results.read_bytes().splitlines()]
    assert len(rows) == len({row["id"] for row in rows}) == jobs
    assert results.read_bytes() == b"".join(jsonl_line(row) for row in log_rows([log]))


def test_followers_of_a_leader_a_halted_backend_never_started_are_skipped_and_resume_sends_it_once(
    tmp_path: Path,
) -> None:
    log = tmp_path / "run.jsonl"
    jobs: list[dict[str, Any]] = [
        {"id": "x", "prompt": "x", "sim": {"faults": ["auth"]}},
        {"id": "a", "prompt": "p"},
        {"id": "b", "prompt": "p"},
        {"id": "c", "prompt": "p"},
    ]
    spec = make_spec(jobs, sim=SIM, concurrency=1, halt={"fatal": 1})
    recorder = Recorder()
    run_virtual(attrs.evolve(spec, log=str(log)), subscribers=[recorder])
    assert job_ends(recorder.events, ["x", "a", "b", "c"]) == {
        "x": ["job_failed"],
        "a": ["jobs_skipped"],
        "b": ["jobs_skipped"],
        "c": ["jobs_skipped"],
    }
    assert attempts_of(recorder.events) == ["x"]
    # Resumed (the key fixed, say): the request is sent once, by "a", and "b" and "c" follow it.
    resumed = plan(make_spec([jobs[0] | {"sim": {}}, *jobs[1:]], sim=SIM, concurrency=1), str(log))
    again = Recorder()
    second = run_virtual(attrs.evolve(resumed.spec, already_done=resumed.already_done), subscribers=[again])
    assert attempts_of(again.events) == ["x", "a"]
    assert [second.jobs[job].deduplicated_from for job in "abc"] == [None, "a", "a"]
    assert read_report([log]).summary.deduplicated == 2


def attempts_of(events: list[Tagged]) -> list[str]:
    return [t.job_id for t in events if isinstance(t.event, AttemptStarted) and t.job_id is not None]


_OK: list[str] = []
_CUT_REQUESTS = [("p", _OK), ("q", ["server_error"]), ("p", _OK), ("r", ["fatal"])]
_CUT_REQUESTS += [("q", ["server_error"]), ("r", ["fatal"]), ("p", _OK), ("s", _OK)]
_CUT_JOBS: list[dict[str, Any]] = [
    {"id": f"j{i}", "prompt": prompt, "metadata": {"i": i}, "sim": {"faults": faults}}
    for i, (prompt, faults) in enumerate(_CUT_REQUESTS)
]


@pytest.fixture(scope="module")
def finished_log(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    log = tmp_path_factory.mktemp("whole") / "run.jsonl"
    run_virtual(attrs.evolve(_cut_spec(), log=str(log)))
    return log.read_bytes()


def _cut_spec() -> Any:
    return make_spec(_CUT_JOBS, sim=SIM, concurrency=2, retry={"base_delay": 0.1})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(share=st.floats(0, 1))
def test_a_log_cut_anywhere_resumes_to_every_job_once_with_no_request_paid_twice_in_a_run(
    tmp_path_factory: Any, finished_log: bytes, share: float
) -> None:
    log = tmp_path_factory.mktemp("cut") / "run.jsonl"
    log.write_bytes(finished_log[: int(len(finished_log) * share)])  # killed at any byte
    resumed = plan(_cut_spec(), str(log))
    recorder = Recorder()
    run_virtual(attrs.evolve(resumed.spec, already_done=resumed.already_done), subscribers=[recorder])
    by_hash = {job.id: job.content_hash for job in resumed.spec.jobs}
    senders: dict[str, set[str]] = {}
    for job_id in attempts_of(recorder.events):
        senders.setdefault(by_hash[job_id], set()).add(job_id)
    assert all(len(jobs) == 1 for jobs in senders.values())  # within the run, once per request
    rows = log_rows([log])
    assert sorted(row["id"] for row in rows) == sorted(job["id"] for job in _CUT_JOBS)
    statuses = {row["id"]: row["status"] for row in rows}
    assert {job: statuses[job] for job in ("j3", "j5")} == {"j3": "failed", "j5": "failed"}
    assert all(statuses[job["id"]] == "succeeded" for job in _CUT_JOBS if job["prompt"] != "r")
    for row in rows:  # a follower names a job of its own run that ended as it did
        if row["deduplicated_from"] is not None:
            leader = next(r for r in rows if r["id"] == row["deduplicated_from"])
            assert (leader["status"], leader["text"]) == (row["status"], row["text"])
    assert read_report([log]).summary.jobs == len(_CUT_JOBS)


def test_the_command_stopped_by_its_deadline_reports_and_exports_what_it_wrote_live(tmp_path: Path) -> None:
    from tests.cli.test_cli import orchestrate

    prompts = [f"prompt {i % 7}" for i in range(40)]
    (tmp_path / "prompts.jsonl").write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in prompts))
    (tmp_path / "batch.toml").write_text(
        'prompts_file = "prompts.jsonl"\n[defaults]\nbackend = "sim"\nconcurrency = 3\n'
        "[defaults.sim]\nttft = 0.2\ntokens_per_s = 50\nreply_tokens = 5\n"
    )
    run = orchestrate(
        "batch.toml",
        "--log",
        "run.jsonl",
        "--results",
        "out.jsonl",
        "--json",
        "--deadline",
        "0.5",
        cwd=tmp_path,
    )
    assert run.returncode != 2, run.stderr
    live = orjson.loads(run.stdout)
    assert live["stopped"] is not None and live["jobs"] == 40
    report = orchestrate("report", "run.jsonl", "--json", cwd=tmp_path)
    assert orjson.loads(report.stdout) == live
    export = orchestrate("export", "run.jsonl", "-o", "again.jsonl", cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    assert (tmp_path / "again.jsonl").read_bytes() == (tmp_path / "out.jsonl").read_bytes()


def test_jobs_of_one_batch_that_differ_in_anything_that_shapes_the_reply_are_each_sent() -> None:
    variants: list[dict[str, Any]] = [
        {},
        {"model": "m1"},
        {"model": "m2"},
        {"temperature": 0.0},
        {"temperature": 1.0},
        {"seed": 1},
        {"seed": 2},
        {"system": "s"},
        {"max_tokens": 9},
        {"output_schema": {"type": "object"}},
        {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]},
        {"sim": {"reply_tokens": 3}},
    ]
    jobs = [{"id": f"v{i}", "prompt": "same", **change} for i, change in enumerate(variants)]
    jobs.append({"id": "copy", "prompt": "same"})  # the one true copy, of v0
    recorder = Recorder()
    result = run_virtual(make_spec(jobs, sim=SIM), subscribers=[recorder])
    assert sorted(attempts_of(recorder.events)) == sorted(f"v{i}" for i in range(len(variants)))
    assert result.summary.deduplicated == 1 and result.jobs["copy"].deduplicated_from == "v0"


@pytest.mark.parametrize("stall", [0.5, 6.0, 30.0])
def test_a_bus_slower_than_the_terminal_grace_loses_no_jobs_end(stall: float) -> None:
    # A slow subscriber (a log on a slow disk, say) holds the bus longer than the grace a job's
    # end may wait for it during a stop: with no stop, every end still arrives, the follower's
    # too.
    spec = make_spec(
        [{"id": "a", "prompt": "p"}, {"id": "b", "prompt": "p"}, {"id": "c", "prompt": "q"}],
        sim=SIM,
        concurrency=2,
    )
    recorder = Recorder()
    with mock.patch.object(batch_module, "CHANNEL_SIZE", 1):
        result = run_virtual(spec, subscribers=[_Stalls(stall, 1), recorder])
    assert job_ends(recorder.events, ["a", "b", "c"]) == {
        "a": ["job_succeeded"],
        "b": ["job_succeeded"],
        "c": ["job_succeeded"],
    }
    assert result.summary.succeeded == 3 and result.jobs["b"].deduplicated_from == "a"
