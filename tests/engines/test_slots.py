"""The attempt slots a node offers the Ray engine: by memory for backends whose attempts are
processes (claude-code, ~200 MB each), as asked for the others."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.backends import backend_kind
from orchestrator.engines.ray import slots
from orchestrator.engines.ray.slots import (
    RESERVE_BYTES,
    available_memory,
    main,
    memory_per_attempt,
    node_slots,
)

MB = 1024**2
AGENT = 200 * MB


def test_a_claude_code_attempt_takes_200_mb_and_an_http_or_sim_attempt_none() -> None:
    assert memory_per_attempt([backend_kind("claude-code")]) == AGENT
    assert memory_per_attempt([backend_kind("openai"), backend_kind("sim")]) == 0
    assert memory_per_attempt([backend_kind("sim"), backend_kind("claude-code")]) == AGENT  # the hungriest
    assert memory_per_attempt([]) == 0


@pytest.mark.parametrize(
    ("memory", "slots"),
    [
        (RESERVE_BYTES + 64 * AGENT, 64),  # room for all it may run
        (RESERVE_BYTES + 10 * AGENT + AGENT // 2, 10),  # a small node: one agent per 200 MB left
        (RESERVE_BYTES + AGENT - 1, 1),  # not even one: still one, rather than a node that runs nothing
        (RESERVE_BYTES // 2, 1),
    ],
)
def test_a_node_offers_one_agent_slot_per_200_mb_beyond_the_reserve(memory: int, slots: int) -> None:
    assert node_slots(AGENT, memory, most=64) == slots


def test_without_memory_per_attempt_a_node_offers_what_is_asked() -> None:
    assert node_slots(0, 512 * MB, most=128) == 128


@given(
    per_attempt=st.integers(min_value=1, max_value=4096 * MB),
    memory=st.integers(min_value=0, max_value=2**40),
    most=st.integers(min_value=1, max_value=10_000),
)
def test_the_slots_never_need_more_memory_than_the_node_has(per_attempt: int, memory: int, most: int) -> None:
    slots = node_slots(per_attempt, memory, most)
    assert 1 <= slots <= most
    assert slots == 1 or RESERVE_BYTES + slots * per_attempt <= memory
    # Less memory never gives more slots.
    assert node_slots(per_attempt, memory // 2, most) <= slots


def test_the_command_prints_the_resources_for_ray_start(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(slots, "available_memory", lambda: RESERVE_BYTES + 10 * AGENT)
    assert main(["claude-code"]) == 0
    assert json.loads(capsys.readouterr().out) == {"llm_slots": 10}
    assert main(["sim", "--most", "16"]) == 0
    assert json.loads(capsys.readouterr().out) == {"llm_slots": 16}


def test_the_memory_available_is_read_from_the_system() -> None:
    assert 0 < available_memory() < 2**50


def test_the_command_refuses_an_unknown_backend_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gemini"]) == 2
    assert capsys.readouterr().err == "slots: unknown backend 'gemini'\n"
