"""Load: 1,000 streams at once (250 over TLS) against the fake server: no error, no leaked socket."""

from __future__ import annotations

import pytest

from orchestrator.testing.openai.server import Reply, open_fake_openai
from tests.http_helpers import collect_garbage, run_jobs, wait_until_zero

STREAMS = {"http": 1000, "https": 250}  # TLS handshakes on both sides of one process are slow


@pytest.mark.slow
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_a_thousand_concurrent_streams_complete_without_errors_or_leaks(
    tls: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if tls:
        pytest.importorskip("trustme")
    streams = STREAMS["https" if tls else "http"]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-load")
    async with open_fake_openai(tls=tls, default=Reply("one two three four five six", chunk_chars=4)) as fake:
        fake.hold_until(streams)  # no reply before every stream is in flight
        settings = {"base_url": fake.base_url, "ca_file": fake.ca_file, "concurrency": streams}
        result, _ = await run_jobs(
            "openai",
            settings,
            [f"question {i}" for i in range(streams)],
            model="gpt-4o-mini",
            concurrency=streams,
        )
        await wait_until_zero(lambda: fake.open_connections, "server-side connections")
    assert result.summary.succeeded == streams and result.summary.retries == 0
    assert fake.connections == fake.peak_connections == streams
    assert all(job.text == "one two three four five six" for job in result.jobs.values())
    collect_garbage()
