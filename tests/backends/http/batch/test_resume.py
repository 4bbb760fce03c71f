"""A run cut short while its remote batches run, then resumed from its log: the resumed run
waits for those batches instead of sending their requests again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import trio

from orchestrator.api import run_batch_async
from orchestrator.backends.http.batch.left import in_flight
from orchestrator.record.lines import records_of
from orchestrator.testing.anthropic.batches import Errored, anthropic_batch_store, open_fake_anthropic_batches
from orchestrator.testing.anthropic.server import Reply
from orchestrator.testing.openai.batches import open_fake_openai_batches, openai_batch_store

MODEL = "claude-sonnet-4-5"


def keywords(fake: Any, log: Path, **more: Any) -> dict[str, Any]:
    settings = {
        "base_url": fake.base_url,
        "batch_linger": 1.0,
        "poll_min": 1.0,
        "poll_max": 8.0,
        "batch_requests": 2,
    }
    return {
        "backend": "anthropic-batch",
        "backend_settings": {"anthropic-batch": settings},
        "model": MODEL,
        "concurrency": 100,
        "log": str(log),
        "fsync": "never",  # an fsync runs in a thread, which the virtual clock does not wait for
        "retry": {"base_delay": 0.01, "max_delay": 0.05},
        **more,
    }


async def test_a_resumed_run_collects_the_batches_a_crashed_run_left_and_pays_once(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    log = tmp_path / "run.jsonl"
    queries = [{"id": f"j{n}", "prompt": f"q{n}"} for n in range(5)]
    store = anthropic_batch_store(processing=600)
    async with open_fake_anthropic_batches(store) as fake:
        with trio.move_on_after(100):  # torn down mid-batch: no terminal events, as after a kill
            await run_batch_async(queries, **keywords(fake, log))
        assert sorted(len(b.requests) for b in store.batches.values()) == [1, 2, 2]
        assert sum(len(ids) for ids in in_flight(str(log), "anthropic-batch").values()) == 5
        result = await run_batch_async(queries, **keywords(fake, log, resume=str(log)))
    assert result.summary.succeeded == 5
    assert {job_id: job.text for job_id, job in result.jobs.items()} == {
        f"j{n}": f"Echo: q{n}" for n in range(5)
    }
    assert store.submissions == {f"j{n}": 1 for n in range(5)}
    assert len(store.batches) == 3
    assert in_flight(str(log), "anthropic-batch") == {}


async def test_an_openai_batch_run_resumes_the_same_way(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    log = tmp_path / "run.jsonl"
    queries = [{"id": f"j{n}", "prompt": f"q{n}"} for n in range(3)]
    store = openai_batch_store(processing=600)
    async with open_fake_openai_batches(store) as fake:
        settings = {"base_url": fake.base_url, "batch_linger": 1.0, "poll_min": 1.0, "batch_requests": 2}
        more: dict[str, Any] = {
            "backend": "openai-batch",
            "backend_settings": {"openai-batch": settings},
            "model": "gpt-4o-mini",
            "concurrency": 100,
            "log": str(log),
            "fsync": "never",  # see keywords()
        }
        with trio.move_on_after(100):
            await run_batch_async(queries, **more)
        result = await run_batch_async(queries, **more, resume=str(log))
    assert {job_id: job.text for job_id, job in result.jobs.items()} == {
        f"j{n}": f"Echo: q{n}" for n in range(3)
    }
    assert store.submissions == {f"j{n}": 1 for n in range(3)} and len(store.batches) == 2


async def test_a_resumed_run_sends_again_only_what_failed_in_the_left_batch(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    log = tmp_path / "run.jsonl"
    store = anthropic_batch_store(processing=600)
    store.script("a", Errored(529, "overloaded_error"), Reply.text("again"))
    async with open_fake_anthropic_batches(store) as fake:
        with trio.move_on_after(100):
            await run_batch_async(
                [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}], **keywords(fake, log)
            )
        result = await run_batch_async(
            [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}], **keywords(fake, log, resume=str(log))
        )
    assert result.jobs["a"].text == "again" and result.jobs["b"].text == "Echo: y"
    assert store.submissions == {"a": 2, "b": 1}


async def test_the_log_says_which_requests_still_wait_in_which_remote_batch(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    log = tmp_path / "run.jsonl"
    await run_batch_async(["x"], backend="sim", log=str(log), options={"ttft": 0})  # a log with its header

    def event(kind: str, job: str | None = None, **fields: Any) -> str:
        return orjson.dumps({"job": job, "attempt": 1, "seq": 0, "ts": 0.0, "kind": kind, **fields}).decode()

    submitted = "batch_submitted"
    lines = [
        event("job_queued", "d", backend="anthropic-batch", model=None, content_hash="hash-d"),
        event(submitted, backend="anthropic-batch", remote_id="b1", custom_ids=["a", "b", "c", "d"]),
        event(submitted, backend="openai-batch", remote_id="o1", custom_ids=["e"]),
        event("job_succeeded", "a", attempts=1),
        event("retry_scheduled", "b", delay_s=1, error_kind="overloaded", message="m", retry_after_s=None),
        event(submitted, backend="anthropic-batch", remote_id="b2", custom_ids=["c"]),
        event("job_cancelled", "d", reason="stopped", attempts=1),
    ]
    log.write_text(log.read_text() + "\n".join(lines) + "\n")
    assert in_flight(str(log), "anthropic-batch") == {"b1": {"d": "hash-d"}, "b2": {"c": None}}
    assert in_flight(str(log), "openai-batch") == {"o1": {"e": None}}


async def test_a_job_edited_while_its_batch_ran_does_not_take_that_batchs_answer(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    log = tmp_path / "run.jsonl"
    store = anthropic_batch_store(processing=600)
    before = [{"id": "a", "prompt": "old question"}, {"id": "b", "prompt": "y"}]
    after = [{"id": "a", "prompt": "new question"}, {"id": "b", "prompt": "y"}]
    warnings: list[Any] = []
    async with open_fake_anthropic_batches(store) as fake:
        with trio.move_on_after(100):
            await run_batch_async(before, **keywords(fake, log))
        result = await run_batch_async(
            after,
            **keywords(fake, log, resume=str(log)),
            on_event=lambda t: (
                warnings.append((t.job_id, t.event)) if t.event.kind == "stream_warning" else None
            ),
        )
    assert result.jobs["a"].text == "Echo: new question" and result.jobs["b"].text == "Echo: y"
    assert store.submissions == {"a": 2, "b": 1}
    [(job, warning)] = warnings
    assert job == "a" and "edited" in warning.message and "sent again" in warning.message
    logged = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    assert [r["job"] for r in logged for kind, _ in records_of(r) if kind == "stream_warning"] == ["a"]
