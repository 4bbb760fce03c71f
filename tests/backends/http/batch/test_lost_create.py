"""A run that stops during a create call (after the provider made the batch, before its id is
in the log), then resumed: the intent logged before the call leads the resumed run to the batch,
which it adopts instead of paying for its requests twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from orchestrator import codec
from orchestrator.api import run_batch_async
from orchestrator.backends.http.batch.left import Intent, left_in
from orchestrator.events import BatchSubmitting, Tagged
from orchestrator.record.lines import LogLines, records_of
from orchestrator.testing.anthropic.batches import anthropic_batch_store, open_fake_anthropic_batches
from tests.backends.http.batch.providers import PROVIDERS


def keywords(backend: str, fake: Any, log: Path, **more: Any) -> dict[str, Any]:
    settings = {
        "base_url": fake.base_url,
        "batch_linger": 1.0,
        "poll_min": 1.0,
        "batch_requests": 3,
        "control_timeout": 3600.0,  # the first run hangs in the create call until torn down
    }
    return {
        "backend": backend,
        "backend_settings": {backend: settings},
        "model": PROVIDERS[backend][0],
        "concurrency": 100,
        "log": str(log),
        "retry": {"base_delay": 0.01, "max_delay": 0.05},
        "fsync": "never",  # an fsync runs in a thread, which the virtual clock does not wait for
        **more,
    }


def records(log: Path, kind: str) -> list[dict[str, Any]]:
    """The log's records of ``kind``, each as its fields and its line's ``job``."""
    return [
        {**fields, "job": line.get("job")}
        for line in map(orjson.loads, log.read_bytes().splitlines())
        for found, fields in records_of(line)
        if found == kind
    ]


@pytest.mark.parametrize("backend", PROVIDERS)
async def test_a_run_stopped_during_its_create_call_adopts_that_batch_when_resumed(
    backend: str, tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    _, new_store, open_fake = PROVIDERS[backend]
    log = tmp_path / "run.jsonl"
    queries = [{"id": f"j{n}", "prompt": f"q{n}"} for n in range(5)]
    store = new_store(60)
    store.hang_creates = 1  # the first chunk's batch is made; its create call never answers
    async with open_fake(store) as fake:
        with trio.move_on_after(30):  # torn down during that call, as by a kill
            await run_batch_async(queries, **keywords(backend, fake, log))
        assert len(store.batches) == 2 and len(records(log, "batch_submitted")) == 1
        [intent] = left_in(str(log), backend).intents
        assert intent.count == 3 and sorted(intent.requests) == ["j0", "j1", "j2"]
        result = await run_batch_async(queries, **keywords(backend, fake, log, resume=str(log)))
    assert {job_id: job.text for job_id, job in result.jobs.items()} == {
        f"j{n}": f"Echo: q{n}" for n in range(5)
    }
    assert store.submissions == {f"j{n}": 1 for n in range(5)} and len(store.batches) == 2
    found = [r for r in records(log, "batch_submitted") if "during its create call" in r.get("note", "")]
    assert len(found) == 1 and sorted(found[0]["custom_ids"]) == ["j0", "j1", "j2"]
    succeeded = sorted(r["job"] for r in records(log, "job_succeeded"))
    assert succeeded == [f"j{n}" for n in range(5)]
    assert left_in(str(log), backend).intents == ()


async def test_a_lost_create_whose_batch_is_not_there_is_sent_again(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    log = tmp_path / "run.jsonl"
    queries = [{"id": "a", "prompt": "x"}]
    store = anthropic_batch_store(60)
    store.hang_creates = 1
    async with open_fake_anthropic_batches(store) as fake:
        with trio.move_on_after(30):
            await run_batch_async(queries, **keywords("anthropic-batch", fake, log))
        store.batches.clear()  # the provider never made it (the call died on its way)
        result = await run_batch_async(queries, **keywords("anthropic-batch", fake, log, resume=str(log)))
    assert result.jobs["a"].text == "Echo: x" and store.submissions == {"a": 2}
    assert len(store.batches) == 1


async def test_the_log_says_which_create_calls_were_sent_with_no_answer(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    log = tmp_path / "run.jsonl"
    await run_batch_async(["x"], backend="sim", log=str(log), options={"ttft": 0})  # a log with its header

    def event(kind: str, job: str | None = None, **fields: Any) -> str:
        return orjson.dumps({"job": job, "ts": 0.0, "kind": kind, **fields}).decode()

    intent, submitted = "batch_submitting", "batch_submitted"
    lines = [
        event(intent, backend="anthropic-batch", label="l1", custom_ids=["a", "b"], at=100.0),
        event(submitted, backend="anthropic-batch", remote_id="b1", custom_ids=["a", "b"]),
        event(intent, backend="anthropic-batch", label="l2", custom_ids=["c", "d", "e"], at=200.0),
        event("retry_scheduled", "d", delay_s=1, error_kind="overloaded", message="m"),
        event(intent, backend="openai-batch", label="l3", custom_ids=["f"], at=50.0),
    ]
    log.write_text(log.read_text() + "\n".join(lines) + "\n")
    left = left_in(str(log), "anthropic-batch")
    assert left.batches == {"b1": {"a": None, "b": None}} and left.known == {"b1"}
    assert left.intents == (Intent("l2", 200.0, 3, {"c": None, "e": None}),)
    assert left_in(str(log), "openai-batch").intents == (Intent("l3", 50.0, 1, {"f": None}),)


@pytest.mark.parametrize("compact", [False, True])
def test_an_intent_reads_back_from_a_whole_line_and_a_compact_one(compact: bool) -> None:
    event = BatchSubmitting("openai-batch", "l1", ("a", "b"), 1796585566.25)
    tagged = Tagged(None, 0, 0, 1.5, event)
    line = LogLines().encode(tagged) if compact else codec.encode_tagged(tagged)
    assert LogLines().decode(orjson.loads(line)) == tagged
