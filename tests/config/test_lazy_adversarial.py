"""Jobs made lazily from kept rows against the same rows resolved in full, and Jobs from rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.config import dataset, resolve, sources
from orchestrator.config.jobfile import load_job_file
from orchestrator.errors import ConfigError

COLUMNS = ("a", "b", "c")
values = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["", "{", "}}", "{{a}}", "\u2028", "é", "0", "1"]),
    st.integers(min_value=-3, max_value=3),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
    st.none(),
)
rows = st.lists(st.dictionaries(st.sampled_from(COLUMNS), values), min_size=1, max_size=12)
templates = st.sampled_from(["{a}", "x {a} {{b}} {b}", "{{literal}}", "{c}-{a}"])
ids = st.sampled_from([None, ("id_column", "c"), ("id_template", "r-{b}"), ("id_template", "same")])


def _load(path: Path) -> tuple[list[Any], list[str]]:
    try:
        spec = load_job_file(path)
    except ConfigError as exc:
        return [], list(exc.problems)
    return list(spec.jobs), []


@pytest.fixture
def in_full() -> Iterator[Any]:
    """Loading with every row checked and resolved in full (no row kept plain)."""

    def load(path: Path) -> tuple[list[Any], list[str]]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(dataset._Rendering, "plain_ids", lambda self: lambda row: None)
            patch.setattr(dataset._Rendering, "plain_block", lambda self, rows: None)
            patch.setattr(resolve, "is_plain", lambda table: False)  # no shortcut for plain tables
            return _load(path)

    yield load


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows, prompt=templates, ident=ids, system=st.booleans())
def test_a_job_made_from_a_kept_row_equals_it_resolved_in_full(
    tmp_path: Path, in_full: Any, rows: list[dict[str, Any]], prompt: str, ident: Any, system: bool
) -> None:
    (tmp_path / "rows.jsonl").write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    lines = [f"prompt_template = {prompt!r}"]
    if ident is not None:
        lines.append(f"{ident[0]} = {ident[1]!r}")
    if system:
        lines.append('system_template = "sys {b}"')
    path = tmp_path / "jobs.toml"
    path.write_text('data_file = "rows.jsonl"\n[defaults]\n' + "\n".join(lines) + "\n")
    assert _load(path) == in_full(path)


@pytest.mark.parametrize("mixed", [False, True])
def test_a_prompts_file_splits_lines_at_newlines_only(tmp_path: Path, mixed: bool) -> None:
    # U+2028, U+2029 and NEL may stand raw inside a JSON string: they do not end a line.
    lines = ['"one\u2028two"', '"x\x85y"', '{"prompt": "p\u2029q", "id": "k"}' if mixed else '"p\u2029q"']
    (tmp_path / "p.jsonl").write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    (tmp_path / "jobs.toml").write_text('prompts_file = "p.jsonl"\n')
    spec = load_job_file(tmp_path / "jobs.toml")
    assert [job.prompt for job in spec.jobs] == ["one\u2028two", "x\x85y", "p\u2029q"]
    if mixed:
        assert spec.jobs[2].id == "k"


@pytest.mark.parametrize("last", ["user", "assistant"])
@pytest.mark.parametrize("texts", [["a", "", ""], ["", "a", ""], ["a", "b", ""]])
def test_an_empty_prompt_after_a_default_conversation_is_checked_as_in_full(
    tmp_path: Path, in_full: Any, last: str, texts: list[str]
) -> None:
    # An empty prompt leaves the conversation's last turn to the defaults' messages: that turn
    # must be the user's, and the derived id comes from the messages (as for [[jobs]] tables).
    (tmp_path / "rows.jsonl").write_bytes(b"".join(orjson.dumps({"t": t}) + b"\n" for t in texts))
    path = tmp_path / "jobs.toml"
    path.write_text(
        'data_file = "rows.jsonl"\n[defaults]\nprompt_template = "{t}"\n'
        f'messages = [{{role = "user", content = "hi"}}, {{role = "{last}", content = "yo"}}]\n'
    )
    lazy = _load(path)
    assert lazy == in_full(path)
    if last == "assistant":
        assert len(lazy[1]) == texts.count("")  # every such row is reported


@pytest.mark.parametrize("lines", [['"a"', '""'], ['{"prompt": "a"}', '{"prompt": "", "id": "k"}']])
def test_an_empty_prompt_in_a_prompts_file_after_a_default_conversation_is_reported(
    tmp_path: Path, lines: list[str]
) -> None:
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "jobs.toml").write_text(
        'prompts_file = "p.jsonl"\n[defaults]\n'
        'messages = [{role = "user", content = "hi"}, {role = "assistant", content = "yo"}]\n'
    )
    with pytest.raises(ConfigError) as exc:
        load_job_file(tmp_path / "jobs.toml")
    assert [p.split(": ", 1)[1] for p in exc.value.problems] == [
        "line 2: defaults.messages: the conversation must end with a user turn (or give a prompt)"
    ]


cells = st.one_of(
    st.text(max_size=5), st.sampled_from(["", "{x}", "}}", "r1", "p-" + "0" * 10, "\r\n", "\ufeff"])
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.tuples(cells, cells, st.sampled_from(["", "m2", "0", "x"])), min_size=1, max_size=10),
    ident=st.sampled_from(["", 'id_column = "id"', 'id_template = "{id}-{text}"']),
    extra=st.sampled_from(["", 'row_settings = ["model", "max_tokens"]', 'columns = ["id"]']),
    tables=st.integers(min_value=0, max_value=2),
)
def test_a_csv_row_made_lazily_equals_it_resolved_in_full(
    tmp_path: Path, in_full: Any, rows: list[tuple[str, str, str]], ident: str, extra: str, tables: int
) -> None:
    import csv
    import io

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(["id", "text", "model", "max_tokens"])
    writer.writerows([(job_id, cell, model, model) for job_id, cell, model in rows])
    (tmp_path / "rows.csv").write_text("\ufeff" + text.getvalue(), encoding="utf-8", newline="")
    path = tmp_path / "jobs.toml"
    jobs = "".join(f'[[jobs]]\nid = "r{i}"\nprompt = "t"\n' for i in range(tables))  # ids rows may repeat
    path.write_text(
        f'data_file = "rows.csv"\n[defaults]\nprompt_template = "{{text}}"\n{ident}\n{extra}\n{jobs}'
    )
    assert _load(path) == in_full(path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(
        st.one_of(
            st.text(max_size=5).map(lambda t: orjson.dumps(t).decode()),
            st.fixed_dictionaries({"prompt": st.text(max_size=4)}, optional={"id": cells}).map(
                lambda d: orjson.dumps(d).decode()
            ),
            st.sampled_from(["", "  ", "[1]", "3", "null", '{"prompt": "x", "model": "m"}', "{bad"]),
        ),
        min_size=1,
        max_size=10,
    )
)
def test_a_prompts_file_line_made_lazily_equals_it_resolved_in_full(
    tmp_path: Path, in_full: Any, lines: list[str]
) -> None:
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    path = tmp_path / "jobs.toml"
    path.write_text('prompts_file = "p.jsonl"\n')

    def full(table: Any) -> bool:
        return False

    with pytest.MonkeyPatch.context() as patch:
        from orchestrator.config import jobfile

        patch.setattr(jobfile, "_all_prompts", lambda lines: None)
        patch.setattr(jobfile, "_plain_object", full)
        expected = in_full(path)
    assert _load(path) == expected


def test_row_numbers_stay_exact_across_blocks_with_blank_and_bad_lines(tmp_path: Path) -> None:
    lines = [orjson.dumps({"id": f"r{i}", "t": f"x{i}"}).decode() for i in range(1, 5001)]
    lines[2046] = ""  # row 2,047 blank, in the first block
    lines[3000] = "[1]"  # row 3,001: JSON, not an object, in the second block
    lines[4999] = orjson.dumps({"id": "r2049", "t": "again"}).decode()  # row 5,000 repeats row 2,049
    lines[3999] = "x" * 300_000  # a very long bad line
    (tmp_path / "rows.jsonl").write_text("\n".join(lines) + "\n")
    path = tmp_path / "jobs.toml"
    path.write_text('data_file = "rows.jsonl"\n[defaults]\nprompt_template = "{t}"\nid_column = "id"\n')
    with pytest.raises(ConfigError) as exc:
        load_job_file(path)
    name = tmp_path / "rows.jsonl"
    problems = [p.split(": invalid JSON")[0] for p in exc.value.problems]
    assert problems == [
        f"{name}: row 3,001: expected a JSON object, got a list",
        f"{name}: row 4,000",
        f"{name}: row 5,000: id: duplicate id 'r2049' (also at {name}: row 2,049)",
    ]


def _part(kind: str, start: int, n: int) -> Any:
    from orchestrator.jobs import Held, Rows
    from orchestrator.spec import JobSpec

    backend = "sim" if kind != "other" else "local"
    if kind == "held":
        return Held([JobSpec(id=f"j{i}", prompt=f"p{i}", backend=backend) for i in range(start, start + n)])
    return Rows(
        list(range(start, start + n)),
        [f"j{i}" for i in range(start, start + n)],
        lambda c, job_id: JobSpec(id=job_id, prompt=f"p{c}", backend=backend, content_hash=f"h{c}"),
        backend,
        lambda c: f"h{c}",
        uniform=kind == "rows",  # its jobs differ only in id and prompt: alike
    )


@settings(max_examples=200)
@given(
    sizes=st.lists(st.tuples(st.sampled_from(["held", "rows", "other"]), st.integers(0, 1300)), max_size=4),
    reads=st.lists(
        st.one_of(
            st.integers(-3000, 3000),
            st.tuples(
                st.integers(-3000, 3000) | st.none(),
                st.integers(-3000, 3000) | st.none(),
                st.sampled_from([None, 1, 2, -1, -700]),
            ),
        )
    ),
    keep=st.integers(1, 5),
)
def test_jobs_from_rows_index_and_slice_as_the_list_of_their_jobs(
    sizes: list[tuple[str, int]], reads: list[Any], keep: int
) -> None:
    from orchestrator.jobs import Jobs

    parts, start = [], 0
    for kind, n in sizes:
        parts.append(_part(kind, start, n))
        start += n
    jobs = Jobs(parts)
    expected = [job for part in parts for job in part.resolve(0, len(part))]
    assert len(jobs) == len(expected) and list(jobs.ids()) == [job.id for job in expected]
    for read in reads:  # in any order: the chunk kept between two reads never shows through
        if isinstance(read, int):
            if -len(expected) <= read < len(expected):
                assert jobs[read] == expected[read]
                assert jobs.backend(read % len(expected)) == expected[read].backend
            else:
                with pytest.raises(IndexError):
                    jobs[read]
        else:
            assert jobs[slice(*read)] == tuple(expected[slice(*read)])
    picked = jobs.pick(list(range(0, len(expected), keep)))
    assert list(picked) == expected[::keep] and picked[-1:] == tuple(expected[::keep][-1:])
    assert jobs == expected
    positions = range(0, len(expected), keep)
    for name in ("sim", "local"):
        # Groups of jobs alike: a uniform part is one (made from its first job), any other job
        # its own; so for the jobs a pick keeps.
        for group_of, chosen in ((jobs, range(len(expected))), (picked, positions)):
            groups = list(group_of.alike(name))
            assert [i for g in groups for i in g.ids] == [
                expected[p].id for p in chosen if expected[p].backend == name
            ]
            assert all(g.job == next(j for j in expected if j.id == g.ids[0]) for g in groups)
            sizes = [
                1 if part.uniform else len(hits)
                for part, first in zip(jobs.parts, jobs.starts, strict=True)
                if (
                    hits := [
                        p for p in chosen if first <= p < first + len(part) and expected[p].backend == name
                    ]
                )
            ]
            assert len(groups) == sum(sizes)
    hashes = [job.content_hash or None for job in expected]
    assert [h if h.startswith("h") else None for h in jobs.content_hashes()] == hashes


def test_jobs_made_from_rows_keep_the_content_hashes_logs_written_before_hold(tmp_path: Path) -> None:
    # Hashes as loading made them when every row was resolved in full: resuming such a log runs
    # nothing again.
    (tmp_path / "h.csv").write_text('id,text,lang\nr1,hello,en\nr2,"multi\nline",fr\nr3,,de\n')
    (tmp_path / "h.toml").write_text(
        'data_file = "h.csv"\n[defaults]\nprompt_template = "Say {text}"\nsystem_template = "in {lang}"\n'
        'model = "m"\ncolumns = ["lang"]\n'
    )
    (tmp_path / "p.jsonl").write_text('"a"\n{"prompt": "b", "id": "x"}\n')
    (tmp_path / "p.toml").write_text('prompts_file = "p.jsonl"\n[defaults]\nmax_tokens = 5\n')
    rows = load_job_file(tmp_path / "h.toml").jobs
    prompts = load_job_file(tmp_path / "p.toml").jobs
    assert [(job.id, job.content_hash) for job in rows] == [
        ("p-6d995dba1a", "a86beea82200b0c3"),
        ("p-f7034bab18", "71a3d76909845cd9"),
        ("p-f7007c2dc6", "b7a9cffdd28320b7"),
    ]
    assert list(rows.content_hashes()) == [job.content_hash for job in rows]
    assert [(job.id, job.content_hash) for job in prompts] == [
        ("p-ca978112ca", "9621e708abaf8304"),
        ("x", "a76f21d2c124201c"),
    ]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("rows.jsonl", "".join("{bad\n" if i % 2 else '{"t": "x"}\n' for i in range(600))),
        ("rows.jsonl", "{bad\n" * 5000),  # no good row at all, over more than one block
        ("rows.csv", "t,u\n" + "x\n" * 600),
    ],
)
def test_bad_rows_found_while_reading_are_capped_like_the_others(
    tmp_path: Path, name: str, text: str
) -> None:
    (tmp_path / name).write_text(text)
    path = tmp_path / "jobs.toml"
    path.write_text(f'data_file = "{name}"\n[defaults]\nprompt_template = "{{t}}"\n')
    with pytest.raises(ConfigError) as exc:
        load_job_file(path)
    problems = exc.value.problems
    assert len(problems) == sources.MAX_ROW_PROBLEMS + 1
    assert problems[-1] == f"{tmp_path / name}: stopped reading after {sources.MAX_ROW_PROBLEMS} problems"


@pytest.mark.parametrize("lines", [['"a"', '"b"'], ['"a"', '{"prompt": "b", "model": "m"}']])
def test_a_prompts_file_may_start_with_a_byte_order_mark_as_a_data_file_may(
    tmp_path: Path, lines: list[str]
) -> None:
    (tmp_path / "p.jsonl").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    (tmp_path / "jobs.toml").write_text('prompts_file = "p.jsonl"\n')
    assert [job.prompt for job in load_job_file(tmp_path / "jobs.toml").jobs] == ["a", "b"]


def test_repeated_ids_among_kept_rows_are_capped_like_other_bad_rows(tmp_path: Path) -> None:
    # An id column that is not one (a label): every row after the first two repeats an id.
    (tmp_path / "rows.csv").write_text("id,text\n" + "".join(f"{i % 2},t{i}\n" for i in range(5000)))
    path = tmp_path / "jobs.toml"
    path.write_text('data_file = "rows.csv"\n[defaults]\nprompt_template = "{text}"\nid_column = "id"\n')
    with pytest.raises(ConfigError) as exc:
        load_job_file(path)
    problems, name = exc.value.problems, tmp_path / "rows.csv"
    assert len(problems) == sources.MAX_ROW_PROBLEMS + 1
    assert problems[0] == f"{name}: row 3: id: duplicate id '0' (also at {name}: row 1)"
    assert problems[-1] == f"{name}: stopped reading after {sources.MAX_ROW_PROBLEMS} problems"


def test_a_bad_default_every_row_takes_is_reported_a_capped_number_of_times(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("id,text\n" + "".join(f"r{i},t{i}\n" for i in range(1000)))
    path = tmp_path / "jobs.toml"
    path.write_text('data_file = "rows.csv"\n[defaults]\nprompt_template = "{text}"\nbackend = "nope"\n')
    with pytest.raises(ConfigError) as exc:
        load_job_file(path)
    problems = exc.value.problems
    assert len(problems) == sources.MAX_ROW_PROBLEMS + 1
    assert "row 1: defaults.backend: unknown backend 'nope'" in problems[0]
    assert (
        problems[-1] == f"{tmp_path / 'rows.csv'}: stopped reading after {sources.MAX_ROW_PROBLEMS} problems"
    )


def test_the_command_resumes_a_data_file_running_only_changed_rows_and_a_dry_run_counts_them(
    tmp_path: Path,
) -> None:
    import json

    from tests.cli.test_cli import orchestrate

    def write(changed: set[int]) -> None:
        rows = "".join(f"r{i},t{i % 50}{'!' if i in changed else ''}\n" for i in range(3000))
        (tmp_path / "rows.csv").write_text("id,text\n" + rows)

    args = ("rows.csv", "--prompt-template", "{text}", "--id-column", "id", "--json", "-c", "50")
    write(set())
    dry = orchestrate(*args, "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["jobs"] == 3000 and json.loads(dry.stdout)["deduplicated"] == 2950
    first = orchestrate(*args, "--log", "run.jsonl", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    write({0, 2048, 2999})
    again = orchestrate(*args, "--resume", "run.jsonl", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert (summary["jobs"], summary["already_done"], summary["succeeded"]) == (3, 2997, 3)


@pytest.mark.parametrize("ident", ["", 'id_column = "id"'])
def test_rows_checked_in_full_at_block_edges_keep_their_place_among_kept_rows(
    tmp_path: Path, in_full: Any, ident: str
) -> None:
    special = {1, 100, 2047, 2048, 2049, 4096, 5000}
    rows = [
        {"id": f"r{n}", "t": f"x{n % 40}", **({"model": "m2"} if n in special else {})}
        for n in range(1, 5001)
    ]
    (tmp_path / "rows.jsonl").write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    path = tmp_path / "jobs.toml"
    path.write_text(
        'data_file = "rows.jsonl"\n[defaults]\nprompt_template = "{t}"\n'
        f'row_settings = ["model"]\n{ident}\n'
    )
    lazy, expected = _load(path), in_full(path)
    assert lazy == expected and len(lazy[0]) == 5000
    assert [job.model for job in lazy[0]].count("m2") == len(special)


def test_a_given_id_repeating_a_numbered_derived_one_names_its_row(tmp_path: Path, in_full: Any) -> None:
    # Equal prompts without ids get p-…, p-…-2; a later row giving p-…-2 repeats the second.
    (tmp_path / "rows.csv").write_text("id,text\n,a\n,a\np-ca978112ca-2,b\n")
    path = tmp_path / "jobs.toml"
    path.write_text('data_file = "rows.csv"\n[defaults]\nprompt_template = "{text}"\nid_column = "id"\n')
    lazy = _load(path)
    assert lazy == in_full(path)
    name = tmp_path / "rows.csv"
    assert lazy[1] == [f"{name}: row 3: id: duplicate id 'p-ca978112ca-2' (also at {name}: row 2)"]


def test_a_prompts_file_numbers_its_lines_alike_in_every_message(tmp_path: Path) -> None:
    lines = [orjson.dumps({"prompt": f"p{i}", "id": f"k{i}"}).decode() for i in range(1, 1300)]
    lines[1099] = orjson.dumps({"prompt": "again", "id": "k5"}).decode()  # line 1,100: a plain line
    lines[1199] = '{"prompt": "x", "id": "k6", "model": "m"}'  # line 1,200: checked in full
    lines[1249] = "{bad"
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "jobs.toml").write_text('prompts_file = "p.jsonl"\n')
    with pytest.raises(ConfigError) as exc:
        load_job_file(tmp_path / "jobs.toml")
    where = [p.split(": ")[1] for p in exc.value.problems]
    assert where == ["line 1,250", "line 1,100", "line 1,200"], exc.value.problems
