"""One job's whole story from the log (``orchestrate report LOG --job ID``).

Every run that touched the job, every attempt in order with its text (deltas joined), thinking,
tool calls with their inputs and results, backend notices and warnings, how the attempt ended,
each retry with its reason and delay, and the final outcome. Nothing is summarised away except
token-by-token deltas, which are joined into the text they make.
"""

from __future__ import annotations

from typing import Any

import orjson
from rich.console import Console
from rich.rule import Rule
from rich.text import Text

from orchestrator.events import (
    AssistantMessage,
    AttemptStarted,
    JobCancelled,
    JobDeduplicated,
    JobFailed,
    JobInput,
    JobQueued,
    JobSkipped,
    JobSucceeded,
    OutputParsed,
    RetryScheduled,
    SessionStarted,
    StreamFinished,
    StreamWarning,
    SystemNotice,
    Tagged,
    TextBlock,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolResult,
    Unrecognized,
    UsageReported,
)
from orchestrator.report.fold import Report
from orchestrator.visible import as_text, visible


class _Story:
    """Prints one job's events, joining runs of text or thinking deltas into one paragraph."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.buffer: list[str] = []
        self.buffer_kind: str | None = None
        self.buffer_ts = 0.0
        self.saw_text = False

    def line(self, ts: float, text: str, style: str = "") -> None:
        self.flush()
        out = Text(f"{ts:9.3f}s  ", style="dim")
        out.append(visible(text, lines=True), style=style)
        self.console.print(out, soft_wrap=True)

    def add_delta(self, ts: float, kind: str, text: str) -> None:
        if self.buffer_kind != kind:
            self.flush()
            self.buffer_kind, self.buffer_ts = kind, ts
        self.buffer.append(text)

    def flush(self) -> None:
        if self.buffer_kind is None:
            return
        label = "text" if self.buffer_kind == "text" else "thinking"
        out = Text(f"{self.buffer_ts:9.3f}s  {label}: ", style="dim")
        out.append(visible("".join(self.buffer), lines=True), style="" if label == "text" else "italic dim")
        self.console.print(out, soft_wrap=True)
        self.buffer, self.buffer_kind = [], None

    def event(self, tagged: Tagged) -> None:
        ts, event = tagged.ts, tagged.event
        match event:
            case TextDelta(text=text):
                self.saw_text = True
                self.add_delta(ts, "text", text)
            case ThinkingDelta(text=text):
                self.add_delta(ts, "thinking", text)
            case JobQueued():
                self.line(
                    ts,
                    f"queued on {event.backend}"
                    + (f" ({event.model})" if event.model else "")
                    + f", content hash {event.content_hash}",
                )
            case JobInput():
                if event.row:
                    self.line(ts, f"row: {_json(event.row)}", "dim")
                if event.metadata:
                    self.line(ts, f"metadata: {_json(event.metadata)}", "dim")
                if event.system is not None:
                    self.line(ts, f"system: {event.system}")
                for message in event.messages:
                    self.line(ts, f"{message.role}: {message.content}")
                if event.prompt is not None:
                    self.line(ts, f"prompt: {event.prompt}")
            case JobDeduplicated(leader=leader):
                self.line(
                    ts,
                    f"identical to job {leader}'s request, sent once: this job ends with its outcome "
                    f"(report --job {leader}), at no cost",
                    "cyan",
                )
            case AttemptStarted():
                self.flush()
                self.saw_text = False
                self.console.print(
                    Rule(
                        as_text(f"attempt {tagged.attempt} ({event.backend}) at {ts:.3f}s"),
                        align="left",
                        style="cyan",
                    )
                )
            case SessionStarted():
                tools = f", tools {', '.join(event.tools)}" if event.tools else ""
                self.line(ts, f"session {event.session_id or '?'}, model {event.model or '?'}{tools}", "dim")
            case AssistantMessage(content=content):
                # Backends that stream deltas also send the whole message; show its text only once.
                texts = [b.text for b in content if isinstance(b, TextBlock)]
                if texts and not self.saw_text:
                    self.line(ts, "message: " + "".join(texts))
                else:
                    self.line(ts, f"assistant message ({len(content)} blocks)", "dim")
            case ToolCall():
                self.line(ts, f"tool call {event.name} [{event.call_id}] {_json(event.input)}", "blue")
            case ToolResult():
                flag = " (error)" if event.is_error else ""
                self.line(
                    ts,
                    f"tool result [{event.call_id}]{flag}: {event.content}",
                    "red" if event.is_error else "blue",
                )
            case UsageReported(tokens=t):
                self.line(ts, f"usage: {t.input} in, {t.output} out", "dim")
            case StreamFinished():
                tokens = f"{event.tokens.input} in, {event.tokens.output} out" if event.tokens else "tokens ?"
                cost = "cost ?" if event.cost_usd is None else f"${event.cost_usd:.6f}"
                self.line(ts, f"stream finished: {event.stop_reason or '-'}, {tokens}, {cost}", "dim")
            case OutputParsed(value=value):
                self.line(ts, f"output: {_json(value)}", "green")
            case SystemNotice():
                self.line(ts, f"notice {event.subtype}: {_json(event.data)}", "yellow")
            case StreamWarning(message=message):
                self.line(ts, f"warning: {message}", "yellow")
            case Unrecognized(data=data):
                self.line(ts, f"unrecognized backend output: {_json(data)}", "yellow")
            case RetryScheduled():
                after = (
                    f" (server asked for {event.retry_after_s:g}s)" if event.retry_after_s is not None else ""
                )
                self.line(
                    ts,
                    f"attempt {tagged.attempt} failed: {event.error_kind}: {event.message}; "
                    f"retrying in {event.delay_s:.3f}s{after}",
                    "yellow",
                )
            case JobSucceeded():
                self.line(ts, f"succeeded after {event.attempts} attempt(s)", "bold green")
            case JobFailed():
                retry = "retryable" if event.retryable else "not retryable"
                self.line(
                    ts,
                    f"failed after {event.attempts} attempt(s): {event.error_kind}: "
                    f"{event.message} ({retry})",
                    "bold red",
                )
            case JobCancelled():
                self.line(ts, f"cancelled ({event.reason}) during attempt {event.attempts}", "bold yellow")
            case JobSkipped():
                self.line(ts, f"skipped: {event.reason}", "bold")
            case _:
                self.line(ts, event.kind, "dim")


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode()


def print_story(console: Console, report: Report, job_id: str) -> None:
    """Print ``job_id``'s story; ``report`` must have been read with ``story_job=job_id``."""
    row = report.jobs[job_id]
    head = as_text(f"job {job_id}: ", "bold")
    head.append(row.status, style="green" if row.ok else "red")
    head.append(
        f", {row.attempts} attempt(s) in run {row.run}, tokens {row.tokens.input:,} in / "
        f"{row.tokens.output:,} out, cost " + ("?" if row.cost_usd is None else f"${row.cost_usd:.6f}")
    )
    console.print(head)
    story = _Story(console)
    runs = {run.index: run for run in report.runs}
    shown: set[int] = set()
    for run_index, tagged in report.story:
        if run_index not in shown:
            story.flush()
            run = runs[run_index]
            started = run.header.started_at if run.header is not None else "?"
            console.print(Rule(as_text(f"run {run_index}: {run.source}, started {started}"), style="bold"))
            shown.add(run_index)
        story.event(tagged)
    story.flush()
