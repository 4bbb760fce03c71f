"""A lone UTF-16 surrogate is not Unicode text: the library refuses it at load, naming where."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator import Query, run_batch
from orchestrator.config.check import refuse_lone_surrogates
from orchestrator.config.jobfile import build_batch
from orchestrator.errors import ConfigError

LONE = "\ud800"


@pytest.mark.parametrize(
    ("query", "where"),
    [
        ({"id": LONE, "prompt": "x"}, "run_batch(queries=...)[1].id"),
        ({"prompt": f"a{LONE}b"}, "run_batch(queries=...)[1].prompt"),
        (f"a{LONE}", "run_batch(queries=...)[1]"),
        (Query(prompt="x", system=LONE), "run_batch(queries=...)[1].system"),
        ({"prompt": "x", "metadata": {"k": [1, LONE]}}, "run_batch(queries=...)[1].metadata.k[1]"),
        ({"prompt": "x", "metadata": {LONE: 1}}, "run_batch(queries=...)[1].metadata: a key"),
    ],
)
def test_run_batch_refuses_a_lone_surrogate_anywhere_in_a_query(
    query: Any, where: str, tmp_path: Any
) -> None:
    log = tmp_path / "run.jsonl"
    with pytest.raises(ConfigError) as caught:
        run_batch(["fine", query], backend="sim", log=str(log))
    message = str(caught.value)
    assert where in message and "not Unicode text" in message
    message.encode("utf-8")  # the message itself can be printed
    assert not log.exists()  # nothing ran


def test_run_batch_refuses_a_lone_surrogate_in_a_job_default() -> None:
    with pytest.raises(ConfigError, match=r"run_batch\(system=\.\.\.\): not Unicode text"):
        run_batch(["x"], backend="sim", system=f"be {LONE}", log=None)


def test_build_batch_refuses_a_lone_surrogate_in_a_query_or_a_default() -> None:
    with pytest.raises(ConfigError) as caught:
        build_batch([{"id": LONE, "prompt": "x"}, "y"], {"backend": "sim", "system": LONE})
    assert "queries[0].id: not Unicode text" in str(caught.value)
    assert "defaults.system: not Unicode text" in str(caught.value)


@given(st.text(st.characters(blacklist_categories=("Cs",))))
def test_unicode_text_is_never_refused(text: str) -> None:
    problems: list[str] = []
    refuse_lone_surrogates({"id": text, text: [text, (text,)]}, "q", problems)
    assert problems == []


@given(st.text(), st.sampled_from(["\ud800", "\udfff", "\udc80"]), st.text())
def test_a_lone_surrogate_is_always_found(before: str, lone: str, after: str) -> None:
    problems: list[str] = []
    refuse_lone_surrogates(["ok", before + lone + after], "q", problems)
    assert problems and problems[-1].startswith("q[1]: not Unicode text")
