"""What to run and how, as plain frozen data: built and validated once (by
:mod:`orchestrator.config.jobfile`), then trusted by the mechanism.

Field metadata (``min``, ``max``, ``gt``) states the valid range of each field, and a class whose
fields constrain each other says how in a ``conflicts`` method; :mod:`orchestrator.config.check`
enforces both, for job files and library arguments alike, with the path of the offending value.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

import attrs

from orchestrator.events import Message
from orchestrator.jobs import Jobs, as_jobs

FsyncPolicy = Literal["always", "terminal", "never"]
NO_ROW: Mapping[str, Any] = MappingProxyType({})


def _range(**bounds: float) -> dict[str, float]:
    return dict(bounds)


@attrs.frozen
class RetryPolicy:
    """How a job retries after a retryable failure.

    ``max_attempts`` counts every attempt, the first included (1 means never retry).
    Delays grow as ``base_delay * 2**(n-1)``, capped at ``max_delay``, with full jitter.
    A server's Retry-After is honoured up to ``max_retry_after`` seconds.
    """

    max_attempts: int = attrs.field(default=4, metadata=_range(min=1, max=1000))
    base_delay: float = attrs.field(default=1.0, metadata=_range(min=0))
    max_delay: float = attrs.field(default=30.0, metadata=_range(min=0))
    max_retry_after: float = attrs.field(default=300.0, metadata=_range(min=0))
    max_invalid_output: int = attrs.field(default=2, metadata=_range(min=0, max=1000))
    """Attempts whose reply fails the job's ``output_schema`` that are tried again (at once, with
    no backoff), on a budget of their own: they do not count against ``max_attempts``."""
    reask: bool = False
    """After a reply that failed the ``output_schema``, the next attempt's conversation also holds
    that reply and the validator's message, so the model can correct itself."""

    def conflicts(self) -> list[tuple[str | None, str]]:
        """What is wrong with the fields taken together: (field or None for the whole, problem)."""
        if self.max_delay < self.base_delay:
            return [(None, f"max_delay ({self.max_delay}) is below base_delay ({self.base_delay})")]
        return []


@attrs.frozen
class Timeouts:
    """Per-job time limits in seconds; None means no limit.

    ``idle``: longest gap between two events of a streaming attempt (a stalled stream).
    ``attempt``: one attempt, start to finish. ``job``: all attempts and backoff together.
    """

    attempt: float | None = attrs.field(default=900.0, metadata=_range(gt=0))
    idle: float | None = attrs.field(default=120.0, metadata=_range(gt=0))
    job: float | None = attrs.field(default=None, metadata=_range(gt=0))


@attrs.frozen
class RateLimits:
    """Requests and tokens per minute; None means no limit of that kind. ``input_tpm`` and
    ``output_tpm`` are Anthropic's separate input-token (uncached) and output-token limits."""

    rpm: float | None = attrs.field(default=None, metadata=_range(gt=0))
    tpm: float | None = attrs.field(default=None, metadata=_range(gt=0))
    input_tpm: float | None = attrs.field(default=None, metadata=_range(gt=0))
    output_tpm: float | None = attrs.field(default=None, metadata=_range(gt=0))


@attrs.frozen
class BackendLimits:
    """How fast the runner may send to one backend (``[backends.NAME]``, next to its settings).

    ``models`` holds extra limits for single models of the backend. With ``adaptive`` the
    backend's in-flight limit halves on rate-limit or overload errors and grows back by one per
    round of successes, never below ``min_concurrency``.
    """

    rpm: float | None = attrs.field(default=None, metadata=_range(gt=0))
    tpm: float | None = attrs.field(default=None, metadata=_range(gt=0))
    input_tpm: float | None = attrs.field(default=None, metadata=_range(gt=0))
    """Uncached input tokens a minute (Anthropic meters them apart from output tokens)."""
    output_tpm: float | None = attrs.field(default=None, metadata=_range(gt=0))
    """Output tokens a minute."""
    burst: Literal["full", "none"] | float = attrs.field(default="full", metadata=_range(min=0, max=60))
    """How much of a minute's quota may go out at once: ``"full"`` (the provider's bucket holds a
    minute's worth, as Anthropic's and OpenAI's do), ``"none"`` (every start evenly spaced), or
    the seconds' worth of refill the bucket holds."""
    adaptive: bool = True
    min_concurrency: int = attrs.field(default=1, metadata=_range(min=1))
    models: Mapping[str, RateLimits] = attrs.field(factory=dict)

    @property
    def burst_s(self) -> float:
        """The bucket's size in seconds of refill."""
        if self.burst == "full":
            return 60.0
        if self.burst == "none":
            return 0.0
        return float(self.burst)


