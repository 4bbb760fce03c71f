"""``orchestrate JOBFILE --results PATH``: the results file around a run.

Before the run: the path is checked (a known extension; CSV and Parquet are written from the
log, so they need one; Parquet needs pyarrow). A JSONL file is started: empty for a new batch,
or, when resuming, rewritten from the log without the jobs this run will run (so after a
``kill -9`` and ``--resume`` every job is in it once). During the run JSONL rows are appended as
jobs end (:class:`~orchestrator.record.results_file.ResultsFile`). When the run ends, the whole
file is written from the log, as ``orchestrate export LOG -o PATH`` would write it, byte for
byte (JSONL only when there is no log file: then it keeps the rows appended).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from orchestrator.errors import ConfigError
from orchestrator.record.results import import_pyarrow, replace_file, results_format, write_results
from orchestrator.record.results_file import ResultsFile
from orchestrator.report.export import log_rows
from orchestrator.spec import BatchSpec


def _has_log_file(spec: BatchSpec) -> bool:
    return spec.log is not None and spec.log != "-"


def check_results(path: str, spec: BatchSpec) -> None:
    """Refuse a results path the run could not write; raises :class:`ConfigError` (one line)."""
    fmt = results_format(path)
    if fmt is None:
        raise ConfigError([f"--results {path}: name a .jsonl, .csv or .parquet file"])
    if fmt != "jsonl" and not _has_log_file(spec):
        raise ConfigError([f"--results {path}: {fmt} is written from the log: drop --no-log / --log -"])
    target = Path(path).resolve()
    if spec.log is not None and target == Path(spec.log).resolve():
        raise ConfigError([f"--results {path}: is the log itself: name another file"])
    if target in _inputs(spec.source):
        raise ConfigError([f"--results {path}: is the batch's own input: name another file"])
    if fmt == "parquet":
        try:
            import_pyarrow()
        except ImportError as exc:
            raise ConfigError([f"--results {path}: {exc}"]) from None


def _inputs(source: str | None) -> set[Path]:
    """The files the batch was read from: the job file (or data file) and the files it names."""
    if source is None:
        return set()
    found = {Path(source).resolve()}
    if Path(source).suffix.lower() == ".toml":
        try:
            table = tomllib.loads(Path(source).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):  # it was read once already
            return found
        for key in ("data_file", "prompts_file"):
            named = table.get(key)
            if isinstance(named, str) and "\0" not in named:
                found.add((Path(source).parent / named).resolve())
    return found


def start_results(path: str, spec: BatchSpec, *, resuming: bool) -> ResultsFile | None:
    """Start the results file; the subscriber that appends JSONL rows, None for other formats.
    ``spec`` is the batch this run will run (after the resume plan). Raises OSError."""
    if results_format(path) != "jsonl":
        return None
    if resuming and spec.log is not None and Path(spec.log).exists():
        write_results(log_rows([spec.log], leave_out=set(spec.jobs.ids())), path)
    else:
        replace_file(path, b"")
    return ResultsFile(path, dedupe=spec.dedupe)


def finish_results(path: str, spec: BatchSpec) -> None:
    """Write the whole results file from the log (nothing to do without a log file). Raises
    OSError, or LogError for a log that cannot be read."""
    if _has_log_file(spec):
        assert spec.log is not None
        write_results(log_rows([spec.log]), path)
