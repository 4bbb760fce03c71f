"""Job files and queries → a checked BatchSpec."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.backends.sim.backend import Options as SimOptions
from orchestrator.config import jobfile
from orchestrator.config.jobfile import Overrides, build_batch, load_job_file
from orchestrator.config.sources import BLANK_PROMPT
from orchestrator.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "jobs.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_merge_into_jobs_key_by_key(tmp_path: Path) -> None:
    spec = load_job_file(
        write(
            tmp_path,
            """
[defaults]
model = "m1"
max_tokens = 100
concurrency = 3
[defaults.retry]
max_attempts = 5
base_delay = 0.5
[defaults.sim]
ttft = 0.1
tokens_per_s = 9
[[jobs]]
id = "a"
prompt = "p"
[jobs.retry]
max_attempts = 2
[jobs.sim]
ttft = 2.0
[[jobs]]
id = "b"
prompt = "q"
model = "m2"
""",
        )
    )
    a, b = spec.jobs
    assert spec.concurrency == 3
    assert (a.retry.max_attempts, a.retry.base_delay) == (2, 0.5)
    assert a.options == SimOptions(ttft=2.0, tokens_per_s=9)
    assert (a.model, b.model, b.max_tokens) == ("m1", "m2", 100)
    assert b.options == SimOptions(ttft=0.1, tokens_per_s=9)


def test_ids_are_derived_from_prompts_and_equal_prompts_get_suffixes() -> None:
    spec = build_batch(["same", "same", "other", "same"], {})
    ids = [job.id for job in spec.jobs]
    assert ids[0].startswith("p-") and ids[1] == ids[0] + "-2" and ids[3] == ids[0] + "-3"
    assert build_batch(["same"], {}).jobs[0].id == ids[0]  # stable across runs


def test_content_hash_changes_with_what_shapes_the_answer_only() -> None:
    def one(**job: object) -> str:
        return build_batch([{"id": "x", "prompt": "p", **job}], {}).jobs[0].content_hash

    base = one()
    assert one(model="other") != base
    assert one(sim={"text": "t"}) != base
    assert one(prompt="q") != base
    assert one(retry={"max_attempts": 9}) == base  # retries do not change the answer
    assert one(timeouts={"idle": 5}) == base


def test_cli_overrides_win(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[defaults]\nconcurrency = 2\n[[jobs]]\nprompt = "p"\n[[jobs]]\nprompt = "q"\nbackend = "sim"\n',
    )
    spec = load_job_file(path, Overrides(concurrency=7, log="x.jsonl", timeouts={"idle": 3.0}, deadline=60))
    assert (spec.concurrency, spec.log, spec.deadline) == (7, "x.jsonl", 60)
    assert all(job.timeouts.idle == 3.0 for job in spec.jobs)


def test_unknown_backend_override_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, '[[jobs]]\nprompt = "p"\n')
    with pytest.raises(ConfigError) as info:
        load_job_file(path, Overrides(backend="simm"))
    assert "unknown backend 'simm' (did you mean 'sim'?)" in info.value.problems[0]


def test_prompts_file_lines_are_strings_or_job_objects(tmp_path: Path) -> None:
    write(tmp_path, '"plain"\n\n{"id": "obj", "prompt": "object", "max_tokens": 5}\n', name="p.jsonl")
    spec = load_job_file(write(tmp_path, 'prompts_file = "p.jsonl"\n[[jobs]]\nid = "t"\nprompt = "toml"\n'))
    assert [j.prompt for j in spec.jobs] == ["toml", "plain", "object"]
    assert spec.jobs[2].max_tokens == 5


def test_a_prompts_file_keeps_its_order_and_ids_across_plain_and_full_lines(tmp_path: Path) -> None:
    lines = [
        '"same"',
        '"a"',
        '{"prompt": "same"}',
        '{"prompt": "b", "max_tokens": 3}',
        '"same"',
        '{"id": "x", "prompt": "c"}',
    ]
    write(tmp_path, "\n".join(lines) + "\n", name="p.jsonl")
    spec = load_job_file(write(tmp_path, 'prompts_file = "p.jsonl"'))
    same = build_batch(["same"], {"backend": "sim"}).jobs[0].id
    assert [j.prompt for j in spec.jobs] == ["same", "a", "same", "b", "same", "c"]
    assert [j.id for j in spec.jobs] == [
        same,
        spec.jobs[1].id,
        f"{same}-2",
        spec.jobs[3].id,
        f"{same}-3",
        "x",
    ]
    assert [j.max_tokens for j in spec.jobs] == [None, None, None, 3, None, None]
    assert list(spec.jobs.ids()) == [j.id for j in spec.jobs]


def test_a_prompts_file_of_strings_is_kept_as_lines_and_its_jobs_made_when_asked(tmp_path: Path) -> None:
    prompts = [f"q{i % 2500}" for i in range(3000)]  # the last 500 repeat earlier ones
    write(tmp_path, "".join(f'"{prompt}"\n' for prompt in prompts), name="p.jsonl")
    spec = load_job_file(write(tmp_path, 'prompts_file = "p.jsonl"\n[defaults]\nmodel = "m"'))
    assert type(spec.jobs.parts[-1]).__name__ == "Rows" and len(spec.jobs) == 3000
    eager = build_batch(prompts, {"backend": "sim", "model": "m"})
    assert spec.jobs == eager.jobs and spec.jobs[2999] == eager.jobs[2999]
    assert spec.jobs[2500].id == spec.jobs[0].id + "-2"


def test_a_repeated_id_in_a_prompts_file_names_both_lines(tmp_path: Path) -> None:
    write(tmp_path, '"a"\n{"id": "k", "prompt": "b"}\n"c"\n{"id": "k", "prompt": "d"}\n', name="p.jsonl")
    with pytest.raises(ConfigError) as info:
        load_job_file(write(tmp_path, 'prompts_file = "p.jsonl"'))
    name = tmp_path / "p.jsonl"
    assert info.value.problems == [f"{name}: line 4: id: duplicate id 'k' (also at {name}: line 2)"]


def test_a_shared_bad_default_is_reported_once() -> None:
    with pytest.raises(ConfigError) as info:
        build_batch(["a", "b", "c"], {"retry": {"base_delay": 5.0, "max_delay": 1.0}})
    assert info.value.problems == ["defaults.retry: max_delay (1.0) is below base_delay (5.0)"]


def test_a_jobs_own_retry_is_checked_where_it_is_set() -> None:
    with pytest.raises(ConfigError) as info:
        build_batch(["a", {"prompt": "b", "retry": {"max_delay": 0.5}}], {"retry": {"base_delay": 2.0}})
    assert info.value.problems == ["queries[1].retry: max_delay (0.5) is below base_delay (2.0)"]


@pytest.mark.parametrize(
    "defaults, problem",
    [
        ({"concurrency": "8"}, 'defaults.concurrency: expected an integer, got string "8"'),
        ({"fsync": "sometimes"}, 'defaults.fsync: string "sometimes" is not one of: always, terminal, never'),
        ({"timeouts": {"idle": 0}}, "defaults.timeouts.idle: must be > 0, got 0.0"),
        ({"temperature": 3}, "defaults.temperature: must be <= 2, got 3.0"),
        ({"sim": {"tokens_per_s": False}}, "defaults.sim.tokens_per_s: expected a number, got boolean false"),
        ({"metadata": "x"}, 'defaults.metadata: expected a table, got string "x"'),
    ],
)
def test_values_are_checked_strictly(defaults: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_batch(["p"], defaults)
    assert info.value.problems == [problem]


def test_nan_and_infinity_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        build_batch(["p"], {"retry": {"max_delay": float("nan")}, "timeouts": {"idle": float("inf")}})
    assert info.value.problems == [
        "defaults.retry.max_delay: expected a finite number, got nan",
        "defaults.timeouts.idle: expected a finite number, got inf",
    ]


def test_command_line_timeouts_win_over_a_jobs_own(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[jobs]]\nid = "a"\nprompt = "p"\ntimeouts = {idle = 30}\n[[jobs]]\nid = "b"\nprompt = "q"\n',
    )
    spec = load_job_file(path, Overrides(timeouts={"idle": 5.0}))
    assert [job.timeouts.idle for job in spec.jobs] == [5.0, 5.0]


def test_hard_cap_needs_a_cap() -> None:
    with pytest.raises(ConfigError) as info:
        build_batch(["p"], {"hard_cap": True})
    assert info.value.problems == ["defaults.hard_cap: needs a spend cap: max_cost_usd"]


def test_a_bad_backend_from_the_command_line_is_named_as_such(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_job_file(write(tmp_path, '[[jobs]]\nprompt = "p"\n'), Overrides(backend="bogus"))
    assert info.value.problems[0].startswith(f"{tmp_path / 'jobs.toml'}: --backend: unknown backend 'bogus'")


def test_the_content_hash_covers_the_backends_model_setting() -> None:
    def job_hash(backends: dict[str, object]) -> str:
        return build_batch([{"id": "x", "prompt": "p"}], {"backends": backends}).jobs[0].content_hash

    assert job_hash({}) == job_hash({"sim": {"concurrency": 2}})  # how fast is not what

    def local_hash(settings: dict[str, object]) -> str:
        spec = build_batch(
            [{"id": "x", "prompt": "p"}], {"backend": "local", "backends": {"local": settings}}
        )
        return spec.jobs[0].content_hash

    assert local_hash({"model_path": "/a.gguf"}) != local_hash({"model_path": "/b.gguf"})
    assert local_hash({"model_path": "/a.gguf", "slots": 1}) == local_hash(
        {"model_path": "/a.gguf", "slots": 4}
    )


def test_a_fifo_as_prompts_file_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ConfigError) as info:
        load_job_file(write(tmp_path, 'prompts_file = "pipe"\n'))
    assert info.value.problems == [
        f"{tmp_path / 'jobs.toml'}: prompts_file: {tmp_path / 'pipe'}: not a regular file"
    ]


def test_library_queries_nested_too_deeply_are_a_config_error() -> None:
    deep: object = 1
    for _ in range(300):
        deep = [deep]
    with pytest.raises(ConfigError) as info:
        build_batch([{"prompt": "p", "metadata": {"x": deep}, "seed": 2**64}], {"backend": "sim"})
    assert info.value.problems == [
        "queries[0].metadata.x[0][0]: nested deeper than 64 levels",
        "queries[0].seed: integer out of range (integers are 64-bit)",
    ]


def test_every_problem_is_one_line_whatever_the_input_holds(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[defaults]\nconcurrency = "8\\n\\u001b[2J"\n"bad\\nkey" = 1\n[[jobs]]\nprompt = "p"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_job_file(path)
    assert info.value.problems == [
        f'{path}: defaults.concurrency: expected an integer, got string "8\\n\\x1b[2J"',
        f"{path}: defaults.bad\\nkey: unknown key",
    ]


plain_tables = st.fixed_dictionaries(
    {"prompt": st.text(max_size=20)}, optional={"id": st.text(min_size=0, max_size=6)}
)


@settings(max_examples=50, deadline=None)
@given(tables=st.lists(plain_tables, min_size=1, max_size=6), others=st.lists(st.booleans(), max_size=6))
def test_plain_jobs_made_from_the_first_equal_jobs_resolved_in_full(
    tables: list[dict[str, str]], others: list[bool]
) -> None:
    # Some jobs carry one more key, so plain and full jobs alternate in the batch.
    mixed = [{**t, "max_tokens": 9} if i < len(others) and others[i] else t for i, t in enumerate(tables)]
    defaults = {"backend": "sim", "model": "m", "max_tokens": 5, "sim": {"ttft": 0.1}}
    try:
        together = build_batch(mixed, defaults).jobs
    except ConfigError as exc:  # equal explicit ids, a NUL in one, a blank prompt: the only problems
        assert all(
            "duplicate id" in p or "contains a NUL" in p or p.endswith(f"prompt: {BLANK_PROMPT}")
            for p in exc.problems
        )
        return
    alone = [build_batch([table], defaults).jobs[0] for table in mixed]
    for job, single in zip(together, alone, strict=True):
        if not job.id.startswith(single.id):  # equal prompts without ids: -2, -3 suffixes
            raise AssertionError((job, single))
        assert attrs.evolve(job, id=single.id) == single


@pytest.mark.parametrize("running", [True, False])
def test_loading_pauses_the_cycle_collector_and_leaves_it_as_it_was(tmp_path: Path, running: bool) -> None:
    import gc

    seen: list[bool] = []
    original = jobfile.resolve

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(gc.isenabled())
        return original(*args, **kwargs)

    (gc.enable if running else gc.disable)()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(jobfile, "resolve", spy)
            load_job_file(write(tmp_path, '[[jobs]]\nprompt = "x"'))
            with pytest.raises(ConfigError):
                load_job_file(write(tmp_path, "[[jobs]]\nprompt = 3"))
        assert seen == [False, False] and gc.isenabled() is running
    finally:
        gc.enable()
