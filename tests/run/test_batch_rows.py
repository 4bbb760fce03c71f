"""A finished batch as a table: ``BatchResult.rows()``, ``to_pandas()``, ``to_polars()``."""

from __future__ import annotations

import sys
import types
from typing import Any

import orjson
import pytest

from orchestrator import run_batch
from orchestrator.record.results import COLUMNS
from orchestrator.run.batch import BatchResult


@pytest.fixture(scope="module")
def batch() -> BatchResult:
    queries = [
        {"id": "a", "prompt": "first", "metadata": {"team": "x"}},
        {"id": "b", "prompt": "second", "sim": {"faults": ["fatal"]}},
    ]
    return run_batch(queries, backend="sim", options={"ttft": 0, "tokens_per_s": 0})


def test_rows_are_the_results_schema_in_job_order(batch: BatchResult) -> None:
    rows = batch.rows()
    assert [row["id"] for row in rows] == ["a", "b"]
    assert list(rows[0]) == ["id", *COLUMNS]
    assert rows[0]["status"] == "succeeded" and rows[0]["text"] and rows[0]["metadata"] == {"team": "x"}
    assert rows[1]["status"] == "failed" and rows[1]["error_kind"] and rows[1]["error"]
    orjson.dumps(rows)  # plain data all the way down


class FakeFrame:
    """Stands in for a DataFrame class: keeps what it was built from."""

    def __init__(self, data: dict[str, list[Any]], **options: Any) -> None:
        self.data, self.options = data, options


@pytest.mark.parametrize(("module", "method"), [("pandas", "to_pandas"), ("polars", "to_polars")])
def test_a_dataframe_gets_the_table_columns_with_nested_values_as_json_text(
    batch: BatchResult, monkeypatch: pytest.MonkeyPatch, module: str, method: str
) -> None:
    monkeypatch.setitem(sys.modules, module, types.SimpleNamespace(DataFrame=FakeFrame))
    frame = getattr(batch, method)()
    assert list(frame.data) == ["id", *COLUMNS]
    assert frame.data["id"] == ["a", "b"]
    assert frame.data["metadata"] == ['{"team":"x"}', "{}"] and frame.data["tool_calls"] == ["[]", "[]"]
    assert frame.data["status"] == ["succeeded", "failed"]


@pytest.mark.parametrize(("module", "method"), [("pandas", "to_pandas"), ("polars", "to_polars")])
def test_without_the_library_the_error_names_the_install_command(
    batch: BatchResult, monkeypatch: pytest.MonkeyPatch, module: str, method: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=f"{method}\\(\\) needs {module}: pip install {module}"):
        getattr(batch, method)()


def test_to_pandas_builds_a_real_dataframe_when_pandas_is_installed(batch: BatchResult) -> None:
    pytest.importorskip("pandas")
    frame = batch.to_pandas()
    assert list(frame["id"]) == ["a", "b"] and list(frame.columns) == ["id", *COLUMNS]
