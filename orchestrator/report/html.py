"""``orchestrate report LOG --html PATH``: one self-contained HTML file that opens offline.

What is on the page, top to bottom: the summary (the very numbers ``report`` prints), the
failure reasons, a timeline with one row per job and one bar per attempt (coloured by how it
ended, the wait for the first token lighter, the backoff before a retry as a thin line, hover
for the details), the answers (a searchable list of jobs, each opening its prompt, answer or
parsed output, tool calls and error; see :mod:`orchestrator.report.answers`), then in-flight
attempts over time (limiter events marked), output tokens per
second, a histogram of job latencies and the jobs that cost most.

Why plain SVG and a canvas rather than a plotting library: the file must work with no network,
so a library would be inlined whole (hundreds of kilobytes, more than the data of a small
batch), and the charts here are simple. The four charts are static SVG built from at most
:data:`BINS` bins, so they cost the same for 10 jobs or 100,000; hover text is SVG ``<title>``.
The timeline has a row per job, too many for DOM elements at 10,000 jobs, so a short inline
script draws only the rows in view on a ``<canvas>`` as you scroll.

The timeline element carries ``data-rows`` (jobs) and ``data-bars`` (attempts) as counted by
that script from the data it draws, ``data-drawn-bars`` for the rows in view, and the page sets
``document.body.dataset.ready`` once the first frame is drawn (tests wait for it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson

from orchestrator._version import __version__
from orchestrator.record.summary import percentile
from orchestrator.report.answers import answers_data
from orchestrator.report.assets import asset
from orchestrator.report.charts import Mark, Series, bar_list, histogram, time_chart
from orchestrator.report.fold import AttemptSpan, Report, failure_groups, retry_groups
from orchestrator.report.model import JobRow
from orchestrator.visible import as_html as escape

BINS = 400
"""Time bins of the concurrency and tokens/s charts."""
MAX_MARKS = 300
"""Most limiter events marked on the concurrency chart."""
OUTCOMES = ("succeeded", "retried", "failed", "cancelled", "unfinished")
FIELDS = (
    "row",
    "start",
    "end",
    "first_output",
    "outcome",
    "attempt",
    "tokens_in",
    "tokens_out",
    "error",
    "delay",
    "cost",
    "run",
)
"""Per-attempt numbers in the embedded data, flattened into one array (see the script)."""


def run_offsets(report: Report) -> list[float]:
    """Where each run starts on the report's time axis: runs are laid end to end."""
    offsets, total = [], 0.0
    for run in report.runs:
        offsets.append(total)
        total += max(run.end_ts, 0.0)
    return offsets


def timeline_data(report: Report) -> dict[str, Any]:
    """The timeline as compact JSON-able data: job ids, then a flat array of attempt numbers."""
    rows = {job: i for i, job in enumerate(report.jobs)}
    offsets = run_offsets(report)
    errors: dict[str, int] = {}
    spans: list[tuple[int, float, AttemptSpan]] = []
    for run, offset in zip(report.runs, offsets, strict=True):
        for job, attempts in run.attempts.items():
            spans.extend((rows[job], offset, span) for span in attempts)
    spans.sort(key=lambda item: (item[0], item[1] + item[2].start))
    flat: list[float] = []
    for row, offset, span in spans:
        error = f"{span.error_kind}: {span.error}" if span.error_kind else ""
        flat += [
            row,
            round(offset + span.start, 4),
            round(offset + span.end, 4),
            -1 if span.first_output is None else round(offset + span.first_output, 4),
            OUTCOMES.index(span.outcome),
            span.number,
            span.tokens.input,
            span.tokens.output,
            errors.setdefault(error, len(errors)) if error else -1,
            -1 if span.retry_delay_s is None else round(span.retry_delay_s, 4),
            -1 if span.cost_usd is None else span.cost_usd,
            span.run,
        ]
    end = offsets[-1] + report.runs[-1].end_ts if report.runs else 0.0
    return {
        "fields": FIELDS,
        "outcomes": OUTCOMES,
        "jobs": list(report.jobs),
        "status": [row.status for row in report.jobs.values()],
        "inputs": [_input_line(row) for row in report.jobs.values()],
        "attempts": flat,
        "errors": list(errors),
        "end": round(end, 4),
        "runs": [
            {"index": r.index, "offset": round(o, 4)} for r, o in zip(report.runs, offsets, strict=True)
        ],
    }


_INPUT_CHARS = 300  # of a job's row and metadata in a tooltip


