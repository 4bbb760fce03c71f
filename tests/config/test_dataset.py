"""Data files in job files: rows become jobs through templates; ids, kept columns, settings."""

from __future__ import annotations

from pathlib import Path

import attrs
import orjson
import pytest

from orchestrator.config.jobfile import load_data_file, load_job_file
from orchestrator.errors import ConfigError
from orchestrator.spec import NO_ROW

ROWS = "review_id,text,label,lang\nr1,Great,pos,en\nr2,Mauvais,neg,fr\n"


def job_file(tmp_path: Path, defaults: str, rows: str = ROWS, name: str = "rows.csv") -> Path:
    (tmp_path / name).write_text(rows)
    path = tmp_path / "jobs.toml"
    path.write_text(f'data_file = "{name}"\n[defaults]\n{defaults}\n')
    return path


def test_rows_become_jobs_with_rendered_prompts_ids_and_kept_columns(tmp_path: Path) -> None:
    spec = load_job_file(
        job_file(
            tmp_path,
            'prompt_template = "Classify: {text}"\nsystem_template = "Language: {lang}"\n'
            'id_column = "review_id"\ncolumns = ["review_id", "label"]\nmodel = "m"',
        )
    )
    assert [(j.id, j.prompt, j.system, j.model, dict(j.row)) for j in spec.jobs] == [
        ("r1", "Classify: Great", "Language: en", "m", {"review_id": "r1", "label": "pos"}),
        ("r2", "Classify: Mauvais", "Language: fr", "m", {"review_id": "r2", "label": "neg"}),
    ]


def test_all_columns_are_kept_by_default_and_ids_can_be_templated(tmp_path: Path) -> None:
    spec = load_job_file(job_file(tmp_path, 'prompt_template = "{text}"\nid_template = "review-{review_id}"'))
    assert [j.id for j in spec.jobs] == ["review-r1", "review-r2"]
    assert dict(spec.jobs[0].row) == {"review_id": "r1", "text": "Great", "label": "pos", "lang": "en"}


def test_derived_ids_follow_the_prompt_not_the_position(tmp_path: Path) -> None:
    first = load_job_file(job_file(tmp_path, 'prompt_template = "{text}"'))
    swapped = "review_id,text,label,lang\nr2,Mauvais,neg,fr\nr1,Great,pos,en\nr3,Great,pos,en\n"
    second = load_job_file(job_file(tmp_path, 'prompt_template = "{text}"', swapped))
    ids = {j.prompt: j.id for j in first.jobs}
    assert [j.id for j in second.jobs] == [ids["Mauvais"], ids["Great"], ids["Great"] + "-2"]


def test_the_content_hash_covers_the_rendered_request_not_other_columns(tmp_path: Path) -> None:
    base = load_job_file(job_file(tmp_path, 'prompt_template = "{text}"\nid_column = "review_id"'))
    relabelled = ROWS.replace("pos", "POSITIVE")
    other = load_job_file(
        job_file(tmp_path, 'prompt_template = "{text}"\nid_column = "review_id"', relabelled)
    )
    assert [j.content_hash for j in base.jobs] == [j.content_hash for j in other.jobs]
    retemplated = load_job_file(
        job_file(tmp_path, 'prompt_template = "Say: {text}"\nid_column = "review_id"')
    )
    assert all(a.content_hash != b.content_hash for a, b in zip(base.jobs, retemplated.jobs, strict=True))


def test_row_settings_come_from_columns_and_empty_cells_keep_the_default(tmp_path: Path) -> None:
    rows = "text,max_tokens,model\na,12,big\nb,,\n"
    spec = load_job_file(
        job_file(
            tmp_path, 'prompt_template = "{text}"\nrow_settings = ["max_tokens", "model"]\nmodel = "m"', rows
        )
    )
    assert [(j.max_tokens, j.model) for j in spec.jobs] == [(12, "big"), (None, "m")]


def test_jsonl_rows_with_non_string_values(tmp_path: Path) -> None:
    rows = '{"id": 7, "q": {"a": 1}, "max_tokens": 5}\n'
    spec = load_job_file(
        job_file(
            tmp_path,
            'prompt_template = "Q: {q}"\nid_column = "id"\nrow_settings = ["max_tokens"]',
            rows,
            "r.jsonl",
        )
    )
    job = spec.jobs[0]
    assert (job.id, job.prompt, job.max_tokens) == ("7", 'Q: {"a":1}', 5)


