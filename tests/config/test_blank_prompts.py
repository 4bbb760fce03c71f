"""A prompt with nothing to send (empty, or whitespace alone) is refused at load, wherever the job
comes from and whichever path checks it: the rows checked a block at a time, the rows checked one
by one, the prompts files' lines, ``[[jobs]]`` tables; for every backend, before any preflight."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from orchestrator.config.jobfile import load_data_file, load_job_file
from orchestrator.errors import ConfigError

BLANK = "prompt: empty or whitespace only: nothing to send"
BACKENDS = ["sim", "claude-code", "anthropic", "openai", "local"]


def _problems(load: Callable[..., object], *args: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(*args)
    return caught.value.problems


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("blank", ["   ", "\t\n", "\u3000", ""])
@pytest.mark.parametrize("rows", [3_000, 3])  # many plain rows: the block check; few: one by one
def test_a_blank_cell_rendered_by_a_template_of_columns_is_refused_with_its_row(
    tmp_path: Path, backend: str, blank: str, rows: int
) -> None:
    texts = [f"text {i}" for i in range(rows)]
    texts[rows - 2] = blank
    (tmp_path / "rows.jsonl").write_bytes(b"".join(orjson.dumps({"text": t}) + b"\n" for t in texts))
    source = str(tmp_path / "rows.jsonl")
    for template in ("{text}", " {text}\n"):
        problems = _problems(load_data_file, source, {"prompt_template": template, "backend": backend})
        assert problems == [f"{source}: row {rows - 1:,}: {BLANK}"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_blank_csv_cell_in_a_job_files_data_file_is_refused(tmp_path: Path, backend: str) -> None:
    (tmp_path / "rows.csv").write_text("id,text\n" + "".join(f"r{i},t{i}\n" for i in range(2_500)) + "rx, \n")
    path = tmp_path / "jobs.toml"
    path.write_text(f'data_file = "rows.csv"\n[defaults]\nbackend = "{backend}"\nid_column = "id"\n')
    path.write_text(path.read_text() + 'prompt_template = "{text}"\n')
    assert _problems(load_job_file, path) == [f"{tmp_path / 'rows.csv'}: row 2,501: {BLANK}"]


@pytest.mark.parametrize("lines", [["a"] * 3_000 + [" "], ["a", {"prompt": "\t"}], ["a", "  "]])
def test_a_blank_prompt_in_a_prompts_file_is_refused_with_its_line(
    tmp_path: Path, lines: list[object]
) -> None:
    (tmp_path / "p.jsonl").write_bytes(b"".join(orjson.dumps(v) + b"\n" for v in lines))
    path = tmp_path / "jobs.toml"
    path.write_text('prompts_file = "p.jsonl"\n[defaults]\nbackend = "claude-code"\n')
    problems = _problems(load_job_file, path)
    assert problems == [f"{tmp_path / 'p.jsonl'}: line {len(lines):,}: {BLANK}"]


@pytest.mark.parametrize("prompt", ["", " ", "\n\n"])
def test_a_blank_prompt_in_a_jobs_table_is_refused(tmp_path: Path, prompt: str) -> None:
    path = tmp_path / "jobs.toml"
    quoted = orjson.dumps(prompt).decode()
    path.write_text(f'[[jobs]]\nprompt = "ok"\n[[jobs]]\nid = "b"\nprompt = {quoted}\n')
    assert _problems(load_job_file, path) == [f"{path}: jobs[1].{BLANK}"]


def test_a_conversation_alone_still_has_an_empty_prompt_but_not_a_blank_last_turn(tmp_path: Path) -> None:
    path = tmp_path / "jobs.toml"
    conversation = 'messages = [{role = "user", content = "hi"}]'
    path.write_text(f'[[jobs]]\nid = "a"\n{conversation}\n[[jobs]]\nid = "b"\nprompt = ""\n{conversation}\n')
    assert [job.prompt for job in load_job_file(path).jobs] == ["", ""]
    path.write_text(f'[[jobs]]\nid = "a"\nprompt = " "\n{conversation}\n')
    assert _problems(load_job_file, path) == [f"{path}: jobs[0].{BLANK}"]
