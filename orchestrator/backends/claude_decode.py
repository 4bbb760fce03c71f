"""Claude Code ``-p --output-format stream-json --verbose`` output → orchestrator events.

Pure: lines (bytes or str) in, :mod:`~orchestrator.events` out, and at the end an
:class:`Outcome` (success, or the error the attempt ends with). No I/O, no clock; the process shell
in :mod:`.claude_code` feeds it. Written against CLI 2.1.332 (see ``tests/fixtures/claude/``).

What the CLI prints, one JSON object per line, keys in no stable order:

``system``
    ``init`` → :class:`SessionStarted` and a ``system_notice`` ``init`` with the session's cwd,
    permission mode and CLI version; every other subtype (``status``, ``api_retry``,
    ``model_fallback``, ``thinking_tokens``, ``permission_denied``, ... and ones not invented yet)
    → :class:`SystemNotice` carrying the line's fields. ``api_retry`` notices are the CLI's own
    retries inside the session, not ours.
``stream_event`` (only with ``--include-partial-messages``)
    ``text_delta`` → :class:`TextDelta`, ``thinking_delta`` → :class:`ThinkingDelta`. Tool input
    deltas are ignored: the complete input arrives with the ``assistant`` line. A ``message_stop``
    with ``abandoned_blocks`` (a stream that broke mid-message) → ``system_notice``
    ``abandoned_blocks``.
``assistant``
    One line per content block; blocks of one message id are gathered into one
    :class:`AssistantMessage`, emitted when the message is complete (a line of another message, a
    ``user`` or ``result`` line, its ``message_stop``, or the end). Each ``tool_use`` block →
    :class:`ToolCall` at once. A synthetic message (``model: "<synthetic>"``: the CLI's report
    of a failed API call) → ``system_notice`` ``api_error`` instead.
``user``
    ``tool_result`` blocks → :class:`ToolResult`; text (interruptions, "output token limit hit")
    → ``system_notice`` ``user_message``.
``rate_limit_event`` → ``system_notice`` ``rate_limit``.
``result``
    → :class:`UsageReported` (tokens, cache included) and, on success, :class:`StreamFinished`
    (cost, duration, turns, session id) from :meth:`ClaudeDecoder.finish`. On failure a
    ``system_notice`` ``result`` keeps the error, cost and turns in the log.

Anything else (an unknown type, a content block of an unknown type) → :class:`Unrecognized`
holding the raw object; a line that is not a JSON object → :class:`StreamWarning`. Nothing
raises: a decoder bug on some odd line becomes a warning plus the raw line, and the job goes on.

Where reply text comes from (no duplicates): a message whose ``message_start`` came as a
``stream_event`` has its text and thinking emitted from the deltas, as they arrive; any other
message (no partial messages asked for, or the CLI's non-streaming fallback after a broken
stream) has them emitted from its ``assistant`` lines, one delta per block. Consecutive text
blocks are separated by a blank line (``"\\n\\n"``) in the deltas, so a job's text reads as
paragraphs; :class:`AssistantMessage` keeps each block exactly. Text of subagents
(``parent_tool_use_id`` set) is not part of the reply: no deltas, but their messages, tool calls
and results are still events.

Known gap: the deltas of a stream the CLI abandons are already out when it says so; until events
can retract text, a job run with partial messages may keep the abandoned fragment before the
recovered answer (the ``abandoned_blocks`` notice marks it).

Success is decided from ``is_error``, never from ``subtype``: the CLI reports a failed API call
as ``subtype: "success"`` with ``is_error: true``. See :func:`classify_result`.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping
from typing import Any

import attrs
import orjson

from ..errors import BackendError, FatalError, RetryableError
from ..events import (
    AssistantMessage,
    ContentBlock,
    SessionStarted,
    StreamEvent,
    StreamFinished,
    StreamWarning,
    SystemNotice,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    Tokens,
    ToolCall,
    ToolResult,
    ToolUseBlock,
    Unrecognized,
    UsageReported,
)

SYNTHETIC_MODEL = "<synthetic>"
BLOCK_SEPARATOR = "\n\n"
_PREVIEW = 120
# Fields every line carries that say nothing about the event itself.
_NOISE = frozenset({"type", "subtype", "uuid", "session_id"})
_INIT_KEPT = (
    "cwd",
    "model",
    "permissionMode",
    "claude_code_version",
    "apiKeySource",
    "output_style",
    "mcp_servers",
)


@attrs.frozen
class Outcome:
    """How an attempt ended, once the process has exited.

    ``events`` are the last events to emit (a pending message, :class:`StreamFinished` on
    success). ``error`` is None on success, else the error that ends the attempt.
    """

    events: tuple[StreamEvent, ...]
    error: BackendError | None

    @property
    def ok(self) -> bool:
        return self.error is None


@attrs.define
class _Pending:
    message_id: str | None
    blocks: list[ContentBlock]


class ClaudeDecoder:
    """Decodes one attempt's stdout, line by line. Keeps only the state lines depend on.

    ``retry_limits``: a result that hit ``--max-turns`` or ``--max-budget-usd`` ends the
    attempt with a :class:`RetryableError` instead of the default :class:`FatalError` (another
    attempt would normally hit the same limit and pay again).
    """

    def __init__(self, *, retry_limits: bool = False) -> None:
        self.retry_limits = retry_limits
        self.session_id: str | None = None
        self.result: Mapping[str, Any] | None = None
        self._pending: _Pending | None = None
        self._streamed: set[str] = set()  # message ids whose text came as stream_event deltas
        self._stream_message: str | None = None
        self._text_block: tuple[str | None, Any] | None = None
        self._text_started = False
        self._api_error: Mapping[str, Any] | None = None
        self._last_retry: Mapping[str, Any] | None = None
        self._finished: StreamFinished | None = None
        self._error: BackendError | None = None

    @property
    def result_seen(self) -> bool:
        """True once the ``result`` line has been decoded (the CLI's last word)."""
        return self.result is not None

    def feed(self, line: bytes | str) -> list[StreamEvent]:
        """Decode one line (without its newline; surrounding whitespace is ignored)."""
        if not line.strip():
            return []
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            return [StreamWarning(f"line is not JSON ({exc}): {_preview(line)}")]
        if not isinstance(obj, dict):
            return [StreamWarning(f"line is JSON but not an object: {_preview(line)}")]
        try:
            return self._decode(obj)
        except Exception as exc:  # a bug here must not end the job: keep the line, say so
            return [
                StreamWarning(f"decoder error on a {_str(obj.get('type'))!r} line: {exc!r}"),
                Unrecognized(obj),
            ]

    def finish(self, returncode: int | None, stderr_tail: str = "") -> Outcome:
        """The attempt's outcome once stdout has ended and the process has exited.

        ``returncode`` is the exit status (negative: killed by that signal); ``stderr_tail`` the
        last lines of stderr, quoted in the error when there was no ``result`` line.
        """
        events = self._flush()
        if self._finished is not None:
            return Outcome((*events, self._finished), None)
        if self._error is not None:
            return Outcome(tuple(events), self._error)
        return Outcome(tuple(events), classify_exit(returncode, stderr_tail))

    # --- one line ------------------------------------------------------------------------------

    def _decode(self, obj: dict[str, Any]) -> list[StreamEvent]:
        match obj.get("type"):
            case "system":
                return self._system(obj)
            case "stream_event":
                return self._stream_event(obj)
            case "assistant":
                return self._assistant(obj)
            case "user":
                return self._user(obj)
            case "rate_limit_event":
                return [SystemNotice("rate_limit", _fields(obj))]
            case "result":
                return self._result(obj)
            case _:
                return [Unrecognized(obj)]

    def _system(self, obj: dict[str, Any]) -> list[StreamEvent]:
        subtype = obj.get("subtype")
        if not isinstance(subtype, str) or not subtype:
            return [Unrecognized(obj)]
        if subtype == "init":
            self.session_id = _str(obj.get("session_id")) or self.session_id
            tools = tuple(t for t in _list(obj.get("tools")) if isinstance(t, str))
            started = SessionStarted(session_id=self.session_id, model=_str(obj.get("model")), tools=tools)
            return [started, SystemNotice("init", {k: obj[k] for k in _INIT_KEPT if k in obj})]
        if subtype == "api_retry":
            self._last_retry = obj
        return [SystemNotice(subtype, _fields(obj))]

    def _stream_event(self, obj: dict[str, Any]) -> list[StreamEvent]:
        event = _dict(obj.get("event"))
        subagent = obj.get("parent_tool_use_id") is not None
        kind = event.get("type")
        if kind == "message_start":
            message_id = _str(_dict(event.get("message")).get("id")) or _str(obj.get("api_message_id"))
            if not subagent:
                self._stream_message = message_id
                if message_id is not None:
                    self._streamed.add(message_id)
            return []
        message_id = _str(obj.get("api_message_id")) or (None if subagent else self._stream_message)
        if kind == "content_block_delta":
            delta = _dict(event.get("delta"))
            text_kind = delta.get("type")
            if text_kind == "text_delta":
                text = _str(delta.get("text"))
                if subagent or not text:
                    return []
                return self._text((message_id, event.get("index")), text)
            if text_kind == "thinking_delta":
                thinking = _str(delta.get("thinking"))
                return [ThinkingDelta(thinking)] if thinking and not subagent else []
            if text_kind in ("input_json_delta", "signature_delta", "citations_delta"):
                return []
            return [Unrecognized(obj)]
        if kind == "message_stop":
            events = (
                self._flush() if self._pending is not None and self._pending.message_id == message_id else []
            )
            abandoned = obj.get("abandoned_blocks")
            if abandoned is not None:
                events.append(SystemNotice("abandoned_blocks", {"abandoned_blocks": abandoned}))
            return events
        if kind == "error":
            return [SystemNotice("stream_error", {"error": event.get("error")})]
        if kind in ("content_block_start", "content_block_stop", "message_delta", "ping"):
            return []
        return [Unrecognized(obj)]

    def _assistant(self, obj: dict[str, Any]) -> list[StreamEvent]:
        message = _dict(obj.get("message"))
        content = message.get("content")
        if message.get("model") == SYNTHETIC_MODEL or obj.get("is_api_error_message") is True:
            return self._api_error_message(obj, message)
        message_id = _str(message.get("id"))
        events: list[StreamEvent] = []
        if self._pending is not None and (message_id is None or self._pending.message_id != message_id):
            events.extend(self._flush())
        if self._pending is None:
            self._pending = _Pending(message_id, [])
        subagent = obj.get("parent_tool_use_id") is not None
        streamed = message_id is not None and message_id in self._streamed
        blocks = content if isinstance(content, list) else [] if content is None else [content]
        for raw in blocks:
            block = _content_block(raw)
            if block is None:
                events.append(Unrecognized(raw if isinstance(raw, dict) else {"block": raw}))
                continue
            self._pending.blocks.append(block)
            match block:
                case TextBlock(text=text) if text and not subagent and not streamed:
                    events.extend(self._text(None, text))
                case ThinkingBlock(text=text) if text and not subagent and not streamed:
                    events.append(ThinkingDelta(text))
                case ToolUseBlock(call_id=call_id, name=name, input=tool_input):
                    events.append(ToolCall(call_id=call_id, name=name, input=tool_input))
                case _:
                    pass
        return events

    def _api_error_message(self, obj: dict[str, Any], message: Mapping[str, Any]) -> list[StreamEvent]:
        text = "".join(
            b.text for b in map(_content_block, _list(message.get("content"))) if isinstance(b, TextBlock)
        )
        info = {
            "message": text,
            "error": obj.get("error"),
            "status": obj.get("api_error_status"),
            "error_type": obj.get("api_error_type"),
        }
        self._api_error = info
        return [*self._flush(), SystemNotice("api_error", info)]

    def _user(self, obj: dict[str, Any]) -> list[StreamEvent]:
        events = self._flush()
        content = _dict(obj.get("message")).get("content")
        if isinstance(content, str):
            return [*events, SystemNotice("user_message", {"text": content})]
        for raw in _list(content):
            block = _dict(raw)
            match block.get("type"):
                case "tool_result":
                    call_id = _str(block.get("tool_use_id")) or ""
                    text = _tool_result_text(block.get("content"))
                    events.append(
                        ToolResult(call_id=call_id, content=text, is_error=block.get("is_error") is True)
                    )
                case "text":
                    events.append(SystemNotice("user_message", {"text": _str(block.get("text")) or ""}))
                case _:
                    events.append(Unrecognized(raw if isinstance(raw, dict) else {"block": raw}))
        return events

    def _result(self, obj: dict[str, Any]) -> list[StreamEvent]:
        events = self._flush()
        if self.result is not None:
            return [*events, StreamWarning("a second result line was ignored"), Unrecognized(obj)]
        self.result = obj
        self.session_id = _str(obj.get("session_id")) or self.session_id
        usage = obj.get("usage")
        tokens = tokens_from_usage(usage) if isinstance(usage, dict) else None
        if tokens is not None:
            events.append(UsageReported(tokens))
        error = classify_result(
            obj, api_error=self._api_error, last_retry=self._last_retry, retry_limits=self.retry_limits
        )
        if error is None:
            duration_ms = _number(obj.get("duration_ms"))
            self._finished = StreamFinished(
                stop_reason=_str(obj.get("stop_reason")),
                tokens=tokens,
                cost_usd=_number(obj.get("total_cost_usd")),
                duration_s=duration_ms / 1000 if duration_ms is not None else None,
                turns=_int(obj.get("num_turns")),
                session_id=self.session_id,
            )
        else:
            self._error = error
            kept = (
                "subtype",
                "is_error",
                "terminal_reason",
                "api_error_status",
                "api_error_type",
                "api_error",
                "result",
                "errors",
                "num_turns",
                "total_cost_usd",
                "duration_ms",
                "stop_reason",
            )
            events.append(SystemNotice("result", {k: obj[k] for k in kept if k in obj}))
        return events

    # --- shared pieces ---------------------------------------------------------------------------

    def _text(self, block_key: tuple[str | None, Any] | None, text: str) -> list[StreamEvent]:
        """A piece of main-agent reply text; a new text block after earlier text gets a separator.

        ``block_key`` names a streamed block (message id, index); None means a whole block.
        """
        new_block = block_key is None or block_key != self._text_block
        self._text_block = block_key
        if new_block and self._text_started:
            text = BLOCK_SEPARATOR + text
        self._text_started = True
        return [TextDelta(text)]

    def _flush(self) -> list[StreamEvent]:
        pending, self._pending = self._pending, None
        if pending is None or not pending.blocks:
            return []
        return [AssistantMessage(content=tuple(pending.blocks), message_id=pending.message_id)]


# --- outcome classification (pure functions) -------------------------------------------------------

_STATUS_IN_TEXT = re.compile(r"\b([45]\d\d)\b")


def classify_result(
    result: Mapping[str, Any],
    *,
    api_error: Mapping[str, Any] | None = None,
    last_retry: Mapping[str, Any] | None = None,
    retry_limits: bool = False,
) -> BackendError | None:
    """The error a ``result`` line ends the attempt with, or None when it succeeded.

    ``api_error`` is what the synthetic error message before it said; ``last_retry`` the last
    ``api_retry`` notice, whose planned delay (the CLI honours ``retry-after``) becomes our
    ``retry_after`` when it was for the same failure.
    """
    is_error = result.get("is_error")
    subtype = _str(result.get("subtype")) or ""
    terminal = _str(result.get("terminal_reason"))
    if is_error is False or (
        not isinstance(is_error, bool) and subtype == "success" and terminal != "api_error"
    ):
        return None
    message = _result_message(result, api_error)
    if subtype == "error_max_turns" or terminal == "max_turns":
        return _limit_error(f"max turns reached: {message}", "max_turns", retry_limits)
    if subtype == "error_max_budget_usd" or terminal == "budget_exhausted":
        return _limit_error(f"max budget reached: {message}", "max_budget", retry_limits)
    if subtype.startswith("error_") and terminal != "api_error":
        return RetryableError(f"{subtype}: {message}", kind="cli_error")
    status = _int(result.get("api_error_status"))
    if status is None and api_error is not None:
        status = _int(api_error.get("status"))
    error_type = _str(result.get("api_error_type")) or (
        _str(api_error.get("error_type")) if api_error else None
    )
    code = _str(result.get("api_error")) or (_str(api_error.get("error")) if api_error else None)
    kind, retryable = classify_api_error(status, error_type, code, message)
    if not retryable:
        return FatalError(message, kind=kind)
    retry_after = None
    if (
        last_retry is not None
        and _int(last_retry.get("error_status")) == status
        and kind in ("rate_limited", "overloaded")
    ):
        delay_ms = _number(last_retry.get("retry_delay_ms"))
        retry_after = delay_ms / 1000 if delay_ms is not None and delay_ms >= 0 else None
    return RetryableError(message, kind=kind, retry_after=retry_after)


def classify_api_error(
    status: int | None, error_type: str | None, code: str | None, text: str
) -> tuple[str, bool]:
    """``(kind, retryable)`` for a failed API call.

    The HTTP status decides when known; then the API's error type; then the CLI's own error code
    (``rate_limit``, ``overloaded``, ``authentication_failed``, ``connection_failed``,
    ``max_output_tokens``, ...); then the message text, since the status is null for dropped
    connections and timeouts.
    """
    lowered = text.lower()
    if status is None:
        found = _STATUS_IN_TEXT.search(text)
        if found and ("error" in lowered or "(" + found.group(1) + ")" in text):
            status = int(found.group(1))
    if status is not None:
        if status == 429:
            return "rate_limited", True
        if status == 529:
            return "overloaded", True
        if status in (401, 403):
            return "auth", False
        if status == 404:
            return "not_found", False
        if status == 413:
            return "request_too_large", False
        if status in (408, 409, 425):
            return "transient", True
        if 400 <= status < 500:
            return "bad_request", False
        if status >= 500:
            return ("overloaded", True) if error_type == "overloaded_error" else ("server_error", True)
    by_type = {
        "rate_limit_error": ("rate_limited", True),
        "overloaded_error": ("overloaded", True),
        "api_error": ("server_error", True),
        "authentication_error": ("auth", False),
        "permission_error": ("auth", False),
        "invalid_request_error": ("bad_request", False),
        "not_found_error": ("not_found", False),
        "request_too_large": ("request_too_large", False),
    }
    if error_type in by_type:
        return by_type[error_type]
    by_code = {
        "rate_limit": ("rate_limited", True),
        "overloaded": ("overloaded", True),
        "server_error": ("server_error", True),
        "authentication_failed": ("auth", False),
        "invalid_request": ("bad_request", False),
        "max_output_tokens": ("max_output_tokens", False),
        "connection_failed": ("connection", True),
        "timeout": ("timeout", True),
    }
    if code in by_code:
        return by_code[code]
    if "output token maximum" in lowered:
        return "max_output_tokens", False
    if "invalid api key" in lowered or "authentication" in lowered or "unauthorized" in lowered:
        return "auth", False
    if "rate limit" in lowered:
        return "rate_limited", True
    if "overloaded" in lowered:
        return "overloaded", True
    if "timed out" in lowered or "timeout" in lowered:
        return "timeout", True
    if "connection" in lowered or "econn" in lowered or "socket" in lowered or "network" in lowered:
        return "connection", True
    # An API failure we cannot place: the runner's attempt limit bounds the cost of guessing wrong.
    return "api_error", True


# Startup failures that another attempt would repeat exactly (bad flags, refused options).
_USAGE_ERRORS = (
    "unknown option",
    "requires --verbose",
    "cannot be used with root",
    "invalid value",
    "error: option",
)


def classify_exit(returncode: int | None, stderr_tail: str) -> BackendError:
    """The error for a CLI that ended without a ``result`` line (crashed, killed, refused to start)."""
    if returncode is None:
        how = "stopped"
    elif returncode < 0:
        how = f"was killed by {_signal_name(-returncode)}"
    elif returncode > 128 and returncode - 128 < signal.NSIG:
        how = f"exited with code {returncode} ({_signal_name(returncode - 128)})"
    else:
        how = f"exited with code {returncode}"
    tail = stderr_tail.strip()
    message = f"claude {how} without a result line" + (f"; stderr: {tail}" if tail else "; stderr was empty")
    if any(marker in tail.lower() for marker in _USAGE_ERRORS):
        return FatalError(message, kind="cli_usage")
    return RetryableError(message, kind="process")


def tokens_from_usage(usage: Mapping[str, Any]) -> Tokens:
    """Tokens from an API ``usage`` object (missing or odd counts are 0)."""
    return Tokens(
        input=_int(usage.get("input_tokens")) or 0,
        output=_int(usage.get("output_tokens")) or 0,
        cache_read=_int(usage.get("cache_read_input_tokens")) or 0,
        cache_creation=_int(usage.get("cache_creation_input_tokens")) or 0,
    )


# --- lines from a byte stream ---------------------------------------------------------------------


class LineSplitter:
    """Cuts a byte stream into lines, however it arrives in chunks. No length limit: a line
    can be megabytes (a big reply or tool result), and each byte is scanned once."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # no newline in _buffer[:_scanned]

    def feed(self, chunk: bytes) -> list[bytes]:
        """The complete lines ``chunk`` finishes, without their ``\\n`` (or ``\\r\\n``)."""
        buffer = self._buffer
        buffer += chunk
        lines: list[bytes] = []
        start = 0
        end = buffer.find(b"\n", self._scanned)
        while end != -1:
            lines.append(_strip_cr(bytes(buffer[start:end])))
            start = end + 1
            end = buffer.find(b"\n", start)
        del buffer[:start]
        self._scanned = len(buffer)
        return lines

    def finish(self) -> list[bytes]:
        """The last line, if the stream ended without a newline."""
        rest, self._buffer, self._scanned = bytes(self._buffer), bytearray(), 0
        return [_strip_cr(rest)] if rest else []


# --- small helpers: every value from the CLI is checked before use ---------------------------------


def _strip_cr(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\r") else line


def _content_block(raw: Any) -> ContentBlock | None:
    block = _dict(raw)
    match block.get("type"):
        case "text":
            return TextBlock(_str(block.get("text")) or "")
        case "thinking":
            return ThinkingBlock(_str(block.get("thinking")) or "")
        case "tool_use":
            tool_input = block.get("input")
            return ToolUseBlock(
                call_id=_str(block.get("id")) or "",
                name=_str(block.get("name")) or "",
                input=tool_input if isinstance(tool_input, dict) else {"input": tool_input},
            )
        case _:
            return None


def _tool_result_text(content: Any) -> str:
    """A tool result's content as text: a string as is, text blocks joined, others named."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    parts = []
    for item in content if isinstance(content, list) else [content]:
        block = _dict(item)
        if block.get("type") == "text":
            parts.append(_str(block.get("text")) or "")
        else:
            parts.append(f"[{_str(block.get('type')) or type(item).__name__}]")
    return "\n".join(parts)


def _result_message(result: Mapping[str, Any], api_error: Mapping[str, Any] | None) -> str:
    text = _str(result.get("result"))
    if text:
        return text
    errors = [e for e in _list(result.get("errors")) if isinstance(e, str)]
    if errors:
        return "; ".join(errors)
    if api_error is not None and _str(api_error.get("message")):
        return str(api_error["message"])
    return _str(result.get("subtype")) or "error"


def _limit_error(message: str, kind: str, retry: bool) -> BackendError:
    return RetryableError(message, kind=kind) if retry else FatalError(message, kind=kind)


def _fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in _NOISE}


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _preview(line: bytes | str) -> str:
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    return repr(text[:_PREVIEW] + ("..." if len(text) > _PREVIEW else ""))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