def _input_line(row: JobRow) -> str | None:
    """A job's row, metadata and the job whose request answered it, as one short line of JSON
    for its tooltip (None: none of them)."""
    if not row.row and not row.metadata and row.deduplicated_from is None:
        return None
    value = {
        **({"row": dict(row.row)} if row.row else {}),
        **({"metadata": dict(row.metadata)} if row.metadata else {}),
        **({"deduplicated_from": row.deduplicated_from} if row.deduplicated_from is not None else {}),
    }
    text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode()
    return text if len(text) <= _INPUT_CHARS else text[: _INPUT_CHARS - 1] + "…"


def _all_spans(report: Report) -> list[tuple[float, AttemptSpan]]:
    offsets = run_offsets(report)
    return [
        (offset, span)
        for run, offset in zip(report.runs, offsets, strict=True)
        for attempts in run.attempts.values()
        for span in attempts
    ]


def concurrency_series(
    report: Report, end: float, bins: int = BINS
) -> tuple[list[float], list[float], list[float]]:
    """Per time bin: the most attempts in flight at once, the mean, and the most jobs in backoff."""
    changes: list[tuple[float, int, int]] = []  # (time, change in flight, change in backoff)
    for offset, span in _all_spans(report):
        changes += [(offset + span.start, 1, 0), (offset + span.end, -1, 0)]
        if span.retry_delay_s is not None:
            changes += [(offset + span.end, 0, 1), (offset + span.end + span.retry_delay_s, 0, -1)]
    # Ends before starts at the same instant: a slot handed over is not a moment of two in flight.
    changes.sort(key=lambda c: (c[0], c[1] + c[2]))
    width = end / bins if end > 0 else 1.0
    peak, mean, backoff = [0.0] * bins, [0.0] * bins, [0.0] * bins
    level = waiting = 0
    t_prev = 0.0
    for t, d_level, d_wait in [*changes, (end, 0, 0)]:
        t = min(max(t, t_prev), end)
        if t > t_prev:  # the levels held over [t_prev, t), spread across the bins it covers
            for b in range(min(int(t_prev / width), bins - 1), min(int(t / width), bins - 1) + 1):
                overlap = min(t, (b + 1) * width) - max(t_prev, b * width)
                if overlap > 0:
                    mean[b] += level * overlap / width
                    peak[b] = max(peak[b], level)
                    backoff[b] = max(backoff[b], waiting)
        level += d_level
        waiting += d_wait
        t_prev = t
    return peak, mean, backoff


def tokens_per_s_series(report: Report, end: float, bins: int = BINS) -> list[float]:
    """Output tokens per second per time bin. An attempt's output tokens are spread evenly
    from its first output (or start) to its end, since most backends report usage only once."""
    width = end / bins if end > 0 else 1.0
    totals = [0.0] * bins
    for offset, span in _all_spans(report):
        if not span.tokens.output:
            continue
        lo = offset + (span.first_output if span.first_output is not None else span.start)
        hi = offset + span.end
        if hi - lo <= 0:
            totals[min(int(hi / width), bins - 1)] += span.tokens.output
            continue
        rate = span.tokens.output / (hi - lo)
        for b in range(min(int(lo / width), bins - 1), min(int(hi / width), bins - 1) + 1):
            overlap = min(hi, (b + 1) * width) - max(lo, b * width)
            if overlap > 0:
                totals[b] += rate * overlap
    return [total / width for total in totals]


def _latency_chart(report: Report) -> str:
    latencies = sorted(
        row.duration_s for row in report.jobs.values() if row.ok and row.duration_s is not None
    )
    if not latencies:
        return '<p class="empty">no job succeeded</p>'
    n_bins = 40
    width = (latencies[-1] or 1.0) / n_bins * 1.0001
    counts = [0] * n_bins
    for value in latencies:
        counts[min(int(value / width), n_bins - 1)] += 1
    marks = [
        Mark(p, f"p{q} {p:.3g}s", "#b45309") for q in (50, 95) if (p := percentile(latencies, q)) is not None
    ]
    return histogram(counts, width, "job latency, seconds", marks, chart_id="latency")


def _cost_chart(report: Report, top: int = 20) -> str:
    costed = sorted(
        ((row.cost_usd, row.job_id) for row in report.jobs.values() if row.cost_usd), reverse=True
    )
    if not costed:
        return '<p class="empty">no cost known</p>'
    items = [(job, cost, f"{job}: ${cost:.6f}") for cost, job in costed[:top]]
    rest = costed[top:]
    note = ""
    if rest:
        total = sum(cost for cost, _ in rest)
        note = (
            f'<p class="empty">and {len(rest):,} other jobs: ${total:.4f} together '
            f"(${total / len(rest):.6f} each on average)</p>"
        )
    return bar_list(items, chart_id="cost") + note


