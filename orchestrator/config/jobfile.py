"""Job files → a validated :class:`~orchestrator.spec.BatchSpec`.

All checking happens here (and for library arguments in :mod:`orchestrator.config.library`,
which shares :func:`assemble`: defaults merged into jobs, ids, content hashes), once; the runner
trusts what it gets. Every problem in the input is
reported (not just the first), one line each, as ``FILE: key.path: what is wrong``, and
:class:`~orchestrator.errors.ConfigError` carries them all.

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

import hashlib
import itertools
import os
import stat
import sys
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import attrs
import orjson

from orchestrator import codec
from orchestrator.backends import backend_kind, known_backends
from orchestrator.config.check import (
    Problems,
    build,
    check_limits,
    check_table,
    check_value,
    conflicts,
    describe,
    did_you_mean,
    join,
    type_hints,
)
from orchestrator.config.data import Rows, read_rows, stdin_rows
from orchestrator.config.dataset import DataSettings, row_jobs, take_data_settings
from orchestrator.config.output import KEYS as OUTPUT_SCHEMA_KEYS
from orchestrator.config.output import read_output_schema
from orchestrator.errors import ConfigError
from orchestrator.spec import BackendLimits, BatchSpec, JobSpec

BATCH_KEYS = (
    "concurrency",
    "log",
    "deadline",
    "seed",
    "fsync",
    "name",
    "max_cost_usd",
    "hard_cap",
    "halt",
    "log_inputs",
    "results",
    "dedupe",
)
_JOB_SETTINGS = (
    "backend",
    "model",
    "system",
    "max_tokens",
    "temperature",
    "seed",
    "retry",
    "timeouts",
    "metadata",
    "messages",
    *OUTPUT_SCHEMA_KEYS,
)
_NESTED = ("retry", "timeouts", "metadata")
_TOP_KEYS = ("defaults", "jobs", "prompts_file", "data_file", "backends")
_LIMIT_KEYS = frozenset(f.name for f in attrs.fields(BackendLimits))
_HASHED = ("prompt", "backend", "model", "system", "max_tokens", "temperature", "seed")


@attrs.frozen
class Overrides:
    """Command-line settings that win over the job file."""

    concurrency: int | None = None
    backend: str | None = None
    log: str | None = None
    deadline: float | None = None
    timeouts: Mapping[str, float] = attrs.field(factory=dict)
    max_cost_usd: float | None = None
    hard_cap: bool | None = None
    dedupe: bool | None = None


def load_job_file(path: str | Path, overrides: Overrides = Overrides()) -> BatchSpec:
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
    jobs: list[JobSource] = []
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
    rows = _data_file_jobs(data, path, name, problems)
    if not jobs and not problems and "data_file" not in data:
        problems.append(f"{name}: no jobs: add [[jobs]] tables or a prompts_file")
    spec = resolve(
        data.get("defaults", {}),
        itertools.chain(jobs, rows),
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
        # Non-blocking open: opening a FIFO otherwise waits for a writer before we can look at it.
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError
            if not stat.S_ISREG(mode):
                raise ConfigError([f"{name}: not a regular file"])
            raw = f.read()
    except IsADirectoryError:
        raise ConfigError([f"{name}: is a directory, not a job file"]) from None
    except FileNotFoundError:
        raise ConfigError([f"{name}: no such file"]) from None
    except OSError as exc:
        raise ConfigError([f"{name}: cannot read: {exc.strerror or exc}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{name}: line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x})"]) from None
    if not text.strip():
        raise ConfigError([f"{name}: empty file: add [[jobs]] tables or a prompts_file"])
    return text


def _read_prompts_file(path: Path, problems: Problems, owner: str) -> list[JobSource]:
    """Jobs from a JSON-lines file: each line a JSON string (the prompt) or a job object.

    Problems with the file as a whole are reported against ``owner`` (the job file's key).
    """
    name = str(path)
    try:
        text = _read_text(path, name)
    except ConfigError as exc:
        problems.extend(owner + p for p in exc.problems)
        return []
    jobs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            problems.append(f"{name}: line {number}: invalid JSON: {exc}")
            continue
        if isinstance(value, str):
            value = {"prompt": value}
        elif not isinstance(value, dict):
            problems.append(f"{name}: line {number}: expected a JSON string or object, got {describe(value)}")
            continue
        jobs.append(JobSource(f"{name}: line {number}", "", value))
    return jobs


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
    layer = {k: v for k, v in defaults.items() if k != "backends"}
    spec = resolve(layer, jobs, defaults.get("backends", {}), source=None, problems=problems)
    if spec is None or problems:
        raise ConfigError(problems)
    return spec


@attrs.frozen
class JobSource:
    """A job table and where it came from: ``file`` prefixes its problems, ``path`` is its key path.

    ``row``: the data-file row the table was rendered from (kept with the job), if any."""

    file: str | None
    path: str
    table: Any
    row: Mapping[str, Any] | None = None


def _data_file_jobs(
    data: Mapping[str, Any], path: Path, name: str, problems: Problems
) -> Iterator[JobSource]:
    """The jobs of the job file's ``data_file``, one per row, read lazily (none without one).

    Takes the data keys out of ``data["defaults"]`` (see :mod:`orchestrator.config.dataset`).
    """
    data_file = data.get("data_file")
    local: Problems = []
    settings = take_data_settings(data.get("defaults"), local, has_data=data_file is not None)
    if data_file is not None and not isinstance(data_file, str):
        local.append(f"data_file: expected a string (a path), got {describe(data_file)}")
    problems.extend(f"{name}: {p}" for p in local)
    if settings is None or not isinstance(data_file, str):
        return iter(())
    rows = read_rows(path.parent / data_file, str(path.parent / data_file), problems)
    return data_jobs(rows, settings, str(path.parent / data_file), problems)


def data_jobs(rows: Rows, settings: DataSettings, name: str, problems: Problems) -> Iterator[JobSource]:
    """Job sources from data rows (problems named ``NAME: row N``)."""
    for job in row_jobs(rows, settings, name, problems):
        yield JobSource(job.where, "", job.table, job.row)


@attrs.frozen
class CheckedJob:
    """A job's own settings, checked, and where they came from: ``problems`` the check found
    (reported with the job's others), ``table`` whether it was a table at all (else "prompt:
    required" would only repeat that)."""

    file: str | None
    path: str
    fields: dict[str, Any]
    problems: tuple[str, ...] = ()
    table: bool = True
    row: Mapping[str, Any] | None = None
    """The data-file row the job was rendered from (kept with the job), if any."""


def check_job(source: JobSource, base: Path | None = None) -> CheckedJob:
    """A job table's own settings checked (as :func:`check_layer` does for any job layer); a
    table nested too deep or holding integers out of range is checked no further. ``base`` is
    the folder an ``output_schema_file`` is read from."""
    row = source.row
    if _is_plain(source.table) and "\0" not in source.table.get("id", ""):
        # Strings only: nothing to check.
        return CheckedJob(source.file, source.path, dict(source.table), row=row)
    local: Problems = []
    if not check_limits(source.table, source.path, local):
        return CheckedJob(source.file, source.path, {}, tuple(local), table=False, row=row)
    _, fields = check_layer(source.table, source.path, local, batch=False, base=base)
    return CheckedJob(source.file, source.path, fields, tuple(local), isinstance(source.table, Mapping), row)


def defaults_path(key: str) -> str:
    """Where a job file sets a default: ``defaults.KEY``."""
    return join("defaults", key)


def resolve(
    defaults: Any,
    jobs: Iterable[JobSource],
    backends: Any,
    *,
    overrides: Overrides = Overrides(),
    source: str | None,
    problems: Problems,
    base: Path | None = None,
) -> BatchSpec | None:
    """Check every layer, merge defaults into each job and build the batch (None on problems).

    Problems are appended as complete lines, prefixed with the file they are in. ``base`` is the
    job file's folder (where ``output_schema_file`` paths start).
    """
    local: Problems = []
    if not (check_limits(defaults, "defaults", local) & check_limits(backends, "backends", local)):
        problems.extend(f"{source}: {p}" if source else p for p in local)
        # What is out of bounds there would reach every job: check no further than the jobs' own.
        for job_source in jobs:
            within: Problems = []
            check_limits(job_source.table, job_source.path, within)
            file = job_source.file or source
            problems.extend(f"{file}: {p}" if file else p for p in within)
        return None
    batch_fields, job_defaults = check_layer(defaults, "defaults", local, batch=True, base=base)
    batch_fields.update(
        {k: v for k, v in attrs.asdict(overrides).items() if v is not None and k in BATCH_KEYS}
    )
    problems.extend(f"{source}: {p}" if source else p for p in local)
    backend_problems: Problems = []
    backend_settings, limits = resolve_backends(backends, "backends", backend_problems)
    return assemble(
        batch_fields,
        job_defaults,
        (check_job(job, base) for job in jobs),  # one at a time: 100k checked jobs need not exist at once
        backend_settings,
        limits,
        overrides=overrides,
        source=source,
        problems=problems,
        late_problems=backend_problems,
        defaults_path=defaults_path,
    )


def assemble(
    batch_fields: Mapping[str, Any],
    job_defaults: Mapping[str, Any],
    jobs: Iterable[CheckedJob],
    backend_settings: dict[str, Any],
    limits: dict[str, BackendLimits],
    *,
    overrides: Overrides = Overrides(),
    source: str | None,
    problems: Problems,
    late_problems: Sequence[str] = (),
    defaults_path: Callable[[str], str],
    shared: dict[Any, Any] | None = None,
) -> BatchSpec | None:
    """Merge the checked defaults into each checked job and build the batch (None on problems).

    ``defaults_path`` names where a default was set, for problems with it; ``shared`` may hold
    default objects already built and checked (``(key, cls) -> object``), which jobs that do
    not set that key take unchanged. ``late_problems`` are reported after the jobs' own.
    """
    for key, text in conflicts(BatchSpec(jobs=(), **batch_fields)):
        line = f"{defaults_path(key or '')}: {text}"
        problems.append(f"{source}: {line}" if source else line)
    specs: list[JobSpec] = []
    seen: dict[str, str] = {}
    # Batch-wide backend settings that shape answers (which model, which server) go into each
    # job's content hash, so resuming against another model runs the jobs again.
    shared = {} if shared is None else shared
    shared.update({("answer", name): _answer_settings(s) for name, s in backend_settings.items()})
    for checked in jobs:
        local = list(checked.problems)
        job = _resolve_job(checked, job_defaults, overrides, local, shared, defaults_path)
        file = checked.file or source
        problems.extend(f"{file}: {p}" if file else p for p in local)
        if job is None:
            continue
        if job.id in seen:
            if checked.fields.get("id") is None:
                # Equal prompts without ids are legitimate; they are one request, sent once
                # unless their seeds differ (see orchestrator.run.dedupe).
                n = 2
                while f"{job.id}-{n}" in seen:
                    n += 1
                job = attrs.evolve(job, id=f"{job.id}-{n}")
            else:
                duplicate = f"{join(checked.path, 'id')}: duplicate id {job.id!r} (also at {seen[job.id]})"
                problems.append(f"{file}: {duplicate}" if file else duplicate)
                continue
        seen[job.id] = checked.path or (checked.file or "")
        if checked.row is not None:
            job = attrs.evolve(job, row=checked.row)
        specs.append(job)
    for name in sorted({j.backend for j in specs} - set(backend_settings)):
        backend_settings[name] = backend_kind(name).Settings()
    problems.extend(f"{source}: {p}" if source else p for p in late_problems)
    if problems:
        return None
    return BatchSpec(
        jobs=tuple(specs), backends=backend_settings, limits=limits, source=source, **batch_fields
    )


def check_layer(
    table: Any, path: str, problems: Problems, *, batch: bool, base: Path | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split one table (defaults or a job) into checked batch keys and job keys.

    Nested settings (retry, timeouts, metadata) and backend option tables stay dicts so that
    layers merge key by key. ``output_schema`` and ``output_schema_file`` both become the
    checked ``output_schema`` (a file read from ``base``).
    """
    batch_fields: dict[str, Any] = {}
    job_fields: dict[str, Any] = {}
    if not isinstance(table, Mapping):
        problems.append(f"{path}: expected a table")
        return batch_fields, job_fields
    backend_names = known_backends()
    job_keys = (*_JOB_SETTINGS, *(() if batch else ("id", "prompt")))
    for key, value in table.items():
        where = join(path, key)
        if key in BATCH_KEYS and batch:
            hint = type_hints(BatchSpec)[key]
            meta = attrs.fields_dict(BatchSpec)[key].metadata
            batch_fields[key] = check_value(value, hint, where, meta, problems)
            if key == "seed":  # the batch seed is also every job's default sampling seed
                job_fields["seed"] = batch_fields[key]
        elif key in OUTPUT_SCHEMA_KEYS:
            if all(k in table for k in OUTPUT_SCHEMA_KEYS):
                problems.append(f"{where}: give output_schema or output_schema_file, not both")
            job_fields["output_schema"] = read_output_schema(key, value, where, problems, base=base)
        elif key in job_keys:
            hint = type_hints(JobSpec)[key]
            if key in _NESTED and key != "metadata":
                job_fields[key] = check_table(value, hint, where, problems) or {}
            else:
                job_fields[key] = check_value(
                    value, hint, where, attrs.fields_dict(JobSpec)[key].metadata, problems
                )
        elif key in backend_names:
            kind = backend_kind(key)
            job_fields[key] = check_table(value, kind.Options, where, problems) or {}
        elif key in BATCH_KEYS:
            problems.append(f"{where}: batch-wide setting: set it in [defaults]")
        else:
            known = (*job_keys, *(BATCH_KEYS if batch else ()), *backend_names)
            problems.append(f"{where}: unknown key{did_you_mean(key, known)}")
    return batch_fields, job_fields


def _resolve_job(
    checked: CheckedJob,
    defaults: Mapping[str, Any],
    overrides: Overrides,
    problems: Problems,
    shared: dict[Any, Any],
    defaults_path: Callable[[str], str],
) -> JobSpec | None:
    """One job: defaults merged into its checked settings, every object built; None on problems.

    ``shared`` caches what jobs take unchanged from the defaults (and options' canonical JSON).
    """
    plain: _PlainJobs | None = shared.get("plain jobs")
    if plain is not None and not checked.problems and _is_plain(checked.fields):
        return plain.job(checked.fields)
    start = len(problems)
    path, fields = checked.path, checked.fields
    merged = {**defaults, **fields}
    for key in (*_NESTED, *known_backends()):
        if key in defaults and key in fields:
            merged[key] = {**defaults[key], **fields[key]}
    if overrides.backend is not None:
        merged["backend"] = overrides.backend
    if overrides.timeouts:  # the command line wins over a job's own timeouts too
        merged["timeouts"] = {**merged.get("timeouts", {}), **overrides.timeouts}
    backend = merged.setdefault("backend", "sim")
    if "prompt" not in merged and checked.table:
        if merged.get("messages"):
            merged["prompt"] = ""  # a conversation alone: it ends with its own user turn
        else:
            problems.append(f"{join(path, 'prompt')}: required")
    problems.extend(_conversation_problems(merged, path, fields))
    if not isinstance(backend, str):
        return None  # not a name: reported where it was set
    if backend not in known_backends():
        if overrides.backend is not None:
            where = "--backend"
        else:
            where = join(path, "backend") if "backend" in fields else defaults_path("backend")
        problems.append(
            f"{where}: unknown backend {backend!r}{did_you_mean(backend, known_backends())}; "
            f"known: {', '.join(known_backends())}"
        )
    if checked.problems or len(problems) > start:
        return None
    kind = backend_kind(backend)

    def settled(key: str, cls: type) -> Any:
        # Jobs that leave a table to the defaults share one object: 100k jobs, one Options.
        value = merged.pop(key, {})
        if key in fields:
            return build(cls, value, join(path, key), problems)
        cache_key = (key, cls)
        if cache_key not in shared:
            shared[cache_key] = build(cls, value, defaults_path(key), problems)
        return shared[cache_key]

    options = settled(backend, kind.Options)
    retry = settled("retry", type_hints(JobSpec)["retry"])
    timeouts = settled("timeouts", type_hints(JobSpec)["timeouts"])
    for name in known_backends():
        merged.pop(name, None)
    if len(problems) > start or merged.get("prompt") is None:
        return None
    if options is None or retry is None or timeouts is None:
        return None  # a bad value in the defaults, reported there once
    # A derived id comes from the prompt, or, for a conversation alone, from its messages.
    named = merged["prompt"] or (codec.dumps(merged["messages"]).decode() if merged.get("messages") else "")
    job_id = merged.pop("id", None) or "p-" + hashlib.sha256(named.encode()).hexdigest()[:10]
    options_json = shared.get(("json", id(options)))
    if options_json is None:
        options_json = shared[("json", id(options))] = codec.dumps(_hashed(options), sort_keys=True).decode()
    payload = {k: merged.get(k) for k in _HASHED}
    if merged.get("messages"):  # absent, not empty, for jobs without: their hashes stay as they were
        payload["messages"] = merged["messages"]
    if merged.get("output_schema") is not None:  # likewise absent for jobs without one
        payload["output_schema"] = merged["output_schema"].schema
    payload["options"] = options_json
    answer = shared.get(("answer", backend))
    if answer:
        payload["backend_settings"] = answer
    job = JobSpec(
        id=job_id,
        options=options,
        retry=retry,
        timeouts=timeouts,
        content_hash=codec.content_hash(payload),
        **merged,
    )
    if not checked.problems and _is_plain(fields):
        shared["plain jobs"] = _PlainJobs(job, payload)
    return job


def _hashed(options: Any) -> Any:
    """A backend's options as its jobs' content hashes cover them: an option marked ``later``
    (added after logs were written) is left out while it has its default, so those logs' hashes
    still match and resuming them runs nothing again."""
    data = codec.to_jsonable(options)
    if attrs.has(type(options)):
        for field in attrs.fields(type(options)):
            if field.metadata.get("later") and getattr(options, field.name) == field.default:
                data.pop(field.name, None)
    return data


def _is_plain(table: Any) -> bool:
    """A job table with a prompt and at most an id, both strings (a prompts file's usual line)."""
    return (
        type(table) is dict
        and isinstance(table.get("prompt"), str)
        and len(table) <= 2
        and (len(table) == 1 or isinstance(table.get("id"), str))
    )


class _PlainJobs:
    """Plain jobs (see :func:`_is_plain`) differ only in id, prompt and content hash: once one
    has been resolved in full, the rest are made from it directly, with no checking left to
    do. A million-line prompts file then loads in seconds rather than minutes."""

    def __init__(self, first: JobSpec, payload: dict[str, Any]) -> None:
        varying = ("id", "prompt", "content_hash")
        self.fields = {f.name: getattr(first, f.name) for f in attrs.fields(JobSpec) if f.name not in varying}
        self.payload = dict(payload)

    def job(self, table: dict[str, Any]) -> JobSpec:
        prompt = table["prompt"]
        job_id = table.get("id") or "p-" + hashlib.sha256(prompt.encode()).hexdigest()[:10]
        self.payload["prompt"] = prompt  # the only hashed field a plain job sets
        return JobSpec(id=job_id, prompt=prompt, content_hash=codec.content_hash(self.payload), **self.fields)


def _conversation_problems(merged: Mapping[str, Any], path: str, fields: Mapping[str, Any]) -> Problems:
    """A conversation must end with a user turn: the prompt, or else the last message."""
    messages = merged.get("messages")
    if not messages or merged.get("prompt") or not all(messages):
        return []
    if messages[-1].role != "user":
        where = join(path, "messages") if "messages" in fields else "defaults.messages"
        return [f"{where}: the conversation must end with a user turn (or give a prompt)"]
    return []


_ANSWER_SETTINGS = ("model", "model_path", "base_url")


def _answer_settings(settings: Any) -> dict[str, Any]:
    return {k: getattr(settings, k) for k in _ANSWER_SETTINGS if getattr(settings, k, None) is not None}


def resolve_backends(
    table: Any, path: str, problems: Problems
) -> tuple[dict[str, Any], dict[str, BackendLimits]]:
    """Each backend's own settings, and the rate limits the runner applies to it, from a table
    of backend names found at ``path``."""
    settings: dict[str, Any] = {}
    limits: dict[str, BackendLimits] = {}
    if not isinstance(table, Mapping):
        problems.append(f"{path}: expected a table of backend names")
        return settings, limits
    for name, value in table.items():
        where = join(path, name)
        if name not in known_backends():
            problems.append(
                f"{where}: unknown backend{did_you_mean(name, known_backends())}; "
                f"known: {', '.join(known_backends())}"
            )
            continue
        cls = backend_kind(name).Settings
        checked = check_table(value, cls, where, problems, skip=_LIMIT_KEYS)
        if checked is not None:
            settings[name] = build(cls, checked, where, problems)
            own = {k: v for k, v in value.items() if k in _LIMIT_KEYS}
            limits[name] = build(
                BackendLimits, check_table(own, BackendLimits, where, problems) or {}, where, problems
            )
    return settings, limits


def load_data_file(
    source: str,
    defaults: Mapping[str, Any],
    overrides: Overrides = Overrides(),
    *,
    stdin: IO[bytes] | None = None,
) -> BatchSpec:
    """A batch straight from a data file (or ``-``: ``stdin``), without a job file.

    ``defaults`` is laid out like a job file's ``[defaults]`` (the data keys included);
    raises :class:`ConfigError` listing every problem.
    """
    problems: Problems = []
    layer = dict(defaults)
    local: Problems = []
    settings = take_data_settings(layer, local, has_data=True)
    problems.extend(local)
    if settings is None:
        raise ConfigError(problems)
    if source == "-":
        name = "stdin"
        rows = stdin_rows(stdin if stdin is not None else sys.stdin.buffer, name, problems)
    else:
        name = source
        rows = read_rows(Path(source), name, problems)
    spec = resolve(
        layer,
        data_jobs(rows, settings, name, problems),
        {},
        overrides=overrides,
        source=name,
        problems=problems,
    )
    if spec is None or problems:
        raise ConfigError(problems)
    return spec
