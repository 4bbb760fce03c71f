"""The one status → kind table, and that every backend names the same failure the same way."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.backends.claude_code.outcome import classify_result
from orchestrator.backends.http.status import error_for_status, error_in_stream
from orchestrator.backends.local.decode import error_from
from orchestrator.backends.status import STATUS_KINDS, kind_for, kind_for_status
from orchestrator.errors import BackendError, ErrorKind

K = ErrorKind

DOCUMENTED = {
    400: K.BAD_REQUEST,
    401: K.AUTH,
    403: K.PERMISSION,
    404: K.NOT_FOUND,
    408: K.TIMEOUT,
    409: K.CONFLICT,
    413: K.TOO_LARGE,
    422: K.UNPROCESSABLE,
    429: K.RATE_LIMITED,
    501: K.BAD_REQUEST,
    529: K.OVERLOADED,
}


def test_the_table_is_the_documented_one() -> None:
    assert dict(STATUS_KINDS) == DOCUMENTED


@given(st.integers(400, 599))
def test_every_error_status_has_the_documented_kind(status: int) -> None:
    expected = DOCUMENTED.get(status) or (K.SERVER_ERROR if status >= 500 else K.BAD_REQUEST)
    assert kind_for_status(status) is expected
    assert kind_for(status) is expected


@given(st.integers(400, 599))
def test_retried_statuses_are_408_409_429_and_5xx_but_501(status: int) -> None:
    retried = status in (408, 409, 429) or (status >= 500 and status != 501)
    assert kind_for_status(status).retryable is retried


@pytest.mark.parametrize(
    ("status", "error_type", "kind"),
    [
        (429, "insufficient_quota", K.QUOTA),  # OpenAI's exhausted quota comes as a 429
        (500, "overloaded_error", K.OVERLOADED),
        (400, "exceed_context_size_error", K.CONTEXT_LENGTH),
        (404, "invalid_request_error", K.NOT_FOUND),  # a generic type does not hide the status
        (None, "invalid_request_error", K.BAD_REQUEST),
        (None, "permission_error", K.PERMISSION),
        (None, "request_too_large", K.TOO_LARGE),
        (None, "rate_limit_exceeded", K.RATE_LIMITED),
        (None, "no_such_type", None),
        (None, None, None),
    ],
)
def test_error_types_name_a_failure_the_status_does_not(
    status: int | None, error_type: str | None, kind: ErrorKind | None
) -> None:
    assert kind_for(status, error_type) is kind


# --- one failure, one name, whichever backend met it ---------------------------------------------------


def http(status: int, body: dict[str, Any] | None = None) -> BackendError:
    raw = orjson.dumps(body or {"error": {"message": "m"}})
    return error_for_status(status, "Reason", raw, [], now=0.0, redact=lambda t: t)


def claude(status: int, message: str = "API Error", error_type: str | None = None) -> BackendError:
    result = {
        "type": "result",
        "subtype": "success",
        "is_error": True,
        "api_error_status": status,
        "api_error_type": error_type,
        "result": message,
    }
    error = classify_result(result)
    assert error is not None
    return error


def local(status: int, error_type: str = "x") -> BackendError:
    return error_from({"code": status, "type": error_type, "message": "m"})


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 501, 503, 529])
def test_http_claude_code_and_local_give_a_status_the_same_kind(status: int) -> None:
    kinds = {http(status).kind, claude(status).kind, local(status).kind}
    assert kinds == {kind_for_status(status)}
    assert {http(status).retryable, claude(status).retryable, local(status).retryable} == {
        kind_for_status(status).retryable
    }


def test_a_403_is_permission_on_every_backend() -> None:
    assert http(403).kind is claude(403).kind is local(403).kind is K.PERMISSION


def test_a_prompt_too_long_is_context_length_on_every_backend() -> None:
    message = "prompt is too long: 210000 tokens > 200000 maximum"
    body = {"error": {"type": "invalid_request_error", "message": message}}
    in_stream = error_in_stream(message, "invalid_request_error", None, redact=lambda t: t)
    assert http(400, body).kind is claude(400, message, "invalid_request_error").kind is K.CONTEXT_LENGTH
    assert local(400, "exceed_context_size_error").kind is in_stream.kind is K.CONTEXT_LENGTH
