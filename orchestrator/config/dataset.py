"""Rows of a data file → job tables, through prompt templates.

A job file names a data file at the top level (``data_file = "rows.csv"``) and says in
``[defaults]`` how a row becomes a job::

    prompt_template = "Classify: {text}"   # default "{prompt}": a column holding the prompt
                                           # (none needed for rows with a messages column)
    system_template = "You label {lang} reviews."   # optional
    id_column = "review_id"                # or id_template = "r-{review_id}"; else derived
    columns = ["review_id", "label"]       # the columns kept with each job; default: all
    row_settings = ["model", "max_tokens"] # job settings taken from same-named columns

Every row is one job table (``id``, ``prompt``, ``system`` and the row's settings) that
:func:`orchestrator.config.resolve.resolve` checks like a ``[[jobs]]`` table, with
``FILE: row N`` in its problems. A plain row (no settings of its own, no ``messages``, every
column the templates name) is checked with a few cheap tests instead and kept as JSON bytes;
its job is made when the run comes to it (see :mod:`orchestrator.config.sources`), so a
million-row file starts in seconds and is never held as a million jobs.

Without an id column or template, a job's id is derived from its rendered prompt (the same as a
``[[jobs]]`` table without an id), so it stays the same when rows are added or reordered; rows
with equal prompts get ``-2``, ``-3`` in row order.
"""

from __future__ import annotations

import itertools
import operator
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import attrs
import orjson

from orchestrator.config.check import Problems, check_value, describe, did_you_mean, type_hints
from orchestrator.config.data import Record, Row, blocks, number, read_blocks, stdin_records
from orchestrator.config.resolve import NO_OVERRIDES, Overrides, resolve
from orchestrator.config.sources import (
    MAX_ROW_PROBLEMS,
    JobSource,
    PlainRows,
    any_blank,
    blank,
    collector_paused,
    derived_id,
    too_many,
)
from orchestrator.config.template import MissingColumn, Template, TemplateError, parse
from orchestrator.errors import ConfigError
from orchestrator.spec import BatchSpec, JobSpec

ROW_SETTINGS = ("backend", "model", "system", "max_tokens", "temperature", "seed")


@attrs.frozen
class DataSettings:
    """How rows become jobs (the data keys of ``[defaults]``)."""

    prompt_template: str | None = None
    """None: a row's ``prompt`` column, or no prompt when the row has ``messages`` only."""
    system_template: str | None = None
    id_column: str | None = None
    id_template: str | None = None
    columns: tuple[str, ...] | None = None
    row_settings: tuple[str, ...] = attrs.field(default=(), metadata={"choices": ROW_SETTINGS})


DATA_KEYS = tuple(f.name for f in attrs.fields(DataSettings))


def take_data_settings(defaults: Any, problems: Problems, *, has_data: bool) -> DataSettings | None:
    """Remove the data keys from the ``[defaults]`` table (in place) and check them.

    Problems use the key path ``defaults.KEY``. Returns None when there are problems (or no
    data file and no data keys).
    """
    if not isinstance(defaults, dict):
        return DataSettings() if has_data else None
    found = {key: defaults.pop(key) for key in DATA_KEYS if key in defaults}
    if not has_data:
        for key in found:
            problems.append(f"defaults.{key}: applies to a data file: set data_file (top level)")
        return None
    start = len(problems)
    hints = type_hints(DataSettings)
    fields = attrs.fields_dict(DataSettings)
    checked = {
        key: check_value(value, hints[key], f"defaults.{key}", fields[key].metadata, problems)
        for key, value in found.items()
    }
    if "id_column" in checked and "id_template" in checked:
        problems.append("defaults.id_template: give id_column or id_template, not both")
    for key in ("prompt_template", "system_template", "id_template"):
        text = checked.get(key)
        if isinstance(text, str):
            try:
                parse(text)
            except TemplateError as exc:
                problems.append(f"defaults.{key}: {exc}")
    if len(problems) > start:
        return None
    return DataSettings(**{k: v for k, v in checked.items() if v is not None})


def data_file_jobs(
    data: Mapping[str, Any], path: Path, name: str, problems: Problems
) -> list[JobSource | PlainRows]:
    """The jobs of a job file's ``data_file`` (none without one), ``path`` the job file's.

    Takes the data keys out of ``data["defaults"]``.
    """
    data_file = data.get("data_file")
    local: Problems = []
    settings = take_data_settings(data.get("defaults"), local, has_data=data_file is not None)
    if data_file is not None and not isinstance(data_file, str):
        local.append(f"data_file: expected a string (a path), got {describe(data_file)}")
    problems.extend(f"{name}: {p}" for p in local)
    if settings is None or not isinstance(data_file, str):
        return []
    where = str(path.parent / data_file)
    return row_jobs(read_blocks(path.parent / data_file, where, problems), settings, where, problems)


