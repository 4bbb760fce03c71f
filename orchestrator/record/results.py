"""The results table: one row per job, the same columns in every file, library call and export.

:func:`result_row` is the schema, the one place that says which columns a row has and in what
order; every writer (JSONL, CSV, Parquet, ``BatchResult.rows()``, ``orchestrate export``)
takes its rows. A row is a plain dict:

* ``id``, then the input row's columns as ``row.<column>`` (in the data file's order; the
  prefix keeps a column named ``text`` or ``status`` apart from ours, and ``row.<id column>``
  joins back to the data file);
* ``status``, ``text`` (the final answer), ``output`` (the parsed structured output, or null),
  ``tool_calls`` (a list of ``{id, name, input}``), ``stop_reason``;
* ``input_tokens``, ``output_tokens``, ``cache_read_tokens``, ``cache_creation_tokens``,
  ``cost_usd``, ``attempts``, ``deduplicated_from`` (the job whose identical request answered
  this one, its cost then 0; null for a job that sent its own), ``error_kind``, ``error``,
  ``ttft_s``, ``duration_s``;
* ``backend``, ``model``, ``request_id`` (the provider's request id when known),
  ``session_id`` (the provider's reply or session id), ``metadata`` (the job's table).

JSONL keeps nested values (lists, tables, parsed output) as JSON; the table formats (CSV,
Parquet, DataFrames, see :func:`table_cell`) hold them as JSON text, and a table's header is
``id``, every ``row.`` column met (first seen first), then the fixed columns, with each
top-level field of a parsed output that is an object as ``output.<field>`` after ``output``.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from orchestrator.install import install_extra
from orchestrator.record.job_result import JobResult

ROW_PREFIX = "row."
OUTPUT_PREFIX = "output."
COLUMNS = (
    "status",
    "text",
    "output",
    "tool_calls",
    "stop_reason",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "cost_usd",
    "attempts",
    "deduplicated_from",
    "error_kind",
    "error",
    "ttft_s",
    "duration_s",
    "backend",
    "model",
    "request_id",
    "session_id",
    "metadata",
)
"""The fixed columns, in order, after ``id`` and the ``row.`` columns."""
_INTEGERS = frozenset(
    ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens", "attempts")
)
_FLOATS = frozenset(("cost_usd", "ttft_s", "duration_s"))
FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
PARQUET_INSTALL = install_extra("parquet")

Row = dict[str, Any]


def result_row(result: JobResult) -> Row:
    """A job's result as a results row (columns: module docstring); JSON-ready values only."""
    row: Row = {"id": result.job_id}
    for column, value in result.row.items():
        row[ROW_PREFIX + column] = value
    tokens = result.tokens
    row.update(
        status=result.status,
        text=result.text,
        output=result.output,
        tool_calls=[{"id": c.call_id, "name": c.name, "input": dict(c.input)} for c in result.tool_calls],
        stop_reason=result.stop_reason,
        input_tokens=tokens.input,
        output_tokens=tokens.output,
        cache_read_tokens=tokens.cache_read,
        cache_creation_tokens=tokens.cache_creation,
        cost_usd=result.cost_usd,
        attempts=result.attempts,
        deduplicated_from=result.deduplicated_from,
        error_kind=None if result.error_kind is None else str(result.error_kind),
        error=result.error,
        ttft_s=result.ttft_s,
        duration_s=result.duration_s,
        backend=result.backend,
        model=result.model,
        request_id=result.request_id,
        session_id=result.session_id,
        metadata=dict(result.metadata),
    )
    return row


def results_format(path: str | os.PathLike[str]) -> str | None:
    """The format a results path names by its extension (``jsonl``, ``csv``, ``parquet``), or None."""
    return FORMATS.get(Path(path).suffix.lower())


def jsonl_line(row: Row) -> bytes:
    """One results row as a JSONL line (keys in schema order)."""
    return orjson.dumps(row, option=orjson.OPT_NON_STR_KEYS) + b"\n"


