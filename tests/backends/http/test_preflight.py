"""What stops an HTTP backend's batch before it starts: every URL and proxy that could only fail
each job at connect time, and a CA file that holds no certificate."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.backends.http.openai import Settings
from orchestrator.backends.http.preflight import check_settings
from orchestrator.http.proxy import Origin, ProxyConfig


def problems(**settings: object) -> list[str]:
    return check_settings("openai", Settings(api_key_required=False, **settings), [])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://127.0.0.1:99999/v1", "Port out of range 0-65535"),
        ("http://h:port/v1", "Port could not be cast to integer value as 'port'"),
        ("https://[::1/v1", "Invalid IPv6 URL"),
        ("https://a..b/v1", "label empty or too long"),
    ],
)
def test_a_url_that_cannot_be_connected_to_is_a_preflight_problem(url: str, reason: str) -> None:
    (problem,) = problems(base_url=url)
    assert problem.startswith("backends.openai.base_url: not a usable URL (") and reason in problem


@pytest.mark.parametrize(
    "proxy", ["http://proxy:notaport", "http://proxy:70000", "ftp://proxy:21", "http://:8080"]
)
def test_a_proxy_from_the_environment_that_does_not_parse_is_a_preflight_problem(
    proxy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    (problem,) = problems(base_url="https://api.example.com/v1")
    assert problem.startswith("backends.openai.proxy: the proxy from the environment (HTTPS_PROXY")
    assert problems(base_url="https://api.example.com/v1", proxy=False) == []


@pytest.mark.parametrize("entry", ["host:²", "host:١٢", "[::1", "10.0.0.0/99", ":", "*.", "..", "host:"])
def test_odd_no_proxy_entries_never_raise(entry: str) -> None:
    config = ProxyConfig(https="http://proxy:3128", no_proxy=(entry,))
    assert config.select(Origin("https", "api.example.com", 443)) in (None, "http://proxy:3128")


def test_a_ca_file_without_a_certificate_is_a_preflight_problem(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    assert problems(ca_file=str(ca)) == [f"backends.openai.ca_file: no CA certificate (PEM) in {ca}"]
