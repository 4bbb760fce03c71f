"""The dry run: per backend and model, tokens, budget, cost and rate-limit time; nothing sent."""

from __future__ import annotations

import pytest

from orchestrator.run.dryrun import EXPECTED_REPLY_TOKENS, dry_run
from tests.helpers import make_spec

PRICE = {"input": 1.0, "output": 10.0}  # dollars per million tokens


def test_groups_count_tokens_budget_and_cost_by_the_backends_own_estimate() -> None:
    spec = make_spec(
        [
            {"prompt": "x" * 400, "model": "a", "max_tokens": 1000},
            {"prompt": "y" * 400, "model": "a", "max_tokens": 100},
            {"prompt": "z" * 40, "model": "b", "max_tokens": 10},
        ],
        backend="openai",
        backends={"openai": {"prices": {"a": PRICE}, "rpm": 60, "tpm": 1100, "models": {"b": {"rpm": 1}}}},
    )
    plan = dry_run(spec)
    a, b = plan.groups
    assert (a.model, a.jobs, a.input_tokens, a.max_tokens) == ("a", 2, 202, 1100)
    assert a.cost_worst_usd == pytest.approx((202 * 1.0 + 1100 * 10.0) / 1e6)
    assert a.cost_expected_usd == pytest.approx((202 * 1.0 + (EXPECTED_REPLY_TOKENS + 100) * 10.0) / 1e6)
    assert a.rate_limit_s == pytest.approx((202 + 1100) / 1100 * 60)  # tokens, not requests, bind
    assert b.cost_worst_usd is None and b.cost_expected_usd is None  # no price for model b
    assert b.rate_limit_s == pytest.approx(60.0)  # one request at the model's 1 rpm


def test_samples_show_the_first_rendered_requests() -> None:
    spec = make_spec([{"id": f"q{i}", "prompt": f"p{i}", "system": "s"} for i in range(5)])
    plan = dry_run(spec, samples=2)
    assert plan.jobs == 5 and [s["id"] for s in plan.samples] == ["q0", "q1"]
    assert plan.samples[0]["messages"] == [{"role": "user", "content": "p0"}]
    assert plan.groups[0].rate_limit_s is None  # no limits configured
