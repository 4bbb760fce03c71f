"""``orchestrate``: argv → a run. Exit codes: 0 all succeeded, 1 some job did not succeed (or
the log could not be written: a full disk), 2 bad input or usage (a log in use by another run,
a file that is not a log), 130 interrupted (SIGINT), 143 terminated (SIGTERM)."""

from __future__ import annotations

import argparse
import gc
import signal
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.cli.arguments import build_parser

if TYPE_CHECKING:
    from orchestrator.config.jobfile import Overrides
    from orchestrator.engines import Engine
    from orchestrator.record.claim import LogClaim
    from orchestrator.record.results_file import ResultsFile
    from orchestrator.run.batch import BatchResult
    from orchestrator.run.bus import Subscriber
    from orchestrator.run.host import Interrupts
    from orchestrator.spec import BatchSpec

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
ANSWERS_SHOWN = 20  # batches up to this size get their answers printed after the run
EXIT_SIGNAL: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _log_to_resume(spec: BatchSpec, args: argparse.Namespace) -> tuple[str, bool]:
    """The log ``--resume``/``--retry-failed`` means, and whether it exists yet; raises
    ConfigError if there is none."""
    from orchestrator.errors import ConfigError
    from orchestrator.record.resume import latest_log

    if args.no_log or args.log == "-":
        raise ConfigError(["--resume needs a log file: drop --no-log / --log -"])
    log = args.resume or latest_log(_stem(args.jobfile), spec.log)
    if log is None:
        raise ConfigError(
            [f"{args.jobfile}: no log to resume (looked for runs/{_stem(args.jobfile)}-*.jsonl)"]
        )
    # A named log that does not exist yet: this is the first run of a resumable loop.
    starting = bool(args.resume or spec.log is not None) and not Path(log).exists()
    return log, starting


def _resumed(spec: BatchSpec, log: str, retry_failed: bool) -> BatchSpec:
    """The batch less what ``log`` shows done (a run holds the log's claim first; a dry run
    only reads it)."""
    import attrs

    from orchestrator.record.resume import plan

    resumed = plan(spec, log, retry_failed=retry_failed)
    return attrs.evolve(resumed.spec, already_done=resumed.already_done)


_DATA_FLAGS = {
    "prompt_template": "--prompt-template",
    "system_template": "--system-template",
    "id_column": "--id-column",
    "model": "--model",
}


def is_data_source(arg: str) -> bool:
    """Whether the command names a data file or stdin rather than a job file."""
    from orchestrator.config.data import data_format

    return arg == "-" or data_format(arg) is not None


def _stem(arg: str) -> str:
    return "stdin" if arg == "-" else Path(arg).stem


def _load(args: argparse.Namespace, overrides: Overrides) -> BatchSpec:
    """The batch the command names: a job file, or a data file / stdin with the template flags."""
    from orchestrator.config.jobfile import load_data_file, load_job_file
    from orchestrator.errors import ConfigError

    given = {key: getattr(args, key) for key in _DATA_FLAGS if getattr(args, key) is not None}
    if not is_data_source(args.jobfile):
        if given:
            flags = ", ".join(_DATA_FLAGS[k] for k in given)
            raise ConfigError([f"{flags}: for a data file or stdin; a job file sets these in [defaults]"])
        return load_job_file(args.jobfile, overrides)
    return load_data_file(args.jobfile, given, overrides)


def _dry_run(spec: BatchSpec, args: argparse.Namespace, resume: bool) -> int:
    """Preflight and estimate the batch; print the plan. Raises ConfigError for problems.
    With ``resume``, the plan covers what the resumed run would send: the log is only read
    (not claimed, so a run still writing it may have more done by the time it is resumed)."""
    import attrs

    from orchestrator.cli.dryrun import print_dry_run
    from orchestrator.run.batch import preflight
    from orchestrator.run.dryrun import dry_run

    if resume:
        log, starting = _log_to_resume(spec, args)
        if not starting:
            spec = _resumed(attrs.evolve(spec, log=log), log, args.retry_failed)
    preflight(spec)
    print_dry_run(dry_run(spec), as_json=args.json)
    return EXIT_OK


