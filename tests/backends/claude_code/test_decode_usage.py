"""What a Claude Code attempt used: the result line's counts, ``modelUsage`` where they are zeros."""

from __future__ import annotations

from typing import Any

from orchestrator.backends.claude_code.outcome import result_tokens
from orchestrator.events import StreamFinished, Tokens
from tests.backends.claude_code.test_decode import decode, line, replay, result_of, usage_sum

ZEROS = {
    "input_tokens": 0,
    "output_tokens": 0,
    "cache_read_input_tokens": 0,
    "cache_creation_input_tokens": 0,
}


def model_usage(**per_model: tuple[int, int, int, int]) -> dict[str, Any]:
    return {
        model: {
            "inputTokens": i,
            "outputTokens": o,
            "cacheReadInputTokens": r,
            "cacheCreationInputTokens": c,
            "costUSD": 0.001,
        }
        for model, (i, o, r, c) in per_model.items()
    }


def test_a_budget_stop_with_zero_usage_takes_its_tokens_from_model_usage() -> None:
    # Recorded: the CLI's result after --max-budget-usd has usage all zeros.
    result = result_of("max_budget")
    assert result["usage"]["input_tokens"] == result["usage"]["output_tokens"] == 0
    [counts] = result["modelUsage"].values()
    events, outcome = replay("max_budget")
    assert not outcome.ok
    tokens, cost = usage_sum(events)
    assert tokens == Tokens(counts["inputTokens"], counts["outputTokens"]) and tokens.total > 0
    assert cost == result["total_cost_usd"]


def test_a_success_with_zero_usage_sums_model_usage_over_models() -> None:
    # After the CLI's non-streaming fallback: usage zeros, the counts per model.
    usage = model_usage(**{"claude-opus-5-5": (10, 5, 100, 7), "claude-haiku-4-5": (3, 2, 0, 0)})
    result = line(
        type="result", subtype="success", is_error=False, result="ok", usage=ZEROS, modelUsage=usage
    )
    events, outcome = decode([result])
    assert outcome.ok
    finished = events[-1]
    assert isinstance(finished, StreamFinished)
    assert finished.tokens == Tokens(13, 7, 100, 7)


def test_nonzero_usage_is_taken_as_is_whatever_model_usage_says() -> None:
    usage = {**ZEROS, "input_tokens": 4, "output_tokens": 2}
    result = {"usage": usage, "modelUsage": model_usage(m=(40, 20, 0, 0))}
    assert result_tokens(result) == Tokens(4, 2)


def test_zero_usage_and_no_model_usage_stays_zero() -> None:
    assert result_tokens({"usage": ZEROS}) == Tokens()
    assert result_tokens({"usage": ZEROS, "modelUsage": {"m": "junk", "n": None}}) == Tokens()
    assert result_tokens({}) is None


def test_model_usage_alone_gives_the_tokens() -> None:
    assert result_tokens({"modelUsage": model_usage(m=(1, 2, 3, 4))}) == Tokens(1, 2, 3, 4)
