"""The results table: one schema (column order, values) and the writers that take its rows."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.events import Tokens, ToolCall
from orchestrator.record.aggregate import JobResult, skipped_result
from orchestrator.record.results import (
    COLUMNS,
    csv_bytes,
    parquet_bytes,
    result_row,
    results_format,
    table_columns,
    write_results,
)


def finished(job_id: str = "j1", **changes: Any) -> JobResult:
    result = JobResult(
        job_id=job_id,
        status="succeeded",
        attempts=2,
        text="positive",
        tool_calls=(ToolCall("c1", "lookup", {"q": "x", "n": [1, 2]}),),
        tokens=Tokens(input=10, output=3, cache_read=4, cache_creation=5),
        cost_usd=0.25,
        ttft_s=0.5,
        duration_s=1.5,
        stop_reason="end_turn",
        session_id="msg_1",
        row={"review_id": "r1", "text": "great", "tags": ["a", "b"]},
        metadata={"batch": 7},
        backend="anthropic",
        model="claude-x",
    )
    return attrs.evolve(result, **changes)


def test_a_row_has_the_id_then_the_input_columns_then_the_fixed_columns() -> None:
    row = result_row(finished())
    assert list(row) == ["id", "row.review_id", "row.text", "row.tags", *COLUMNS]
    assert row["id"] == "j1" and row["row.text"] == "great" and row["row.tags"] == ["a", "b"]
    assert row["text"] == "positive" and row["status"] == "succeeded" and row["attempts"] == 2
    assert row["tool_calls"] == [{"id": "c1", "name": "lookup", "input": {"q": "x", "n": [1, 2]}}]
    assert (row["input_tokens"], row["output_tokens"]) == (10, 3)
    assert (row["cache_read_tokens"], row["cache_creation_tokens"]) == (4, 5)
    assert (row["backend"], row["model"], row["session_id"]) == ("anthropic", "claude-x", "msg_1")
    assert row["request_id"] is None and row["output"] is None and row["metadata"] == {"batch": 7}


def test_a_parsed_output_goes_into_the_output_column() -> None:
    base = finished()
    parsed = attrs.evolve(base, output={"a": 1})
    assert result_row(parsed)["output"] == {"a": 1}


def parsed(job_id: str, output: Any, **changes: Any) -> JobResult:
    return attrs.evolve(finished(job_id, **changes), output=output)


def test_tables_give_each_top_level_field_of_a_parsed_output_its_own_column() -> None:
    rows = [
        result_row(parsed("a", {"label": "pos", "score": 0.9}, row={})),
        result_row(parsed("b", {"label": "neg", "why": ["x"]}, row={})),
        result_row(parsed("c", [1, 2], row={})),  # not an object: no fields of its own
    ]
    columns = table_columns(rows)
    at = columns.index("output")
    assert columns[at : at + 5] == ["output", "output.label", "output.score", "output.why", "tool_calls"]
    read = list(csv.DictReader(io.StringIO(csv_bytes(rows).decode())))
    assert [r["output.label"] for r in read] == ["pos", "neg", ""]
    assert [r["output.why"] for r in read] == ["", '["x"]', ""] and read[2]["output"] == "[1,2]"
    assert "output.label" not in rows[0]  # JSONL keeps the output whole


def test_a_failed_job_has_its_error_kind_and_message() -> None:
    row = result_row(finished(status="failed", error_kind="rate_limit", error="429 slow down", text=None))
    assert (row["status"], row["error_kind"], row["error"], row["text"]) == (
        "failed",
        "rate_limit",
        "429 slow down",
        None,
    )


def test_a_skipped_job_is_a_row_with_zero_spend() -> None:
    row = result_row(skipped_result("j9", "spend cap"))
    assert (row["status"], row["error_kind"], row["error"]) == ("skipped", "skipped", "spend cap")
    assert row["attempts"] == 0 and row["cost_usd"] == 0.0 and row["tool_calls"] == []


def test_a_table_header_holds_every_input_column_first_seen_first() -> None:
    rows = [result_row(finished("a", row={"x": 1})), result_row(finished("b", row={"y": 2, "x": 3}))]
    assert table_columns(rows) == ["id", "row.x", "row.y", *COLUMNS]


def test_csv_holds_nested_values_as_json_text_and_nulls_as_empty_cells() -> None:
    rows = [result_row(finished()), result_row(finished("j2", row={"review_id": "r2"}, cost_usd=None))]
    read = list(csv.DictReader(io.StringIO(csv_bytes(rows).decode())))
    assert [r["id"] for r in read] == ["j1", "j2"]
    assert orjson.loads(read[0]["tool_calls"])[0]["input"] == {"q": "x", "n": [1, 2]}
    assert orjson.loads(read[0]["row.tags"]) == ["a", "b"] and read[1]["row.tags"] == ""
    assert read[0]["cost_usd"] == "0.25" and read[1]["cost_usd"] == "" and read[0]["output"] == ""
    assert read[0]["metadata"] == '{"batch":7}'


@given(st.text(), st.text())
def test_any_text_survives_a_csv_round_trip(job_id: str, text: str) -> None:
    if "\0" in job_id + text:
        return  # the csv module refuses NUL in a cell
    data = csv_bytes([result_row(finished(job_id, text=text, row={}))])
    read = next(csv.DictReader(io.StringIO(data.decode(), newline="")))
    assert (read["id"], read["text"]) == (job_id, text)


def test_parquet_keeps_fixed_column_types_even_when_every_value_is_null() -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    data = parquet_bytes([result_row(finished(text=None, model=None))])
    table = pq.read_table(io.BytesIO(data))
    assert table.column_names == table_columns([result_row(finished())])
    assert str(table.schema.field("text").type) == "string"
    assert str(table.schema.field("cost_usd").type) == "double"
    assert str(table.schema.field("attempts").type) == "int64"
    assert table.to_pylist()[0]["tool_calls"] == '[{"id":"c1","name":"lookup","input":{"q":"x","n":[1,2]}}]'


def test_parquet_stores_an_input_column_of_mixed_types_as_text() -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [result_row(finished("a", row={"v": 1})), result_row(finished("b", row={"v": "two"}))]
    assert pq.read_table(io.BytesIO(parquet_bytes(rows))).column("row.v").to_pylist() == ["1", "two"]


def test_parquet_without_pyarrow_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ImportError, match=r"pip install 'orchestrator-llm\[parquet\]'"):
        parquet_bytes([result_row(finished())])


def test_the_format_comes_from_the_extension(tmp_path: Path) -> None:
    assert [results_format(p) for p in ("a.jsonl", "b.CSV", "c.parquet", "d.json")] == [
        "jsonl",
        "csv",
        "parquet",
        None,
    ]
    with pytest.raises(ValueError, match=r"\.jsonl, \.csv or \.parquet"):
        write_results([], tmp_path / "out.json")


def test_jsonl_is_one_object_a_line_in_schema_order(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "out.jsonl"
    write_results([result_row(finished("a")), result_row(finished("b"))], path)
    lines = path.read_bytes().splitlines()
    assert [orjson.loads(line)["id"] for line in lines] == ["a", "b"]
    assert list(orjson.loads(lines[0])) == list(result_row(finished("a")))
    assert not [p for p in path.parent.iterdir() if p.name != "out.jsonl"]  # no temporary left