@collector_paused
def load_data_file(
    source: str,
    defaults: Mapping[str, Any],
    overrides: Overrides = NO_OVERRIDES,
    *,
    stdin: IO[bytes] | None = None,
) -> BatchSpec:
    """A batch straight from a data file (or ``-``: ``stdin``), without a job file.

    ``defaults`` is laid out like a job file's ``[defaults]`` (the data keys included);
    raises :class:`ConfigError` listing every problem.
    """
    problems: Problems = []
    layer = dict(defaults)
    settings = take_data_settings(layer, problems, has_data=True)
    if settings is None:
        raise ConfigError(problems)
    if source == "-":
        name = "stdin"
        rows = blocks(stdin_records(stdin if stdin is not None else sys.stdin.buffer, name, problems))
    else:
        name = source
        rows = read_blocks(Path(source), name, problems)
    jobs = row_jobs(rows, settings, name, problems)
    spec = resolve(layer, jobs, {}, overrides=overrides, source=name, problems=problems)
    if spec is None or problems:
        raise ConfigError(problems)
    return spec


class _Rendering:
    """How one row becomes a job table (see the module docstring), with the templates parsed."""

    def __init__(self, settings: DataSettings) -> None:
        self.settings = settings
        self.prompt = parse(settings.prompt_template or "{prompt}")
        self.system = parse(settings.system_template) if settings.system_template is not None else None
        self.ident = parse(settings.id_template) if settings.id_template is not None else None
        self.hints = type_hints(JobSpec)
        # What a plain row (see row_jobs) must have: every column a template names or that is kept.
        needed = set(self.prompt.columns)
        for template in (self.system, self.ident):
            needed.update(template.columns if template is not None else ())
        needed.update(settings.columns or ())
        if settings.id_column is not None:
            needed.add(settings.id_column)
        self.needed = frozenset(needed)
        # A row whose prompt is blank is not plain (see is_plain): only a template whose text
        # outside its columns is whitespace alone can render one.
        self.prompt_may_be_blank = not any(map(str.strip, self.prompt.parts[0::2]))

    def table(self, row: Mapping[str, Any], problems: Problems) -> tuple[dict[str, Any], Mapping[str, Any]]:
        """The row's job table and the columns kept with it; what is wrong goes to ``problems``."""
        settings = self.settings
        table: dict[str, Any] = {}
        if "messages" in row:
            table["messages"] = row["messages"]
        if settings.prompt_template is not None or "prompt" in row or "messages" not in row:
            table["prompt"] = _render(self.prompt, row, problems)
        if self.system is not None:
            table["system"] = _render(self.system, row, problems)
        if self.ident is not None:
            job_id = _render(self.ident, row, problems)
            if job_id:  # an empty id is no id: derived, as for an empty cell below
                table["id"] = job_id
        elif settings.id_column is not None:
            value = _column(row, settings.id_column, problems)
            if isinstance(value, bool) or not isinstance(value, str | int | None):
                problems.append(
                    f"column {settings.id_column!r}: expected a string or integer id, got {describe(value)}"
                )
            elif value is not None and value != "":  # an empty cell is no id: derived
                table["id"] = str(value)
        for key in settings.row_settings:
            value = row.get(key)
            if value is None or value == "":
                continue  # an empty cell leaves the setting to [defaults]
            table[key] = _from_cell(value, self.hints[key])
        kept = row
        if settings.columns is not None:
            kept = {}
            for column in settings.columns:
                value = _column(row, column, problems)
                if column in row:
                    kept[column] = value
        return table, kept

    def plain_table(self, compact: bytes) -> tuple[dict[str, Any], Mapping[str, Any]]:
        """A plain row's job table (prompt and system: its id is kept apart) and kept columns,
        from its JSON bytes: nothing left to check (see :meth:`plain_id`)."""
        row = orjson.loads(compact)
        table = {"prompt": self.prompt.render(row)}
        if self.system is not None:
            table["system"] = self.system.render(row)
        columns = self.settings.columns
        return table, row if columns is None else {column: row[column] for column in columns}

    def plain_block(self, rows: Sequence[Row]) -> tuple[list[str], bytes] | None:
        """For a block of rows that are all plain, their ids and derived flags (as
        :meth:`plain_id` gives them), found with no step per row in Python; else None."""
        settings = self.settings
        if settings.row_settings:
            return None  # row by row: which rows set a setting is a question per row
        if not all(map(operator.le, itertools.repeat(self.needed), map(dict.keys, rows))):
            return None
        if any(map(operator.contains, rows, itertools.repeat("messages"))):
            return None
        prompts = list(map(self.prompt.render, rows)) if self.prompt_may_be_blank else None
        if prompts is not None and any_blank(prompts):
            return None
        if self.ident is None and settings.id_column is None:
            rendered = prompts if prompts is not None else map(self.prompt.render, rows)
            return list(map(derived_id, rendered)), b"\x01" * len(rows)
        if self.ident is not None:
            ids = list(map(self.ident.render, rows))
        else:
            ids = list(map(operator.itemgetter(settings.id_column), rows))
            if set(map(type, ids)) != {str}:
                return None  # numbers, or no id in some rows: row by row
        if "" in ids or any(map(operator.contains, ids, itertools.repeat("\0"))):
            return None
        return ids, bytes(len(rows))

    def plain_id(self, row: Mapping[str, Any]) -> tuple[str, int] | None:
        """For a plain row, its job's id and whether it is derived (1); None for a row that is
        not plain: it is checked in full. (Replaced by a closure for the settings at hand.)"""
        return self.plain_ids()(row)

    def plain_ids(self) -> Callable[[Mapping[str, Any]], tuple[str, int] | None]:
        """:meth:`plain_id` with the settings' lookups done once (it runs for every row)."""
        needed, row_settings, ident = self.needed, self.settings.row_settings, self.ident
        id_column, prompt, prompt_may_be_blank = (
            self.settings.id_column,
            self.prompt,
            self.prompt_may_be_blank,
        )

        def plain_id(row: Mapping[str, Any]) -> tuple[str, int] | None:
            if not needed <= row.keys() or "messages" in row:
                return None
            if prompt_may_be_blank and blank(prompt.render(row)):
                return None
            for key in row_settings:
                if row.get(key) not in (None, ""):
                    return None
            if ident is not None:
                job_id: Any = ident.render(row)
            elif id_column is not None:
                job_id = row[id_column]
                if type(job_id) is int:
                    job_id = str(job_id)
                elif job_id is not None and type(job_id) is not str:
                    return None
            else:
                return derived_id(prompt.render(row)), 1
            if job_id is None or job_id == "":  # no id (see table)
                return derived_id(prompt.render(row)), 1
            if "\0" in job_id:
                return None
            return job_id, 0

        return plain_id


