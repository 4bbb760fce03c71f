"""The answers on the HTML report: each job's prompt, answer (or parsed output), tool calls and
error, as compact JSON for the page's answers list (``assets/answers.js``).

Texts are cut to a per-job size that shrinks as jobs grow (:func:`text_limit`), with a note
saying how much was left out and where the whole is (``orchestrate report LOG --job ID``), so a
page of 10,000 jobs stays a few megabytes. The page inserts every text with ``textContent``:
nothing here is markup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from orchestrator.events import JobInput
from orchestrator.report.model import Report, RunReport

PAGE_BUDGET = 2_000_000
"""Characters of answers and prompts the page aims to hold at most, whatever the job count."""
MOST, LEAST = 4000, 160
"""Bounds of the characters shown of one job's prompt or answer (tool calls and errors: half)."""


def text_limit(jobs: int) -> int:
    """How many characters of a job's prompt (and of its answer) the page shows."""
    return max(LEAST, min(MOST, PAGE_BUDGET // max(1, 2 * jobs)))


def cut(text: str | None, limit: int) -> str | None:
    """``text`` cut to ``limit`` characters, with a note of what was left out."""
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}\n… {len(text) - limit:,} more characters (orchestrate report LOG --job ID)"


def request_text(given: JobInput | None) -> str | None:
    """A job's rendered request as plain text, one ``role: content`` block per turn (None: not
    in the log, e.g. run with ``log_inputs = false``)."""
    if given is None or (given.prompt is None and not given.messages and given.system is None):
        return None
    turns = [f"system: {given.system}"] if given.system else []
    turns += [f"{message.role}: {message.content}" for message in given.messages]
    if given.prompt is not None:
        turns.append(f"user: {given.prompt}")
    return "\n\n".join(turns)


def _dumps(value: Any, *, indent: bool = False) -> str:
    option = orjson.OPT_NON_STR_KEYS | (orjson.OPT_INDENT_2 if indent else 0)
    return orjson.dumps(value, option=option, default=str).decode()


def _latest_input(runs: Sequence[RunReport], job: str) -> JobInput | None:
    for run in reversed(runs):
        found = run.inputs.get(job)
        if found is not None:
            return found
    return None


def answers_data(report: Report) -> dict[str, Any]:
    """Parallel lists, one entry per job in report order: ``jobs``, ``status``, ``prompt``,
    ``answer`` (the parsed output as indented JSON when there is one: ``parsed`` says so),
    ``tools`` and ``error`` (None when there is nothing), and the ``limit`` applied."""
    limit = text_limit(len(report.jobs))
    runs: Mapping[int, RunReport] = {run.index: run for run in report.runs}
    out: dict[str, list[Any]] = {
        k: [] for k in ("jobs", "status", "prompt", "answer", "parsed", "tools", "error")
    }
    for job, row in report.jobs.items():
        result = runs[row.run].results.get(job)
        output = result.output if result is not None else None
        answer = _dumps(output, indent=True) if output is not None else result.text if result else None
        calls = result.tool_calls if result is not None else ()
        tools = _dumps([{"name": c.name, "input": c.input} for c in calls], indent=True) if calls else None
        error = f"{row.error_kind}: {row.error}" if row.error_kind and row.error else row.error_kind
        out["jobs"].append(job)
        out["status"].append(row.status)
        out["prompt"].append(cut(request_text(_latest_input(report.runs, job)), limit))
        out["answer"].append(cut(answer, limit))
        out["parsed"].append(output is not None)
        out["tools"].append(cut(tools, limit // 2))
        out["error"].append(cut(error, limit // 2))
    return {"limit": limit, **out}
