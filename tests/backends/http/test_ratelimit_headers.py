"""Reading rate-limit response headers: Anthropic's and OpenAI's, junk never raises."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.backends.http.ratelimit_headers import (
    parse_count,
    parse_duration,
    parse_timestamp,
    rate_limit_info,
)
from orchestrator.events import RateLimitInfo
from orchestrator.testing.openai.limits import go_duration

NOW = datetime(2025, 1, 15, 14, 23, 0, tzinfo=UTC).timestamp()
DAY = 86400.0
UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def headers(**values: str) -> list[tuple[bytes, bytes]]:
    """Lower-case header names from keyword names (``x_ratelimit_limit_requests``)."""
    return [(name.replace("_", "-").encode(), value.encode()) for name, value in values.items()]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("59.993s", 59.993),
        ("150us", 150e-6),
        ("2µs", 2e-6),
        ("7ns", 7e-9),
        (".5s", 0.5),
        ("0.5", 0.5),
        ("0", 0.0),
        (" 17 ", 17.0),
    ],
)
def test_a_go_duration_or_plain_seconds_is_read(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "s",
        "ms",
        "1x",
        "2d",
        "-1s",
        "+1s",
        "1 s",
        "1s junk",
        "1s2",
        "1..5s",
        "inf",
        "nan",
        "1e3",
        "25h",
    ],
)
def test_a_duration_that_is_junk_negative_or_longer_than_a_day_is_none(text: str) -> None:
    assert parse_duration(text) is None


@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 999), st.sampled_from(list(UNITS))), min_size=1)
)
def test_a_duration_is_the_sum_of_its_terms(terms: list[tuple[int, int, str]]) -> None:
    text = "".join(f"{whole}.{fraction:03d}{unit}" for whole, fraction, unit in terms)
    expected = sum((whole + fraction / 1000) * UNITS[unit] for whole, fraction, unit in terms)
    parsed = parse_duration(text)
    if expected <= DAY * (1 - 1e-9):
        assert parsed == pytest.approx(expected, rel=1e-9, abs=1e-12)
    elif expected > DAY * (1 + 1e-9):
        assert parsed is None


@given(st.integers(0, int(DAY * 1000)))
def test_a_reset_as_the_fake_server_writes_it_reads_back(millis: int) -> None:
    assert parse_duration(go_duration(millis / 1000)) == pytest.approx(millis / 1000, abs=1e-3)


@given(st.text())
def test_any_text_is_a_duration_within_a_day_or_none(text: str) -> None:
    parsed = parse_duration(text)
    assert parsed is None or (math.isfinite(parsed) and 0.0 <= parsed <= DAY)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2025-01-15T14:24:00Z", 60.0),
        ("2025-01-15t14:23:30.250z", 30.25),
        ("2025-01-15T16:23:10+02:00", 10.0),
        ("2025-01-15T14:00:00Z", 0.0),  # already past: no wait
    ],
)
def test_an_rfc3339_reset_is_seconds_from_now(text: str, seconds: float) -> None:
    assert parse_timestamp(text, NOW) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "soon",
        "2025-01-15T14:24:00",
        "2025-01-15",
        "2025-13-45T99:00:00Z",
        "2025-01-17T14:24:00Z",
        "9" * 60,
    ],
)
def test_a_reset_that_is_junk_without_offset_or_days_away_is_none(text: str) -> None:
    assert parse_timestamp(text, NOW) is None


@given(st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7, minutes=-30))])))
def test_a_timestamp_reads_back_as_its_distance_from_now(when: datetime) -> None:
    distance = when.timestamp() - NOW
    parsed = parse_timestamp(when.isoformat(), NOW)
    if distance <= DAY - 1e-3:
        assert parsed == pytest.approx(max(0.0, distance), abs=1e-3)
    elif distance > DAY + 1e-3:
        assert parsed is None


@given(st.text())
def test_any_text_is_a_timestamp_within_a_day_or_none(text: str) -> None:
    parsed = parse_timestamp(text, NOW)
    assert parsed is None or (math.isfinite(parsed) and 0.0 <= parsed <= DAY)


@pytest.mark.parametrize(("text", "count"), [("4000", 4000), (" 12 ", 12), ("0", 0)])
def test_a_count_is_a_whole_number(text: str, count: int) -> None:
    assert parse_count(text) == count


@pytest.mark.parametrize("text", ["", "-1", "+3", "1.5", "1e3", "12k", "\uff11\uff12", "1_000", "9" * 16])
def test_a_count_that_is_not_a_plain_whole_number_is_none(text: str) -> None:
    assert parse_count(text) is None


def test_openai_headers_are_read() -> None:
    info = rate_limit_info(
        headers(
            x_ratelimit_limit_requests="5000",
            x_ratelimit_remaining_requests="4999",
            x_ratelimit_reset_requests="12ms",
            x_ratelimit_limit_tokens="800000",
            x_ratelimit_remaining_tokens="799975",
            x_ratelimit_reset_tokens="6m0s",
            content_type="text/event-stream",
        ),
        NOW,
    )
    assert info is not None and info.requests_reset_s == pytest.approx(0.012)
    assert info == RateLimitInfo(5000, 4999, info.requests_reset_s, 800000, 799975, 360.0)


def test_anthropic_headers_are_read_with_resets_as_seconds_from_now() -> None:
    info = rate_limit_info(
        headers(
            anthropic_ratelimit_requests_limit="4000",
            anthropic_ratelimit_requests_remaining="3999",
            anthropic_ratelimit_requests_reset="2025-01-15T14:23:00.015Z",
            anthropic_ratelimit_tokens_limit="400000",
            anthropic_ratelimit_tokens_remaining="0",
            anthropic_ratelimit_tokens_reset="2025-01-15T14:23:12Z",
        ),
        NOW,
    )
    assert info is not None and info.requests_reset_s == pytest.approx(0.015, abs=1e-6)
    assert info == RateLimitInfo(4000, 3999, info.requests_reset_s, 400000, 0, 12.0)


def test_anthropic_input_and_output_token_limits_are_read_apart_and_then_the_combined_one_is_not() -> None:
    info = rate_limit_info(
        headers(
            anthropic_ratelimit_requests_limit="4000",
            anthropic_ratelimit_requests_remaining="3999",
            anthropic_ratelimit_input_tokens_limit="2000000",
            anthropic_ratelimit_input_tokens_remaining="1999000",
            anthropic_ratelimit_input_tokens_reset="2025-01-15T14:23:01Z",
            anthropic_ratelimit_output_tokens_limit="400000",
            anthropic_ratelimit_output_tokens_remaining="0",
            anthropic_ratelimit_output_tokens_reset="2025-01-15T14:23:30Z",
            # the most restrictive of the two: not a limit on input plus output
            anthropic_ratelimit_tokens_limit="400000",
            anthropic_ratelimit_tokens_remaining="0",
        ),
        NOW,
    )
    assert info == RateLimitInfo(
        4000,
        3999,
        input_tokens_limit=2000000,
        input_tokens_remaining=1999000,
        input_tokens_reset_s=1.0,
        output_tokens_limit=400000,
        output_tokens_remaining=0,
        output_tokens_reset_s=30.0,
    )


def test_a_response_without_rate_limit_headers_says_nothing() -> None:
    assert rate_limit_info([], NOW) is None
    assert rate_limit_info(headers(content_type="application/json", retry_after="3"), NOW) is None


def test_junk_values_are_left_out_and_the_rest_kept() -> None:
    info = rate_limit_info(
        headers(
            x_ratelimit_limit_requests="lots",
            x_ratelimit_remaining_requests="-4",
            x_ratelimit_reset_requests="soon",
            x_ratelimit_limit_tokens="1000",
        ),
        NOW,
    )
    assert info == RateLimitInfo(tokens_limit=1000)
    assert rate_limit_info(headers(x_ratelimit_limit_requests="lots"), NOW) is None


def test_anthropic_wins_where_both_families_say_something() -> None:
    info = rate_limit_info(
        headers(
            anthropic_ratelimit_requests_limit="50",
            anthropic_ratelimit_requests_remaining="junk",
            x_ratelimit_limit_requests="60",
            x_ratelimit_remaining_requests="7",
        ),
        NOW,
    )
    assert info is not None and (info.requests_limit, info.requests_remaining) == (50, 7)


NAMES = [
    f"{prefix}{name}".encode()
    for prefix, names in (
        ("anthropic-ratelimit-", ("requests-limit", "requests-remaining", "requests-reset", "tokens-reset")),
        ("x-ratelimit-", ("limit-requests", "remaining-tokens", "reset-requests", "reset-tokens")),
    )
    for name in names
]


@given(st.lists(st.tuples(st.sampled_from(NAMES), st.binary(max_size=40)), max_size=12))
def test_any_header_values_give_sane_info_or_none(pairs: list[tuple[bytes, bytes]]) -> None:
    info = rate_limit_info(pairs, NOW)
    if info is None:
        return
    for count in (info.requests_limit, info.requests_remaining, info.tokens_limit, info.tokens_remaining):
        assert count is None or count >= 0
    for reset in (info.requests_reset_s, info.tokens_reset_s):
        assert reset is None or 0.0 <= reset <= DAY
