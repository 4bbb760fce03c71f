"""``orchestrate report LOG...``: what a batch did, read back from its log alone.

Exit codes, as for a run: 0 every job succeeded (and the run finished), 1 some job did not
(or the log ends before the batch did), 2 bad usage or a file that cannot be read as a log;
errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING

from orchestrator.report.fold import (
    JobRow,
    Report,
    failure_groups,
    pick_run,
    read_report,
    retry_groups,
)
from orchestrator.visible import as_text, visible

if TYPE_CHECKING:
    from rich.console import Console

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_EPILOG = """\
Several runs in one log (a resumed batch) or several logs make one report: a job's result is
the one from the latest run that gave it one (a skip never hides an earlier result); counts,
latencies and failure kinds come from those results; attempts, retries, tokens, cost and wall
time add up over every run. --run N reports one run alone (its --json is what that run printed).

exit codes: 0 every job succeeded, 1 some did not (or the log ends before the batch did),
2 bad usage or not a readable log."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrate report",
        description="Recompute a batch's summary from its JSONL log, list its jobs, explain its failures.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("logs", nargs="+", metavar="LOG", help="event log(s), in the order they were written")
    parser.add_argument(
        "--json", action="store_true", help="print only the summary, the same JSON line the run printed"
    )
    parser.add_argument("--failed", action="store_true", help="only the jobs that did not succeed")
    parser.add_argument("--job", metavar="ID", help="one job's whole story: every attempt, tool call, retry")
    parser.add_argument("--html", metavar="PATH", help="write a self-contained HTML report to PATH")
    parser.add_argument("--run", type=int, metavar="N", help="only run N of the log (1 = first, -1 = last)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``report`` subcommand; returns the exit code."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    modes = [name for name in ("json", "job", "html") if getattr(args, name)]
    if len(modes) > 1 or (args.failed and (args.json or args.job)):
        print(
            "orchestrate report: pick one of --json, --job, --html (--failed goes with a table)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        report = read_report(args.logs, story_job=args.job, keep_text=bool(args.html))
    except (OSError, ValueError) as exc:  # LogError is a ValueError
        print(f"orchestrate report: {visible(_one_line(exc))}", file=sys.stderr)
        return EXIT_USAGE
    if not report.runs:
        print(f"orchestrate report: {', '.join(args.logs)}: no runs in this log", file=sys.stderr)
        return EXIT_USAGE
    if args.run is not None:
        picked = pick_run(report, args.run)
        if picked is None:
            print(f"orchestrate report: no run {args.run} (the log has {len(report.runs)})", file=sys.stderr)
            return EXIT_USAGE
        report = picked
    _warn_if_edited(report)
    exit_code = EXIT_OK if report.summary.ok else EXIT_FAILED
    if args.json:
        from orchestrator.codec import summary_json

        sys.stdout.buffer.write(summary_json(report.summary))
        sys.stdout.flush()
        return exit_code
    if args.html:
        from orchestrator.report.html import write_html

        try:
            write_html(report, args.html)
        except OSError as exc:
            print(f"orchestrate report: {args.html}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
        print(f"wrote {args.html}", file=sys.stderr)
        return exit_code
    console = _console(sys.stdout)
    if args.job:
        if args.job not in report.jobs:
            print(f"orchestrate report: no job {visible(repr(args.job))} in the log", file=sys.stderr)
            return EXIT_USAGE
        from orchestrator.report.story import print_story

        print_story(console, report, args.job)
        return exit_code
    if not args.failed:
        _print_overview(report, args.logs)
    _print_failures(console, report)
    rows = [row for row in report.jobs.values() if not args.failed or not row.ok]
    if rows or not args.failed:
        _print_jobs(console, rows, show_run=len(report.runs) > 1)
    unnamed = report.runs[-1].unannounced_skipped
    if unnamed:
        console.print(f"and {unnamed:,} more jobs skipped before they were announced (not named in the log)")
    return exit_code


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _warn_if_edited(report: Report) -> None:
    for run in report.runs:
        if run.logged_summary is not None and run.logged_summary != run.summary:
            print(
                f"orchestrate report: warning: run {run.index}: the summary in the log differs from the "
                "one recomputed from its events (was the log edited?)",
                file=sys.stderr,
            )


def _console(stream: IO[str]) -> Console:
    from rich.console import Console  # here: --json, --html and export do without rich

    # Piped output keeps whole lines (rich would wrap at 80 columns).
    return Console(file=stream, width=None if stream.isatty() else 120, highlight=False)


def _print_overview(report: Report, logs: Sequence[str]) -> None:
    from rich.table import Table

    from orchestrator.cli.display import held_back, print_summary

    last = report.runs[-1] if report.runs else None
    concurrency = last.header.settings.get("concurrency") if last and last.header else None
    limits = [
        (str(m.fields.get("backend")), float(m.fields["value"]))
        for m in (last.markers if last else ())
        if m.fields.get("change") == "concurrency" and isinstance(m.fields.get("value"), int | float)
    ]
    held = held_back(limits, concurrency) if isinstance(concurrency, int) else {}
    print_summary(
        report.summary,
        [],
        stream=sys.stdout,
        log=", ".join(logs),
        held_back=held,
        concurrency=concurrency if isinstance(concurrency, int) else None,
    )
    console = _console(sys.stdout)
    if len(report.runs) > 1:
        table = Table(title="runs (combined above)", title_justify="left")
        for column in ("run", "log", "started", "jobs", "ok", "failed", "wall", "stopped"):
            table.add_column(column)
        for run in report.runs:
            s = run.summary
            started = run.header.started_at if run.header is not None else "?"
            table.add_row(
                str(run.index),
                as_text(run.source),
                as_text(started),
                str(s.jobs),
                str(s.succeeded),
                str(s.failed),
                f"{s.wall_s:.2f}s",
                as_text(s.stopped or ""),
            )
        console.print(table)
    retries = retry_groups(report.runs)
    if retries:
        console.print(as_text("retries by reason: " + ", ".join(f"{kind} x{n}" for kind, n in retries)))


def _print_failures(console: Console, report: Report) -> None:
    from rich.table import Table

    groups = failure_groups(report.jobs.values())
    if not groups:
        console.print("no failures")
        return
    table = Table(title="failure reasons", title_justify="left")
    table.add_column("jobs", justify="right")
    table.add_column("kind")
    table.add_column("message")
    for kind, message, count in groups:
        table.add_row(str(count), as_text(kind), as_text(message))
    console.print(table)


_NUMERIC = ("run", "attempts", "tokens in/out", "cost", "ttft", "duration")
PLAIN_ROWS = 500
"""Above this many rows the job table is printed as plain aligned columns: a rich table lays out
every cell of every row at once, minutes for 100,000 jobs, where plain lines take a second."""


def _print_jobs(console: Console, rows: Sequence[JobRow], *, show_run: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    columns = ["job", *(["run"] if show_run else []), "status", "attempts", "tokens in/out"]
    columns += ["cost", "ttft", "duration", "error"]
    if len(rows) > PLAIN_ROWS:
        _print_plain_jobs(console, rows, columns, show_run=show_run)
        return
    table = Table(title=f"jobs ({len(rows)})", title_justify="left")
    for column in columns:
        table.add_column(column, justify="right" if column in _NUMERIC else "left", overflow="fold")
    styles = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "skipped": "dim"}
    for row in rows:
        cells = _cells(row, show_run=show_run)
        status = cells.index(row.status)
        table.add_row(
            *[
                Text(cell, style=styles.get(row.status, "magenta")) if i == status else Text(cell)
                for i, cell in enumerate(cells)
            ]
        )
    console.print(table)


def _cells(row: JobRow, *, show_run: bool) -> list[str]:
    """A job's row as plain text, what came from outside (its id, its error) made visible."""
    error = f"{row.error_kind}: {row.error}" if row.error_kind and row.error else row.error_kind or ""
    return [
        visible(row.job_id),
        *([str(row.run)] if show_run else []),
        row.status,
        str(row.attempts),
        f"{row.tokens.input:,}/{row.tokens.output:,}",
        "?" if row.cost_usd is None else f"${row.cost_usd:.6f}",
        _seconds(row.ttft_s),
        _seconds(row.duration_s),
        visible(error),
    ]


def _print_plain_jobs(
    console: Console, rows: Sequence[JobRow], columns: list[str], *, show_run: bool
) -> None:
    """The job table as plain text lines: the same columns, aligned, no markup at all."""
    table = [columns, *(_cells(row, show_run=show_run) for row in rows)]
    widths = [max(len(cells[i]) for cells in table) for i in range(len(columns) - 1)]
    out = console.file
    out.write(f"jobs ({len(rows)})\n")
    for n, cells in enumerate(table):
        line = "  ".join(
            cell.rjust(width) if columns[i] in _NUMERIC else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=False))
        )
        out.write(f"{line}  {cells[-1]}".rstrip() + "\n")
        if n == 0:
            out.write("-" * len(line) + "\n")
    out.flush()


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"
