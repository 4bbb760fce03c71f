"""A dry run: what a batch would send and what it would cost, without sending anything.

Per backend and model: the jobs, their estimated input tokens (characters / 4, see
:mod:`orchestrator.backends.request`), the reply budget (every job's ``max_tokens``), the cost
three ways, and the time the configured rate limits alone imply. Pure: no network, no clock.

Costs use each backend's own per-attempt ``estimate`` (the one the runner reserves against the
spend cap), so prices come from the same table a run uses:

* ``cost_worst_usd``: every reply uses its whole ``max_tokens``;
* ``cost_expected_usd``: every reply is :data:`EXPECTED_REPLY_TOKENS` long (or its budget, if
  smaller) — a planning figure, not a forecast;
* None when the backend cannot price the model (unknown model, claude-code).

The rate-limit time is ``max(requests / rpm, reserved tokens / tpm)`` minutes for each group as
if it ran alone, with the backend's and the model's limits; retries would add to it.

A job whose request is identical to an earlier job's is sent once, by the rule a run applies
(:mod:`orchestrator.run.dedupe`): it counts in its group's ``jobs`` and in
:attr:`DryRun.deduplicated`, but adds no tokens, cost or time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import attrs

from orchestrator.backends import backend_kind
from orchestrator.backends.request import estimated_input_tokens, turns
from orchestrator.run.dedupe import Dedupe
from orchestrator.spec import BatchSpec, JobSpec

EXPECTED_REPLY_TOKENS = 256
SAMPLES = 3
_UNBOUNDED_REPLY = 1024  # a job without max_tokens, for backends without an estimate of their own

Estimate = Callable[[JobSpec], tuple[int, float | None]]


@attrs.frozen
class Group:
    """The jobs of one backend and model."""

    backend: str
    model: str | None
    jobs: int
    input_tokens: int
    max_tokens: int
    """The reply budget: the sum of the jobs' reply limits."""
    cost_expected_usd: float | None
    cost_worst_usd: float | None
    rate_limit_s: float | None
    """Seconds the rate limits alone imply; None when no limit applies."""


@attrs.frozen
class DryRun:
    jobs: int
    groups: tuple[Group, ...]
    samples: tuple[Mapping[str, Any], ...]
    """The first few requests as they would be rendered."""
    deduplicated: int = 0
    """Jobs whose identical request another job sends (not counted again in tokens or cost)."""
    already_done: int = 0
    """Jobs the resumed log shows done, left out of everything above (``--resume``)."""


def dry_run(spec: BatchSpec, *, samples: int = SAMPLES) -> DryRun:
    """Estimate ``spec`` (already validated and preflighted)."""
    estimates = {name: _estimator(name, settings) for name, settings in spec.backends.items()}
    sums: dict[tuple[str, str | None], list[Any]] = {}
    dedupe: Dedupe[None] = Dedupe(spec.dedupe)
    for job in spec.jobs:
        acc = sums.setdefault((job.backend, job.model), [0, 0, 0, 0.0, 0.0, True, 0, 0])
        acc[0] += 1
        if dedupe.announce(None, job.id, job.content_hash) is not None:
            continue  # sent once, by an earlier job
        acc[7] += 1
        estimate = estimates.get(job.backend) or _fallback
        tokens, worst = estimate(job)
        reply = tokens - estimated_input_tokens(job)
        expected = worst
        if reply > EXPECTED_REPLY_TOKENS:
            _, expected = estimate(attrs.evolve(job, max_tokens=EXPECTED_REPLY_TOKENS))
        acc[1] += estimated_input_tokens(job)
        acc[2] += reply
        if worst is None or expected is None:
            acc[5] = False
        else:
            acc[3] += expected
            acc[4] += worst
        acc[6] += tokens
    groups = tuple(
        Group(
            backend=backend,
            model=model,
            jobs=acc[0],
            input_tokens=acc[1],
            max_tokens=acc[2],
            cost_expected_usd=acc[3] if acc[5] else None,
            cost_worst_usd=acc[4] if acc[5] else None,
            rate_limit_s=_rate_limit_s(spec, backend, model, acc[7], acc[6]),
        )
        for (backend, model), acc in sums.items()
    )
    return DryRun(
        jobs=len(spec.jobs),
        groups=groups,
        samples=tuple(_sample(j) for j in spec.jobs[:samples]),
        deduplicated=dedupe.followers,
        already_done=spec.already_done,
    )


def _sample(job: JobSpec) -> dict[str, Any]:
    return {
        "id": job.id,
        "backend": job.backend,
        "model": job.model,
        "system": job.system,
        "messages": turns(job),
        "max_tokens": job.max_tokens,
    }


def _fallback(job: JobSpec) -> tuple[int, float | None]:
    return estimated_input_tokens(job) + (job.max_tokens or _UNBOUNDED_REPLY), None


def _estimator(name: str, settings: Any) -> Estimate | None:
    """The backend's own per-attempt estimate, from objects that need no connection."""
    from orchestrator.backends.http.backend import HttpBackend, HttpKind
    from orchestrator.backends.sim.backend import SimBackend

    kind = backend_kind(name)
    if isinstance(kind, HttpKind):
        # estimate() reads only prices and settings: no pool, no key.
        return HttpBackend(kind.api, settings, cast(Any, None), None).estimate
    if name == "sim":
        return SimBackend(0, cast(Any, None)).estimate
    if name == "local":
        return lambda job: (_fallback(job)[0], 0.0)  # runs on this machine: no price
    return None


def _rate_limit_s(
    spec: BatchSpec, backend: str, model: str | None, requests: int, tokens: int
) -> float | None:
    limits = spec.limits.get(backend)
    if limits is None:
        return None
    pairs = [(limits.rpm, limits.tpm)]
    if model is not None and model in limits.models:
        pairs.append((limits.models[model].rpm, limits.models[model].tpm))
    minutes = [requests / rpm for rpm, _ in pairs if rpm] + [tokens / tpm for _, tpm in pairs if tpm]
    return max(minutes) * 60 if minutes else None
