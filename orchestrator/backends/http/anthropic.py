"""``anthropic``: the Anthropic Messages API, streamed (``POST {base_url}/v1/messages``).

This module is the thin shell: settings and options, the request (a pure function of the
job), and the attempt, which :func:`.exchange.stream_attempt` runs with an
:class:`.decoders.anthropic.AnthropicDecoder`.

Job fields used: ``messages`` and ``prompt`` (the conversation, prompt last), ``model``
(required), ``system``,
``max_tokens`` (the API requires one: ``[backends.anthropic] max_tokens`` when the job has
none), ``temperature``. ``seed`` has no API equivalent and is ignored. Options add tools,
``tool_choice``, stop sequences, ``top_p``/``top_k``, extended thinking, beta headers and raw
extra body fields.

The key: ``ANTHROPIC_API_KEY``, or the variable named by ``api_key_env``; a missing key stops
the batch before it starts (exit 2). It is sent as ``x-api-key`` and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from orchestrator.backends.http.backend import HttpApi, HttpKind, TransportSettings
from orchestrator.backends.http.decoders.anthropic import AnthropicDecoder
from orchestrator.backends.http.exchange import ApiKey
from orchestrator.backends.http.prices import ANTHROPIC_PRICES
from orchestrator.backends.request import turns
from orchestrator.jobs import Alike
from orchestrator.spec import JobSpec

NAME = "anthropic"


@attrs.frozen
class Options:
    """Per-job options (``[defaults.anthropic]`` or ``anthropic = {...}`` on a job)."""

    tools: tuple[Mapping[str, Any], ...] = ()
    """Tool definitions as the API takes them: ``{name, description, input_schema}``."""
    tool_choice: Mapping[str, Any] | None = None
    stop_sequences: tuple[str, ...] = ()
    top_p: float | None = attrs.field(default=None, metadata={"min": 0, "max": 1})
    top_k: int | None = attrs.field(default=None, metadata={"min": 1})
    thinking_budget: int | None = attrs.field(default=None, metadata={"min": 1024})
    """Extended thinking with this many tokens (must be below max_tokens); None: off."""
    cache_system: bool = False
    """Mark the system prompt for prompt caching (``cache_control``): jobs that share it pay for
    it once per cache window, then at the cache-read price."""
    cache_messages: int = attrs.field(default=0, metadata={"min": 0})
    """Mark the first N messages (a prefix the jobs share) for prompt caching; 0: none."""
    betas: tuple[str, ...] = ()
    """``anthropic-beta`` header values."""
    extra_body: Mapping[str, Any] = attrs.field(factory=dict)
    """More request fields, as is (they win over the fields built from the job)."""


@attrs.frozen
class Settings(TransportSettings):
    """Batch-wide ``[backends.anthropic]`` settings."""

    base_url: str = "https://api.anthropic.com"
    api_key_env: str = "ANTHROPIC_API_KEY"
    """The environment variable holding the key (the key itself never goes in a job file)."""
    api_key_required: bool = True
    """False: run without a key when the variable is unset (a local fake or proxy)."""
    anthropic_version: str = "2023-06-01"
    max_tokens: int = attrs.field(default=4096, metadata={"min": 1})
    """For jobs that set no max_tokens."""


def request_body(job: JobSpec, options: Options, settings: Settings) -> dict[str, Any]:
    """The JSON body of one attempt's request."""
    body: dict[str, Any] = {
        "model": job.model,
        "max_tokens": job.max_tokens or settings.max_tokens,
        "messages": turns(job),
        "stream": True,
    }
    if job.system is not None:
        body["system"] = [_cached(job.system)] if options.cache_system else job.system
    if options.cache_messages:
        messages = body["messages"]
        last = min(options.cache_messages, len(messages)) - 1
        messages[last] = {**messages[last], "content": [_cached(messages[last]["content"])]}
    if job.temperature is not None:
        body["temperature"] = job.temperature
    if options.tools:
        body["tools"] = [dict(tool) for tool in options.tools]
    if options.tool_choice is not None:
        body["tool_choice"] = dict(options.tool_choice)
    if options.stop_sequences:
        body["stop_sequences"] = list(options.stop_sequences)
    if options.top_p is not None:
        body["top_p"] = options.top_p
    if options.top_k is not None:
        body["top_k"] = options.top_k
    if options.thinking_budget is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": options.thinking_budget}
    if job.output_schema is not None:  # structured outputs: the reply's text is the JSON
        schema = sendable_schema(job.output_schema.schema)
        body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    body.update(options.extra_body)
    return body


# Constraints the API's structured outputs refuse: left out of what is sent (as Anthropic's SDKs
# do), and still enforced, since the runner checks every reply against the whole schema.
_UNSUPPORTED = frozenset(
    {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength"}
)


def sendable_schema(schema: Any) -> Any:
    """``schema`` without the constraints the API does not take (numeric and string bounds,
    array bounds beyond ``minItems`` 0 or 1), at every level; everything else as it is."""
    if isinstance(schema, list):
        return [sendable_schema(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "$defs", "definitions", "patternProperties") and isinstance(value, Mapping):
            out[key] = {name: sendable_schema(sub) for name, sub in value.items()}
        elif key in ("const", "enum", "default", "examples"):
            out[key] = value  # values, not schemas: kept as written
        elif key in _UNSUPPORTED or key == "maxItems" or (key == "minItems" and value not in (0, 1)):
            continue
        else:
            out[key] = sendable_schema(value)
    return out


_EPHEMERAL = {"type": "ephemeral"}


def _cached(text: str) -> dict[str, Any]:
    """A text block with a cache breakpoint: everything up to it is cached."""
    return {"type": "text", "text": text, "cache_control": _EPHEMERAL}


def thinking_problems(settings: Settings, jobs: Sequence[Alike]) -> list[str]:
    """Jobs whose ``thinking_budget`` is not below their ``max_tokens`` (the API refuses every
    such request with a 400): found before the batch starts, one line for all of them."""
    bad = [
        (ids, options.thinking_budget, limit)
        for job, ids in jobs
        if isinstance(options := job.options, Options)
        and options.thinking_budget is not None
        and options.thinking_budget >= (limit := job.max_tokens or settings.max_tokens)
    ]
    if not bad:
        return []
    ids, budget, limit = bad[0]
    job_id, count = ids[0], sum(len(ids) for ids, _, _ in bad)
    more = f" (and {count - 1} more jobs)" if count > 1 else ""
    return [
        f"jobs.{job_id}: anthropic.thinking_budget ({budget}) must be below max_tokens ({limit}){more}: "
        "raise max_tokens or lower the budget"
    ]


def request_headers(settings: Settings, options: Options, key: ApiKey | None) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", b"application/json"),
        (b"accept", b"text/event-stream"),
        (b"anthropic-version", settings.anthropic_version.encode()),
    ]
    if options.betas:
        headers.append((b"anthropic-beta", ",".join(options.betas).encode()))
    if key is not None:
        headers.append((b"x-api-key", key.reveal().encode()))
    return headers


KIND = HttpKind(
    HttpApi(
        name=NAME,
        path="/v1/messages",
        options=Options,
        settings=Settings,
        prices=ANTHROPIC_PRICES,
        headers=request_headers,
        body=request_body,
        decoder=AnthropicDecoder,
        checks=thinking_problems,
    )
)
