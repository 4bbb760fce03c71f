"""What a job sends, in one place for every backend: its conversation and its size.

A job's conversation is its ``messages`` followed by its ``prompt`` as the last user turn (an
empty prompt adds no turn, so a job may be a conversation alone). ``system`` stays apart: each
API places it in its own way.

Sizes are estimated without a tokenizer: about four characters a token, over the system
prompt and every turn. This is what the runner reserves against token rate limits and spend
caps, and what a dry run reports.
"""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.spec import JobSpec

CHARS_PER_TOKEN = 4
DEFAULT_REPLY_TOKENS = 1024  # reserved for a reply when the job sets no max_tokens


def turns(job: JobSpec) -> list[dict[str, str]]:
    """The job's conversation as ``{role, content}`` dicts, its prompt last."""
    out = [{"role": m.role, "content": m.content} for m in job.messages]
    if job.prompt:
        out.append({"role": "user", "content": job.prompt})
    return out


def input_chars(job: JobSpec) -> int:
    """Characters the job sends: system prompt, messages and prompt."""
    chars = len(job.prompt)
    if job.system:
        chars += len(job.system)
    if job.messages:  # no generator for the common job, a prompt alone (it runs once per attempt)
        chars += sum(len(m.content) for m in job.messages)
    return chars


def estimated_input_tokens(job: JobSpec) -> int:
    """Input tokens of the job, estimated as characters / 4 (rounded down) + 1."""
    return input_chars(job) // CHARS_PER_TOKEN + 1


def attempt_estimate(
    estimate: Callable[[JobSpec], tuple[int, float | None]] | None, job: JobSpec
) -> tuple[int, float]:
    """Tokens and cost to reserve for one attempt of ``job``: the backend's own ``estimate``
    when it has one, else the input's estimate plus the reply's ``max_tokens``, at no cost."""
    if estimate is not None:
        tokens, cost = estimate(job)
        return tokens, cost or 0.0
    return estimated_input_tokens(job) + (job.max_tokens or DEFAULT_REPLY_TOKENS), 0.0
