"""A batch summary from its totals: rates, percentiles and rounding, done one way for the live
fold (:mod:`~orchestrator.record.aggregate`) and for reports that combine several runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from orchestrator.errors import ErrorKind
from orchestrator.events import BatchSummary, Tokens


def summarize(
    *,
    counts: Mapping[str, int],
    jobs: int,
    attempts: int,
    retries: int,
    tokens: Tokens,
    cost: float,
    cost_unknown: int,
    wall_s: float,
    latencies: list[float],
    ttfts: list[float],
    failures: Mapping[ErrorKind, int],
    stopped: str | None,
    already_done: int = 0,
    simulated: int = 0,
    priced_by: Mapping[str, str] | None = None,
    stream_warnings: int = 0,
    deduplicated: int = 0,
) -> BatchSummary:
    """A :class:`BatchSummary` from totals: rates, percentiles and rounding done one way for the
    live fold and for reports that combine several runs."""
    latencies = sorted(latencies)
    ttfts = sorted(ttfts)
    done = counts["succeeded"] + counts["failed"]
    return BatchSummary(
        jobs=jobs,
        attempts=attempts,
        retries=retries,
        tokens=tokens,
        cost_usd=round(cost, 9),
        cost_unknown_jobs=cost_unknown,
        wall_s=wall_s,
        jobs_per_s=done / wall_s if wall_s > 0 else 0.0,
        tokens_per_s=tokens.output / wall_s if wall_s > 0 else 0.0,
        latency_p50_s=percentile(latencies, 50),
        latency_p95_s=percentile(latencies, 95),
        latency_max_s=latencies[-1] if latencies else None,
        ttft_p50_s=percentile(ttfts, 50),
        failures=dict(sorted(failures.items())),
        stopped=stopped,
        already_done=already_done,
        simulated_jobs=simulated,
        priced_by=dict(sorted((priced_by or {}).items())),
        stream_warnings=stream_warnings,
        deduplicated=deduplicated,
        succeeded=counts["succeeded"],
        failed=counts["failed"],
        cancelled=counts["cancelled"],
        skipped=counts["skipped"],
    )


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence; None when it is empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]
