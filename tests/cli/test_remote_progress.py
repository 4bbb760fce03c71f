"""The progress line shows the batch backends' remote batches: orchestrator/cli/display.py."""

from __future__ import annotations

from orchestrator.cli.display import Progress
from orchestrator.events import BatchProgress, BatchStarted, BatchStopped, BatchSubmitted, Tagged


def batch_event(seq: int, ts: float, event: object) -> Tagged:
    return Tagged(None, 0, seq, ts, event)  # type: ignore[arg-type]


async def test_remote_batches_show_their_counts_by_state_and_the_time_since_the_first() -> None:
    progress = Progress()
    assert "remote" not in progress.status_line(1.0)
    api = "anthropic-batch"
    await progress.deliver(
        [
            batch_event(0, 0.0, BatchStarted(run_id="r", jobs=300, started_at="t")),
            batch_event(1, 5.0, BatchSubmitted(api, "msgbatch_1", ("a", "b"))),
            batch_event(2, 65.0, BatchSubmitted(api, "msgbatch_2", ("c",))),
            batch_event(3, 70.0, BatchProgress(api, "msgbatch_1", {"processing": 2, "errored": 0})),
            batch_event(4, 71.0, BatchProgress(api, "msgbatch_2", {"processing": 1})),
            batch_event(5, 90.0, BatchProgress(api, "msgbatch_1", {"succeeded": 1, "errored": 1})),
        ]
    )
    line = progress.status_line(185.0)
    assert "[2 remote batches: errored 1, processing 1, succeeded 1; first sent 3m00s ago]" in line


async def test_a_remote_state_name_from_the_provider_is_shown_as_data() -> None:
    progress = Progress()
    await progress.deliver(
        [
            batch_event(0, 0.0, BatchSubmitted("openai-batch", "batch_1", ("a",))),
            batch_event(1, 1.0, BatchProgress("openai-batch", "batch_1", {"in_progress\x1b[2J": 1})),
        ]
    )
    line = progress.status_line(2.0)
    assert "\x1b" not in line and "in_progress\\x1b[2J 1" in line


async def test_running_remote_batches_are_those_still_processing_and_not_stopped() -> None:
    progress = Progress()
    api = "anthropic-batch"
    await progress.deliver(
        [
            batch_event(0, 1.0, BatchSubmitted(api, "b1", ("a",))),
            batch_event(1, 2.0, BatchSubmitted(api, "b2", ("b",))),
            batch_event(2, 3.0, BatchSubmitted(api, "b3", ("c",))),
            batch_event(3, 4.0, BatchProgress(api, "b2", {"processing": 0, "succeeded": 1})),
        ]
    )
    assert progress.remote_running() == 2  # b1 (not polled yet) and b3
    await progress.deliver([batch_event(4, 5.0, BatchStopped(api, "b3", "detach"))])
    assert progress.remote_running() == 1 and "2 remote batches" in progress.status_line(6.0)
