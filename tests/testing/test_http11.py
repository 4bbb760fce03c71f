"""The fakes' request reader: orchestrator/testing/http11.py."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import trio
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.testing.http11 import MAX_HEAD, Request, read_request


class Pieces(trio.abc.ReceiveStream):
    """A connection that delivers ``data`` in the given pieces, then ends."""

    def __init__(self, data: bytes, cuts: Sequence[int] = ()) -> None:
        bounds = [0, *sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
        self._pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return self._pieces.pop(0) if self._pieces else b""

    async def aclose(self) -> None:
        pass


def read_all(data: bytes, cuts: Sequence[int] = ()) -> list[Request | None]:
    async def main() -> list[Request | None]:
        stream, buffer = Pieces(data, cuts), bytearray()
        requests: list[Request | None] = []
        while (request := await read_request(stream, buffer)) is not None:
            requests.append(request)
        return requests

    return trio.run(main)


def chunked(body: bytes, size: int) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


@given(
    bodies=st.lists(st.binary(max_size=300), min_size=1, max_size=4),
    chunk=st.integers(1, 50),
    cuts=st.lists(st.integers(0, 2000), max_size=20),
)
def test_requests_of_a_keep_alive_connection_read_the_same_however_the_bytes_arrive(
    bodies: list[bytes], chunk: int, cuts: list[int]
) -> None:
    wire = b""
    for n, body in enumerate(bodies):
        if n % 2:
            wire += b"POST /v1/x?beta=true HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(
                body, chunk
            )
        else:
            wire += b"POST /v1/x?beta=true HTTP/1.1\r\nContent-Length: %d\r\nX-Key: v \r\n\r\n%s" % (
                len(body),
                body,
            )
    requests = read_all(wire, cuts)
    assert [r.body for r in requests if r is not None] == bodies
    first = requests[0]
    assert first is not None
    assert (first.method, first.path, first.query) == ("POST", "/v1/x", "beta=true")
    assert first.headers["x-key"] == "v"


def test_a_request_cut_short_or_with_a_head_too_long_is_not_read() -> None:
    assert read_all(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc") == []
    assert read_all(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab") == []
    assert read_all(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n") == []
    assert read_all(b"GET / HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD + 10) + b"\r\n\r\n", [1000]) == []
