"""The batch backends cost half the streaming price: in results (see the end-to-end tests) and
in the dry run, which uses the per-attempt estimate the spend cap reserves; their defaults."""

from __future__ import annotations

import pytest

from orchestrator.backends import backend_kind
from orchestrator.run.dryrun import dry_run
from tests.helpers import make_spec

PRICE = {"input": 1.0, "output": 10.0}


@pytest.mark.parametrize(
    ("streaming", "batch"), [("anthropic", "anthropic-batch"), ("openai", "openai-batch")]
)
def test_the_dry_run_prices_a_batch_backend_at_half_the_streaming_price(streaming: str, batch: str) -> None:
    jobs = [{"prompt": "x" * 400, "model": "m", "max_tokens": 1000}]
    plans = [
        dry_run(make_spec(jobs, backend=name, backends={name: {"prices": {"m": PRICE}}})).groups[0]
        for name in (streaming, batch)
    ]
    assert plans[0].cost_worst_usd == pytest.approx((101 * 1.0 + 1000 * 10.0) / 1e6)
    assert plans[1].cost_worst_usd == pytest.approx(plans[0].cost_worst_usd / 2)
    assert plans[1].cost_expected_usd == pytest.approx(plans[0].cost_expected_usd / 2)


def test_batch_backends_allow_many_waiting_jobs_that_hold_no_open_file() -> None:
    for name in ("anthropic-batch", "openai-batch"):
        kind = backend_kind(name)
        assert kind.default_concurrency is not None and kind.default_concurrency >= 10_000
        assert getattr(kind, "files_per_attempt", None) == 0
