"""Opening the files a job file or a command line names: regular files only.

A FIFO blocks the read until some writer comes (or forever), and a device such as ``/dev/zero``
never ends, so a read of either would hang or fill memory. Every file the configuration reads
(job files, prompts files, data files, output schemas) is opened here; Parquet files are opened
by pyarrow, which checks what it opens itself.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

NOT_REGULAR = "not a regular file"


def unreadable(exc: OSError) -> str:
    """What a problem says of a file :func:`open_regular` could not open (after its name)."""
    if exc.strerror == NOT_REGULAR:
        return NOT_REGULAR
    return f"cannot read: {exc.strerror or exc}"


def open_regular(path: str | Path) -> BinaryIO:
    """``path`` opened for reading bytes, if it is a regular file (the caller closes it).

    Raises what ``open`` raises (``FileNotFoundError``, ``IsADirectoryError``,
    ``PermissionError``, ...) and, for anything else that is not a regular file, an
    :class:`OSError` whose ``strerror`` is :data:`NOT_REGULAR`. Never blocks: a FIFO is opened
    without waiting for a writer, then refused."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, NOT_REGULAR, str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
