"""Library arguments → a validated :class:`~orchestrator.spec.BatchSpec`, without a job-file detour.

:func:`~orchestrator.api.run_batch` and :func:`~orchestrator.api.open_batch` take the same
keywords, :class:`BatchKeywords`, defined here once. Typed values (:class:`RetryPolicy`,
:class:`Timeouts`, :class:`Query`) are checked as they are, against the rules the job file meets
(field metadata and ``conflicts()`` in :mod:`orchestrator.spec`, enforced by
:mod:`orchestrator.config.check`); mappings are checked as tables. Problems name the argument:
``run_batch(retry=...): max_delay (1.0) is below base_delay (10.0)``,
``run_batch(queries=...)[2].prompt: required``. Merging defaults into jobs, ids and content
hashes are the job file's own (:func:`~orchestrator.config.resolve.assemble`), so a job gets the
same hash whichever way it was given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

import attrs

from orchestrator.backends import backend_kind, known_backends
from orchestrator.config.backends import resolve_backends
from orchestrator.config.check import (
    Problems,
    check_table,
    check_value,
    did_you_mean,
    join,
    refuse_lone_surrogates,
    type_hints,
)
from orchestrator.config.output import read_output_schema
from orchestrator.config.resolve import (
    BATCH_KEYS,
    CheckedJob,
    assemble,
    check_job,
)
from orchestrator.config.sources import JobSource
from orchestrator.errors import ConfigError
from orchestrator.spec import BatchSpec, FsyncPolicy, HaltPolicy, JobSpec, Query, RetryPolicy, Timeouts

QueryLike = str | Query | Mapping[str, Any]


class BatchKeywords(TypedDict, total=False):
    """The keywords of :func:`~orchestrator.api.run_batch` and :func:`~orchestrator.api.open_batch`.

    What to run: ``backend`` (required unless every query names its own: there is no silent
    simulator), ``options`` (its per-job options),
    ``backend_settings`` (backend name → batch-wide settings), and the job defaults ``model``,
    ``system``, ``max_tokens``, ``temperature``, ``metadata``, ``retry`` and ``timeouts``
    (a :class:`RetryPolicy` / :class:`Timeouts` or a mapping of their fields), ``output_schema``
    (a JSON Schema every reply must meet: a mapping or its JSON text). The batch:
    ``concurrency`` (default 16), ``log``, ``deadline``, ``seed``, ``fsync``, ``name``,
    ``max_cost_usd``, ``hard_cap``, ``halt``, ``dedupe`` (default True: jobs whose requests are
    identical are sent once). How: ``keep_text`` (default True), ``resume`` (a log:
    leave out what it shows done and append to it), ``retry_failed``, ``force`` (write into a
    log another job file wrote), ``engine`` (``"local"``, the default, or ``"ray"``: attempts
    run on a Ray cluster) and ``address`` (the Ray cluster to join; without it a local Ray
    instance is started for the run).
    """

    backend: str
    options: Mapping[str, Any] | None
    backend_settings: Mapping[str, Mapping[str, Any]] | None
    model: str | None
    system: str | None
    max_tokens: int | None
    temperature: float | None
    metadata: Mapping[str, Any]
    retry: RetryPolicy | Mapping[str, Any] | None
    timeouts: Timeouts | Mapping[str, Any] | None
    output_schema: Mapping[str, Any] | str | None
    concurrency: int
    log: str | None
    deadline: float | None
    seed: int
    fsync: FsyncPolicy
    name: str
    max_cost_usd: float | None
    hard_cap: bool
    halt: HaltPolicy | Mapping[str, Any]
    dedupe: bool
    keep_text: bool
    resume: str | None
    retry_failed: bool
    force: bool
    engine: str
    address: str | None


KEYWORDS = frozenset(BatchKeywords.__optional_keys__)
_JOB_DEFAULTS = ("model", "system", "max_tokens", "temperature", "metadata")
_TYPED = {"retry": RetryPolicy, "timeouts": Timeouts}
# How to run, not what: the caller's to use.
_RUN_KEYS = ("keep_text", "resume", "retry_failed", "force", "engine", "address")


def library_batch(entry: str, queries: Iterable[QueryLike], keywords: Mapping[str, Any]) -> BatchSpec:
    """The batch that ``entry(queries, **keywords)`` asks for (``entry`` names the function in
    problems). Raises :class:`ConfigError` listing every problem; the ``_RUN_KEYS`` keywords are
    not part of the batch and are not looked at here."""

    def where(key: str) -> str:
        return f"{entry}({key}=...)"

    def defaults_path(key: str) -> str:
        return where("options" if key in known_backends() else key)

    problems: Problems = []
    for key in keywords:
        if key not in KEYWORDS:
            problems.append(f"{where(key)}: unknown keyword{did_you_mean(key, KEYWORDS)}")
    batch_fields: dict[str, Any] = {}
    for key in BATCH_KEYS:
        if key in keywords:
            batch_fields[key] = _field(BatchSpec, key, keywords[key], where(key), problems)
    queries = list(queries)
    not_text: Problems = []
    for i, query in enumerate(queries):
        refuse_lone_surrogates(query, f"{where('queries')}[{i}]", not_text)
    for key in (*_JOB_DEFAULTS, "options"):
        refuse_lone_surrogates(keywords.get(key), where(key), not_text)
    if not_text:  # (text that is not Unicode cannot even be hashed: stop here)
        raise ConfigError([*problems, *not_text])
    backend = keywords.get("backend")
    job_defaults: dict[str, Any] = {}
    if backend is None:
        # No silent simulator: every job names a real backend, or the caller chose sim on purpose.
        if not all(_backend_named(query) for query in queries):
            problems.append(f"{where('backend')}: {NO_BACKEND}")
        if keywords.get("options"):
            problems.append(f"{where('options')}: one backend's per-job options: pass backend= too")
    else:
        backend = check_value(backend, str, where("backend"), {}, problems)
        job_defaults["backend"] = backend
    if "seed" in batch_fields:  # the batch seed is also every job's default sampling seed
        job_defaults["seed"] = batch_fields["seed"]
    for key in _JOB_DEFAULTS:
        if key in keywords:
            job_defaults[key] = _field(JobSpec, key, keywords[key], where(key), problems)
    # Default objects built and checked once, here; jobs that do not set the key share them.
    shared: dict[Any, Any] = {}
    for key, cls in _TYPED.items():
        value = keywords.get(key)
        if value is None:
            continue
        policy = check_value(value, cls, where(key), {}, problems)
        if policy is not None:
            shared[(key, cls)] = policy
            job_defaults[key] = attrs.asdict(policy, recurse=False)  # for jobs that change some keys
    if keywords.get("output_schema") is not None:
        schema = read_output_schema(
            "output_schema", keywords["output_schema"], where("output_schema"), problems, base=None
        )
        if schema is not None:
            job_defaults["output_schema"] = schema
    options = keywords.get("options")
    if options and backend in known_backends():
        kind = backend_kind(backend)
        job_defaults[backend] = check_table(options, kind.Options, where("options"), problems) or {}
    settings = keywords.get("backend_settings") or {}
    backend_problems: Problems = []
    backend_settings, limits = resolve_backends(settings, where("backend_settings"), backend_problems)
    jobs = [_checked(query, f"{where('queries')}[{i}]", backend) for i, query in enumerate(queries)]
    if not jobs:
        problems.append(f"{where('queries')}: no queries given")
    spec = assemble(
        batch_fields,
        job_defaults,
        jobs,
        backend_settings,
        limits,
        source=None,
        problems=problems,
        late_problems=backend_problems,
        defaults_path=defaults_path,
        shared=shared,
    )
    if spec is None or problems:
        raise ConfigError(problems)
    return spec


NO_BACKEND = (
    "required: 'local' (a small model on your CPU, offline), 'anthropic', 'openai' or "
    "'claude-code' ('sim' is a simulator: made-up answers and costs)"
)


def _backend_named(query: Any) -> bool:
    if isinstance(query, Query):
        return query.backend is not None
    return isinstance(query, Mapping) and query.get("backend") is not None


def _checked(query: Any, path: str, default_backend: Any) -> CheckedJob:
    """One query's own settings, checked: a prompt, a :class:`Query` or a job-like mapping."""
    if isinstance(query, str):
        return CheckedJob(None, path, {"prompt": query})
    if isinstance(query, Query):
        local: Problems = []
        fields = _query_fields(query, path, default_backend, local)
        return CheckedJob(None, path, fields, tuple(local))
    return check_job(JobSource(None, path, query))


def _query_fields(query: Query, path: str, default_backend: Any, problems: Problems) -> dict[str, Any]:
    """A :class:`Query`'s set fields, checked against the job's rules (``JobSpec``'s metadata);
    its ``options`` against its backend's options."""
    fields: dict[str, Any] = {}
    for field in attrs.fields(Query):
        value = getattr(query, field.name)
        where = join(path, field.name)
        if field.name == "output_schema":
            if value is not None:
                fields[field.name] = read_output_schema(field.name, value, where, problems, base=None)
        elif field.name == "options":
            backend = query.backend or default_backend
            if value and backend in known_backends():
                fields[backend] = check_table(value, backend_kind(backend).Options, where, problems) or {}
        elif value is not None and (value or field.name != "metadata"):  # no metadata: the default's
            fields[field.name] = _field(JobSpec, field.name, value, where, problems)
    return fields


def _field(cls: type, key: str, value: Any, path: str, problems: Problems) -> Any:
    """``value`` checked as field ``key`` of ``cls`` (its type and metadata)."""
    return check_value(value, type_hints(cls)[key], path, attrs.fields_dict(cls)[key].metadata, problems)
