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
:func:`orchestrator.config.jobfile.resolve` checks like a ``[[jobs]]`` table, with
``FILE: row N`` in its problems. Without an id column or template, a job's id is derived
from its rendered prompt (the same as a ``[[jobs]]`` table without an id), so it stays the
same when rows are added or reordered; rows with equal prompts get ``-2``, ``-3`` in row order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from orchestrator.config.check import Problems, check_value, describe, did_you_mean, type_hints
from orchestrator.config.data import Rows, number
from orchestrator.config.template import MissingColumn, Template, TemplateError, parse
from orchestrator.spec import JobSpec

ROW_SETTINGS = ("backend", "model", "system", "max_tokens", "temperature", "seed")
MAX_ROW_PROBLEMS = 100  # a million bad rows are not a million lines on a terminal


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


@attrs.frozen
class RowJob:
    """A job table made from one row, the row's kept columns, and where the row is."""

    where: str
    table: dict[str, Any]
    row: Mapping[str, Any]


def row_jobs(rows: Rows, settings: DataSettings, name: str, problems: Problems) -> Iterator[RowJob]:
    """One job table per good row, lazily; every bad row is a problem ``NAME: row N: ...``.

    Stops (with a line saying so) once more than :data:`MAX_ROW_PROBLEMS` problems were found.
    """
    prompt = parse(settings.prompt_template or "{prompt}")
    system = parse(settings.system_template) if settings.system_template is not None else None
    ident = parse(settings.id_template) if settings.id_template is not None else None
    hints = type_hints(JobSpec)
    start = len(problems)
    for n, row in rows:
        if len(problems) - start >= MAX_ROW_PROBLEMS:
            problems.append(f"{name}: stopped reading after {MAX_ROW_PROBLEMS} problems")
            return
        where = f"{name}: row {number(n)}"
        local: Problems = []
        table: dict[str, Any] = {}
        if "messages" in row:
            table["messages"] = row["messages"]
        if settings.prompt_template is not None or "prompt" in row or "messages" not in row:
            table["prompt"] = _render(prompt, row, local)
        if system is not None:
            table["system"] = _render(system, row, local)
        if ident is not None:
            table["id"] = _render(ident, row, local)
        elif settings.id_column is not None:
            value = _column(row, settings.id_column, local)
            if isinstance(value, bool) or not isinstance(value, str | int | None):
                local.append(
                    f"column {settings.id_column!r}: expected a string or integer id, got {describe(value)}"
                )
            elif value is not None:
                table["id"] = str(value)
        for key in settings.row_settings:
            value = row.get(key)
            if value is None or value == "":
                continue  # an empty cell leaves the setting to [defaults]
            table[key] = _from_cell(value, hints[key])
        kept = row
        if settings.columns is not None:
            kept = {}
            for column in settings.columns:
                value = _column(row, column, local)
                if column in row:
                    kept[column] = value
        if local:
            problems.extend(f"{where}: {p}" for p in local)
            continue
        yield RowJob(where, table, kept)


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
