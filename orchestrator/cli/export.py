"""``orchestrate export LOG... -o PATH``: the results table of a batch, from its logs alone.

The file is the one ``orchestrate JOBFILE --results PATH`` writes, byte for byte (see
:mod:`orchestrator.record.results` for its columns). Exit codes: 0 written, 2 bad usage or a
file that cannot be read as a log (one line on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from orchestrator.visible import visible

EXIT_OK, EXIT_USAGE = 0, 2

_EPILOG = """\
Several runs in one log (a resumed batch) or several logs make one table, merged as `report`
merges them: one row per job, its result from the latest run that gave it one, in the order
jobs were first queued. --run N exports one run alone.

exit codes: 0 written, 2 bad usage or not a readable log."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrate export",
        description="Write a batch's results (one row per job) from its JSONL log: .jsonl, .csv or .parquet.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("logs", nargs="+", metavar="LOG", help="event log(s), in the order they were written")
    parser.add_argument(
        "-o", "--output", required=True, metavar="PATH", help="the results file: .jsonl, .csv or .parquet"
    )
    parser.add_argument("--failed", action="store_true", help="only the jobs that did not succeed")
    parser.add_argument("--run", type=int, metavar="N", help="only run N of the log (1 = first, -1 = last)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``export`` subcommand; returns the exit code."""
    from orchestrator.record.results import import_pyarrow, results_format, write_results
    from orchestrator.report.export import log_rows

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    fmt = results_format(args.output)
    if fmt is None:
        return _fail(f"{args.output}: name a .jsonl, .csv or .parquet file")
    if fmt == "parquet":
        try:
            import_pyarrow()
        except ImportError as exc:
            return _fail(str(exc))
    try:
        rows = log_rows(args.logs, run=args.run, failed=args.failed)
    except LookupError as exc:
        return _fail(str(exc.args[0]))
    except (OSError, ValueError) as exc:  # LogError is a ValueError
        return _fail(_one_line(exc))
    try:
        write_results(rows, args.output)
    except OSError as exc:
        return _fail(f"{args.output}: {exc.strerror or exc}")
    print(f"wrote {len(rows):,} rows to {visible(args.output)}", file=sys.stderr)
    return EXIT_OK


def _fail(message: str) -> int:
    print(f"orchestrate export: {visible(message)}", file=sys.stderr)
    return EXIT_USAGE


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
