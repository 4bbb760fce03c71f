"""What every streaming HTTP API backend shares: the backend object that runs an attempt over the
batch's connection pool, and the registry kind that opens it.

An API module (``anthropic``, ``openai``) supplies only what differs, as an :class:`HttpApi`:
its URL path, request headers and body (pure functions of the job), its decoder and prices.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import orjson

from orchestrator.backends.base import Emit
from orchestrator.backends.http.endpoint import (
    base_url_warnings,
    extra_headers,
    header_problems,
    header_secrets,
    merged_headers,
    request_url,
    with_base_url,
)
from orchestrator.backends.http.exchange import (
    DEFAULT_CONCURRENCY,
    DERIVED_CONCURRENCY_CEILING,
    ApiKey,
    StreamDecoder,
    open_http_pool,
    read_api_key,
    redactor,
    stream_attempt,
)
from orchestrator.backends.http.preflight import check_settings
from orchestrator.backends.http.prices import Price, PriceBook
from orchestrator.backends.http.status import Redact
from orchestrator.backends.request import estimated_input_tokens
from orchestrator.diagnostics import logger
from orchestrator.events import Tokens
from orchestrator.http import ConnectionPool
from orchestrator.jobs import Alike
from orchestrator.spec import JobSpec

Headers = list[tuple[bytes, bytes]]
_log = logger(__name__)
_UNBOUNDED_REPLY = 1024  # reply tokens assumed when neither the job nor the settings cap them


@attrs.frozen
class TransportSettings:
    """The batch-wide settings every HTTP API backend has (``[backends.NAME]``); each API's own
    ``Settings`` adds its URL, key and request fields."""

    concurrency: int | None = attrs.field(default=None, metadata={"min": 1})
    """Streams in flight at once; None: 64 at first, then what the rate limit times the
    observed latency calls for (up to 1,024 and the batch's ``concurrency``)."""
    ca_file: str | None = None
    """A CA certificate (PEM) to trust besides the system store."""
    proxy: bool = True
    """Honour ``HTTPS_PROXY``/``NO_PROXY`` from the environment."""
    connect_timeout: float = attrs.field(default=30.0, metadata={"gt": 0})
    first_event_timeout: float | None = attrs.field(default=600.0, metadata={"gt": 0})
    """Longest wait for the first event of a reply (text, thinking or a tool call): a reasoning
    model may stream nothing for minutes while it thinks, so the job's idle timeout counts only
    after it. None: no wait of its own, the idle timeout counts from the request."""
    max_event_bytes: int = attrs.field(default=1 << 20, metadata={"min": 1024})
    """Largest server-sent event (and line) read; a bigger one fails the job (``protocol``, not
    retried: the same request gets the same event). 1 MiB."""
    prices: Mapping[str, Price] = attrs.field(factory=dict)
    """Prices per million tokens, ahead of genai-prices (when installed) and the built-in table."""
    extra_headers: Mapping[str, str] = attrs.field(factory=dict)
    """More request headers, as is (``OpenAI-Organization``, OpenRouter's ``HTTP-Referer``). They
    are logged with the settings: put secrets in ``extra_headers_env``."""
    extra_headers_env: Mapping[str, str] = attrs.field(factory=dict)
    """Header name -> the environment variable holding its value (Azure's ``api-key``, a
    gateway's token): read when the batch opens, hidden wherever it shows up, never logged."""
    allow_insecure_http: bool = False
    """Send the API key over plain ``http://`` to a host that is not this machine (refused by
    default: anyone on the way could read it)."""


@attrs.frozen
class HttpApi:
    """One API's differences. ``headers(settings, options, key)`` and ``body(job, options,
    settings)`` build the request; ``decoder(model, prices, redact)`` reads the reply."""

    name: str
    path: str
    options: type
    settings: type
    prices: Mapping[str, Price]
    headers: Callable[[Any, Any, ApiKey | None], Headers]
    body: Callable[[JobSpec, Any, Any], dict[str, Any]]
    decoder: Callable[[str | None, PriceBook, Redact], StreamDecoder]
    checks: Callable[[Any, Sequence[Alike]], list[str]] | None = None
    """More preflight problems of this API's own (``settings, jobs`` in, lines out)."""
    price_scale: float = 1.0
    """Costs at this share of the price table (the batch APIs': ``prices.BATCH_PRICE``)."""
    refunds_unused_tokens: bool = True
    """Whether the server's token rate limit gives back what a request reserved and did not use.
    Anthropic corrects its output-token estimate when a reply ends; OpenAI charges the prompt
    plus the requested ``max_tokens`` when the request arrives and keeps it."""


class HttpBackend:
    """Streams attempts over one shared connection pool. Cancellation-safe: a cancelled attempt
    closes its connection (see :mod:`orchestrator.http.pool`)."""

    def __init__(self, api: HttpApi, settings: Any, pool: ConnectionPool, key: ApiKey | None) -> None:
        self.api = api
        self.settings = settings
        self.pool = pool
        self.key = key
        self.url = request_url(settings.base_url, api.path)
        self.extra_headers = extra_headers(settings)
        self.prices = PriceBook(api.name, api.prices, settings.prices, scale=api.price_scale)
        self.refunds_unused_tokens = api.refunds_unused_tokens
        # The runner's pacer: the first response's rate-limit headers size the first burst.
        self.announces_limits = True
        # Without a configured limit the runner derives one from the rate limit and latency.
        self.derived_concurrency_ceiling = (
            DERIVED_CONCURRENCY_CEILING if settings.concurrency is None else None
        )

    def estimate(self, job: JobSpec) -> tuple[int, float | None]:
        """At most what one attempt may use: the input (about four characters a token) and the
        whole reply budget; its cost at the model's price (None if the price is unknown)."""
        prompt = estimated_input_tokens(job)
        reply = job.max_tokens or getattr(self.settings, "max_tokens", None) or _UNBOUNDED_REPLY
        return prompt + reply, self.prices.cost(job.model, Tokens(input=prompt, output=reply))[0]

    async def stream(self, job: JobSpec, attempt: int, emit: Emit) -> None:
        api = self.api
        options = job.options if isinstance(job.options, api.options) else api.options()
        await stream_attempt(
            self.pool,
            self.url,
            merged_headers(api.headers(self.settings, options, self.key), self.extra_headers),
            orjson.dumps(api.body(job, options, self.settings)),
            api.decoder(job.model, self.prices, redactor(self.key)),
            emit,
            first_event_timeout=self.settings.first_event_timeout,
            key=self.key,
            max_event_bytes=self.settings.max_event_bytes,
        )


class HttpKind:
    """The registry entry of an HTTP API backend (see :class:`~.base.BackendKind`)."""

    default_concurrency: int | None = DEFAULT_CONCURRENCY
    # Unless configured, the runner raises the in-flight limit up to this (Little's law).
    derived_concurrency_ceiling: int | None = DERIVED_CONCURRENCY_CEILING
    files_per_attempt = 1  # its connection's socket (see orchestrator.resources)

    def __init__(self, api: HttpApi) -> None:
        self.api = api
        self.name = api.name
        self.Options = api.options
        self.Settings = api.settings

    def preflight(self, settings: Any, jobs: Sequence[Alike]) -> list[str]:
        settings = with_base_url(self.name, settings)
        for warning in base_url_warnings(self.name, settings.base_url):
            _log.warning(warning)
        problems = check_settings(self.name, settings, jobs) + header_problems(self.name, settings)
        return problems + (self.api.checks(settings, jobs) if self.api.checks is not None else [])

    def secrets(self, settings: Any) -> list[str]:
        """The API key and the extra headers' values from the environment this backend sends, for
        the runner to hide wherever they show up."""
        key = read_api_key(settings)
        return ([] if key is None else [key.reveal()]) + header_secrets(settings)

    @asynccontextmanager
    async def _open(self, settings: Any) -> AsyncIterator[HttpBackend]:
        settings = with_base_url(self.name, settings)
        async with open_http_pool(settings) as pool:
            yield HttpBackend(self.api, settings, pool, read_api_key(settings))

    def open(self, settings: Any, *, seed: int) -> Any:
        return self._open(settings)
