"""The JSONL results file written as jobs end: a bus subscriber after the log.

It folds the events with its own :class:`~orchestrator.record.aggregate.Aggregator` (texts
kept, whatever the run keeps in memory) and appends each job's row the moment its terminal
event (or the ``jobs_skipped`` that ended it) is delivered; a row written is dropped from
memory. (In a batch that deduplicates identical requests, a job that ran keeps its result,
without its row, until the run ends: a later identical job's row copies its outcome.) Rows are
written to the OS with each delivered batch, not fsynced: the log is the source of truth, and a
resumed run rewrites this file from it (see :mod:`orchestrator.cli.results`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import attrs

from orchestrator.events import TERMINAL_EVENTS, JobsSkipped, Tagged
from orchestrator.record.aggregate import Aggregator
from orchestrator.record.results import jsonl_line, result_row
from orchestrator.spec import NO_ROW

_SHARED = ("succeeded", "failed")  # the outcomes a later identical job ends with


class ResultsFile:
    """Appends one JSONL row per job to ``path`` as jobs end. Opening it (append mode, made if
    missing) raises OSError. ``dedupe``: the batch's setting of that name (see module docstring)."""

    def __init__(self, path: str | Path, *, dedupe: bool = True) -> None:
        self.path = Path(path)
        self._dedupe = dedupe
        self._aggregator = Aggregator(keep_text=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: BinaryIO | None = open(self.path, "ab")
        self.written = 0
        self.failed: str | None = None
        """Why writing stopped (a full disk, say); the run goes on, the log holds every row."""

    async def deliver(self, batch: Sequence[Tagged]) -> None:
        """Fold the batch and append the rows of the jobs it ended. A write that fails stops
        the writing (see :attr:`failed`), never the run: the log holds everything."""
        aggregator = self._aggregator
        lines: list[bytes] = []
        for tagged in batch:
            skipped_before = len(aggregator.skipped)
            aggregator.apply(tagged)
            event = tagged.event
            if tagged.job_id is not None and isinstance(event, TERMINAL_EVENTS):
                result = aggregator.results.pop(tagged.job_id, None)
                if result is not None:
                    lines.append(jsonl_line(result_row(result)))
                    if self._dedupe and result.deduplicated_from is None and result.status in _SHARED:
                        aggregator.kept[tagged.job_id] = attrs.evolve(result, row=NO_ROW, metadata=NO_ROW)
            elif isinstance(event, JobsSkipped):
                for job_id in itertools.islice(aggregator.skipped, skipped_before, None):
                    result = aggregator.result(job_id)
                    assert result is not None
                    lines.append(jsonl_line(result_row(result)))
        if lines and self.failed is None:
            try:
                assert self._file is not None, "delivered to after close()"
                self._file.write(b"".join(lines))
                self._file.flush()
            except OSError as exc:
                self.failed = f"{self.path}: {exc.strerror or exc}"
                return
            self.written += len(lines)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