def table_columns(rows: Iterable[Row]) -> list[str]:
    """The header of a results table: ``id``, the ``row.`` columns first seen first, the fixed
    columns, with ``output.<field>`` after ``output`` for each top-level field of a parsed
    output that is a JSON object (first seen first)."""
    inputs: dict[str, None] = {}
    fields: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key.startswith(ROW_PREFIX):
                inputs.setdefault(key, None)
        output = row.get("output")
        if isinstance(output, Mapping):
            for field in output:
                fields.setdefault(OUTPUT_PREFIX + str(field), None)
    at = COLUMNS.index("output") + 1
    return ["id", *inputs, *COLUMNS[:at], *fields, *COLUMNS[at:]]


def table_value(row: Row, column: str) -> Any:
    """The value of ``column`` (a :func:`table_columns` name) in a row; None when it has none."""
    if column in row:
        return row[column]
    if column.startswith(OUTPUT_PREFIX):
        output = row.get("output")
        if isinstance(output, Mapping):
            return output.get(column[len(OUTPUT_PREFIX) :])
    return None


def table_cell(value: Any) -> str | int | float | bool | None:
    """A value as a table holds it: scalars as they are, lists and tables as JSON text."""
    if isinstance(value, (list, tuple, dict, Mapping)):
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    return value  # type: ignore[no-any-return]


def _csv_text(value: Any) -> str:
    cell = table_cell(value)
    if cell is None:
        return ""
    if isinstance(cell, str):
        return cell
    return orjson.dumps(cell).decode()  # numbers and booleans as JSON writes them


def write_results(rows: Sequence[Row], path: str | os.PathLike[str]) -> None:
    """Write the rows to ``path`` in the format its extension names, replacing it atomically
    (a reader never sees half a file). Raises OSError, ValueError for an unknown extension,
    ImportError (naming the install command) for Parquet without pyarrow."""
    fmt = results_format(path)
    if fmt == "jsonl":
        data = b"".join(jsonl_line(row) for row in rows)
    elif fmt == "csv":
        data = csv_bytes(rows)
    elif fmt == "parquet":
        data = parquet_bytes(rows)
    else:
        raise ValueError(f"{path}: results file must end in .jsonl, .csv or .parquet")
    replace_file(path, data)


def csv_bytes(rows: Sequence[Row]) -> bytes:
    """The rows as CSV (UTF-8, a header line, ``\\r\\n`` line ends as RFC 4180 has them)."""
    columns = table_columns(rows)
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_text(table_value(row, column)) for column in columns])
    return out.getvalue().encode()


def table(rows: Sequence[Row]) -> dict[str, list[Any]]:
    """The rows column by column, as the table formats hold them (:func:`table_cell`)."""
    return {column: [table_cell(table_value(row, column)) for row in rows] for column in table_columns(rows)}


def to_pandas(rows: Sequence[Row]) -> Any:
    """The rows as a pandas DataFrame (table form); ImportError naming the install command."""
    try:
        import pandas
    except ImportError:
        raise ImportError("to_pandas() needs pandas: pip install pandas") from None
    return pandas.DataFrame(table(rows))


def to_polars(rows: Sequence[Row]) -> Any:
    """The rows as a polars DataFrame (table form; a column of mixed types is cast, not refused);
    ImportError naming the install command."""
    try:
        import polars
    except ImportError:
        raise ImportError("to_polars() needs polars: pip install polars") from None
    return polars.DataFrame(table(rows), strict=False)


def parquet_bytes(rows: Sequence[Row]) -> bytes:
    """The rows as a Parquet file (a column whose values differ in type is stored as text)."""
    pa, pq = import_pyarrow()
    arrays = {}
    for column, values in table(rows).items():
        if column.startswith((ROW_PREFIX, OUTPUT_PREFIX)):
            kind = None  # the data's own types, as found
        else:  # a fixed column has one type, even when every value is null
            kind = pa.int64() if column in _INTEGERS else pa.float64() if column in _FLOATS else pa.string()
        try:
            arrays[column] = pa.array(values, kind)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: keep each as its JSON text
            arrays[column] = pa.array([None if v is None else _csv_text(v) for v in values], pa.string())
    sink = io.BytesIO()
    pq.write_table(pa.table(arrays), sink)
    return sink.getvalue()


def import_pyarrow() -> tuple[Any, Any]:
    """pyarrow and pyarrow.parquet; ImportError naming the install command when missing."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(f"writing Parquet needs pyarrow: {PARQUET_INSTALL}") from None
    return pa, pq


def replace_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