def _summary_html(report: Report) -> str:
    s = report.summary
    status = (
        f"stopped: {s.stopped}" if s.stopped else ("all succeeded" if s.ok else "some jobs did not succeed")
    )
    if s.simulated:
        status += f" (simulated: {s.simulated_jobs:,} jobs ran on the simulator, answers and costs made up)"

    def opt(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}s"

    cost = f"${s.cost_usd:.4f}" + (f" (+{s.cost_unknown_jobs} unknown)" if s.cost_unknown_jobs else "")
    cards = [
        ("jobs", f"{s.jobs:,}"),
        ("succeeded", f"{s.succeeded:,}"),
        ("failed", f"{s.failed:,}"),
        ("cancelled / skipped", f"{s.cancelled:,} / {s.skipped:,}"),
        ("attempts (retries)", f"{s.attempts:,} ({s.retries:,})"),
        *([("deduplicated", f"{s.deduplicated:,}")] if s.deduplicated else []),
        *([("stream warnings", f"{s.stream_warnings:,}")] if s.stream_warnings else []),
        ("tokens in / out", f"{s.tokens.input:,} / {s.tokens.output:,}"),
        ("cost", cost),
        ("wall time", f"{s.wall_s:.2f}s"),
        ("throughput", f"{s.jobs_per_s:.2f} jobs/s, {s.tokens_per_s:,.0f} tok/s"),
        (
            "latency p50 / p95 / max",
            f"{opt(s.latency_p50_s)} / {opt(s.latency_p95_s)} / {opt(s.latency_max_s)}",
        ),
        ("ttft p50", opt(s.ttft_p50_s)),
    ]
    body = "".join(
        f'<div class="card"><div class="k">{escape(k)}</div><div class="v">{escape(v)}</div></div>'
        for k, v in cards
    )
    css_class = "ok" if s.ok else "bad"
    return (
        f'<section id="summary" data-jobs="{s.jobs}" data-succeeded="{s.succeeded}" data-failed="{s.failed}">'
        f'<h2 class="{css_class}">{escape(status)}</h2><div class="cards">{body}</div></section>'
    )


def _failures_html(report: Report) -> str:
    groups = failure_groups(report.jobs.values())
    retries = retry_groups(report.runs)
    parts = []
    if groups:
        rows = "".join(
            f"<tr><td class=num>{n:,}</td><td>{escape(kind)}</td><td>{escape(message)}</td></tr>"
            for kind, message, n in groups[:50]
        )
        parts.append(
            f'<table class="failures"><tr><th>jobs</th><th>kind</th><th>message</th></tr>{rows}</table>'
        )
    if retries:
        parts.append(
            "<p>retries by reason: " + ", ".join(f"{escape(k)} &#215;{n:,}" for k, n in retries) + "</p>"
        )
    return "".join(parts) or "<p>no failures, no retries</p>"


def _runs_html(report: Report) -> str:
    if len(report.runs) < 2:
        return ""
    rows = "".join(
        f"<tr><td>{r.index}</td><td>{escape(r.source)}</td>"
        f"<td>{escape(r.header.started_at if r.header else '?')}</td><td class=num>{r.summary.jobs:,}</td>"
        f"<td class=num>{r.summary.succeeded:,}</td><td class=num>{r.summary.wall_s:.2f}s</td>"
        f"<td>{escape(r.summary.stopped or '')}</td></tr>"
        for r in report.runs
    )
    return (
        '<section><h3>runs (combined above; laid end to end on the time axis)</h3><table class="failures">'
        "<tr><th>run</th><th>log</th><th>started</th><th>jobs</th><th>succeeded</th><th>wall</th>"
        f"<th>stopped</th></tr>{rows}</table></section>"
    )


