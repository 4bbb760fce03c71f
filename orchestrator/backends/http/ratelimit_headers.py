"""What an HTTP API's rate-limit response headers say, as a :class:`RateLimitInfo`.

Pure functions: the current Unix time is passed in, nothing is read from a clock. A value that
cannot be read (junk, a negative count, an impossible date) is left out, never raised on: a
server's odd header must not fail an attempt that otherwise succeeded.

Two families of headers, both reporting per-minute limits, what is left of them, and how long
until the quota is full again:

Anthropic (``anthropic-ratelimit-``)
    ``requests-limit/-remaining/-reset``, ``input-tokens-*`` and ``output-tokens-*`` (Anthropic
    meters input and output tokens apart; cache reads do not count as input on current models),
    and ``tokens-*``; a reset is an RFC 3339 timestamp, turned into seconds from ``now``.
    ``tokens-*`` carries whichever of input and output is the most restrictive, not a limit on
    input plus output: it is read only from a server that sends neither of the other two.
OpenAI and compatible servers (``x-ratelimit-``)
    ``limit-requests``, ``remaining-requests``, ``reset-requests`` and the same for ``-tokens``;
    a reset is a Go-style duration (``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s``) or plain seconds.

When both families are present (a proxy in front of an API), Anthropic's wins field by field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from orchestrator.events import RateLimitInfo

Headers = Sequence[tuple[bytes, bytes]]

_ANTHROPIC = b"anthropic-ratelimit-"
_OPENAI = b"x-ratelimit-"
# A count with more digits than this is junk, not a rate limit (and would make huge ints).
_COUNT = re.compile(r"[0-9]{1,15}")
# One ``<number><unit>`` term of a Go duration; the whole value is one or more of them.
_NUMBER = r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+"
_TERM = re.compile(rf"({_NUMBER})(ns|us|µs|μs|ms|s|m|h)")
# Plain seconds; ``float`` alone would also take "inf", "nan", "1e9" and "-1".
_PLAIN = re.compile(_NUMBER)
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # MICRO SIGN, as Go writes it
    "μs": 1e-6,  # GREEK SMALL LETTER MU, which Go also accepts
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# RateLimitInfo field, then its header in each family (after the family's prefix; None: not sent).
_FIELDS: tuple[tuple[str, bytes, bytes | None], ...] = (
    ("requests_limit", b"requests-limit", b"limit-requests"),
    ("requests_remaining", b"requests-remaining", b"remaining-requests"),
    ("requests_reset_s", b"requests-reset", b"reset-requests"),
    ("tokens_limit", b"tokens-limit", b"limit-tokens"),
    ("tokens_remaining", b"tokens-remaining", b"remaining-tokens"),
    ("tokens_reset_s", b"tokens-reset", b"reset-tokens"),
    ("input_tokens_limit", b"input-tokens-limit", None),
    ("input_tokens_remaining", b"input-tokens-remaining", None),
    ("input_tokens_reset_s", b"input-tokens-reset", None),
    ("output_tokens_limit", b"output-tokens-limit", None),
    ("output_tokens_remaining", b"output-tokens-remaining", None),
    ("output_tokens_reset_s", b"output-tokens-reset", None),
)
_SPLIT = (_ANTHROPIC + b"input-tokens-limit", _ANTHROPIC + b"output-tokens-limit")
# Longer than a day is not a rate-limit window; such a value is junk (or would pause for ever).
_LONGEST = 86400.0


def rate_limit_info(headers: Headers, now: float) -> RateLimitInfo | None:
    """The limits announced by a response's headers (lower-case names, as our client keeps
    them); ``now`` is the Unix time, for Anthropic's timestamps. None when the response says
    nothing readable about rate limits."""
    found: dict[bytes, bytes] = {}
    for name, raw_value in headers:
        if name.startswith((_ANTHROPIC, _OPENAI)):
            found[name] = raw_value
    if not found:
        return None
    values: dict[str, Any] = {}
    split = any(name in found for name in _SPLIT)
    for field, anthropic, openai in _FIELDS:
        reset = field.endswith("_reset_s")
        value: float | None = None
        raw = found.get(_ANTHROPIC + anthropic)
        if raw is not None and not (split and field.startswith("tokens_")):
            text = raw.decode("latin-1")
            value = parse_timestamp(text, now) if reset else parse_count(text)
        raw = found.get(_OPENAI + openai) if openai is not None else None
        if value is None and raw is not None:
            # UTF-8: Go writes microseconds as "µs".
            text = raw.decode("utf-8", "replace")
            value = parse_duration(text) if reset else parse_count(text)
        if value is not None:
            values[field] = value
    return RateLimitInfo(**values) if values else None


def parse_count(text: str) -> int | None:
    """A non-negative whole number (``"4000"``, ``" 12 "``); None for anything else."""
    text = text.strip()
    return int(text) if _COUNT.fullmatch(text) else None


def parse_duration(text: str) -> float | None:
    """Seconds in a Go-style duration (``"1s"``, ``"6m0s"``, ``"20ms"``, ``"1h2m3.5s"``) or a
    plain number of seconds (``"0.5"``). None for junk, a sign, or more than a day."""
    text = text.strip()
    if not text:
        return None
    seconds = 0.0
    position = 0
    for match in _TERM.finditer(text):
        if match.start() != position:
            break  # something between two terms
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position == 0 and _PLAIN.fullmatch(text):
        seconds = float(text)
    elif position == 0 or position != len(text):
        return None
    return seconds if 0.0 <= seconds <= _LONGEST else None


def parse_timestamp(text: str, now: float) -> float | None:
    """Seconds from ``now`` (Unix time) until an RFC 3339 timestamp such as
    ``2025-01-15T14:24:00Z``; 0 for a time already past; None for junk, a time without an
    offset (whose zone is unknown), or one more than a day ahead."""
    text = text.strip()
    if len(text) < 20 or len(text) > 40:  # the shortest RFC 3339 date-time has 20 characters
        return None
    try:
        when = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
    except (ValueError, OverflowError, OSError):
        return None
    return max(0.0, seconds) if seconds <= _LONGEST else None
