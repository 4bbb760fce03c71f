"""Fuzzing job files: random mutations of the shipped examples (``jobs/*.toml``) must come out as
a checked batch or a :class:`ConfigError`, never any other exception, and never hang.

A mutation picks a key anywhere in the file and gives it a value of another TOML type, an
out-of-range integer, an odd string, a deep nesting; or deletes or duplicates a key. Each case
goes through what the command line does before a run (load + preflight) in-process; a few go
through the real ``orchestrate`` command. Inputs that once crashed are kept in
``tests/bad_inputs/`` with their expected lines.
"""

from __future__ import annotations

import datetime
import math
import os
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.config.jobfile import load_job_file
from orchestrator.errors import ConfigError
from orchestrator.run.batch import preflight

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = {path.name: tomllib.loads(path.read_text()) for path in sorted((ROOT / "jobs").glob("*.toml"))}
CASE_SECONDS = 10  # one case, load and preflight: far more than it takes; a hang fails the test


def toml_key(key: str) -> str:
    return orjson.dumps(key).decode()  # a JSON string is a TOML basic string


def toml_value(value: Any) -> str:
    """``value`` as TOML, every table inline (so any structure is one expression)."""
    if isinstance(value, Deep):
        return "[" * value.depth + "1" + "]" * value.depth
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(type(value))


def to_toml(data: dict[str, Any], duplicate: str | None) -> str:
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in data.items()]
    if duplicate is not None:  # the same top-level key twice: invalid TOML, must say so
        lines.append(f"{toml_key(duplicate)} = {toml_value(data.get(duplicate, 1))}")
    return "\n".join(lines) + "\n"


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path in a parsed TOML document."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


class Deep:
    """A list nested ``depth`` levels around one integer, written without recursion."""

    def __init__(self, depth: int) -> None:
        self.depth = depth


ODD_STRINGS = st.sampled_from(
    [
        "",
        "\0",
        "a\0b",
        "../../etc/passwd",
        "/dev/zero",
        "/dev/null",
        ".",
        "http://[::1",
        "http://h:99999/v1",
        "https://a..b/v1",
        "ftp://x",
        "\x1b]0;title\x07",
        "[/INST]",
        "x" * 5000,
        "sim",
        "openai",
        "claude-code",
    ]
)
VALUES = st.one_of(
    st.none(),  # stands for "delete the key"
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    ODD_STRINGS,
    st.datetimes(
        min_value=datetime.datetime(1, 1, 1), max_value=datetime.datetime(9999, 1, 1), timezones=st.none()
    ),
    st.lists(st.integers(min_value=-5, max_value=5) | st.text(max_size=5), max_size=3),
    st.dictionaries(
        st.text(max_size=8), st.integers(min_value=-5, max_value=5) | st.text(max_size=5), max_size=3
    ),
    st.sampled_from([30, 70, 260, 300, 600]).map(Deep),
)


@st.composite
def mutated_job_files(draw: st.DrawFn) -> tuple[str, str]:
    name = draw(st.sampled_from(sorted(EXAMPLES)))
    data = orjson.loads(orjson.dumps(EXAMPLES[name]))  # a deep copy with plain types
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        where = draw(st.sampled_from([(), *paths(data)]))
        value = draw(VALUES)
        if not where:  # a top-level key, new or replaced (or deleted)
            top = draw(st.sampled_from(["defaults", "jobs", "backends", "prompts_file", "extra"]))
            if value is None:
                data.pop(top, None)
            else:
                data[top] = value
            continue
        *parent_path, key = where
        parent = data
        for step in parent_path:
            parent = parent[step]
        if value is None and isinstance(parent, dict):
            del parent[key]
        elif value is not None:
            parent[key] = value
    duplicate = draw(st.sampled_from(sorted(data) or ["jobs"])) if draw(st.integers(0, 9)) == 0 else None
    return name, to_toml(data, duplicate)


def load_and_preflight(path: Path) -> object:
    """What the command line does before a run: a batch, or ConfigError; anything else fails."""
    spec = load_job_file(path)
    preflight(spec)
    return spec


class _Hang(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Hang(f"a case took over {CASE_SECONDS}s")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=mutated_job_files())
def test_a_mutated_job_file_is_a_batch_or_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[str, str]
) -> None:
    name, text = case
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_text(text)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    try:
        load_and_preflight(path)
    except ConfigError as exc:
        assert exc.problems and all(p and "\n" not in p for p in exc.problems)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@settings(max_examples=6, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=mutated_job_files())
def test_a_mutated_job_file_through_the_command_exits_0_1_or_2_without_a_traceback(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[str, str]
) -> None:
    name, text = case
    workdir = tmp_path_factory.mktemp("fuzz-cli")
    (workdir / name).write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", name, "--no-log", "-q", "--deadline", "5"],
        cwd=workdir,
        # No keys: a mutated file must never reach a real API from a test.
        env={k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        | {"PYTHONPATH": str(ROOT), "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode in (0, 1, 2), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
