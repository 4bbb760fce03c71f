"""``openai``: OpenAI chat completions, streamed (``POST {base_url}/chat/completions``), and
every server that speaks the same API: vLLM, llama.cpp's server, Ollama, LM Studio.

This module is the thin shell: settings and options, the request (a pure function of the
job), and the attempt, which :func:`.exchange.stream_attempt` runs with an
:class:`.decoders.openai.OpenAIDecoder`.

Job fields used: ``messages`` and ``prompt`` (the conversation, prompt last), ``system`` (a
system message before it),
``model`` (required), ``max_tokens`` (sent as ``max_tokens_field``), ``temperature``, ``seed``.

A local server: set ``base_url`` (``http://127.0.0.1:8000/v1`` for vLLM,
``http://127.0.0.1:11434/v1`` for Ollama) and ``api_key_required = false``. The key: the
variable named by ``api_key_env`` (``OPENAI_API_KEY``), sent as ``Authorization: Bearer``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from orchestrator.backends.http.backend import HttpApi, HttpKind, TransportSettings
from orchestrator.backends.http.decoders.openai import OpenAIDecoder
from orchestrator.backends.http.exchange import ApiKey
from orchestrator.backends.http.prices import OPENAI_PRICES
from orchestrator.backends.request import turns
from orchestrator.spec import JobSpec

NAME = "openai"


@attrs.frozen
class Options:
    """Per-job options (``[defaults.openai]`` or ``openai = {...}`` on a job)."""

    tools: tuple[Mapping[str, Any], ...] = ()
    """Tool definitions as the API takes them: ``{type = "function", function = {...}}``."""
    tool_choice: str | None = None
    """``auto``, ``none``, ``required``; for one named function use ``extra_body``."""
    stop: tuple[str, ...] = ()
    top_p: float | None = attrs.field(default=None, metadata={"min": 0, "max": 1})
    reasoning_effort: str | None = None
    extra_body: Mapping[str, Any] = attrs.field(factory=dict)
    """More request fields, as is (they win over the fields built from the job)."""


@attrs.frozen
class Settings(TransportSettings):
    """Batch-wide ``[backends.openai]`` settings."""

    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"
    """The environment variable holding the key (the key itself never goes in a job file)."""
    api_key_required: bool = True
    """False: run without a key when the variable is unset (local servers)."""
    max_tokens_field: str = attrs.field(
        default="max_tokens", metadata={"choices": ("max_tokens", "max_completion_tokens")}
    )
    """OpenAI's reasoning models take only ``max_completion_tokens``; most other servers
    ``max_tokens``."""
    include_usage: bool = True
    """Ask for the usage chunk (``stream_options``); turn off for servers that reject it."""


def request_body(job: JobSpec, options: Options, settings: Settings) -> dict[str, Any]:
    """The JSON body of one attempt's request."""
    messages = turns(job)
    if job.system is not None:
        messages.insert(0, {"role": "system", "content": job.system})
    body: dict[str, Any] = {"model": job.model, "messages": messages, "stream": True}
    if settings.include_usage:
        body["stream_options"] = {"include_usage": True}
    if job.max_tokens is not None:
        body[settings.max_tokens_field] = job.max_tokens
    if job.temperature is not None:
        body["temperature"] = job.temperature
    if job.seed is not None:
        body["seed"] = job.seed
    if options.tools:
        body["tools"] = [dict(tool) for tool in options.tools]
    if options.tool_choice is not None:
        body["tool_choice"] = options.tool_choice
    if options.stop:
        body["stop"] = list(options.stop)
    if options.top_p is not None:
        body["top_p"] = options.top_p
    if options.reasoning_effort is not None:
        body["reasoning_effort"] = options.reasoning_effort
    if job.output_schema is not None:  # structured outputs: the reply is constrained to the schema
        schema = job.output_schema
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": schema.name, "schema": schema.schema, "strict": True},
        }
    body.update(options.extra_body)
    return body


def request_headers(settings: Settings, options: Options, key: ApiKey | None) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json"), (b"accept", b"text/event-stream")]
    if key is not None:
        headers.append((b"authorization", b"Bearer " + key.reveal().encode()))
    return headers


KIND = HttpKind(
    HttpApi(
        name=NAME,
        path="/chat/completions",
        options=Options,
        settings=Settings,
        prices=OPENAI_PRICES,
        headers=request_headers,
        body=request_body,
        decoder=OpenAIDecoder,
        refunds_unused_tokens=False,
    )
)
