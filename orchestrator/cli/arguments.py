"""``orchestrate``'s command line: the arguments it takes and what each means."""

from __future__ import annotations

import argparse

from orchestrator._version import __version__

_EPILOG = """\
exit codes: 0 all jobs succeeded, 1 some job failed (or the batch stopped early, or the
disk filled up), 2 bad input or usage (or the log is in use by another run, or is not a
log), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
First Ctrl-C stops gracefully (in-flight jobs are cancelled, the log is flushed, the
partial summary is printed); a second one exits at once."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrate",
        description="Run every job of a TOML job file: concurrently, streaming, retrying, logged as JSONL.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "jobfile",
        help="the job file (TOML), e.g. jobs/batch.toml; or a data file (.csv, .tsv, .jsonl, .parquet) "
        "whose rows become jobs; or '-': prompts (one a line) or JSON rows on stdin",
    )
    data = parser.add_argument_group("data files and stdin (instead of a job file)")
    data.add_argument(
        "--prompt-template",
        metavar="T",
        help="each row's prompt, e.g. 'Classify: {text}' ({column}, {{ and }} for braces); default {prompt}",
    )
    data.add_argument("--system-template", metavar="T", help="each row's system prompt")
    data.add_argument("--id-column", metavar="COL", help="the column holding each row's job id")
    data.add_argument("-m", "--model", metavar="NAME", help="the model every job asks")
    parser.add_argument("-c", "--concurrency", type=_positive_int, metavar="N", help="jobs in flight at once")
    parser.add_argument("-b", "--backend", metavar="NAME", help="run every job on this backend")
    logs = parser.add_mutually_exclusive_group()
    logs.add_argument(
        "--log", metavar="PATH", help="event log path ('-' for stdout); default runs/JOBFILE-TIME.jsonl"
    )
    logs.add_argument("--no-log", action="store_true", help="write no event log")
    parser.add_argument(
        "--results",
        metavar="PATH",
        help="write one row per job to PATH (.jsonl as jobs end, .csv or .parquet at the end)",
    )
    parser.add_argument(
        "--max-cost", type=_positive_float, metavar="USD", help="spend cap: start no new job once reached"
    )
    parser.add_argument("--hard-cap", action="store_true", help="with --max-cost: also cancel running jobs")
    parser.add_argument(
        "--cancel-remote",
        action="store_true",
        help="on a stop, cancel the batch backends' remote batches (default: leave them for --resume; "
        "on a terminal, Ctrl-C asks)",
    )
    parser.add_argument(
        "--no-dedupe",
        action="store_true",
        help="send every job, also jobs whose requests are identical (by default they are sent once)",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="LOG",
        help="skip the jobs LOG shows succeeded (same id and content) and append the rest to it; "
        "default LOG: the job file's log, or its newest runs/JOBFILE-*.jsonl",
    )
    parser.add_argument(
        "--retry-failed", action="store_true", help="like --resume, but rerun only failed jobs"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="append to a log that another job file started (a file that is not a log is never used)",
    )
    parser.add_argument(
        "--deadline", type=_positive_float, metavar="S", help="stop the whole batch after S seconds"
    )
    parser.add_argument("--attempt-timeout", type=_positive_float, metavar="S", help="limit for one attempt")
    parser.add_argument(
        "--idle-timeout", type=_positive_float, metavar="S", help="longest silence in a stream"
    )
    parser.add_argument(
        "--job-timeout", type=_positive_float, metavar="S", help="limit for a job, retries included"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="diagnostics on stderr (attempt failures, ...)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no live progress; a one-line summary")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check everything, show the first requests and the estimated tokens, cost and time; "
        "send nothing",
    )
    cluster = parser.add_argument_group("where attempts run")
    cluster.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: in this process (default); ray: on Ray workers (pip install 'orchestrator-llm[ray]')",
    )
    cluster.add_argument(
        "--address",
        metavar="A",
        help="with --engine ray: the cluster to join (auto or HOST:PORT); without it a local Ray "
        "instance runs for this batch",
    )
    parser.add_argument("--version", action="version", version=f"orchestrate {__version__}")
    parser.epilog = (parser.epilog or "") + (
        "\n\nother commands: orchestrate report LOG... | orchestrate tail LOG | "
        "orchestrate export LOG... -o PATH"
    )
    return parser