def render_html(report: Report, title: str = "orchestrator report") -> str:
    """The whole page as one string (no external resource of any kind)."""
    data = timeline_data(report)
    end = data["end"] or 1.0
    offsets = run_offsets(report)
    run_marks = [
        Mark(o, f"run {r.index} starts", "#64748b", dashed=True)
        for r, o in zip(report.runs, offsets, strict=True)
        if r.index > 1
    ]
    offset_of = {r.index: o for r, o in zip(report.runs, offsets, strict=True)}
    markers = [m for r in report.runs for m in r.markers]
    # Thousands of vertical lines would hide the chart: keep an even sample of them.
    step = max(1, math.ceil(len(markers) / MAX_MARKS))
    limiter_marks = [
        Mark(
            offset_of[m.run] + m.ts,
            f"{m.kind} at {m.ts:.3f}s: {orjson.dumps(m.fields, default=str).decode()}",
        )
        for m in markers[::step]
    ]
    peak, mean, backoff = concurrency_series(report, end)
    concurrency = time_chart(
        [
            Series("most in flight", peak, "#2563eb"),
            Series("mean in flight", mean, "#2563eb", fill=True),
            Series("in backoff", backoff, "#d97706"),
        ],
        end,
        "attempts",
        [*run_marks, *limiter_marks],
        chart_id="concurrency",
    )
    limiter_note = f"{len(markers)} limiter events" if markers else "no limiter events in the log"
    if step > 1:
        limiter_note += f", every {step}th marked"
    tokens = time_chart(
        [Series("output tokens/s", tokens_per_s_series(report, end), "#059669", fill=True)],
        end,
        "tokens/s",
        run_marks,
        chart_id="tokens",
    )
    # "<" never appears outside JSON strings, so escaping it keeps "</script>" out of the data.
    payload = orjson.dumps(data).replace(b"<", b"\\u003c").decode()
    answers = answers_data(report)
    answers_payload = orjson.dumps(answers).replace(b"<", b"\\u003c").decode()
    sources = ", ".join(dict.fromkeys(r.source for r in report.runs))
    job_file = next((r.header.job_file for r in report.runs if r.header and r.header.job_file), None)
    heading = escape(job_file or sources)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} — {heading}</title>
<style>{asset("report.css")}</style></head>
<body>
<header><h1>{escape(title)}</h1>
<p class="sub">{heading} · {len(report.runs)} run(s) · log: {escape(sources)}</p></header>
{_summary_html(report)}
<section><h3>failures</h3>{_failures_html(report)}</section>
<section id="timeline-section"><h3>timeline: one row per job, one bar per attempt</h3>
<div class="legend"><span class="sw succeeded"></span>succeeded
<span class="sw retried"></span>failed, retried
<span class="sw failed"></span>failed <span class="sw cancelled"></span>cancelled
<span class="sw unfinished"></span>unfinished <span class="sw wait"></span>before first token
<span class="sw backoff"></span>backoff
<label><input type="checkbox" id="zoom"> fit time to rows in view</label>
<label>find job <input id="find-job" placeholder="job id" size="18"></label></div>
<div id="timeline" data-rows="0" data-bars="0" data-drawn-bars="0">
<canvas id="tl-overview" hidden title="every job; click or drag to scroll there"></canvas>
<canvas id="tl-axis" height="22"></canvas>
<div id="tl-scroll"><canvas id="tl-canvas"></canvas><div id="tl-spacer"></div></div>
<div id="tl-tip" hidden></div></div>
<noscript>The timeline needs JavaScript; the charts below do not.</noscript></section>
<section id="answers-section"><h3>answers <small>(click a job, here or on the timeline, for its prompt,
answer, tool calls and error; texts longer than {answers["limit"]:,} characters are cut)</small></h3>
<div class="answers-bar"><label>search <input id="answers-search" type="search" size="32"
placeholder="job id or text"></label> <span id="answers-count"></span></div>
<div id="answers-list"></div>
<noscript>The answers need JavaScript: orchestrate report LOG --job ID shows one.</noscript></section>
<section class="grid">
<div><h3>in flight over time <small>({limiter_note})</small></h3>{concurrency}</div>
<div><h3>output tokens per second
<small>(each attempt's tokens spread over its streaming)</small></h3>{tokens}</div>
<div><h3>job latency
<small>(succeeded jobs, first attempt start to end)</small></h3>{_latency_chart(report)}</div>
<div><h3>cost by job</h3>{_cost_chart(report)}</div>
</section>
{_runs_html(report)}
<footer>orchestrator {__version__} · generated offline from the event log alone</footer>
<script type="application/json" id="timeline-data">{payload}</script>
<script>{asset("report.js")}</script>
<script type="application/json" id="answers-data">{answers_payload}</script>
<script>{asset("answers.js")}</script>
</body></html>
"""


def write_html(report: Report, path: str | Path) -> None:
    """Write the report page to ``path`` (UTF-8). Raises OSError if it cannot be written."""
    Path(path).write_text(render_html(report), encoding="utf-8")
