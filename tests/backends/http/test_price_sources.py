"""Where prices come from: the job file, then genai-prices (a maintained table shipped in its
wheel, used offline), then the built-in table; and the summary says which one priced each model."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.backends.http import maintained
from orchestrator.backends.http.prices import (
    ANTHROPIC_PRICES,
    BUILT_IN,
    JOB_FILE,
    OPENAI_PRICES,
    Price,
    PriceBook,
    cost_usd,
)
from orchestrator.events import StreamFinished, Tokens
from orchestrator.testing.anthropic.server import Reply, Text, Usage, open_fake_anthropic
from tests.http_helpers import events_of, run_jobs

genai_prices = pytest.importorskip("genai_prices")  # in the test extra: CI always has it
ROOT = Path(__file__).resolve().parents[3]
GENAI = maintained.source()
TOKENS = Tokens(input=1000, output=500, cache_read=2000, cache_creation=300)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No connection may leave this process (loopback stays open for the fake servers)."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost") and not isinstance(host, bytes | int):
            raise AssertionError(f"a connection to {address!r} was attempted")
        real_connect(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield


def test_genai_prices_is_the_source_when_installed() -> None:
    assert GENAI is not None and GENAI.startswith("genai-prices ")
    book = PriceBook("anthropic", ANTHROPIC_PRICES)
    cost, source = book.cost("claude-haiku-4-5", TOKENS)
    assert source == GENAI
    # its figure, computed offline from the data in its wheel: 1000 + 2000 + 300 prompt tokens in
    expected = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=3300, cache_read_tokens=2000, cache_write_tokens=300, output_tokens=500
        ),
        model_ref="claude-haiku-4-5",
        provider_id="anthropic",
    ).total_price
    assert cost == pytest.approx(float(expected))
    assert cost == pytest.approx(cost_usd(ANTHROPIC_PRICES["claude-haiku-4-5"], TOKENS))  # the tables agree


def test_it_knows_dated_snapshots() -> None:
    assert PriceBook("openai", OPENAI_PRICES).cost("gpt-4o-mini-2024-07-18", TOKENS)[1] == GENAI


def test_the_job_file_wins_over_every_table() -> None:
    book = PriceBook("openai", OPENAI_PRICES, {"gpt-4o": Price(input=1.0, output=2.0)})
    assert book.cost("gpt-4o", Tokens(input=1_000_000, output=1_000_000)) == (pytest.approx(3.0), JOB_FILE)


def test_a_model_it_does_not_know_falls_back_to_the_built_in_table() -> None:
    book = PriceBook("openai", {"house-model-1": Price(input=1.0, output=1.0)})
    assert book.cost("house-model-1", Tokens(output=1_000_000)) == (pytest.approx(1.0), BUILT_IN)
    assert book.cost("nobody-prices-this", TOKENS) == (None, None)


def test_without_genai_prices_the_built_in_table_prices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maintained, "source", lambda: None)
    maintained.cost_function.cache_clear()
    try:
        cost, source = PriceBook("anthropic", ANTHROPIC_PRICES).cost("claude-haiku-4-5", TOKENS)
    finally:
        maintained.cost_function.cache_clear()
    assert source == BUILT_IN
    assert cost == pytest.approx(cost_usd(ANTHROPIC_PRICES["claude-haiku-4-5"], TOKENS))


def test_import_orchestrator_does_not_import_genai_prices() -> None:
    code = (
        "import sys, orchestrator, orchestrator.api, orchestrator.backends.http.anthropic; "
        "print('genai_prices' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "False"


async def test_the_summary_says_which_source_priced_each_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789")
    reply = Reply((Text("Hi."),), usage=Usage(input_tokens=10, output_tokens=5))
    async with open_fake_anthropic() as fake:
        fake.script(reply, reply)
        result, recorder = await run_jobs(
            "anthropic",
            {"base_url": fake.base_url, "prices": {"claude-house": {"input": 1.0, "output": 1.0}}},
            [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y", "model": "claude-house"}],
            model="claude-haiku-4-5",
            concurrency=1,
        )
    assert result.summary.priced_by == {"claude-haiku-4-5": GENAI, "claude-house": JOB_FILE}
    assert sorted(e.priced_by for e in events_of(recorder, StreamFinished)) == sorted([GENAI, JOB_FILE])
