"""When a batch stops itself: a backend whose jobs keep failing takes no new ones. Pure.

A batch of 500 jobs behind a bad key would otherwise send 500 requests that all fail the same
way. :class:`HaltWatch` sees every job's end and says when a backend should halt, as GNU
parallel's ``--halt`` does: after ``fatal`` jobs in a row failed with the same backend-wide error
kind (nothing about the job itself could cause it), or once more than ``failed_fraction`` of its
finished jobs failed.
"""

from __future__ import annotations

from collections import defaultdict

import attrs

from orchestrator.errors import BACKEND_WIDE, ErrorKind
from orchestrator.events import JobFailed, JobSucceeded, TerminalEvent
from orchestrator.spec import HaltPolicy


@attrs.define
class _Record:
    ended: int = 0
    failed: int = 0
    streak_kind: ErrorKind | None = None
    streak: int = 0


class HaltWatch:
    """Counts job ends per backend and decides when a backend halts."""

    def __init__(self, policy: HaltPolicy) -> None:
        self.policy = policy
        self._records: defaultdict[str, _Record] = defaultdict(_Record)
        self.halted: dict[str, str] = {}  # backend -> reason

    def record(self, backend: str, terminal: TerminalEvent) -> str | None:
        """Note how one job on ``backend`` ended. Returns the halt reason the first time the
        backend crosses the policy (``"halted (auth)"``), else None."""
        # Exact types (neither has subclasses), not isinstance of a union: once per job.
        ending = type(terminal)
        if ending is JobSucceeded:
            kind = None
        elif ending is JobFailed:
            kind = terminal.error_kind  # type: ignore[union-attr]
        else:
            return None
        if backend in self.halted:
            return None
        policy = self.policy
        record = self._records[backend]
        record.ended += 1
        if kind is not None:
            record.failed += 1
        if kind in BACKEND_WIDE:
            record.streak = record.streak + 1 if kind == record.streak_kind else 1
            record.streak_kind = kind
        else:
            record.streak_kind, record.streak = None, 0
        reason = None
        if policy.fatal and record.streak >= policy.fatal:
            reason = f"halted ({kind})"
        elif (
            policy.failed_fraction is not None
            and record.ended >= policy.min_finished
            and record.failed > policy.failed_fraction * record.ended
        ):
            reason = f"halted ({record.failed} of {record.ended} jobs failed)"
        if reason is not None:
            self.halted[backend] = reason
        return reason
