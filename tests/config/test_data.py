"""Reading data files: rows as they are consumed, every bad row a problem, nothing raised."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.config.data import csv_rows, jsonl_rows, read_rows, stdin_rows


def lines(data: bytes) -> list[bytes]:
    return io.BytesIO(data).readlines()


def test_csv_with_bom_crlf_and_a_quoted_newline() -> None:
    problems: list[str] = []
    data = b'\xef\xbb\xbfid,text\r\n1,"two\r\nlines"\r\n2,plain\r\n'
    rows = list(csv_rows(lines(data), "r.csv", problems))
    assert problems == []
    assert rows == [(1, {"id": "1", "text": "two\r\nlines"}), (2, {"id": "2", "text": "plain"})]


def test_tsv_rows(tmp_path: Path) -> None:
    (tmp_path / "r.tsv").write_bytes(b"a\tb\nx, y\tz\n")
    problems: list[str] = []
    assert list(read_rows(tmp_path / "r.tsv", "r.tsv", problems)) == [(1, {"a": "x, y", "b": "z"})]
    assert problems == []


def test_csv_header_problems() -> None:
    problems: list[str] = []
    assert list(csv_rows(lines(b"a,,a\n1,2,3\n"), "r.csv", problems)) == []
    assert problems == ["r.csv: header: column 2 has no name", "r.csv: header: column 'a' appears twice"]


def test_csv_header_only_is_a_problem() -> None:
    problems: list[str] = []
    assert list(csv_rows(lines(b"a,b\n"), "r.csv", problems)) == []
    assert problems == ["r.csv: no rows after the header"]


def test_jsonl_rows_are_numbered_by_line_and_keep_json_types() -> None:
    problems: list[str] = []
    rows = list(jsonl_rows(lines(b'{"a": 1}\n\n{"a": [true]}\n'), "r.jsonl", problems))
    assert rows == [(1, {"a": 1}), (3, {"a": [True]})] and problems == []


def test_rows_are_read_lazily() -> None:
    def endless() -> object:
        yield b"a\n"
        n = 0
        while True:
            n += 1
            yield f"{n}\n".encode()

    rows = csv_rows(endless(), "r.csv", [])  # type: ignore[arg-type]
    assert [next(rows) for _ in range(3)] == [(1, {"a": "1"}), (2, {"a": "2"}), (3, {"a": "3"})]


def test_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    problems: list[str] = []
    assert list(read_rows(tmp_path / "r.xlsx", "r.xlsx", problems)) == []
    assert list(read_rows(tmp_path / "r.csv", "r.csv", problems)) == []
    assert problems[0].startswith("r.xlsx: unknown data file type '.xlsx'; known: .csv")
    assert problems[1] == "r.csv: no such file"


def test_stdin_plain_lines_are_prompts_and_json_rows_are_rows() -> None:
    problems: list[str] = []
    assert list(stdin_rows(lines(b"\nhello {x}\r\nworld\n"), "stdin", problems)) == [
        (2, {"prompt": "hello {x}"}),
        (3, {"prompt": "world"}),
    ]
    assert list(stdin_rows(lines(b'\n {"text": "a"}\n'), "stdin", problems)) == [(2, {"text": "a"})]
    assert list(stdin_rows(lines(b""), "stdin", problems)) == []
    assert problems == ["stdin: empty input: no prompts"]


def test_parquet_rows(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"id": [1, 2], "text": ["a", None], "tags": [["x"], []]}), tmp_path / "r.parquet")
    problems: list[str] = []
    rows = list(read_rows(tmp_path / "r.parquet", "r.parquet", problems))
    assert problems == []
    assert rows == [(1, {"id": 1, "text": "a", "tags": ["x"]}), (2, {"id": 2, "text": None, "tags": []})]


def test_parquet_without_pyarrow_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    problems: list[str] = []
    assert list(read_rows(tmp_path / "r.parquet", "r.parquet", problems)) == []
    assert problems == ["r.parquet: reading Parquet needs pyarrow: pip install 'orchestrator-llm[parquet]'"]


@given(st.binary(max_size=200))
def test_any_bytes_give_rows_or_problems_never_an_exception(data: bytes) -> None:
    problems: list[str] = []
    for reader in (csv_rows, jsonl_rows, stdin_rows):
        for _, row in reader(lines(data), "f", problems):
            assert isinstance(row, dict)


@given(st.lists(st.lists(st.text(max_size=8), min_size=2, max_size=2), min_size=1, max_size=6))
def test_csv_round_trip(records: list[list[str]]) -> None:
    import csv

    out = io.StringIO()
    csv.writer(out).writerows([["a", "b"], *records])
    rows = list(csv_rows(lines(out.getvalue().encode()), "f", []))
    # A record of two empty fields is written as ',': still a row, of two empty strings.
    assert [r for _, r in rows] == [{"a": a, "b": b} for a, b in records]


def test_a_line_that_is_not_utf8_drops_only_its_own_row() -> None:
    problems: list[str] = []
    rows = list(csv_rows(lines(b'a,b\n1,x\n2,\xff\n3,"multi\nline"\n'), "r.csv", problems))
    assert problems == ["r.csv: line 3: not UTF-8 text (byte 0xff)"]
    assert rows == [(1, {"a": "1", "b": "x"}), (3, {"a": "3", "b": "multi\nline"})]