def row_jobs(
    blocks: Iterable[list[Record]], settings: DataSettings, name: str, problems: Problems
) -> list[JobSource | PlainRows]:
    """The jobs of the rows (given a block at a time) in order: plain rows (those that set no job
    setting of their own and have every column the templates name) as :class:`PlainRows`, kept
    as JSON bytes and checked no further; every other row as a job table, checked in full later.
    Every bad row is a problem ``NAME: row N: ...``. A block of plain rows is checked with no
    step per row in Python; a block with any other row is checked row by row.

    Stops (with a line saying so) once more than :data:`MAX_ROW_PROBLEMS` problems were found.
    """
    rendering = _Rendering(settings)
    dumps, remake = orjson.dumps, rendering.plain_table
    jobs: list[JobSource | PlainRows] = []
    plain = PlainRows(name, "row", remake)
    start = len(problems)
    plain_id, plain_block = rendering.plain_ids(), rendering.plain_block
    for block in blocks:
        if too_many(problems, start, name):  # the reader's own (bad lines) count too
            return [*jobs, plain] if plain.ids else jobs
        if not block:
            continue
        numbers, rows, lines = zip(*block, strict=True)
        found = plain_block(rows)
        if found is not None:
            if lines[0] is None:  # a copy of orjson's bytes: its own object keeps a 4 KiB buffer
                lines = tuple(_copies(map(dumps, rows)))
            plain.compact.extend(lines)
            plain.numbers.extend(numbers)
            plain.ids.extend(found[0])
            plain.derived.extend(found[1])
            continue
        for n, row, line in block:
            one = plain_id(row)
            if one is not None:
                plain.compact.append(line if line is not None else bytes(memoryview(dumps(row))))
                plain.numbers.append(n)
                plain.ids.append(one[0])
                plain.derived.append(one[1])
                continue
            if too_many(problems, start, name):
                return [*jobs, plain] if plain.ids else jobs
            local: Problems = []
            table, kept = rendering.table(row, local)
            if local:
                problems.extend(f"{name}: row {number(n)}: {p}" for p in local)
                continue
            if plain.ids:
                jobs.append(plain)
                plain = PlainRows(name, "row", remake)
            jobs.append(JobSource(f"{name}: row {number(n)}", "", table, kept))
    if len(problems) - start > MAX_ROW_PROBLEMS:  # the reader's, after the last block
        too_many(problems, start, name)
    if plain.ids:
        jobs.append(plain)
    return jobs


def _copies(data: Iterable[bytes]) -> Iterator[bytes]:
    """Exact-size copies (orjson's own bytes object keeps its whole 4 KiB buffer)."""
    return map(bytes, map(memoryview, data))  # type: ignore[arg-type]


def _render(template: Template, row: Mapping[str, Any], problems: Problems) -> str:
    try:
        return template.render(row)
    except MissingColumn as exc:
        problems.append(f"{exc}{did_you_mean(exc.column, row)}")
        return ""


def _column(row: Mapping[str, Any], column: str, problems: Problems) -> Any:
    if column not in row:
        problems.append(f"column {column!r} is missing{did_you_mean(column, row)}")
        return None
    return row[column]


def _from_cell(value: Any, hint: Any) -> Any:
    """A CSV cell (always text) read as the number a numeric setting wants; other values as
    they are (the job check reports what does not fit)."""
    if not isinstance(value, str):
        return value
    wanted = {int | None: int, float | None: float}.get(hint)
    if wanted is None:
        return value
    try:
        return wanted(value)
    except ValueError:
        return value
