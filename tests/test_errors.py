"""The one error vocabulary: every kind documented once, read back from any name, and listed in the
README exactly as the code has it; what a backend's error does with the kind it is given."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import (
    RETIRED,
    BackendError,
    ErrorKind,
    FatalError,
    RetryableError,
    error_for,
)

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_kind_has_a_one_line_meaning_and_a_retry_flag() -> None:
    for kind in ErrorKind:
        assert re.fullmatch(r"[a-z][a-z_]*", kind.value), kind
        assert isinstance(kind.retryable, bool), kind
        assert kind.meaning.strip() and "\n" not in kind.meaning, kind


def test_a_kind_is_its_name_as_a_string() -> None:
    assert ErrorKind.RATE_LIMITED == "rate_limited"
    assert f"{ErrorKind.CONTEXT_LENGTH}" == str(ErrorKind.CONTEXT_LENGTH) == "context_length"


def test_the_runners_own_kinds_and_the_ones_other_features_need_are_there() -> None:
    names = {kind.value for kind in ErrorKind}
    assert {"timeout_idle", "timeout_attempt", "timeout_job", "protocol", "internal"} <= names
    assert {"invalid_output", "worker_lost", "expired", "resources", "unknown"} <= names
    assert not names & {"halted", "cancelled", "skipped"}  # how a batch or job stopped, not a failure


def readme_kinds() -> list[tuple[str, str, bool]]:
    """The README's table of error kinds: (name, meaning, retried) for each row, in order."""
    text = README.read_text()
    start = text.index("| kind | meaning | retried |")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        name, meaning, retried = (cell.strip() for cell in line.strip("|").split("|"))
        assert retried in ("yes", "no"), line
        rows.append((name.strip("`"), meaning, retried == "yes"))
    return rows


def test_the_readme_lists_exactly_the_kinds_with_their_meaning_and_retry_flag() -> None:
    assert readme_kinds() == [(kind.value, kind.meaning, kind.retryable) for kind in ErrorKind]


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_every_kind_reads_back_as_itself(kind: ErrorKind) -> None:
    assert ErrorKind.parse(kind.value) is kind


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("context_overflow", ErrorKind.CONTEXT_LENGTH),
        ("request_too_large", ErrorKind.TOO_LARGE),
        ("transient", ErrorKind.TIMEOUT),
        ("incomplete", ErrorKind.CONNECTION),
        ("closed", ErrorKind.INTERNAL),
        ("error", ErrorKind.UNKNOWN),
        ("http_418", ErrorKind.BAD_REQUEST),
    ],
)
def test_retired_names_read_as_the_kind_they_became(old: str, new: ErrorKind) -> None:
    assert ErrorKind.parse(old) is new


def test_no_retired_name_is_still_a_kind() -> None:
    assert not set(RETIRED) & {kind.value for kind in ErrorKind}


@given(st.text())
def test_any_name_reads_as_some_kind_without_raising(name: str) -> None:
    assert isinstance(ErrorKind.parse(name), ErrorKind)


def test_an_unknown_name_is_unknown() -> None:
    assert ErrorKind.parse("some_future_kind") is ErrorKind.UNKNOWN


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_error_for_follows_the_kinds_retry_flag(kind: ErrorKind) -> None:
    error = error_for(kind, "m", retry_after=2.0)
    assert error.kind is kind and error.retryable is kind.retryable
    assert isinstance(error, RetryableError if kind.retryable else FatalError)
    if isinstance(error, RetryableError):
        assert error.retry_after == 2.0


def test_a_backend_may_still_pass_a_string_kind() -> None:
    error = RetryableError("slow down", kind="rate_limited")  # type: ignore[arg-type]
    assert error.kind is ErrorKind.RATE_LIMITED and error.message == "slow down"
    old = FatalError("too long", kind="context_overflow")  # type: ignore[arg-type]
    assert old.kind is ErrorKind.CONTEXT_LENGTH


def test_a_backends_own_kind_becomes_unknown_and_leads_the_message() -> None:
    error = FatalError("the widget broke", kind="widget_broken")  # type: ignore[arg-type]
    assert error.kind is ErrorKind.UNKNOWN
    assert error.message == str(error) == "widget_broken: the widget broke"
    assert repr(error) == "FatalError('widget_broken: the widget broke', kind='unknown')"


def test_an_error_without_a_kind_is_unknown() -> None:
    assert RetryableError("x").kind is ErrorKind.UNKNOWN
    assert BackendError("x").message == "x"
