"""Job files → a validated :class:`~orchestrator.spec.BatchSpec`.

All checking happens once, here and in :mod:`orchestrator.config.resolve` (defaults merged
into jobs, ids, content hashes, shared with data files and library arguments); the runner trusts
what it gets. Every problem in the input is reported (not just the first), one line each, as
``FILE: key.path: what is wrong``, and :class:`~orchestrator.errors.ConfigError` carries them
all. A prompts file's plain lines (a JSON string, or an object with only ``prompt`` and ``id``)
are checked cheaply and kept as text; their jobs are made when the run comes to them (see
:mod:`orchestrator.config.sources`).

A job file::

    prompts_file = "more.jsonl"   # (top level, before any table) a JSON string or job object per line
    data_file = "rows.csv"        # (top level) rows that become jobs: see orchestrator.config.dataset
    [defaults]            # batch-wide keys (concurrency, log, results, deadline, seed, fsync, name)
    backend = "sim"       # and per-job defaults (backend, model, retry, timeouts, ...)
    [defaults.retry]
    max_attempts = 3
    [defaults.sim]        # options of one backend, for the jobs that use it
    ttft = 0.2
    [backends.sim]        # settings of one backend for the whole batch
    concurrency = 8
    [[jobs]]
    id = "greeting"       # optional: derived from the prompt when absent
    prompt = "Say hi."
"""

from __future__ import annotations

import tomllib
from array import array
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from orchestrator.config.check import Problems, describe, did_you_mean, refuse_lone_surrogates
from orchestrator.config.data import number as row_number
from orchestrator.config.dataset import data_file_jobs, load_data_file
from orchestrator.config.files import open_regular, unreadable
from orchestrator.config.resolve import BATCH_KEYS, NO_OVERRIDES, Overrides, resolve
from orchestrator.config.sources import (
    JobSource,
    PlainRows,
    any_blank,
    blank,
    collector_paused,
    derived_id,
    is_plain,
)
from orchestrator.errors import ConfigError
from orchestrator.spec import BatchSpec

__all__ = ["BATCH_KEYS", "Overrides", "build_batch", "load_data_file", "load_job_file"]

_TOP_KEYS = ("defaults", "jobs", "prompts_file", "data_file", "backends")


@collector_paused
def load_job_file(path: str | Path, overrides: Overrides = NO_OVERRIDES) -> BatchSpec:
    """Read, check and resolve a TOML job file; raises :class:`ConfigError` listing every problem."""
    path = Path(path)
    name = str(path)
    text = _read_text(path, name)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{name}: invalid TOML: {exc}"]) from None
    except RecursionError:  # the TOML reader recurses per level of nesting
        raise ConfigError([f"{name}: invalid TOML: tables or lists nested too deeply"]) from None
    problems: Problems = []
    for key in data:
        if key not in _TOP_KEYS:
            problems.append(f"{name}: {key}: unknown key{did_you_mean(key, _TOP_KEYS)}")
    jobs: list[JobSource | PlainRows] = []
    raw_jobs = data.get("jobs", [])
    if not isinstance(raw_jobs, list):
        problems.append(f"{name}: jobs: expected a list of tables ([[jobs]])")
    else:
        jobs.extend(JobSource(name, f"jobs[{i}]", table) for i, table in enumerate(raw_jobs))
    prompts_file = data.get("prompts_file")
    if prompts_file is not None:
        if not isinstance(prompts_file, str):
            problems.append(f"{name}: prompts_file: expected a string (a path), got {describe(prompts_file)}")
        elif "\0" in prompts_file:
            problems.append(f"{name}: prompts_file: contains a NUL character")
        else:
            jobs.extend(
                _read_prompts_file(path.parent / prompts_file, problems, owner=f"{name}: prompts_file: ")
            )
    rows = data_file_jobs(data, path, name, problems)
    if not jobs and not problems and "data_file" not in data:
        problems.append(f"{name}: no jobs: add [[jobs]] tables or a prompts_file")
    spec = resolve(
        data.get("defaults", {}),
        [*jobs, *rows],
        data.get("backends", {}),
        overrides=overrides,
        source=name,
        problems=problems,
        base=path.parent,
    )
    if spec is None or problems:
        raise ConfigError(problems)
    return spec


def _read_text(path: Path, name: str) -> str:
    """The file's text. Only a regular file is read: a FIFO could wait forever for a writer, and
    a device (``/dev/zero``) never ends."""
    try:
        with open_regular(path) as f:
            raw = f.read()
    except IsADirectoryError:
        raise ConfigError([f"{name}: is a directory, not a job file"]) from None
    except FileNotFoundError:
        raise ConfigError([f"{name}: no such file"]) from None
    except OSError as exc:
        raise ConfigError([f"{name}: {unreadable(exc)}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{name}: line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x})"]) from None
    if not text.strip():
        raise ConfigError([f"{name}: empty file: add [[jobs]] tables or a prompts_file"])
    return text


