"""``orchestrate JOBFILE --dry-run``: print what the batch would send and cost (see
:mod:`orchestrator.run.dryrun`); ``--json`` prints it as one JSON object."""

from __future__ import annotations

import sys
from typing import IO

import orjson

from orchestrator import codec
from orchestrator.run.dryrun import EXPECTED_REPLY_TOKENS, DryRun

_PREVIEW_CHARS = 300


def print_dry_run(plan: DryRun, *, as_json: bool, stream: IO[str] | None = None) -> None:
    out = stream or sys.stdout
    if as_json:
        out.write(orjson.dumps(codec.to_jsonable(plan)).decode() + "\n")
        return
    print(f"dry run: {plan.jobs:,} jobs; nothing was sent", file=out)
    if plan.already_done:
        print(f"{plan.already_done:,} jobs the log shows done are left out (--resume)", file=out)
    if plan.deduplicated:
        print(
            f"{plan.deduplicated:,} jobs repeat an earlier job's request: sent once, counted once below",
            file=out,
        )
    header = (
        "backend",
        "model",
        "jobs",
        "input tokens",
        "max_tokens",
        "expected $",
        "worst $",
        "rate limits",
    )
    rows = [
        (
            _text(g.backend),
            _text(g.model or "-"),
            f"{g.jobs:,}",
            f"{g.input_tokens:,}",
            f"{g.max_tokens:,}",
            _usd(g.cost_expected_usd),
            _usd(g.cost_worst_usd),
            _duration(g.rate_limit_s),
        )
        for g in plan.groups
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out)
    print(
        f"input tokens: characters / 4; expected $: replies of {EXPECTED_REPLY_TOKENS} tokens "
        "(or max_tokens if smaller); worst $: every reply uses max_tokens; "
        "rate limits: the time the rpm/tpm limits alone imply",
        file=out,
    )
    for sample in plan.samples:
        limit = sample["max_tokens"]
        print(
            f"\n[{_text(sample['id'])}] {_text(sample['backend'])}/{_text(sample['model'] or '-')}"
            + (f", max_tokens {limit}" if limit is not None else ""),
            file=out,
        )
        if sample["system"] is not None:
            print(f"  system: {_text(sample['system'])}", file=out)
        for turn in sample["messages"]:
            print(f"  {turn['role']}: {_text(turn['content'])}", file=out)


def _text(value: str) -> str:
    """Outside text for a terminal: control characters shown escaped, long text cut."""
    shown = value if len(value) <= _PREVIEW_CHARS else value[: _PREVIEW_CHARS - 1] + "…"
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in shown)


def _usd(value: float | None) -> str:
    return "?" if value is None else f"{value:.4f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "none"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
