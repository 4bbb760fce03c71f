"""HTTP statuses and in-stream errors → retryable or fatal attempt errors; Retry-After."""

from __future__ import annotations

import email.utils

import pytest

from orchestrator.backends.http.status import (
    error_for_status,
    error_in_stream,
    retry_after_seconds,
    server_message,
)
from orchestrator.errors import FatalError, RetryableError

NOW = 1_700_000_000.0


def same(text: str) -> str:
    return text


def test_retry_after_in_seconds_as_a_date_and_in_milliseconds() -> None:
    assert retry_after_seconds([(b"retry-after", b"7")], NOW) == 7.0
    assert retry_after_seconds([(b"retry-after", b"1.5")], NOW) == 1.5
    date = email.utils.formatdate(NOW + 30, usegmt=True).encode()
    assert retry_after_seconds([(b"retry-after", date)], NOW) == pytest.approx(30.0)
    assert retry_after_seconds([(b"retry-after", b"2"), (b"retry-after-ms", b"250")], NOW) == 0.25
    past = email.utils.formatdate(NOW - 30, usegmt=True).encode()
    assert retry_after_seconds([(b"retry-after", past)], NOW) == 0.0
    assert retry_after_seconds([(b"retry-after", b"soon")], NOW) is None
    assert retry_after_seconds([], NOW) is None


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_these_statuses_are_retryable(status: int) -> None:
    error = error_for_status(
        status, "X", b'{"error":{"message":"try later"}}', [(b"retry-after", b"3")], now=NOW, redact=same
    )
    assert isinstance(error, RetryableError)
    assert error.retry_after == 3.0
    assert "try later" in error.message


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "bad_request"),
        (401, "auth"),
        (403, "permission"),
        (404, "not_found"),
        (413, "too_large"),
        (422, "unprocessable"),
    ],
)
def test_these_statuses_are_fatal_with_the_servers_message(status: int, kind: str) -> None:
    body = b'{"type":"error","error":{"type":"x","message":"the server says why"}}'
    error = error_for_status(status, "Reason", body, [], now=NOW, redact=same)
    assert isinstance(error, FatalError)
    assert error.kind == kind
    assert error.message == f"HTTP {status} Reason: the server says why"


@pytest.mark.parametrize(
    "body",
    [
        b'{"error":{"message":"This model\'s maximum context length is 8192 tokens","code":"context_length_exceeded"}}',  # noqa: E501
        b'{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens"}}',  # noqa: E501
    ],
)
def test_context_length_errors_are_fatal_whatever_the_status(body: bytes) -> None:
    for status in (400, 500):
        error = error_for_status(status, "X", body, [], now=NOW, redact=same)
        assert isinstance(error, FatalError)
        assert error.kind == "context_length"


def test_an_exhausted_quota_is_fatal_although_it_comes_as_429() -> None:
    body = b'{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}'  # noqa: E501
    assert isinstance(error_for_status(429, "X", body, [], now=NOW, redact=same), FatalError)


def test_messages_from_every_shape_of_error_body() -> None:
    assert server_message(b'{"error":{"message":"m","type":"t"}}') == ("m", "t")
    assert server_message(b'{"object":"error","message":"vllm says","type":"BadRequestError"}') == (
        "vllm says",
        "BadRequestError",
    )
    assert server_message(b'{"detail":"fastapi says"}') == ("fastapi says", None)
    assert server_message(b"<html>  Bad\n gateway </html>") == ("<html> Bad gateway </html>", None)


def test_the_redactor_sees_every_message() -> None:
    error = error_for_status(
        401,
        "X",
        b'{"error":{"message":"bad key sk-123"}}',
        [],
        now=NOW,
        redact=lambda t: t.replace("sk-123", "<redacted>"),
    )
    assert "sk-123" not in error.message


@pytest.mark.parametrize(
    ("kind", "status", "retryable", "error_kind"),
    [
        ("overloaded_error", None, True, "overloaded"),
        ("api_error", None, True, "server_error"),
        ("rate_limit_error", None, True, "rate_limited"),
        ("server_error", None, True, "server_error"),
        (None, None, True, "server_error"),
        ("invalid_request_error", None, False, "bad_request"),
        ("BadRequestError", 400, False, "bad_request"),
        (None, 503, True, "server_error"),
    ],
)
def test_errors_inside_a_stream(
    kind: str | None, status: int | None, retryable: bool, error_kind: str
) -> None:
    error = error_in_stream("message", kind, status, redact=same)
    assert error.retryable == retryable
    assert error.kind == error_kind
    assert "message" in error.message