def test_data_files_and_jobs_tables_mix(tmp_path: Path) -> None:
    path = job_file(tmp_path, 'prompt_template = "{text}"\nid_column = "review_id"')
    path.write_text(path.read_text() + '[[jobs]]\nid = "extra"\nprompt = "x"\n')
    assert [j.id for j in load_job_file(path).jobs] == ["extra", "r1", "r2"]


def test_every_bad_row_is_reported_and_the_count_is_capped(tmp_path: Path) -> None:
    rows = "".join(f'{{"x": {i}}}\n' for i in range(300))
    with pytest.raises(ConfigError) as exc:
        load_job_file(job_file(tmp_path, 'prompt_template = "{text}"', rows, "r.jsonl"))
    problems = exc.value.problems
    assert problems[0].endswith("r.jsonl: row 1: column 'text' is missing")
    assert len(problems) == 101 and problems[-1].endswith("r.jsonl: stopped reading after 100 problems")


def test_load_data_file_without_a_job_file(tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    spec = load_data_file(str(tmp_path / "r.jsonl"), {"prompt_template": "Classify: {text}", "model": "m"})
    assert [j.prompt for j in spec.jobs] == ["Classify: a", "Classify: b"] and spec.jobs[0].model == "m"
    with pytest.raises(ConfigError) as exc:
        load_data_file(str(tmp_path / "r.jsonl"), {"prompt_template": "{txt}"})
    assert (
        exc.value.problems[0]
        == f"{tmp_path / 'r.jsonl'}: row 1: column 'txt' is missing (did you mean 'text'?)"
    )


def _as_tables(tmp_path: Path, jobs: list[tuple[str, str, str | None]], defaults: str) -> Path:
    """A job file of [[jobs]] tables: the same jobs, written out in full."""
    path = tmp_path / "tables.toml"
    tables = "".join(
        f"[[jobs]]\nid = {job_id!r}\nprompt = {prompt!r}\n" + (f"system = {system!r}\n" if system else "")
        for job_id, prompt, system in jobs
    )
    path.write_text(f"[defaults]\n{defaults}\n{tables}")
    return path


@pytest.mark.parametrize("system", [False, True])
def test_jobs_made_from_kept_rows_equal_the_same_jobs_resolved_in_full(tmp_path: Path, system: bool) -> None:
    rows = "review_id,text,lang\n" + "".join(f"r{i},text {i % 7},l{i % 3}\n" for i in range(40))
    settings = 'prompt_template = "Classify: {text}"\nid_column = "review_id"\ncolumns = ["lang"]'
    if system:
        settings += '\nsystem_template = "In {lang}"'
    shared = 'model = "m"\nmax_tokens = 9\n[defaults.sim]\nttft = 0.5'
    spec = load_job_file(job_file(tmp_path, f"{settings}\n{shared}", rows))
    assert len(spec.jobs) == 40 and type(spec.jobs.parts[-1]).__name__ == "Rows"  # not held
    tables = [(f"r{i}", f"Classify: text {i % 7}", f"In l{i % 3}" if system else None) for i in range(40)]
    full = load_job_file(_as_tables(tmp_path, tables, shared))
    made = list(spec.jobs)
    assert [attrs.evolve(job, row=NO_ROW) for job in made] == list(full.jobs)  # content hashes too
    assert [dict(job.row) for job in made] == [{"lang": f"l{i % 3}"} for i in range(40)]
    assert spec.jobs[17] == made[17] and spec.jobs[-1] == made[-1] and spec.jobs[3:5] == tuple(made[3:5])
    assert list(spec.jobs.ids()) == [f"r{i}" for i in range(40)]
    assert list(spec.jobs.content_hashes()) == [job.content_hash for job in made]


def test_rows_that_set_their_own_settings_are_checked_in_full_in_their_place(tmp_path: Path) -> None:
    rows = "id,text,model\na,x,\nb,y,special\nc,z,\nd,w,\n"
    spec = load_job_file(
        job_file(
            tmp_path,
            'prompt_template = "{text}"\nid_column = "id"\nrow_settings = ["model"]\nmodel = "m"',
            rows,
        )
    )
    assert [(j.id, j.model) for j in spec.jobs] == [("a", "m"), ("b", "special"), ("c", "m"), ("d", "m")]


def test_a_repeated_id_among_kept_rows_is_reported_with_both_rows(tmp_path: Path) -> None:
    rows = "id,text\n" + "".join(f"r{i},t{i}\n" for i in range(10)) + "r3,again\nr11,t\nr5,again\n"
    with pytest.raises(ConfigError) as exc:
        load_job_file(job_file(tmp_path, 'prompt_template = "{text}"\nid_column = "id"', rows))
    name = tmp_path / "rows.csv"
    assert exc.value.problems == [
        f"{name}: row 11: id: duplicate id 'r3' (also at {name}: row 4)",
        f"{name}: row 13: id: duplicate id 'r5' (also at {name}: row 6)",
    ]


def test_bad_rows_deep_in_a_big_jsonl_file_are_named_by_their_rows(tmp_path: Path) -> None:
    lines = [orjson.dumps({"id": f"r{i}", "text": f"t{i}"}).decode() for i in range(1, 6001)]
    lines[2499] = '{"id": "r2500"}'  # no text: its block is read row by row
    lines[4999] = ""  # a blank line is not a row, but it is counted
    lines[5499] = "[1]"
    settings = 'prompt_template = "{text}"\nid_column = "id"'
    with pytest.raises(ConfigError) as exc:
        load_job_file(job_file(tmp_path, settings, "\n".join(lines) + "\n", name="rows.jsonl"))
    name = tmp_path / "rows.jsonl"
    assert exc.value.problems == [
        f"{name}: row 2,500: column 'text' is missing",
        f"{name}: row 5,500: expected a JSON object, got a list",
    ]
    lines[2499], lines[5499] = '{"id": "r2500", "text": "t2500"}', '{"id": "r5500", "text": "t5500"}'
    (tmp_path / "rows.jsonl").write_text("\n".join(lines) + "\n")
    spec = load_job_file(tmp_path / "jobs.toml")
    assert len(spec.jobs) == 5999 and spec.jobs[4999].id == "r5001" and spec.jobs[4999].prompt == "t5001"


def test_a_missing_parquet_number_reads_as_null_in_plain_rows_and_in_rows_checked_in_full(
    tmp_path: Path,
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    nan = float("nan")
    table = {"text": ["a", "b", "c"], "score": [nan, float("inf"), 0.5], "model": [None, "big", None]}
    pq.write_table(pa.table(table), tmp_path / "rows.parquet")
    path = tmp_path / "jobs.toml"
    path.write_text(
        'data_file = "rows.parquet"\n[defaults]\nprompt_template = "{text}"\nrow_settings = ["model"]\n'
    )
    # row 2 sets its own model (checked in full), rows 1 and 3 are plain (kept as JSON bytes)
    jobs = list(load_job_file(path).jobs)
    assert [j.model for j in jobs] == [None, "big", None]
    assert [dict(j.row)["score"] for j in jobs] == [None, None, 0.5]


def test_the_preflight_of_plain_rows_checks_their_settings_once_and_counts_every_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.run.batch import preflight

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    rows = "".join(f'{{"text": "t{i}"}}\n' for i in range(2_000))
    path = job_file(
        tmp_path,
        'backend = "anthropic"\nprompt_template = "{text}"\nmax_tokens = 1000\n'
        "anthropic = { thinking_budget = 2000 }",
        rows,
        "rows.jsonl",
    )
    spec = load_job_file(path)
    with pytest.raises(ConfigError) as caught:
        preflight(spec)
    first = spec.jobs.ids()[0]
    assert caught.value.problems == [
        f"anthropic: jobs without a model ({', '.join(spec.jobs.ids()[:5])} and 1995 more): set model in "
        '[defaults] or on the job, e.g. model = "claude-haiku-4-5"',
        f"jobs.{first}: anthropic.thinking_budget (2000) must be below max_tokens (1000) "
        "(and 1999 more jobs): raise max_tokens or lower the budget",
    ]
