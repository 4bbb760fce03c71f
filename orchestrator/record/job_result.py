"""How a job ended: :class:`JobResult`, as the fold (:mod:`~orchestrator.record.aggregate`) makes
it, and the results made without one: a job that never started, one that shared another's request,
and every result of a batch in job order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import attrs

from orchestrator.errors import ErrorKind
from orchestrator.events import JobInput, Tokens, ToolCall
from orchestrator.spec import NO_ROW

if TYPE_CHECKING:
    from orchestrator.record.aggregate import Aggregator

JobStatus = Literal["succeeded", "failed", "cancelled", "skipped"]
_NONE = Tokens()  # frozen, so every skipped job can share it


@attrs.frozen
class JobResult:
    """How one job ended.

    ``text`` is the final attempt's reply, or None when the batch was run without keeping
    texts (they are in the log). ``duration_s`` runs from the first attempt's start to the end.
    """

    job_id: str
    status: JobStatus
    attempts: int
    text: str | None
    tool_calls: tuple[ToolCall, ...]
    tokens: Tokens
    cost_usd: float | None
    ttft_s: float | None
    duration_s: float | None
    stop_reason: str | None = None
    session_id: str | None = None
    request_id: str | None = None
    """The provider's id of the final attempt's request (for its support), when it gave one."""
    error_kind: ErrorKind | Literal["cancelled", "skipped"] | None = None
    """Why a failed job failed; a cancelled or skipped job's status (it was stopped, not failed)."""
    error: str | None = None
    row: Mapping[str, Any] = NO_ROW
    """The data-file row the job came from (the columns kept), from its ``job_input``."""
    metadata: Mapping[str, Any] = NO_ROW
    """The job's ``metadata`` table, from its ``job_input``."""
    backend: str | None = None
    """The backend the job ran on, from its ``job_queued`` (None: never announced)."""
    model: str | None = None
    """The model the job asked for, from its ``job_queued``."""
    result_text: str | None = None
    """The backend's own final answer (the Claude Code CLI's ``result``), when it gives one."""
    permission_denials: tuple[Mapping[str, Any], ...] = ()
    """Tool uses the backend refused for want of permission (the Claude Code CLI reports them)."""
    output: Any = None
    """The final attempt's structured output (its ``output_parsed`` value): the reply's JSON,
    parsed and checked against the job's ``output_schema``; None for a job without one."""
    refusal: str | None = None
    """The model's refusal text, apart from ``text`` (see :attr:`refused`)."""
    deduplicated_from: str | None = None
    """The job whose identical request answered this one (sent once for both, see
    :mod:`orchestrator.run.dedupe`): the outcome is that job's, the cost 0; None for a job
    that made its own attempts."""

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    @property
    def refused(self) -> bool:
        """Whether the model refused: a refusal text, or the stop reason ``refusal``."""
        return self.refusal is not None or self.stop_reason == "refusal"


def shared_result(
    leader: JobResult, job_id: str, given: JobInput | None, backend: str | None, model: str | None
) -> JobResult:
    """The result of a job whose identical request ``leader`` sent: the leader's outcome (status,
    text, output, tool calls, usage, stop reason, error, attempts, times) under the job's own
    id, row and metadata, at no cost (it was paid once, by the leader)."""
    return attrs.evolve(
        leader,
        job_id=job_id,
        row=given.row if given is not None else NO_ROW,
        metadata=given.metadata if given is not None else NO_ROW,
        backend=backend,
        model=model,
        cost_usd=0.0,
        deduplicated_from=leader.job_id,
    )


def skipped_result(job_id: str, reason: str) -> JobResult:
    """The result of a job that never started."""
    return JobResult(
        job_id=job_id,
        status="skipped",
        attempts=0,
        text=None,
        tool_calls=(),
        tokens=_NONE,
        cost_usd=0.0,
        ttft_s=None,
        duration_s=None,
        error_kind="skipped",
        error=reason,
    )


class ResultsInJobOrder(Mapping[str, JobResult]):
    """Every job that ended, with its result, in job order (``ids``).

    Results of jobs a ``jobs_skipped`` ended are made when asked for, so a stopped batch of a
    million jobs builds no million objects.
    """

    def __init__(self, ids: Sequence[str], aggregator: Aggregator) -> None:
        self._ids = ids
        self._aggregator = aggregator
        self._positions: dict[str, int] | None = None

    def __getitem__(self, job_id: str) -> JobResult:
        found = self._aggregator.result(job_id)
        if found is None and self._aggregator.unannounced_skipped:
            if self._positions is None:
                self._positions = {job: i for i, job in enumerate(self._ids)}
            position = self._positions.get(job_id)
            reason = None if position is None else self._aggregator.unannounced_reason(position)
            if reason is not None:
                found = skipped_result(job_id, reason)
        if found is None:
            raise KeyError(job_id)
        return found

    def __iter__(self) -> Iterator[str]:
        aggregator = self._aggregator
        results, skipped = aggregator.results, aggregator.skipped
        bulk = aggregator.unannounced_skipped > 0
        for position, job_id in enumerate(self._ids):
            if job_id in results or job_id in skipped:
                yield job_id
            elif bulk and aggregator.unannounced_reason(position) is not None:
                yield job_id

    def __len__(self) -> int:
        return sum(1 for _ in self)
