"""A backend that quotes every secret it can see in every kind of output it has: events of each
shape, a warning cut through the key, errors, a crash with a traceback, a diagnostics line.
``tests/cli/test_keys_never_leak.py`` registers it as ``leaky`` and greps every output.

Its key is in ``LEAKY_SOURCE``, a name that does not look secret: only the kind's ``secrets``
tells the runner about it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs

from orchestrator.backends.base import Emit
from orchestrator.diagnostics import logger
from orchestrator.errors import FatalError
from orchestrator.events import (
    StreamFinished,
    StreamWarning,
    SystemNotice,
    TextDelta,
    ToolResult,
    Unrecognized,
)
from orchestrator.spec import JobSpec


@attrs.frozen
class Options:
    pass


@attrs.frozen
class Settings:
    pass


class LeakyBackend:
    async def stream(self, job: JobSpec, attempt: int, emit: Emit) -> None:
        key = os.environ["LEAKY_SOURCE"]
        headers = os.environ.get("ANTHROPIC_CUSTOM_HEADERS", "")
        mirror = os.environ.get("MIRROR_URL", "")
        raw = "x" * 180 + key + " and more"
        await emit(StreamWarning(f"stream data is not JSON: {raw[:200]!r}"))
        await emit(Unrecognized({"line": f"echo {key}", key: [headers]}))
        await emit(ToolResult("call-1", f"env: {headers}\nmirror: {mirror}", is_error=True))
        await emit(SystemNotice("status", {"mirror": mirror, "header": headers}))
        await emit(TextDelta(f"the key is {key}; the headers are {headers}"))
        logger("tests.leaky").warning("leaky backend says", key=key, headers=headers)
        if job.id == "crash":
            raise RuntimeError(f"crashed holding {key}")
        if job.id == "fatal":
            raise FatalError("x" * 590 + key + " (a long message cut later)", kind="auth")
        await emit(StreamFinished(stop_reason=f"end {key}"))


class _Kind:
    name = "leaky"
    Options = Options
    Settings = Settings
    default_concurrency: int | None = None

    def preflight(self, settings: Any, jobs: Sequence[JobSpec]) -> list[str]:
        return []

    def secrets(self, settings: Any) -> list[str]:
        return [os.environ["LEAKY_SOURCE"]]

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[LeakyBackend]:
        yield LeakyBackend()

    def open(self, settings: Any, *, seed: int) -> Any:
        return self._open()


KIND = _Kind()
