"""The handle that stops a running batch gracefully (Ctrl-C, ``BatchRun.cancel``, a host's stop)."""

from __future__ import annotations

import trio


class RunControl:
    """A handle to stop a running batch gracefully: no new attempts start, running ones are
    cancelled (backends clean up), every unfinished job gets its terminal event, the log is
    flushed and the summary is computed. Safe to call at any time, from the run's trio thread."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.cancel_remote: bool | None = None
        """On a stop, cancel the remote batches of the batch backends (True) or leave them
        running (False); None: each backend's ``cancel_remote`` setting decides."""
        self._scope: trio.CancelScope | None = None

    def cancel(self, reason: str = "cancelled") -> None:
        if self.reason is None:
            self.reason = reason
        if self._scope is not None:
            self._scope.cancel()

    def _attach(self, scope: trio.CancelScope) -> None:
        self._scope = scope
        if self.reason is not None:
            scope.cancel()
