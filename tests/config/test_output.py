"""``output_schema`` and ``output_schema_file`` in job files and library calls:
orchestrator/config/output.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from orchestrator.config.jobfile import load_job_file
from orchestrator.config.library import library_batch
from orchestrator.errors import ConfigError
from orchestrator.spec import OutputSchema, Query

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def write(tmp_path: Path, text: str, name: str = "jobs.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_job_file(path)
    return caught.value.problems


def test_a_schema_as_a_table_in_defaults_reaches_every_job(tmp_path: Path) -> None:
    spec = load_job_file(
        write(
            tmp_path,
            """
[defaults.output_schema]
type = "object"
required = ["n"]
[defaults.output_schema.properties.n]
type = "integer"
[[jobs]]
prompt = "a"
[[jobs]]
prompt = "b"
""",
        )
    )
    assert [job.output_schema for job in spec.jobs] == [OutputSchema(SCHEMA)] * 2


def test_a_schema_as_json_text_or_a_file_relative_to_the_job_file(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "n.json").write_bytes(orjson.dumps(SCHEMA))
    spec = load_job_file(
        write(
            tmp_path,
            """
[[jobs]]
id = "text"
prompt = "a"
output_schema = '{"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}'
[[jobs]]
id = "file"
prompt = "b"
output_schema_file = "schemas/n.json"
[[jobs]]
id = "none"
prompt = "c"
""",
        )
    )
    assert [job.output_schema for job in spec.jobs] == [OutputSchema(SCHEMA), OutputSchema(SCHEMA), None]


def test_the_schema_is_part_of_the_content_hash(tmp_path: Path) -> None:
    plain = load_job_file(write(tmp_path, '[[jobs]]\nprompt = "a"\n', "a.toml")).jobs[0]
    schema = load_job_file(
        write(tmp_path, '[[jobs]]\nprompt = "a"\noutput_schema = \'{"type": "object"}\'\n', "b.toml")
    ).jobs[0]
    other = load_job_file(
        write(tmp_path, '[[jobs]]\nprompt = "a"\noutput_schema = \'{"type": "array"}\'\n', "c.toml")
    ).jobs[0]
    assert len({plain.content_hash, schema.content_hash, other.content_hash}) == 3


def test_a_bad_schema_is_named_by_file_and_key_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[defaults.output_schema]
type = "object"
properties = { n = { type = "integer", minimum = "zero" } }
[[jobs]]
prompt = "a"
output_schema = '{"type": "strin"}'
[[jobs]]
prompt = "b"
output_schema = '{"type": '
""",
    )
    found = problems(path)
    assert found[0] == (
        f'{path}: defaults.output_schema.properties.n.minimum: not a valid JSON Schema: "zero" is not of '
        'type "number"'
    )
    assert found[1].startswith(f"{path}: jobs[0].output_schema.type: not a valid JSON Schema: ")
    assert found[2].startswith(f"{path}: jobs[1].output_schema: invalid JSON: ")
    assert len(found) == 3


def test_a_missing_or_broken_schema_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "bad.json").write_text('{"required": "n"}')
    path = write(
        tmp_path,
        """
[[jobs]]
prompt = "a"
output_schema_file = "missing.json"
[[jobs]]
prompt = "b"
output_schema_file = "broken.json"
[[jobs]]
prompt = "c"
output_schema_file = "bad.json"
[[jobs]]
prompt = "d"
output_schema_file = 3
""",
    )
    found = problems(path)
    assert (
        found[0] == f"{path}: jobs[0].output_schema_file: {tmp_path / 'missing.json'}: cannot read: "
        "No such file or directory"
    )
    assert found[1].startswith(
        f"{path}: jobs[1].output_schema_file: {tmp_path / 'broken.json'}: invalid JSON: "
    )
    assert found[2] == (
        f"{path}: jobs[2].output_schema_file ({tmp_path / 'bad.json'}).required: not a valid JSON Schema: "
        '"n" is not of type "array"'
    )
    assert found[3] == f"{path}: jobs[3].output_schema_file: expected a path to a JSON file, got integer 3"


def test_both_keys_in_one_table_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "n.json").write_bytes(orjson.dumps(SCHEMA))
    path = write(tmp_path, '[[jobs]]\nprompt = "a"\noutput_schema = "{}"\noutput_schema_file = "n.json"\n')
    assert any("give output_schema or output_schema_file, not both" in p for p in problems(path))


def test_the_retry_settings_of_invalid_output_are_checked(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[defaults.retry]\nmax_invalid_output = -1\nreask = "yes"\n[[jobs]]\nprompt = "a"\n'
    )
    found = problems(path)
    assert any("defaults.retry.max_invalid_output" in p for p in found)
    assert any("defaults.retry.reask" in p for p in found)


def test_the_command_exits_2_with_the_one_line_problem(tmp_path: Path) -> None:
    path = write(tmp_path, '[[jobs]]\nprompt = "a"\nbackend = "sim"\noutput_schema = \'{"minimum": "x"}\'\n')
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f'{path}: jobs[0].output_schema.minimum: not a valid JSON Schema: "x" is not of type "number"'
    )


def test_library_callers_give_a_schema_as_a_keyword_or_per_query() -> None:
    spec = library_batch(
        "run_batch",
        ["a", Query("b", output_schema='{"type": "array"}'), Query("c")],
        {"backend": "sim", "output_schema": SCHEMA},
    )
    assert [job.output_schema for job in spec.jobs] == [
        OutputSchema(SCHEMA),
        OutputSchema({"type": "array"}),
        OutputSchema(SCHEMA),
    ]
    with pytest.raises(ConfigError) as caught:
        library_batch("run_batch", [Query("b", output_schema={"type": 3})], {"backend": "sim"})
    assert caught.value.problems[0].startswith("run_batch(queries=...)[0].output_schema.type: not a valid")
    with pytest.raises(ConfigError) as caught:
        library_batch("run_batch", ["a"], {"backend": "sim", "output_schema": "nope"})
    assert caught.value.problems[0].startswith("run_batch(output_schema=...): invalid JSON: ")
