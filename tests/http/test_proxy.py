"""Proxies: HTTPS_PROXY/NO_PROXY selection, and requests through a loopback CONNECT tunnel."""

from __future__ import annotations

import base64

import pytest

from orchestrator.http import ProxyConfig, ProxyError, client_ssl_context, open_pool
from orchestrator.http.proxy import Origin, redact_proxy
from orchestrator.testing.openai.server import Reply, open_fake_openai
from tests.http_helpers import open_connect_proxy, post_and_read


def origin(url: str) -> Origin:
    return Origin.split(url)[0]


def test_the_environment_is_read_lower_case_first() -> None:
    env = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2", "NO_PROXY": "a.com, .b.org"}
    config = ProxyConfig.from_env(env)
    assert config.https == "http://lower:2"
    assert config.no_proxy == ("a.com", ".b.org")
    assert ProxyConfig.from_env({"ALL_PROXY": "http://all:3"}).http == "http://all:3"
    assert ProxyConfig.from_env({}).select(origin("https://api.openai.com/v1")) is None


@pytest.mark.parametrize(
    ("no_proxy", "url", "bypassed"),
    [
        ("*", "https://api.anthropic.com/", True),
        ("anthropic.com", "https://api.anthropic.com/", True),
        (".anthropic.com", "https://api.anthropic.com/", True),
        ("anthropic.com", "https://notanthropic.com/", False),
        ("api.openai.com:443", "https://api.openai.com/", True),
        ("api.openai.com:8443", "https://api.openai.com/", False),
        ("10.0.0.0/8", "https://10.1.2.3/", True),
        ("10.0.0.0/8", "https://11.1.2.3/", False),
        ("127.0.0.1", "http://127.0.0.1:8000/", True),
        ("::1", "http://[::1]:8000/", True),
    ],
)
def test_no_proxy_matching(no_proxy: str, url: str, bypassed: bool) -> None:
    config = ProxyConfig.from_env(
        {"https_proxy": "http://p:1", "http_proxy": "http://p:1", "no_proxy": no_proxy}
    )
    assert config.bypasses(origin(url)) == bypassed
    assert (config.select(origin(url)) is None) == bypassed


def test_proxy_credentials_never_reach_a_message() -> None:
    assert redact_proxy("http://user:secret@proxy.local:3128") == "http://proxy.local:3128"


async def test_an_https_request_goes_through_the_connect_tunnel() -> None:
    pytest.importorskip("trustme")
    async with open_fake_openai(tls=True) as fake, open_connect_proxy() as proxy:
        fake.script(Reply("through the tunnel", chunk_chars=100), Reply("again"))
        config = ProxyConfig(https=proxy.url)
        async with open_pool(client_ssl_context(fake.ca_file), proxy=config) as pool:
            status, data = await post_and_read(pool, fake.base_url + "/chat/completions")
            await post_and_read(pool, fake.base_url + "/chat/completions")
            assert pool.stats.connects == 1  # the tunnelled connection is kept alive too
    assert status == 200 and "through the tunnel" in "".join(data)
    assert proxy.targets == [f"127.0.0.1:{fake.port}"]
    assert proxy.authorizations == ["Basic " + base64.b64encode(b"user:pa:ss").decode()]


async def test_a_refusing_proxy_is_a_proxy_error_without_its_credentials() -> None:
    async with open_fake_openai() as fake, open_connect_proxy(refuse=True) as proxy:
        async with open_pool(proxy=ProxyConfig(http=proxy.url)) as pool:
            with pytest.raises(ProxyError, match="407") as caught:
                await post_and_read(pool, fake.base_url + "/chat/completions")
            assert pool.stats.open == 0
    assert "pa%3Ass" not in str(caught.value) and "user" not in str(caught.value)