def _read_prompts_file(path: Path, problems: Problems, owner: str) -> list[JobSource | PlainRows]:
    """Jobs from a JSON-lines file: each line a JSON string (the prompt) or a job object.

    Runs of plain lines (see the module docstring) are kept as :class:`PlainRows`, other lines
    are job tables. Problems with the file as a whole are reported against ``owner`` (the job
    file's key).
    """
    name = str(path)
    try:
        text = _read_text(path, name)
    except ConfigError as exc:
        problems.extend(owner + p for p in exc.problems)
        return []

    def remake(line: str) -> tuple[dict[str, Any], None]:
        value = orjson.loads(line)
        return ({"prompt": value} if type(value) is str else value), None

    # Lines end at "\n" alone (a "\r" before it is JSON whitespace): str.splitlines would also
    # split at U+2028, NEL and others, which JSON allows raw inside a string.
    lines = text.removeprefix("\ufeff").split("\n")  # a byte order mark, as a data file may have
    del text
    if lines[-1] == "":
        lines.pop()  # the last line's own end
    every = _all_prompts(lines)
    if every is not None:
        return [PlainRows(name, "line", remake, lines, array("L", range(1, len(lines) + 1)), *every)]
    jobs: list[JobSource | PlainRows] = []
    plain = PlainRows(name, "line", remake)
    loads, invalid = orjson.loads, orjson.JSONDecodeError
    for number, line in enumerate(lines, start=1):
        if not line or line.isspace():
            continue
        try:
            value = loads(line)
        except invalid as exc:
            problems.append(f"{name}: line {row_number(number)}: invalid JSON: {exc}")
            continue
        if type(value) is str and not blank(value):
            job_id, derived = derived_id(value), 1
        elif type(value) is dict and _plain_object(value):
            given = value.get("id")
            job_id, derived = (given, 0) if given else (derived_id(value["prompt"]), 1)
        elif isinstance(value, dict | str):  # a job table, or a blank prompt (see is_plain)
            if plain.ids:
                jobs.append(plain)
                plain = PlainRows(name, "line", remake)
            table = {"prompt": value} if type(value) is str else value
            jobs.append(JobSource(f"{name}: line {row_number(number)}", "", table))
            continue
        else:
            problems.append(
                f"{name}: line {row_number(number)}: expected a JSON string or object, got {describe(value)}"
            )
            continue
        plain.compact.append(line)
        plain.numbers.append(number)
        plain.ids.append(job_id)
        plain.derived.append(derived)
    if plain.ids:
        jobs.append(plain)
    return jobs


def _all_prompts(lines: list[str]) -> tuple[list[str], bytearray] | None:
    """When every line is a JSON string (a prompts file's usual form), the jobs' ids and their
    derived flags, found with the fewest steps per line; otherwise None."""
    try:
        prompts = list(map(orjson.loads, lines))
    except orjson.JSONDecodeError:
        return None  # a blank line or a bad one: the line-by-line path says which
    if set(map(type, prompts)) != {str} or any_blank(prompts):
        return None  # a blank prompt is checked in full (see is_plain)
    return list(map(derived_id, prompts)), bytearray(b"\x01") * len(prompts)


def _plain_object(value: dict[str, Any]) -> bool:
    """A plain job table (see :func:`is_plain`) whose id, if any, is not empty and has no NUL."""
    given = value.get("id", "x")
    return is_plain(value) and given != "" and "\0" not in given


def build_batch(queries: Iterable[str | Mapping[str, Any]], defaults: Mapping[str, Any]) -> BatchSpec:
    """Resolve job-file-shaped data held in memory: prompts or job tables, and ``defaults`` laid
    out like a job file's ``[defaults]`` table plus ``backends``. (Library callers with typed
    values use :func:`orchestrator.config.library.library_batch`, through ``run_batch``.)
    """
    jobs = [
        JobSource(None, f"queries[{i}]", {"prompt": query} if isinstance(query, str) else query)
        for i, query in enumerate(queries)
    ]
    problems: Problems = []
    if not jobs:
        problems.append("queries: no queries given")
    not_text: Problems = []
    for job in jobs:
        refuse_lone_surrogates(job.table, job.path, not_text)
    refuse_lone_surrogates(defaults, "defaults", not_text)
    if not_text:  # (text that is not Unicode cannot even be hashed: stop here)
        raise ConfigError([*problems, *not_text])
    layer = {k: v for k, v in defaults.items() if k != "backends"}
    spec = resolve(layer, jobs, defaults.get("backends", {}), source=None, problems=problems)
    if spec is None or problems:
        raise ConfigError(problems)
    return spec
