"""One run per log: the exclusive claim a run holds on its log from before it reads it (resume)
until its last line is written.

The claim is an ``flock`` on a lock file beside the log (``LOG.lock``), which holds the pid of
the run that has it. The kernel releases an ``flock`` when its process ends, however it ends:
after ``kill -9`` a stale lock file holds no lock, and the next run takes it. A lock on the log
itself would do as well for exclusion, but the pid must be readable by the run that is turned
away, and a separate file is where it can be written without touching the log.

Claiming also checks what the file is: a file that is not a log is refused (and never
modified), and so is a log that another job file started, unless ``force``. Readers (``report``,
``tail``) take no claim: they read a log while it is written.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from pathlib import Path

from orchestrator.errors import ConfigError
from orchestrator.record.log import LogError, LogHeader, first_header

_PID_WAIT = 0.5  # seconds to wait for the holder to write its pid (it has just taken the lock)


def lock_path(log: str) -> Path:
    return Path(log + ".lock")


def job_path(job_file: str | None) -> str | None:
    """What identifies a job file in a log header: its resolved path (None for a library batch).
    The same file from another working directory is the same job file; its content may change
    (an edited prompt simply runs again)."""
    return os.path.realpath(job_file) if job_file is not None else None


def same_job_file(header: LogHeader, job_file: str | None) -> bool:
    """Whether the log that ``header`` opens belongs to ``job_file`` (see :func:`job_path`).
    Logs from before headers recorded ``job_path`` are matched by the job file's name."""
    if header.job_path is not None or header.job_file is None:
        return header.job_path == job_path(job_file)
    return job_file is not None and Path(header.job_file).name == Path(job_file).name


class LogClaim:
    """The right to write ``log`` (see the module docstring). Use as a context manager, or call
    :meth:`release`; releasing twice is harmless."""

    def __init__(self, log: str, fd: int) -> None:
        self.log = log
        self._fd: int | None = fd

    def release(self) -> None:
        """Give the log up: remove the lock file, then unlock (in that order, so a run that
        opened the old file finds it gone and tries again; see :func:`claim_log`)."""
        if self._fd is None:
            return
        try:
            os.unlink(lock_path(self.log))
        except OSError:
            pass  # gone already, or a read-only directory: the lock still ends with the fd
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> LogClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim_log(log: str, *, job_file: str | None, force: bool = False) -> LogClaim:
    """Take the log for this run, or raise :class:`ConfigError` (one line each):

    * another run holds it: ``LOG: in use by another run (pid N)``;
    * the file is not a log (its first line is not one of our headers);
    * it is a log of another job file, and ``force`` is false.

    Never blocks and never modifies the log. The lock file is created beside the log (and its
    directory with it).
    """
    lock = lock_path(log)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError([f"{log}: cannot open log: {exc.strerror or exc}"]) from None
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError([f"{log}: cannot lock the log ({lock}): {exc.strerror or exc}"]) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                [f"{log}: in use by another run (pid {_holder(lock)}); wait for it to end, or stop it"]
            ) from None
        # The holder we waited on may have removed the file between our open and our lock: then
        # we locked a file nobody else will see. Only a lock on the file at the path counts.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    claim = LogClaim(log, fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        pass  # a full disk: the lock holds all the same, only the pid goes unsaid
    try:
        _check_log(log, job_file, force)
    except BaseException:
        claim.release()
        raise
    return claim


def _check_log(log: str, job_file: str | None, force: bool) -> None:
    try:
        if not stat.S_ISREG(os.stat(log).st_mode):  # a FIFO would block the read, a device never end
            raise ConfigError([f"{log}: not a regular file; refusing to write a log into it"])
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError([f"{log}: cannot open log: {exc.strerror or exc}"]) from None
    try:
        header = first_header(log)
    except IsADirectoryError:
        raise ConfigError([f"{log}: is a directory, not a log"]) from None
    except LogError as exc:
        raise ConfigError([f"{exc}; refusing to write into it"]) from None
    except OSError as exc:
        raise ConfigError([f"{log}: cannot open log: {exc.strerror or exc}"]) from None
    if header is None or force or same_job_file(header, job_file):
        return
    theirs = header.job_path or header.job_file or "a library batch (no job file)"
    ours = job_file or "a library batch (no job file)"
    raise ConfigError(
        [f"{log}: a log of {theirs}, not of {ours}; --force (force=True) to append to it anyway"]
    )


def _holder(lock: Path) -> str:
    """The pid written in the lock file, waiting briefly for a holder that has just taken it."""
    end = time.monotonic() + _PID_WAIT
    while True:
        try:
            text = lock.read_text().strip()
        except OSError:
            text = ""
        if text.isdigit() or time.monotonic() >= end:
            return text or "unknown"
        time.sleep(0.01)