# Subcommands live in their own modules, each with ``main(argv) -> int``; imported on use.
SUBCOMMANDS = {
    "report": "orchestrator.cli.report",
    "tail": "orchestrator.cli.tail",
    "export": "orchestrator.cli.export",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``orchestrate``; returns the exit code. Ctrl-C before the batch has started (while a
    big job file loads, say) exits 130 with one line, never a traceback: nothing ran."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("\ninterrupted before the batch started: nothing ran", file=sys.stderr)
        return EXIT_SIGNAL[signal.SIGINT]


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        import importlib

        command: int = importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
        return command
    args = build_parser().parse_args(argv)
    if args.json and args.log == "-":
        print("orchestrate: --json and --log - both want stdout; pick one", file=sys.stderr)
        return EXIT_USAGE
    # Imported here so that --help and usage errors stay fast.
    import attrs
    import trio

    from orchestrator.diagnostics import configure

    configure(verbose=args.verbose)

    from orchestrator.config.jobfile import Overrides
    from orchestrator.errors import ConfigError

    timeouts = {
        key: value
        for key, value in (
            ("attempt", args.attempt_timeout),
            ("idle", args.idle_timeout),
            ("job", args.job_timeout),
        )
        if value is not None
    }
    overrides = Overrides(
        concurrency=args.concurrency,
        backend=args.backend,
        log=args.log,
        deadline=args.deadline,
        timeouts=timeouts,
        max_cost_usd=args.max_cost,
        hard_cap=args.hard_cap or None,
        dedupe=False if args.no_dedupe else None,
    )
    from orchestrator.record.claim import claim_log
    from orchestrator.record.log import LogWriteError

    claim: LogClaim | None = None
    results_path: str | None = None
    live_results: ResultsFile | None = None
    try:
        spec = _load(args, overrides)
        resume = args.resume is not None or args.retry_failed
        if args.dry_run:
            return _dry_run(spec, args, resume)
        starting = False
        if resume:
            log, starting = _log_to_resume(spec, args)
            spec = attrs.evolve(spec, log=log)
        elif args.no_log:
            spec = attrs.evolve(spec, log=None)
        elif spec.log is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            spec = attrs.evolve(spec, log=str(Path("runs") / f"{_stem(args.jobfile)}-{stamp}.jsonl"))
        from orchestrator.run.batch import preflight

        results_path = args.results or spec.results
        if results_path is not None:
            from orchestrator.cli.results import check_results

            check_results(results_path, spec)
        preflight(spec)
        engine = None
        if args.engine != "local" or args.address is not None:
            from orchestrator.engines import engine_named

            engine = engine_named(args.engine, args.address)
        if spec.log is not None and spec.log != "-":
            # Claimed before the resume plan reads the log: no other run may add to it from now on.
            claim = claim_log(spec.log, job_file=spec.source, force=args.force)
        if resume and not starting:
            assert spec.log is not None
            spec = _resumed(spec, spec.log, args.retry_failed)
        if results_path is not None:
            live_results = _start_results(results_path, spec, resuming=resume and not starting)
    except ConfigError as exc:
        if claim is not None:
            claim.release()
        for line in exc.problems:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    from orchestrator.run.host import Interrupts

    # The batch lives as long as the run: out of the collector's full passes, which would
    # otherwise walk a million jobs again each time the run allocates enough (its job states).
    gc.freeze()
    signals = Interrupts()
    problems: list[str] = []
    write_failed: list[str] = []
    result = None
    results_failed = False
    try:
        result = trio.run(_run, spec, args, signals, claim, live_results, engine)
        if results_path is not None and result is not None:  # written while the log is still ours
            results_failed = not _finish_results(results_path, spec, live_results)
    except* ConfigError as group:  # e.g. the log cannot be opened
        problems = [line for exc in group.exceptions for line in getattr(exc, "problems", [str(exc)])]
    except* LogWriteError as group:  # a full disk: the log holds everything up to it
        write_failed = [str(group.exceptions[0])]
    finally:
        if claim is not None:
            claim.release()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return EXIT_USAGE
    if write_failed:
        print(f"orchestrate: {write_failed[0]}; the log is valid up to there (--resume)", file=sys.stderr)
        return EXIT_FAILED
    if signals.first is not None:
        return EXIT_SIGNAL.get(signals.first, 130)
    return EXIT_OK if result is not None and result.ok and not results_failed else EXIT_FAILED


def _start_results(path: str, spec: BatchSpec, *, resuming: bool) -> ResultsFile | None:
    """Start the (checked) results file; raises ConfigError (one line) when it cannot be."""
    from orchestrator.cli.results import start_results
    from orchestrator.errors import ConfigError

    try:
        return start_results(path, spec, resuming=resuming)
    except (OSError, ValueError) as exc:  # LogError is a ValueError
        raise ConfigError([f"--results {path}: {getattr(exc, 'strerror', None) or exc}"]) from None


def _finish_results(path: str, spec: BatchSpec, live: ResultsFile | None) -> bool:
    """Write the results file from the log; False (a line on stderr said why) when it failed."""
    from orchestrator.cli.results import finish_results

    if live is not None:
        live.close()
    problem = live.failed if live is not None else None
    if problem is None:
        try:
            finish_results(path, spec)
        except (OSError, ValueError) as exc:
            problem = f"{path}: {getattr(exc, 'strerror', None) or exc}"
    if problem is not None:
        print(
            f"orchestrate: results file not written: {problem} (orchestrate export LOG -o PATH)",
            file=sys.stderr,
        )
        return False
    return True


async def _run(
    spec: BatchSpec,
    args: argparse.Namespace,
    signals: Interrupts,
    claim: LogClaim | None,
    live_results: ResultsFile | None = None,
    engine: Engine | None = None,
) -> BatchResult | None:
    import trio

    from orchestrator.cli.display import Progress, print_summary, run_progress
    from orchestrator.cli.interrupt import ask_on_interrupt
    from orchestrator.run.batch import execute
    from orchestrator.run.control import RunControl
    from orchestrator.run.host import watch_signals

    control = RunControl()
    progress = Progress()
    result = None

    def say(message: str) -> None:
        print(f"\n{message}", file=sys.stderr, flush=True)

    if args.cancel_remote:
        control.cancel_remote = True
    # On a terminal, Ctrl-C asks whether to cancel the remote batches (see orchestrator.cli.interrupt).
    asking = not args.cancel_remote and sys.stdin.isatty() and sys.stderr.isatty()
    before_stop = ask_on_interrupt(control, progress.remote_running, say=say) if asking else None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            watch_signals,
            control,
            nursery.cancel_scope,
            signals,
            (signal.SIGINT, signal.SIGTERM),
            say,
            before_stop,
        )
        if not args.quiet:
            nursery.start_soon(lambda: run_progress(progress, tty=sys.stderr.isatty()))
        # A small batch's answers are shown at the end; a large one's stay in the log, not in RAM.
        keep_text = len(spec.jobs) <= ANSWERS_SHOWN
        subscribers: list[Subscriber] = [progress, *([live_results] if live_results else [])]
        result = await execute(
            spec, subscribers=subscribers, keep_text=keep_text, control=control, claim=claim, engine=engine
        )
        nursery.cancel_scope.cancel()
    if result is None:  # torn down by a second signal
        return None
    out = sys.stderr if spec.log == "-" else sys.stdout
    if args.json:
        from orchestrator.codec import summary_json

        sys.stdout.buffer.write(summary_json(result.summary))
        sys.stdout.flush()
    elif args.quiet:
        s = result.summary
        print(
            f"{s.succeeded}/{s.jobs} succeeded, {s.failed} failed, ${s.cost_usd:.4f}, {s.wall_s:.1f}s"
            + (" (simulated)" if s.simulated else ""),
            file=out,
        )
    else:
        print_summary(
            result.summary,
            result.jobs.values(),
            stream=out,
            log=spec.log if spec.log != "-" else None,
            held_back=progress.held_back(spec.concurrency),
            concurrency=spec.concurrency,
        )
    return result


if __name__ == "__main__":
    sys.exit(main())
