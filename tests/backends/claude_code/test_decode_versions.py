"""Transcripts of the oldest accepted CLI (2.1.200, recorded with the same scenarios as the pinned
CLI's) decode to the same jobs: same text, same outcome. That version drops a broken stream
without the ``abandoned_blocks`` notice, so its partial text must not stay in the answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.backends.claude_code.cli import OLDEST_VERSION
from orchestrator.events import JobSucceeded, StreamWarning, Tagged, Unrecognized
from orchestrator.record.aggregate import fold
from tests.backends.claude_code.test_decode import FIXTURES, decode, meta_of, of_type, tagged_attempt

OLDEST = FIXTURES / ".".join(map(str, OLDEST_VERSION))
OLD_TRANSCRIPTS = sorted(p.stem for p in OLDEST.glob("*.jsonl"))


def replay_from(folder: Path, name: str) -> tuple[str | None, bool, bool | None]:
    """A transcript's job text (when it succeeded), whether it succeeded, and whether its error is
    retried. (The kinds may differ: 2.1.200 calls a dropped connection ``server_error``, and dies of
    SIGINT without a result line where 2.1.332 reports ``error_during_execution``.)"""
    returncode = meta_of(name)["returncode"] if folder == FIXTURES else _meta(folder, name)["returncode"]
    events, outcome = decode((folder / f"{name}.jsonl").read_bytes().splitlines(), returncode=returncode)
    assert of_type(events, StreamWarning) == [] and of_type(events, Unrecognized) == []
    if not outcome.ok:
        assert outcome.error is not None
        return None, False, outcome.error.retryable
    tagged = tagged_attempt(1, events, 0)
    folded = fold([*tagged, Tagged("j", 1, len(tagged), 1.0, JobSucceeded(attempts=1))])
    return folded.results["j"].text, True, None


def _meta(folder: Path, name: str) -> dict[str, int]:
    meta: dict[str, int] = json.loads((folder / f"{name}.json").read_text())
    return meta


def test_the_oldest_versions_transcripts_are_all_there() -> None:
    assert OLD_TRANSCRIPTS == sorted(p.stem for p in FIXTURES.glob("*.jsonl"))
    assert b'"claude_code_version":"2.1.200"' in (OLDEST / "plain_text.jsonl").read_bytes()


def test_the_oldest_version_drops_a_broken_stream_without_a_notice() -> None:
    assert b"abandoned_blocks" not in (OLDEST / "partial_error_mid_stream.jsonl").read_bytes()
    assert b"abandoned_blocks" in (FIXTURES / "partial_error_mid_stream.jsonl").read_bytes()


@pytest.mark.parametrize("name", OLD_TRANSCRIPTS)
def test_each_scenario_gives_the_same_job_on_both_versions(name: str) -> None:
    assert replay_from(OLDEST, name) == replay_from(FIXTURES, name)
