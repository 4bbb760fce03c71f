"""Data files: the rows of a ``.csv``, ``.tsv``, ``.jsonl`` or ``.parquet`` file, read lazily.

Each reader is a generator of ``(number, row)`` pairs, ``row`` a dict from column name to
value, read as it is consumed (a million-row file is never held as a million objects here).
Rows are numbered from 1: for CSV/TSV the records after the header line (a quoted field may
span lines), for JSONL the lines (blank lines count but yield nothing), for Parquet the rows.
A row that cannot be read is a problem appended to ``problems`` as ``FILE: row N: ...`` and
is skipped; problems with the file as a whole are ``FILE: ...``. Nothing here raises for bad
input.

CSV/TSV: the first line is the header; a UTF-8 byte order mark and CRLF line ends are
accepted; values are strings. JSONL: one JSON object per line (values of any JSON type).
Parquet needs the optional ``pyarrow`` (``pip install 'orchestrator-llm[parquet]'``); columns
of strings, numbers, booleans and lists/structs of those are supported.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from orchestrator.config.check import Problems, describe
from orchestrator.config.files import open_regular, unreadable
from orchestrator.install import install_extra

Row = dict[str, Any]
Rows = Iterator[tuple[int, Row]]
Record = tuple[int, Row, bytes | None]
Records = Iterator[Record]
"""Rows each with its JSON line, when it has one (kept as it is by plain rows: no re-encoding)."""
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
PARQUET_INSTALL = install_extra("parquet")


def data_format(path: str) -> str | None:
    """The format a file name says (``csv``, ``tsv``, ``jsonl``, ``parquet``), or None."""
    return FORMATS.get(Path(path).suffix.lower())


def number(n: int) -> str:
    """A row number as messages show it: ``1,204``."""
    return f"{n:,}"


def read_rows(path: Path, name: str, problems: Problems) -> Rows:
    """The rows of the data file at ``path`` (``name`` in messages), by its extension."""
    return ((n, row) for n, row, _ in read_records(path, name, problems))


def read_records(path: Path, name: str, problems: Problems) -> Records:
    """:func:`read_rows`, each row with its JSON line when the file is JSON lines (else None)."""
    fmt = data_format(str(path))
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        problems.append(f"{name}: unknown data file type {path.suffix or '(none)'!r}; known: {known}")
        return
    if fmt == "parquet":
        yield from _no_lines(_parquet_rows(path, name, problems))
        return
    try:
        f = open_regular(path)  # closed by the with below, kept open while rows are read
    except IsADirectoryError:
        problems.append(f"{name}: is a directory, not a data file")
        return
    except FileNotFoundError:
        problems.append(f"{name}: no such file")
        return
    except OSError as exc:
        problems.append(f"{name}: {unreadable(exc)}")
        return
    with f:
        if fmt == "jsonl":
            yield from jsonl_records(f, name, problems)
        else:
            yield from _csv_file_rows(f, name, problems, delimiter="\t" if fmt == "tsv" else ",")


def _no_lines(rows: Rows) -> Records:
    for n, row in rows:
        yield n, row, None


def jsonl_rows(lines: Iterable[bytes], name: str, problems: Problems) -> Rows:
    """Rows from JSON lines, each a JSON object."""
    return ((n, row) for n, row, _ in jsonl_records(lines, name, problems))


def jsonl_records(lines: Iterable[bytes], name: str, problems: Problems) -> Records:
    """:func:`jsonl_rows`, each row with its line."""
    for block in jsonl_blocks(lines, name, problems):
        yield from block


def jsonl_blocks(lines: Iterable[bytes], name: str, problems: Problems) -> Iterator[list[Record]]:
    """:func:`jsonl_records` a block of lines at a time: a block of good rows is parsed with no
    step per line in Python; a block holding a blank or bad line is read line by line (and is
    empty when no line of it was a row)."""
    it = iter(lines)
    seen = False
    n = 1
    while block := list(itertools.islice(it, _BLOCK)):
        try:
            rows = list(map(orjson.loads, block))
        except orjson.JSONDecodeError:
            rows = None
        if rows is not None and set(map(type, rows)) == {dict}:
            good: list[Record] = list(zip(range(n, n + len(block)), rows, block, strict=True))
            yield good
            seen = True
        else:
            records = list(_jsonl_lines(block, n, name, problems))
            if n == 1 and block[0].startswith(BOM):
                block[0] = block[0][3:]
            seen = seen or bool(records) or any(line.strip() for line in block)
            yield records  # even empty: the reader's caller may stop after so many problems
        n += len(block)
    if not seen:
        problems.append(f"{name}: empty file: no rows")


_BLOCK = 2048  # lines read and checked at once
BOM = b"\xef\xbb\xbf"


def blocks(records: Records) -> Iterator[list[Record]]:
    """``records`` a block at a time."""
    while block := list(itertools.islice(records, _BLOCK)):
        yield block


def read_blocks(path: Path, name: str, problems: Problems) -> Iterator[list[Record]]:
    """:func:`read_records` a block at a time (JSON lines read a block at a time, too)."""
    if data_format(str(path)) != "jsonl":
        yield from blocks(read_records(path, name, problems))
        return
    try:
        f = open_regular(path)  # closed by the with below, kept open while rows are read
    except OSError:
        yield from blocks(read_records(path, name, problems))  # it says what is wrong
        return
    with f:
        yield from jsonl_blocks(f, name, problems)


def _jsonl_lines(lines: list[bytes], first: int, name: str, problems: Problems) -> Records:
    """The rows of ``lines`` (the first numbered ``first``), one at a time: a problem for each
    line that is not a JSON object."""
    for n, line in enumerate(lines, start=first):
        if n == 1 and line.startswith(BOM):
            line = line[3:]
        if not line.strip():
            continue  # a blank line is not a row
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            problems.append(f"{name}: row {number(n)}: invalid JSON: {exc}")
            continue
        if type(value) is not dict:
            problems.append(f"{name}: row {number(n)}: expected a JSON object, got {describe(value)}")
            continue
        yield n, value, line


def stdin_rows(lines: Iterable[bytes], name: str, problems: Problems) -> Rows:
    """Rows from standard input: JSON objects, one a line, when the first non-blank line starts
    with ``{``; otherwise every non-blank line is one prompt, as the row ``{"prompt": line}``."""
    return ((n, row) for n, row, _ in stdin_records(lines, name, problems))


def stdin_records(lines: Iterable[bytes], name: str, problems: Problems) -> Records:
    """:func:`stdin_rows`, each row with its JSON line (None for a prompt line)."""
    it = iter(lines)
    head: list[bytes] = []
    for line in it:
        head.append(line)
        if line.strip():
            break
    first = head[-1].lstrip() if head else b""
    if first.startswith(b"{"):
        yield from jsonl_records(_chain(head, it), name, problems)
        return
    seen = False
    for n, line in enumerate(_chain(head, it), start=1):
        text = _decode_line(line, name, n, problems)
        if text is None:
            continue
        text = text.rstrip("\r\n")
        if text.strip():
            seen = True
            yield n, {"prompt": text}, None
    if not seen:
        problems.append(f"{name}: empty input: no prompts")


def _chain(head: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    yield from head
    yield from rest


def _decode_line(line: bytes, name: str, n: int, problems: Problems) -> str | None:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(f"{name}: line {number(n)}: not UTF-8 text (byte 0x{line[exc.start]:02x})")
        return None


def csv_rows(lines: Iterable[bytes], name: str, problems: Problems, *, delimiter: str = ",") -> Rows:
    """Rows from CSV (or TSV) lines: a header, then records with exactly the header's fields."""
    bad_text: list[int] = []

    def text_lines() -> Iterator[str]:
        for n, line in enumerate(lines, start=1):
            if n == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            try:
                text = line.decode()
            except UnicodeDecodeError as exc:
                problems.append(f"{name}: line {number(n)}: not UTF-8 text (byte 0x{line[exc.start]:02x})")
                # Decoded lossily so the records after it stay aligned; the record holding it
                # is dropped below.
                bad_text.append(n)
                text = line.decode("utf-8", errors="replace")
            yield text

    return ((n, row) for n, row, _ in _csv_records(text_lines(), name, problems, delimiter, bad_text))


def _csv_file_rows(f: IO[bytes], name: str, problems: Problems, *, delimiter: str) -> Records:
    """:func:`csv_rows` of a file: when it is all UTF-8 (checked first, in blocks), decoded as a
    whole rather than line by line."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        while block := f.read(1 << 20):
            decoder.decode(block)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        f.seek(0)
        yield from _no_lines(csv_rows(f, name, problems, delimiter=delimiter))  # says which lines
        return
    f.seek(0)
    with io.TextIOWrapper(f, encoding="utf-8-sig", newline="") as text:
        yield from _csv_records(text, name, problems, delimiter, [])


def _csv_records(
    text: Iterable[str], name: str, problems: Problems, delimiter: str, bad_text: list[int]
) -> Records:
    """The rows of CSV text; ``bad_text`` holds the numbers of lines that were not UTF-8 (the
    record holding one is dropped: it was reported)."""
    reader = csv.reader(text, delimiter=delimiter, strict=True)
    header: list[str] | None = None
    row_number = 0
    try:
        for record in reader:
            if header is None:
                if not record:
                    continue  # blank lines before the header
                if bad_text:
                    return  # a header that is not text: nothing after it can be read
                header = record
                if not _check_header(header, name, problems):
                    return
                width = len(header)
                continue
            if not record:
                continue  # a blank line is not a row
            row_number += 1
            if bad_text:
                bad_text.clear()
                continue  # already reported as not UTF-8
            if len(record) != width:
                problems.append(
                    f"{name}: row {number(row_number)} (line {number(reader.line_num)}): "
                    f"expected {width} fields (as the header), got {len(record)}"
                )
                continue
            yield row_number, dict(zip(header, record, strict=False)), None  # same length: checked
    except csv.Error as exc:
        where = f"row {number(row_number + 1)}" if header is not None else "header"
        problems.append(f"{name}: {where} (line {number(reader.line_num)}): bad CSV: {exc}")
        return  # the reader cannot resynchronise after bad quoting
    if header is None and not bad_text:
        problems.append(f"{name}: empty file: no header and no rows")
    elif row_number == 0 and header is not None:
        problems.append(f"{name}: no rows after the header")


def _check_header(header: list[str], name: str, problems: Problems) -> bool:
    ok = True
    seen: set[str] = set()
    for i, column in enumerate(header, start=1):
        if not column:
            problems.append(f"{name}: header: column {i} has no name")
            ok = False
        elif column in seen:
            problems.append(f"{name}: header: column {column!r} appears twice")
            ok = False
        seen.add(column)
    return ok


_PARQUET_SCALARS = ("string", "large_string", "bool", "int", "uint", "float", "double", "halffloat", "null")


def _parquet_rows(path: Path, name: str, problems: Problems) -> Rows:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        problems.append(f"{name}: reading Parquet needs pyarrow: {PARQUET_INSTALL}")
        return
    try:
        file = pq.ParquetFile(path)
    except FileNotFoundError:
        problems.append(f"{name}: no such file")
        return
    except Exception as exc:  # pyarrow raises its own error types for files it cannot read
        problems.append(f"{name}: not a readable Parquet file: {exc}")
        return
    bad = [(f.name, str(f.type)) for f in file.schema_arrow if not _supported(f.type)]
    for column, kind in bad:
        problems.append(f"{name}: column {column!r}: unsupported type {kind} (use strings or numbers)")
    if bad:
        return
    n = 0
    for batch in file.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            n += 1
            yield n, _finite(row)
    if n == 0:
        problems.append(f"{name}: empty file: no rows")


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """The row with a float NaN or infinity (how Parquet writers mark a missing number) as None:
    what JSON, the log and the results file can say, so a row reads the same kept as JSON
    bytes or checked in full."""
    for column, value in row.items():
        if type(value) is float and not math.isfinite(value):
            row[column] = None
    return row


def _supported(kind: Any) -> bool:
    import pyarrow as pa  # type: ignore[import-not-found,unused-ignore]

    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _supported(kind.value_type)
    if pa.types.is_struct(kind):
        return all(_supported(kind.field(i).type) for i in range(kind.num_fields))
    return str(kind).startswith(_PARQUET_SCALARS)


def read_stdin(stream: IO[bytes], problems: Problems) -> Rows:
    """Rows from standard input (see :func:`stdin_rows`), named ``stdin`` in messages."""
    return stdin_rows(stream, "stdin", problems)
