"""Operating-system resources a batch runs out of, and how it says so: open files.

Every attempt in flight holds files: an HTTP stream its socket, a Claude Code attempt the pipes
to its process. With ``ulimit -n 256`` and a concurrency of 1,000, connections fail with
``EMFILE`` ("too many open files"); reported as "cannot connect", every such job fails for good
and nothing says why. So:

* before a batch starts, :func:`fit_open_files` compares the soft ``RLIMIT_NOFILE`` with what
  the batch's concurrency needs, raises the soft limit (up to the hard limit) when it is short,
  and otherwise lowers the concurrency, saying so;
* an attempt that still runs out (other processes, other files) fails with the retryable error
  kind ``resources`` (:func:`out_of_files` recognises it), not as a connection or a bug.
"""

from __future__ import annotations

import errno
import resource
from collections.abc import Iterable, Mapping

import attrs

RESERVED_FILES = 64
"""Open files a batch needs besides its attempts: the interpreter, the log and its lock, the
terminal, trio's wakeup pipe, a backend's own (a model file, a server socket)."""
_OUT_OF_FILES = frozenset({errno.EMFILE, errno.ENFILE})


def out_of_files(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it, or a member of its group) is EMFILE or ENFILE."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _OUT_OF_FILES:
            return True
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return False


def out_of_files_message(detail: object) -> str:
    """The one-line message of such a failure: what ran out and what to do."""
    return f"out of open files (too many at once: raise ulimit -n or lower concurrency): {detail}"


@attrs.frozen
class OpenFiles:
    """What :func:`fit_open_files` decided. ``concurrency`` is the batch's (possibly lowered)
    global concurrency; ``notice`` is set when the user must hear about it."""

    concurrency: int
    needed: int
    limit: int
    notice: str | None = None


def files_needed(concurrency: int, backends: Iterable[tuple[int | None, int]]) -> int:
    """Open files a batch may hold at once: the reserve, plus for each backend its files per
    attempt times the attempts it may have in flight (its own ceiling, under the global one)."""
    return RESERVED_FILES + sum(
        per_attempt * min(concurrency, ceiling or concurrency) for ceiling, per_attempt in backends
    )


def fit_open_files(
    concurrency: int,
    backends: Mapping[str, tuple[int | None, int]],
    *,
    limits: tuple[int, int] | None = None,
    raise_limit: bool = True,
) -> OpenFiles:
    """Make room for ``concurrency`` attempts: raise the soft open-file limit up to what they need
    (never above the hard limit), or else the largest concurrency that fits, with a notice.

    ``backends`` maps each backend to (its in-flight ceiling or None, files per attempt).
    ``limits`` (soft, hard) replaces the process's own, for tests; ``raise_limit`` false only
    reports. Changes the process's soft ``RLIMIT_NOFILE`` (upwards only).
    """
    needed = files_needed(concurrency, backends.values())
    soft, hard = limits if limits is not None else resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return OpenFiles(concurrency, needed, soft)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if raise_limit and target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass  # not allowed here: lower the concurrency instead
    if needed <= soft:
        return OpenFiles(concurrency, needed, soft)
    fitted = concurrency
    while fitted > 1 and files_needed(fitted, backends.values()) > soft:
        fitted = max(1, fitted * 9 // 10)
    notice = (
        f"open-file limit (ulimit -n) {soft} is too low for concurrency {concurrency} "
        f"(about {needed} files): running at most {fitted} attempts at once; "
        f"raise it with ulimit -n {needed}"
    )
    return OpenFiles(fitted, needed, soft, notice)
