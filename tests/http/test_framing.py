"""Response body framing: chunked, Content-Length and until-close, however the bytes arrive."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.http.errors import RemoteProtocolError
from orchestrator.http.framing import ChunkedDecoder, LengthDecoder, UntilCloseDecoder


def chunked(
    pieces: list[bytes], *, extension: bool = False, trailers: bool = False, lf_only: bool = False
) -> bytes:
    end = b"\n" if lf_only else b"\r\n"
    ext = b";name=value" if extension else b""
    out = b"".join(b"%x%s%s%s%s" % (len(p), ext, end, p, end) for p in pieces if p)
    return out + b"0" + end + (b"X-Trailer: 1" + end if trailers else b"") + end


def feed_split(decoder: ChunkedDecoder | LengthDecoder, data: bytes, cuts: list[int]) -> bytes:
    points = sorted({min(c, len(data)) for c in cuts})
    return b"".join(decoder.feed(data[a:b]) for a, b in zip([0, *points], [*points, len(data)], strict=True))


@given(
    body=st.lists(st.binary(min_size=1, max_size=40), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=30),
    extension=st.booleans(),
    trailers=st.booleans(),
    lf_only=st.booleans(),
)
def test_any_split_of_a_chunked_body_decodes_to_the_body(
    body: list[bytes], cuts: list[int], extension: bool, trailers: bool, lf_only: bool
) -> None:
    data = chunked(body, extension=extension, trailers=trailers, lf_only=lf_only) + b"NEXT"
    decoder = ChunkedDecoder()
    assert feed_split(decoder, data, cuts) == b"".join(body)
    assert decoder.done
    assert decoder.trailing == b"NEXT"


def test_one_whole_chunk_per_read_takes_the_fast_path_and_stays_exact() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(b"5\r\nhello\r\n") == b"hello"
    assert decoder.feed(b"1A\r\n" + b"a" * 26 + b"\r\n") == b"a" * 26
    assert not decoder.done
    assert decoder.feed(b"0\r\n\r\n") == b""
    assert decoder.done


@pytest.mark.parametrize(
    "data",
    [b"zz\r\n", b"0x5\r\nhello\r\n", b"-5\r\n", b"5_0\r\n", b" \r\n", b"5\r\nhelloX\r\n", b"1" * 5000],
)
def test_bad_framing_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        ChunkedDecoder().feed(data)


@given(
    st.binary(max_size=100),
    st.integers(min_value=0, max_value=100),
    st.lists(st.integers(0, 200), max_size=10),
)
def test_a_content_length_body_ends_at_its_length(data: bytes, length: int, cuts: list[int]) -> None:
    decoder = LengthDecoder(length)
    body = feed_split(decoder, data, cuts)
    assert body == data[:length]
    assert decoder.done == (len(data) >= length)
    assert decoder.trailing == data[length:]


def test_an_until_close_body_ends_only_when_closed() -> None:
    decoder = UntilCloseDecoder()
    assert decoder.feed(b"abc") == b"abc"
    assert not decoder.done
    decoder.close()
    assert decoder.done