@attrs.frozen
class HaltPolicy:
    """When a backend stops taking new jobs because the batch cannot succeed on it.

    ``fatal``: after this many jobs in a row on one backend failed with the same error kind that
    is about the backend rather than the job (a bad key, no permission, an unknown model, no
    credit), with no success in between; 0 never halts. ``failed_fraction``: once at least
    ``min_finished`` jobs on a backend have ended, when more than this fraction of them failed.
    Jobs already started finish; the rest end as ``job_skipped``.
    """

    fatal: int = attrs.field(default=3, metadata=_range(min=0))
    failed_fraction: float | None = attrs.field(default=None, metadata=_range(gt=0, max=1))
    min_finished: int = attrs.field(default=10, metadata=_range(min=1))


@attrs.frozen
class OutputSchema:
    """The JSON Schema a job's reply must meet (``output_schema``), checked when it was loaded.

    ``name`` is what the schema is called where an API wants a name (OpenAI's ``json_schema``):
    the schema's ``title`` when it is a plain word, else ``"output"``.
    """

    schema: Mapping[str, Any] | bool

    @property
    def name(self) -> str:
        title = self.schema.get("title") if isinstance(self.schema, Mapping) else None
        if isinstance(title, str) and 0 < len(title) <= 64 and all(c.isalnum() or c in "_-" for c in title):
            return title if title.isascii() else "output"
        return "output"


@attrs.frozen
class Query:
    """One query as a library caller states it; unset fields take the batch defaults.

    ``options`` are the backend's own per-job options (see each backend's ``Options``).
    """

    prompt: str
    id: str | None = None
    backend: str | None = None
    model: str | None = None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    options: Mapping[str, Any] = attrs.field(factory=dict)
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    output_schema: Mapping[str, Any] | str | None = None
    """A JSON Schema (a mapping, or its JSON text) the reply must meet."""


@attrs.frozen
class JobSpec:
    """A fully resolved job: every default applied, every value checked.

    ``options`` is the backend's validated options object. ``content_hash`` covers the prompt and
    every setting that shapes the answer (not retry or timeouts); resume matches on it.
    """

    id: str
    prompt: str = attrs.field(metadata={"text": True})  # free text: any character, NUL included
    backend: str
    model: str | None = None
    system: str | None = attrs.field(default=None, metadata={"text": True})
    max_tokens: int | None = attrs.field(default=None, metadata=_range(min=1))
    temperature: float | None = attrs.field(default=None, metadata=_range(min=0, max=2))
    seed: int | None = None
    retry: RetryPolicy = RetryPolicy()
    timeouts: Timeouts = Timeouts()
    options: Any = None
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    content_hash: str = ""
    messages: tuple[Message, ...] = ()
    """A conversation sent before ``prompt`` (which, when set, is the last user turn)."""
    row: Mapping[str, Any] = NO_ROW
    """The data-file row the job was made from (the columns kept), for the log and results;
    not part of ``content_hash``."""
    output_schema: OutputSchema | None = None
    """The JSON Schema the reply must meet: sent to the backend where it can constrain the
    reply, and checked after every attempt (see :mod:`orchestrator.output`)."""


@attrs.frozen
class BatchSpec:
    """A whole run: its jobs and the settings that belong to the run rather than to a job.

    ``backends`` maps each backend the jobs use to its validated settings object.
    ``log`` is a file path, ``"-"`` for standard output, or None for no log.
    ``deadline`` (seconds) bounds the whole batch. ``seed`` drives retry jitter (and the ``sim``
    backend), so a run is reproducible.
    """

    jobs: Jobs = attrs.field(converter=as_jobs)
    """The jobs in order: any sequence of :class:`JobSpec` given is held as a :class:`Jobs`
    (those of a big data file are resolved as the run needs them: see :mod:`orchestrator.jobs`)."""
    concurrency: int = attrs.field(default=16, metadata=_range(min=1))
    backends: Mapping[str, Any] = attrs.field(factory=dict)
    log: str | None = None
    deadline: float | None = attrs.field(default=None, metadata=_range(gt=0))
    seed: int = 0
    fsync: FsyncPolicy = "terminal"
    source: str | None = None
    name: str = "batch"
    limits: Mapping[str, BackendLimits] = attrs.field(factory=dict)
    max_cost_usd: float | None = attrs.field(default=None, metadata=_range(gt=0))
    """Spend cap: no new job starts once the cost so far plus running reservations would pass it."""
    hard_cap: bool = False
    """With a spend cap: cancel running jobs too when it is reached."""
    halt: HaltPolicy = HaltPolicy()
    """When a backend whose jobs keep failing stops taking new ones."""
    log_inputs: bool = True
    """Whether each job's rendered request (system, prompt) goes into the log's ``job_input``."""
    dedupe: bool = True
    """Whether jobs with equal content hashes share one request (see :mod:`orchestrator.run.dedupe`)."""
    results: str | None = None
    """The results file the command line writes (``.jsonl``, ``.csv`` or ``.parquet``), or None."""
    already_done: int = 0
    """Jobs left out because the log being resumed shows them done (for the summary)."""

    def conflicts(self) -> list[tuple[str | None, str]]:
        """What is wrong with the fields taken together: (field or None for the whole, problem)."""
        if self.hard_cap and self.max_cost_usd is None:
            return [("hard_cap", "needs a spend cap: max_cost_usd")]
        return []
