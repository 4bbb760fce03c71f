"""Stops and dedupe over jobs made lazily from a data file's rows (on trio's virtual clock)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from orchestrator.config.jobfile import load_job_file
from orchestrator.events import Tagged
from orchestrator.jobs import Rows
from orchestrator.run import runner
from orchestrator.run.control import RunControl
from orchestrator.spec import BatchSpec
from tests.helpers import Recorder, job_ends, run_virtual


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    stop_after=st.integers(min_value=0, max_value=4000),
    concurrency=st.integers(min_value=1, max_value=6),
    kinds=st.integers(min_value=1, max_value=700),
    dedupe=st.booleans(),
    how=st.sampled_from(["cancel", "deadline", "max_cost_usd"]),
)
def test_a_stop_at_any_point_ends_every_lazily_made_job_exactly_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stop_after: int,
    concurrency: int,
    kinds: int,
    dedupe: bool,
    how: str,
) -> None:
    monkeypatch.setattr(runner, "ANNOUNCE_AHEAD", 16)
    # Equal prompts far apart (beyond the announcer's window): followers of long-ended leaders.
    (tmp_path / "rows.csv").write_text("id,text\n" + "".join(f"r{i},t{i % kinds}\n" for i in range(900)))
    (tmp_path / "jobs.toml").write_text(
        'data_file = "rows.csv"\n[defaults]\nprompt_template = "{text}"\nid_column = "id"\n'
        f"concurrency = {concurrency}\ndedupe = {str(dedupe).lower()}\n"
        + {"cancel": "", "deadline": f"deadline = {stop_after / 50 + 0.1}\n"}.get(
            how, f"max_cost_usd = {stop_after * 1e-6 + 1e-7}\nhard_cap = true\n"
        )
        + "[defaults.sim]\nttft = 1.0\nlatency_jitter = 0.9\nreply_tokens = 1\n"
    )
    spec = load_job_file(tmp_path / "jobs.toml")
    assert isinstance(spec.jobs.parts[-1], Rows)
    ids = list(spec.jobs.ids())
    control = RunControl()

    class StopAfter(Recorder):
        async def deliver(self, batch: Sequence[Tagged]) -> None:
            await super().deliver(batch)
            if how == "cancel" and len(self.events) >= stop_after:
                control.cancel("interrupted")

    recorder = StopAfter()
    result = run_virtual(spec, subscribers=[recorder], control=control)
    ends = job_ends(recorder.events, ids)
    assert {job: kinds for job, kinds in ends.items() if len(kinds) != 1} == {}
    queued = [t.job_id for t in recorder.events if t.event.kind == "job_queued"]
    assert queued == ids[: len(queued)]
    summary = result.summary
    event(f"{how}: stopped={summary.stopped is not None}")
    assert summary.succeeded + summary.cancelled + summary.skipped + summary.failed == len(ids)
    assert [job for job, r in result.jobs.items() if r.status == "skipped"] == [
        job for job, kinds in ends.items() if kinds in (["jobs_skipped"], ["job_skipped"])
    ]  # one by one: those the spend cap announced on the way to a follower whose leader had ended


@pytest.mark.parametrize("stop_after", [None, 40])
def test_resume_over_a_data_file_reruns_only_the_changed_rows(tmp_path: Path, stop_after: int | None) -> None:
    import attrs

    from orchestrator.record.resume import plan

    def write(changed: set[int]) -> BatchSpec:
        rows = "".join(f"r{i},t{i % 9}{'!' if i in changed else ''}\n" for i in range(1200))
        (tmp_path / "rows.csv").write_text("id,text\n" + rows)
        (tmp_path / "jobs.toml").write_text(
            'data_file = "rows.csv"\n[defaults]\nprompt_template = "{text}"\nid_column = "id"\n'
            f'concurrency = 8\nlog = "{tmp_path / "run.jsonl"}"\n'
        )
        return load_job_file(tmp_path / "jobs.toml")

    control = RunControl()

    class StopAfter(Recorder):
        async def deliver(self, batch: Sequence[Tagged]) -> None:
            await super().deliver(batch)
            if stop_after is not None and len(self.events) >= stop_after:
                control.cancel("interrupted")

    first = run_virtual(write(set()), subscribers=[StopAfter()], control=control)
    done = {job for job, r in first.jobs.items() if r.status == "succeeded"}
    changed = {0, 1, 700, 1199}  # the first row (made in full) too
    resumed = plan(write(changed), str(tmp_path / "run.jsonl"))
    left = list(resumed.spec.jobs.ids())
    expected = [f"r{i}" for i in range(1200) if i in changed or f"r{i}" not in done]
    assert left == expected and resumed.already_done == len(done - {f"r{i}" for i in changed})
    assert [job.id for job in resumed.spec.jobs] == expected
    again = run_virtual(attrs.evolve(resumed.spec))
    assert again.summary.succeeded == len(expected)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first_stop=st.integers(10, 3000), second_stop=st.integers(0, 3000), dedupe=st.booleans())
def test_a_stop_in_a_resumed_run_ends_every_job_left_exactly_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first_stop: int, second_stop: int, dedupe: bool
) -> None:
    from orchestrator.record.resume import plan

    monkeypatch.setattr(runner, "ANNOUNCE_AHEAD", 16)
    log = tmp_path / "run.jsonl"
    log.unlink(missing_ok=True)
    (tmp_path / "rows.csv").write_text("id,text\n" + "".join(f"r{i},t{i % 37}\n" for i in range(700)))
    (tmp_path / "jobs.toml").write_text(
        'data_file = "rows.csv"\n[defaults]\nprompt_template = "{text}"\nid_column = "id"\n'
        f'concurrency = 4\ndedupe = {str(dedupe).lower()}\nlog = "{log}"\n'
        "[defaults.sim]\nttft = 1.0\nlatency_jitter = 0.9\nreply_tokens = 1\n"
    )

    def run(spec: BatchSpec, stop_after: int) -> tuple[Recorder, list[str]]:
        control = RunControl()

        class StopAfter(Recorder):
            async def deliver(self, batch: Sequence[Tagged]) -> None:
                await super().deliver(batch)
                if len(self.events) >= stop_after:
                    control.cancel("interrupted")

        recorder = StopAfter()
        run_virtual(spec, subscribers=[recorder], control=control)
        return recorder, list(spec.jobs.ids())

    run(load_job_file(tmp_path / "jobs.toml"), first_stop)
    resumed = plan(load_job_file(tmp_path / "jobs.toml"), str(log))
    recorder, ids = run(resumed.spec, second_stop)
    ends = job_ends(recorder.events, ids)
    assert {job: kinds for job, kinds in ends.items() if len(kinds) != 1} == {}
    assert resumed.already_done + len(ids) == 700
