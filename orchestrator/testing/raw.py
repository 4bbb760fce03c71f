"""A scripted response written byte for byte, for both fakes: the wire shapes real servers send
that a well-behaved reply never does (an ``error:`` field line, ``[DONE]`` after a failure, an
HTML page or a JSON body with status 200, keep-alive comments, a gzip body).

``Raw`` is a plain frozen value; :func:`send_raw` writes it. The body pieces go out as HTTP
chunks (or, when ``headers`` name a ``content-length``, as one body of that length), with
``gap`` seconds of silence before each piece after the first.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import trio

SSE = {"content-type": "text/event-stream", "cache-control": "no-cache"}


@attrs.frozen
class Raw:
    """``body`` pieces sent as they are after a status line and ``headers``."""

    body: tuple[bytes, ...]
    status: int = 200
    headers: Mapping[str, str] = attrs.field(factory=lambda: dict(SSE))
    gap: float = 0.0

    @classmethod
    def events(cls, *lines: str, gap: float = 0.0) -> Raw:
        """An event stream of the given text, one piece per argument (``"data: {...}\\n\\n"``)."""
        return cls(tuple(line.encode() for line in lines), gap=gap)


async def send_raw(stream: trio.abc.Stream, raw: Raw) -> None:
    """Write ``raw`` on ``stream``: head, then the pieces (chunked unless a length is given)."""
    headers = {name.lower(): value for name, value in raw.headers.items()}
    sized = "content-length" in headers
    if not sized:
        headers["transfer-encoding"] = "chunked"
    head = [f"HTTP/1.1 {raw.status} Status", *(f"{k}: {v}" for k, v in headers.items())]
    await stream.send_all(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
    for n, piece in enumerate(raw.body):
        if n and raw.gap:
            await trio.sleep(raw.gap)
        if piece:
            await stream.send_all(piece if sized else b"%x\r\n%s\r\n" % (len(piece), piece))
    if not sized:
        await stream.send_all(b"0\r\n\r\n")
