"""What stops an HTTP API backend's batch before it starts: the settings checks, one line per
problem, never quoting a key. Pure but for reading the environment and the CA file."""

from __future__ import annotations

import ipaddress
import os
import ssl
import urllib.parse
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from orchestrator.backends.http.exchange import HttpSettings, read_api_key
from orchestrator.http import Origin, ProxyConfig
from orchestrator.jobs import Alike
from orchestrator.redact import Redactor, has_control_characters

_EXAMPLE_MODEL = {"anthropic": "claude-haiku-4-5", "openai": "gpt-4o-mini"}


def check_settings(
    name: str, settings: HttpSettings, jobs: Sequence[Alike], environ: Mapping[str, str] | None = None
) -> list[str]:
    """Problems that stop a batch before it starts: no key or a key with a control character, a
    bad URL (credentials or a fragment in it, or a key sent in clear to another machine), a bad CA
    file, no model. No line quotes the key."""
    problems: list[str] = []
    where = f"backends.{name}"
    if settings.api_key_required and read_api_key(settings, environ) is None:
        problems.append(
            f"{where}: the API key is missing: environment variable {settings.api_key_env} is not set: "
            f"run `export {settings.api_key_env}=<your key>` first (or set api_key_env to the variable "
            "that holds the key)"
        )
    if not settings.base_url.startswith(("https://", "http://")):
        shown = Redactor().text(settings.base_url)  # without credentials, if it has any
        problems.append(f"{where}.base_url: expected an http:// or https:// URL, got {shown!r}")
    else:
        problems.extend(_connection_problems(where, settings))
        problems += _url_problems(where, settings, environ)
    if has_control_characters((os.environ if environ is None else environ).get(settings.api_key_env, "")):
        # Never quote the key: this line is printed.
        problems.append(
            f"{where}: the API key in {settings.api_key_env} contains a control character (a newline?); "
            "it cannot go in a header: set the key alone"
        )
    if settings.ca_file is not None and not os.path.isfile(settings.ca_file):
        problems.append(f"{where}.ca_file: no such file: {settings.ca_file}")
    elif settings.ca_file is not None:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=settings.ca_file)
        except (ssl.SSLError, OSError, ValueError):
            problems.append(f"{where}.ca_file: no CA certificate (PEM) in {settings.ca_file}")
    missing = [job_id for job, ids in jobs if not job.model for job_id in ids]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        problems.append(
            f"{name}: jobs without a model ({shown}): set model in [defaults] or on the job, "
            f'e.g. model = "{_EXAMPLE_MODEL.get(name, "the model name")}"'
        )
    return problems


def _connection_problems(where: str, settings: HttpSettings) -> list[str]:
    """What would fail every attempt at connect time: a URL that does not parse (a bad port, a
    broken IPv6 address, a host name that cannot be encoded) or a proxy from the environment
    that does not. Found here, they stop the batch before it starts instead of failing each job."""
    try:
        origin, _ = Origin.split(settings.base_url)
        origin.authority  # noqa: B018  (encodes the host name: IDNA may refuse it)
    except ValueError as exc:
        shown = Redactor().text(settings.base_url)  # without credentials, if it has any
        return [f"{where}.base_url: not a usable URL ({exc}): {shown!r}"]
    if not settings.proxy:
        return []
    try:
        proxy = ProxyConfig.from_env().select(origin)
        if proxy is not None:
            parts = urlsplit(proxy if "://" in proxy else "http://" + proxy)
            parts.port  # noqa: B018  (raises for a port out of range or not a number)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("expected http://HOST:PORT or https://HOST:PORT")
    except ValueError as exc:
        variable = "HTTPS_PROXY" if origin.scheme == "https" else "HTTP_PROXY"
        return [
            f"{where}.proxy: the proxy from the environment ({variable} or ALL_PROXY) is not a usable "
            f"URL ({exc}); fix it, or set proxy = false"
        ]
    return []


def _url_problems(where: str, settings: HttpSettings, environ: Mapping[str, str] | None) -> list[str]:
    try:
        url = urllib.parse.urlsplit(settings.base_url)
        host = url.hostname
    except ValueError:
        return []  # the pool says what is wrong with it
    problems: list[str] = []
    if url.username is not None or url.password is not None:
        problems.append(
            f"{where}.base_url: credentials in the URL would be written to the log; put the key in the "
            f"environment variable named by api_key_env"
        )
    if url.fragment:
        problems.append(f"{where}.base_url: has a fragment (#...), which a request URL cannot carry")
    if _secret_in_query(url.query, settings, environ):
        problems.append(
            f"{where}.base_url: has a key in its query string, which would be written to the log; put "
            f"it in the environment variable named by api_key_env (or in extra_headers_env)"
        )
    if (
        url.scheme == "http"
        and not _is_loopback(host)
        and read_api_key(settings, environ) is not None
        and not getattr(settings, "allow_insecure_http", False)
    ):
        problems.append(
            f"{where}.base_url: plain http:// to {host} would send the API key in clear; use https://, "
            f"or set allow_insecure_http = true in [{where}] if the network is trusted"
        )
    return problems


_SECRET_PARAMETERS = frozenset({"key", "api_key", "apikey", "api-key", "token", "access_token", "sig"})


def _secret_in_query(query: str, settings: HttpSettings, environ: Mapping[str, str] | None) -> bool:
    """Whether a base URL's query (kept after the path: Azure's ``api-version``) carries a secret:
    a parameter named like one, or the API key itself."""
    if not query:
        return False
    names = {name.lower() for name, _ in urllib.parse.parse_qsl(query, keep_blank_values=True)}
    key = read_api_key(settings, environ)
    return bool(names & _SECRET_PARAMETERS) or (key is not None and key.reveal() in query)


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
