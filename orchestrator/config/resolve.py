"""Checking job tables and layering defaults into them: a validated :class:`~orchestrator.spec.BatchSpec`.

Shared by job files and data files (:mod:`orchestrator.config.jobfile`,
:mod:`orchestrator.config.dataset`) and library arguments (:mod:`orchestrator.config.library`):
defaults merged into jobs, ids, content hashes. Every problem in the input is reported (not just
the first), one line each, as ``FILE: key.path: what is wrong``. Plain rows
(:class:`~orchestrator.config.sources.PlainRows`) are not resolved here one by one: the first is,
in full, and the rest become a :class:`~orchestrator.jobs.Rows` part made from it when the run
asks for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from orchestrator import codec
from orchestrator.backends import backend_kind, known_backends
from orchestrator.config.backends import answer_settings, resolve_backends
from orchestrator.config.check import (
    Problems,
    build,
    check_limits,
    check_table,
    check_value,
    conflicts,
    did_you_mean,
    join,
    type_hints,
)
from orchestrator.config.output import KEYS as OUTPUT_SCHEMA_KEYS
from orchestrator.config.output import read_output_schema
from orchestrator.config.sources import (
    BLANK_PROMPT,
    Ids,
    JobSource,
    PlainJobs,
    PlainRows,
    blank,
    derived_id,
    is_plain,
    lazy_rows,
    too_many,
)
from orchestrator.jobs import Held, Jobs, Part
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


NO_OVERRIDES = Overrides()


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
    if is_plain(source.table) and "\0" not in source.table.get("id", ""):
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
    jobs: Iterable[JobSource | PlainRows],
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
        # What is out of bounds there would reach every job: check no further than the jobs' own
        # (a plain row holds strings only: nothing there can be out of bounds).
        for job_source in jobs:
            if isinstance(job_source, PlainRows):
                continue
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
        # One at a time: 100k checked jobs need not exist at once.
        (job if isinstance(job, PlainRows) else check_job(job, base) for job in jobs),
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
    jobs: Iterable[CheckedJob | PlainRows],
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
    not set that key take unchanged. ``late_problems`` are reported after the jobs' own. Plain
    rows become a part of the batch's :class:`~orchestrator.jobs.Jobs` that makes their jobs when
    asked for (see :func:`~orchestrator.config.sources.lazy_rows`).
    """
    for key, text in conflicts(BatchSpec(jobs=(), **batch_fields)):
        line = f"{defaults_path(key or '')}: {text}"
        problems.append(f"{source}: {line}" if source else line)
    ids = Ids()
    parts: list[Part] = []
    held: list[JobSpec] = []
    # Batch-wide backend settings that shape answers (which model, which server) go into each
    # job's content hash, so resuming against another model runs the jobs again.
    shared = {} if shared is None else shared
    shared.update({("answer", name): answer_settings(s) for name, s in backend_settings.items()})
    backends: set[str] = set()

    def one(checked: CheckedJob) -> None:
        local = list(checked.problems)
        job = _resolve_job(checked, job_defaults, overrides, local, shared, defaults_path)
        file = checked.file or source
        problems.extend(f"{file}: {p}" if file else p for p in local)
        if job is None:
            return
        job_id = ids.take(job.id, derived=checked.fields.get("id") is None)
        if job_id is not None:
            ids.places[job_id] = checked.path or (checked.file or "")
        else:
            duplicate = f"{join(checked.path, 'id')}: duplicate id {job.id!r} (also at {ids.where(job.id)})"
            problems.append(f"{file}: {duplicate}" if file else duplicate)
            return
        if job_id != job.id or checked.row is not None:
            job = attrs.evolve(job, id=job_id, row=job.row if checked.row is None else checked.row)
        backends.add(job.backend)
        held.append(job)

    for item in jobs:
        if isinstance(item, CheckedJob):
            one(item)
            continue
        start = len(problems)
        plain = _first_in_full(item, one, held, shared)
        if plain is None:  # the first row has problems: check every row in full
            for i in range(1, len(item.ids)):
                if too_many(problems, start, item.name):  # a bad default: the same for each row
                    break
                one(check_job(item.source(i)))
            continue
        if held:
            parts.append(Held(held))
            held = []
        rows = lazy_rows(item, plain, ids, problems)
        if rows is not None:
            parts.append(rows)
            backends.add(plain.backend)
    if held:
        parts.append(Held(held))
    for name in sorted(backends - set(backend_settings)):
        backend_settings[name] = backend_kind(name).Settings()
    problems.extend(f"{source}: {p}" if source else p for p in late_problems)
    if problems:
        return None
    return BatchSpec(
        jobs=Jobs(parts), backends=backend_settings, limits=limits, source=source, **batch_fields
    )


def _first_in_full(
    rows: PlainRows, one: Callable[[CheckedJob], None], held: list[JobSpec], shared: dict[Any, Any]
) -> PlainJobs | None:
    """Resolve the first of ``rows`` in full (it checks the defaults every row takes) and make
    the :class:`PlainJobs` the rest are made from; None when it had problems. The first row's job
    is held like any other."""
    before = len(held)
    checked = check_job(rows.source(0))
    one(checked)
    if len(held) == before or checked.problems:
        return None
    return PlainJobs(held[-1], shared["payload"], system="system" in checked.fields)


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
    plain: PlainJobs | None = shared.get("plain jobs")
    if plain is not None and not checked.problems and is_plain(checked.fields):
        shared["payload"] = plain.payload
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
    prompt = merged.get("prompt")
    if type(prompt) is str and blank(prompt) and (prompt or not merged.get("messages")):
        problems.append(f"{join(path, 'prompt')}: {BLANK_PROMPT}")
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
    job_id = merged.pop("id", None) or derived_id(named)
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
    if not checked.problems and is_plain(fields):
        shared["plain jobs"] = PlainJobs(job, payload)
    shared["payload"] = payload  # for a PlainJobs made from this job (see _lazy_rows)
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


def _conversation_problems(merged: Mapping[str, Any], path: str, fields: Mapping[str, Any]) -> Problems:
    """A conversation must end with a user turn: the prompt, or else the last message."""
    messages = merged.get("messages")
    if not messages or merged.get("prompt") or not all(messages):
        return []
    if messages[-1].role != "user":
        where = join(path, "messages") if "messages" in fields else "defaults.messages"
        return [f"{where}: the conversation must end with a user turn (or give a prompt)"]
    return []
