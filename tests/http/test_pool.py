"""The connection pool against a real loopback server: reuse, TLS, cancellation, failures."""

from __future__ import annotations

import pytest
import trio

from orchestrator.http import ConnectError, RemoteProtocolError, client_ssl_context, open_pool
from orchestrator.http.connection import Connection
from orchestrator.testing.openai.server import Disconnect, HttpError, Reply, Stall, open_fake_openai
from tests.http_helpers import REQUEST, collect_garbage, post_and_read, wait_until_zero

CHAT = "/chat/completions"


@pytest.fixture
def tls() -> None:
    pytest.importorskip("trustme")


async def test_replies_stream_over_tls_on_one_kept_alive_connection(tls: None) -> None:
    async with open_fake_openai(tls=True) as fake:
        fake.script(Reply("Hello, world!", chunk_chars=3), Reply("Again"))
        async with open_pool(client_ssl_context(fake.ca_file)) as pool:
            status, first = await post_and_read(pool, fake.base_url + CHAT)
            _, second = await post_and_read(pool, fake.base_url + CHAT)
            assert (pool.stats.connects, pool.stats.reuses, pool.stats.open) == (1, 1, 1)
        assert pool.stats.open == 0
        await wait_until_zero(lambda: fake.open_connections, "server connections")
    assert status == 200
    assert first[-1] == "[DONE]" and '"content":"Hel"' in first[1]
    assert len(second) == 5  # role, text, finish, usage, [DONE]
    assert fake.connections == 1


async def test_chunk_boundaries_inside_characters_do_not_matter() -> None:
    text = "caf\u00e9 \u2603 \U0001f600 " * 20
    async with open_fake_openai() as fake:
        fake.script(Reply(text, chunk_chars=7, write_size=5))
        async with open_pool() as pool:
            _, data = await post_and_read(pool, fake.base_url + CHAT)
    assert "".join(d.split('"content":"')[1].split('"')[0] for d in data[1:-3]) == text


async def test_an_error_status_keeps_the_connection_once_its_body_is_read() -> None:
    async with open_fake_openai() as fake:
        fake.script(HttpError(429, "slow down", retry_after=2), Reply("ok"))
        async with open_pool() as pool:
            status, body = await post_and_read(pool, fake.base_url + CHAT)
            await post_and_read(pool, fake.base_url + CHAT)
            assert pool.stats.connects == 1
    assert status == 429 and "slow down" in body[0]


async def test_a_cancelled_stream_closes_its_connection() -> None:
    async with open_fake_openai() as fake:
        fake.script(Stall(partial="first"))
        async with open_pool() as pool:
            with trio.move_on_after(0.2) as scope:
                await post_and_read(pool, fake.base_url + CHAT)
            assert scope.cancelled_caught
            assert pool.stats.open == 0
    collect_garbage()


async def test_leaving_early_closes_the_connection_unless_the_rest_has_arrived() -> None:
    async with open_fake_openai() as fake:
        fake.script(Reply("abc", event_gap=0.05), Reply("x"), Reply("y"))
        async with open_pool() as pool:
            await post_and_read(pool, fake.base_url + CHAT, limit=1)  # more is still coming
            assert pool.stats.open == 0
            await post_and_read(pool, fake.base_url + CHAT)
            # Everything arrives in one read here: stopping at [DONE] still keeps the connection.
            _, data = await post_and_read(pool, fake.base_url + CHAT, limit=5)
            assert data[-1] == "[DONE]" and pool.stats.open == 1
    collect_garbage()


async def test_a_connection_reset_mid_body_is_a_protocol_error() -> None:
    async with open_fake_openai() as fake:
        fake.script(Disconnect(partial="cut"))
        async with open_pool() as pool:
            with pytest.raises(RemoteProtocolError, match=r"connection lost|closed the connection"):
                await post_and_read(pool, fake.base_url + CHAT)
            assert pool.stats.open == 0


async def test_a_stale_kept_alive_connection_is_retried_once_on_a_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served = 0

    async def answer_once_then_close(stream: trio.SocketStream) -> None:
        nonlocal served
        async with stream:
            request = b""
            while REQUEST not in request:
                request += await stream.receive_some(65536)
            served += 1
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            # ... and close the kept-alive connection while the client thinks it idle.

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, answer_once_then_close, 0)
        port = listeners[0].socket.getsockname()[1]
        async with open_pool() as pool:
            assert (await post_and_read(pool, f"http://127.0.0.1:{port}/x"))[0] == 200
            await trio.sleep(0.05)
            # Pretend the close has not been noticed yet, as when it crosses the next request.
            monkeypatch.setattr(Connection, "idle_healthy", lambda self: True)
            assert (await post_and_read(pool, f"http://127.0.0.1:{port}/x"))[0] == 200
            assert (pool.stats.connects, pool.stats.stale_retries, served) == (2, 1, 2)
        nursery.cancel_scope.cancel()


async def test_an_untrusted_certificate_is_refused(tls: None) -> None:
    async with open_fake_openai(tls=True) as fake:
        async with open_pool(client_ssl_context()) as pool:
            with pytest.raises(ConnectError) as caught:
                await post_and_read(pool, fake.base_url + CHAT)
    assert caught.value.certificate
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert pool.stats.open == 0


async def test_a_refused_connection_is_a_connect_error() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    async with open_pool() as pool:
        with pytest.raises(ConnectError, match=f"127.0.0.1:{port}"):
            await post_and_read(pool, f"http://127.0.0.1:{port}/x")


async def test_a_handshake_that_never_comes_hits_the_connect_timeout() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")  # accepts in the kernel, never answers
    port = listeners[0].socket.getsockname()[1]
    async with open_pool(connect_timeout=0.2) as pool:
        with pytest.raises(ConnectError, match=r"no connection within 0\.2s"):
            await post_and_read(pool, f"https://127.0.0.1:{port}/x")
    await listeners[0].aclose()
