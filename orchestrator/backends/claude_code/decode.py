"""Claude Code ``-p --output-format stream-json --verbose`` output → orchestrator events.

Pure: lines (bytes or str) in, :mod:`~orchestrator.events` out, and at the end an
:class:`~.outcome.Outcome` (success, or the error the attempt ends with). No I/O, no clock;
the process shell in :mod:`.backend` feeds it lines cut by :class:`~.lines.LineSplitter`.
Written against CLI 2.1.332 and checked against 2.1.200, the oldest accepted (see
``tests/fixtures/claude/``). Content blocks and the reply text
are assembled in :mod:`.content`; results and exits are classified in :mod:`.outcome`.

What the CLI prints, one JSON object per line, keys in no stable order:

``system``
    ``init`` → :class:`SessionStarted` and a ``system_notice`` ``init`` with the session's cwd,
    permission mode and CLI version; every other subtype (``status``, ``api_retry``,
    ``model_fallback``, ``thinking_tokens``, ``permission_denied``, ... and ones not invented yet)
    → :class:`SystemNotice` carrying the line's fields. ``api_retry`` notices are the CLI's own
    retries inside the session, not ours; the delay they plan is the CLI's backoff, never taken
    as a server's Retry-After (which would pause the whole backend).
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
Usage
    Each message's usage, from its ``assistant`` lines and its ``message_start`` and
    ``message_delta`` stream events, → :class:`UsageReported` as it grows (tokens, and a cost
    estimated from a price table), so an attempt cut before its result still shows what it used
    (see :mod:`.usage`).
``result``
    → :class:`UsageReported` for the tokens the messages did not show and, on success, :class:`StreamFinished`
    (cost, duration, turns, session id, the CLI's own ``result`` text and its
    ``permission_denials``) from :meth:`ClaudeDecoder.finish`. On failure the
    :class:`UsageReported` also carries the CLI's ``total_cost_usd`` (a failed attempt was paid
    for too), and a ``system_notice`` ``result`` keeps the error, cost and turns in the log.
    With ``--json-schema``, a successful result's ``structured_output`` becomes the reply: the
    text sent so far is taken back (``text_retracted``) and the value's JSON is one
    :class:`TextDelta`, which the runner then checks against the schema like any reply.

Anything else (an unknown type, a content block of an unknown type) → :class:`Unrecognized`
holding the raw object; a line that is not a JSON object → :class:`StreamWarning`. A line with a
lone UTF-16 surrogate escape (half an emoji) is read with U+FFFD in its place
(:func:`.lines.parse_line`), so its text or tool result is kept. Nothing
raises: a decoder bug on some odd line becomes a warning plus the raw line, and the job goes on.

Where reply text comes from (no duplicates): a message whose ``message_start`` came as a
``stream_event`` has its text and thinking emitted from the deltas, as they arrive, for live
display; once it is over, its text is checked against its complete ``assistant`` lines, and
where they differ (an older CLI dropped a broken stream without saying so) the deltas are taken
back and the complete text sent instead, so the job's text is built from complete messages. Any other
message (no partial messages asked for, or the CLI's non-streaming fallback after a broken
stream) has them emitted from its ``assistant`` lines, one delta per block. Consecutive text
blocks are separated by a blank line (``"\\n\\n"``) in the deltas, so a job's text reads as
paragraphs; :class:`AssistantMessage` keeps each block exactly. Text of subagents
(``parent_tool_use_id`` set) is not part of the reply: no deltas, but their messages, tool calls
and results are still events.

The deltas of a stream the CLI abandons are already out when it says so: a ``text_retracted``
event then takes them back (after the ``abandoned_blocks`` notice), and the job's text is the
recovered answer alone.

Success is decided from ``is_error``, never from ``subtype``: the CLI reports a failed API call
as ``subtype: "success"`` with ``is_error: true``. See :func:`.outcome.classify_result`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from orchestrator.backends.claude_code.content import (
    MessageGatherer,
    ReplyText,
    content_block,
    tool_result_text,
)
from orchestrator.backends.claude_code.lines import parse_line
from orchestrator.backends.claude_code.outcome import Outcome, classify_exit, classify_result, result_tokens
from orchestrator.backends.claude_code.usage import Price, UsageMeter
from orchestrator.backends.fields import (
    dict_or_empty,
    int_or_none,
    list_or_empty,
    number_or_none,
    str_or_none,
)
from orchestrator.errors import BackendError, ErrorKind, FatalError
from orchestrator.events import (
    SessionStarted,
    StreamEvent,
    StreamFinished,
    StreamWarning,
    SystemNotice,
    TextBlock,
    ThinkingBlock,
    ThinkingDelta,
    ToolCall,
    ToolResult,
    ToolUseBlock,
    Unrecognized,
)

SYNTHETIC_MODEL = "<synthetic>"
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
# What a failed result's notice keeps for the log: why it failed and what it cost.
_FAILED_RESULT_KEPT = (
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


class ClaudeDecoder:
    """Decodes one attempt's stdout, line by line. Keeps only the state lines depend on.

    ``retry_limits``: a result that hit ``--max-turns`` or ``--max-budget-usd`` ends the
    attempt with a :class:`RetryableError` instead of the default :class:`FatalError` (another
    attempt would normally hit the same limit and pay again). ``price`` estimates the cost of the
    per-message usage reported before the result (see :mod:`.usage`). ``strict_mcp``: an MCP
    server that the ``init`` line reports failed ends the attempt (:attr:`failed_early`) instead
    of being a warning.
    """

    def __init__(
        self, *, retry_limits: bool = False, price: Price | None = None, strict_mcp: bool = False
    ) -> None:
        self.retry_limits = retry_limits
        self.strict_mcp = strict_mcp
        self.failed_early: BackendError | None = None
        """Set when the attempt has failed before its result: the shell stops the CLI at once."""
        self._usage = UsageMeter(price)
        self.session_id: str | None = None
        self.result: Mapping[str, Any] | None = None
        self._message = MessageGatherer()
        self._reply = ReplyText()
        self._streamed: set[str] = set()  # message ids whose text came as stream_event deltas
        self._stream_message: str | None = None  # the streamed message not yet settled
        self._complete_text: dict[str, list[str]] = {}  # its text blocks, from its assistant lines
        self._api_error: Mapping[str, Any] | None = None
        self._finished: StreamFinished | None = None
        self._error: BackendError | None = None

    @property
    def result_seen(self) -> bool:
        """True once the ``result`` line has been decoded (the CLI's last word)."""
        return self.result is not None

    def feed(self, line: bytes | str) -> list[StreamEvent]:
        """Decode one line (without its newline; surrounding whitespace is ignored). Never raises."""
        if not line.strip():
            return []
        try:
            obj = parse_line(line)
        except ValueError as exc:
            return [StreamWarning(f"line is not JSON ({exc}): {_preview(line)}")]
        if not isinstance(obj, dict):
            return [StreamWarning(f"line is JSON but not an object: {_preview(line)}")]
        try:
            return self._decode(obj)
        except Exception as exc:  # a bug here must not end the job: keep the line, say so
            return [
                StreamWarning(f"decoder error on a {str_or_none(obj.get('type'))!r} line: {exc!r}"),
                Unrecognized(obj),
            ]

    def finish(self, returncode: int | None, stderr_tail: str = "") -> Outcome:
        """The attempt's outcome once stdout has ended and the process has exited.

        ``returncode`` is the exit status (negative: killed by that signal); ``stderr_tail`` the
        last lines of stderr, quoted in the error when there was no ``result`` line.
        """
        events = [*self._message.flush(), *self._settle_stream()]
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
            self.session_id = str_or_none(obj.get("session_id")) or self.session_id
            tools = tuple(t for t in list_or_empty(obj.get("tools")) if isinstance(t, str))
            model = str_or_none(obj.get("model"))
            started = SessionStarted(session_id=self.session_id, model=model, tools=tools)
            notice = SystemNotice("init", {k: obj[k] for k in _INIT_KEPT if k in obj})
            return [started, notice, *self._failed_mcp_servers(obj.get("mcp_servers"))]
        return [SystemNotice(subtype, _fields(obj))]

    def _failed_mcp_servers(self, servers: Any) -> list[StreamEvent]:
        """A warning per MCP server the CLI could not start; with ``strict_mcp`` the attempt fails."""
        failed = [
            str_or_none(server.get("name")) or "?"
            for server in list_or_empty(servers)
            if isinstance(server, dict) and server.get("status") == "failed"
        ]
        if not failed:
            return []
        if self.strict_mcp and self._error is None:
            names = ", ".join(map(repr, failed))
            self._error = self.failed_early = FatalError(
                f"MCP server {names} failed to start (strict_mcp)", kind=ErrorKind.CLI_ERROR
            )
        return [StreamWarning(f"MCP server {name!r} failed to start") for name in failed]

    def _stream_event(self, obj: dict[str, Any]) -> list[StreamEvent]:
        event = dict_or_empty(obj.get("event"))
        subagent = obj.get("parent_tool_use_id") is not None
        kind = event.get("type")
        if kind == "message_start":
            message = dict_or_empty(event.get("message"))
            message_id = str_or_none(message.get("id")) or str_or_none(obj.get("api_message_id"))
            used = self._usage.message(message_id, str_or_none(message.get("model")), message.get("usage"))
            if subagent:
                return [*used]
            events: list[StreamEvent] = self._settle_stream() if message_id != self._stream_message else []
            events.extend(used)
            self._stream_message = message_id
            if message_id is not None:
                self._streamed.add(message_id)
            return events
        message_id = str_or_none(obj.get("api_message_id")) or (None if subagent else self._stream_message)
        if kind == "content_block_delta":
            return self._stream_delta(obj, event, message_id, subagent)
        if kind == "message_stop":
            events = []
            if self._message.gathering(message_id):
                events.extend(self._message.flush())
            abandoned = obj.get("abandoned_blocks")
            if abandoned is not None:
                events.append(SystemNotice("abandoned_blocks", {"abandoned_blocks": abandoned}))
                # The CLI throws the partial text away and asks again: take it back too.
                details = dict_or_empty(abandoned)
                from_index = details.get("from_block_index")
                if isinstance(from_index, int) and not isinstance(from_index, bool):
                    gone_from = str_or_none(details.get("api_message_id")) or message_id
                    retracted = self._reply.retract(gone_from, from_index)
                    if retracted is not None:
                        events.append(retracted)
            if not subagent and message_id == self._stream_message:
                events.extend(self._settle_stream())
            return events
        if kind == "error":
            return [SystemNotice("stream_error", {"error": event.get("error")})]
        if kind == "message_delta":
            return [*self._usage.message(message_id, None, event.get("usage"))]
        if kind in ("content_block_start", "content_block_stop", "ping"):
            return []
        return [Unrecognized(obj)]

    def _stream_delta(
        self, obj: dict[str, Any], event: Mapping[str, Any], message_id: str | None, subagent: bool
    ) -> list[StreamEvent]:
        delta = dict_or_empty(event.get("delta"))
        match delta.get("type"):
            case "text_delta":
                text = str_or_none(delta.get("text"))
                if subagent or not text:
                    return []
                index = event.get("index")
                if not isinstance(index, int) or isinstance(index, bool):
                    index = None  # only a block number can be taken back later; junk is not one
                return [self._reply.delta((message_id, index), text)]
            case "thinking_delta":
                thinking = str_or_none(delta.get("thinking"))
                return [ThinkingDelta(thinking)] if thinking and not subagent else []
            case "input_json_delta" | "signature_delta" | "citations_delta":
                # Tool input arrives complete with the assistant line; signatures are not shown.
                return []
            case _:
                return [Unrecognized(obj)]

    def _assistant(self, obj: dict[str, Any]) -> list[StreamEvent]:
        message = dict_or_empty(obj.get("message"))
        content = message.get("content")
        if message.get("model") == SYNTHETIC_MODEL or obj.get("is_api_error_message") is True:
            return self._api_error_message(obj, message)
        message_id = str_or_none(message.get("id"))
        subagent = obj.get("parent_tool_use_id") is not None
        events: list[StreamEvent] = [*self._message.begin(message_id)]
        if not subagent and message_id != self._stream_message:
            events.extend(self._settle_stream())
        streamed = message_id is not None and message_id in self._streamed
        events.extend(
            self._usage.message(message_id, str_or_none(message.get("model")), message.get("usage"))
        )
        blocks = content if isinstance(content, list) else [] if content is None else [content]
        for raw in blocks:
            block = content_block(raw)
            if block is None:
                events.append(Unrecognized(raw if isinstance(raw, dict) else {"block": raw}))
                continue
            self._message.add(block)
            if streamed and not subagent and isinstance(block, TextBlock) and message_id is not None:
                self._complete_text.setdefault(message_id, []).append(block.text)
            match block:
                case TextBlock(text=text) if text and not subagent and not streamed:
                    events.append(self._reply.delta(None, text))
                case ThinkingBlock(text=text) if text and not subagent and not streamed:
                    events.append(ThinkingDelta(text))
                case ToolUseBlock(call_id=call_id, name=name, input=tool_input):
                    events.append(ToolCall(call_id=call_id, name=name, input=tool_input))
                case _:
                    pass
        return events

    def _settle_stream(self) -> list[StreamEvent]:
        """The reply's text for the streamed message, now that it is over, made its complete text.

        Its deltas were for live display: the job's text is what its complete ``assistant``
        lines say. They differ when a stream broke mid-message and the CLI dropped it without
        an ``abandoned_blocks`` notice (older CLIs) and asked again: the partial text is then
        taken back (``text_retracted``), and whatever the message did complete is sent instead.
        """
        message_id, self._stream_message = self._stream_message, None
        if message_id is None:
            return []
        complete = [text for text in self._complete_text.pop(message_id, []) if text]
        streamed = self._reply.streamed_blocks(message_id)
        if streamed == complete:
            return []
        self._streamed.discard(message_id)  # a late line of it is then text of its own
        events: list[StreamEvent] = [
            SystemNotice("partial_text_dropped", {"message_id": message_id, "streamed": "".join(streamed)})
        ]
        retracted = self._reply.retract_message(message_id)
        if retracted is not None:
            events.append(retracted)
        events.extend(self._reply.delta(None, text) for text in complete)
        return events

    def _api_error_message(self, obj: dict[str, Any], message: Mapping[str, Any]) -> list[StreamEvent]:
        blocks = map(content_block, list_or_empty(message.get("content")))
        text = "".join(b.text for b in blocks if isinstance(b, TextBlock))
        info = {
            "message": text,
            "error": obj.get("error"),
            "status": obj.get("api_error_status"),
            "error_type": obj.get("api_error_type"),
        }
        self._api_error = info
        return [*self._message.flush(), SystemNotice("api_error", info)]

    def _user(self, obj: dict[str, Any]) -> list[StreamEvent]:
        events: list[StreamEvent] = [*self._message.flush()]
        if obj.get("parent_tool_use_id") is None:
            events.extend(self._settle_stream())
        content = dict_or_empty(obj.get("message")).get("content")
        if isinstance(content, str):
            return [*events, SystemNotice("user_message", {"text": content})]
        for raw in list_or_empty(content):
            block = dict_or_empty(raw)
            match block.get("type"):
                case "tool_result":
                    call_id = str_or_none(block.get("tool_use_id")) or ""
                    text = tool_result_text(block.get("content"))
                    is_error = block.get("is_error") is True
                    events.append(ToolResult(call_id=call_id, content=text, is_error=is_error))
                case "text":
                    text = str_or_none(block.get("text")) or ""
                    events.append(SystemNotice("user_message", {"text": text}))
                case _:
                    events.append(Unrecognized(raw if isinstance(raw, dict) else {"block": raw}))
        return events

    def _result(self, obj: dict[str, Any]) -> list[StreamEvent]:
        events: list[StreamEvent] = [*self._message.flush(), *self._settle_stream()]
        if self.result is not None:
            return [*events, StreamWarning("a second result line was ignored"), Unrecognized(obj)]
        self.result = obj
        self.session_id = str_or_none(obj.get("session_id")) or self.session_id
        error = classify_result(obj, api_error=self._api_error, retry_limits=self.retry_limits)
        # Emitted before the attempt ends either way: on failure it is the only record of the
        # attempt's cost (it carries total_cost_usd then), so the job's cost stays known.
        events.extend(self._usage.result(obj, failed=error is not None))
        tokens = result_tokens(obj)
        if error is None:
            if "structured_output" in obj:
                events.extend(self._reply.replace(orjson.dumps(obj["structured_output"]).decode()))
            duration_ms = number_or_none(obj.get("duration_ms"))
            self._finished = StreamFinished(
                stop_reason=str_or_none(obj.get("stop_reason")),
                tokens=tokens,
                cost_usd=number_or_none(obj.get("total_cost_usd")),
                duration_s=duration_ms / 1000 if duration_ms is not None else None,
                turns=int_or_none(obj.get("num_turns")),
                session_id=self.session_id,
                result_text=str_or_none(obj.get("result")),
                permission_denials=tuple(
                    d for d in list_or_empty(obj.get("permission_denials")) if isinstance(d, dict)
                ),
            )
        else:
            self._error = error
            kept = {k: obj[k] for k in _FAILED_RESULT_KEPT if k in obj}
            events.append(SystemNotice("result", kept))
        return events


def _fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in _NOISE}


def _preview(line: bytes | str) -> str:
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    return repr(text[:_PREVIEW] + ("..." if len(text) > _PREVIEW else ""))
