"""Where an HTTP API backend's requests go and the headers they carry besides the API's own:
the base URL (from the settings, else the SDKs' environment variable), the request URL made
from it, and extra headers whose values may come from the environment.

One base-URL convention for both backends, the official SDKs' own: ``base_url`` is what the
SDK's ``base_url`` would be. For ``anthropic`` that is the host without a version
(``https://api.anthropic.com``; requests go to ``{base_url}/v1/messages``); for ``openai`` it
includes the version path (``https://api.openai.com/v1``, ``http://127.0.0.1:8000/v1``;
requests go to ``{base_url}/chat/completions``). A URL that breaks the convention is a warning,
not an error (a proxy may use any path). As the SDKs do, ``ANTHROPIC_BASE_URL`` and
``OPENAI_BASE_URL`` replace the default when the job file leaves ``base_url`` at it. A query
string (Azure's ``?api-version=``) stays at the end of the request URL.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

import attrs

from orchestrator.redact import has_control_characters

Headers = list[tuple[bytes, bytes]]
BASE_URL_ENV = {"anthropic": "ANTHROPIC_BASE_URL", "openai": "OPENAI_BASE_URL"}
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name
_VERSION = re.compile(r"/v\d+[a-z0-9]*(/|$)")


def with_base_url(name: str, settings: Any, environ: Mapping[str, str] | None = None) -> Any:
    """``settings`` with the base URL the batch uses: the environment's (``OPENAI_BASE_URL``,
    ``ANTHROPIC_BASE_URL``) when the settings leave ``base_url`` at its default."""
    env = os.environ if environ is None else environ
    default = attrs.fields_dict(type(settings))["base_url"].default
    variable = BASE_URL_ENV.get(name)
    from_env = env.get(variable, "").strip() if variable else ""
    if settings.base_url == default and from_env:
        return attrs.evolve(settings, base_url=from_env)
    return settings


def request_url(base_url: str, path: str) -> str:
    """``path`` after the base URL's path; the base URL's query string, if any, after both."""
    parts = urllib.parse.urlsplit(base_url)
    joined = parts.path.rstrip("/") + path
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, joined, parts.query, ""))


def base_url_warnings(name: str, base_url: str) -> list[str]:
    """Where ``base_url`` breaks the convention (see the module docstring)."""
    try:
        path = urllib.parse.urlsplit(base_url).path.rstrip("/")
    except ValueError:
        return []
    where = f"backends.{name}.base_url"
    if name == "anthropic" and _VERSION.search(path + "/"):
        return [
            f"{where} ends in a version path ({path!r}); requests go to {{base_url}}/v1/messages, so "
            f"the usual value is the host alone (https://api.anthropic.com)"
        ]
    if name == "openai" and not _VERSION.search(path + "/"):
        return [
            f"{where} has no version path; requests go to {{base_url}}/chat/completions, so the usual "
            f"value ends in /v1 (https://api.openai.com/v1, http://127.0.0.1:8000/v1)"
        ]
    return []


def extra_headers(settings: Any, environ: Mapping[str, str] | None = None) -> Headers:
    """The settings' ``extra_headers``, then ``extra_headers_env`` with each value read from the
    environment variable it names (unset ones left out: preflight reports them)."""
    env = os.environ if environ is None else environ
    headers = [(k.lower().encode(), v.encode()) for k, v in getattr(settings, "extra_headers", {}).items()]
    for header, variable in getattr(settings, "extra_headers_env", {}).items():
        value = env.get(variable, "").strip()
        if value:
            headers.append((header.lower().encode(), value.encode()))
    return headers


def header_secrets(settings: Any, environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of ``extra_headers_env``: secrets, hidden wherever they show up."""
    env = os.environ if environ is None else environ
    values = (env.get(v, "").strip() for v in getattr(settings, "extra_headers_env", {}).values())
    return [value for value in values if value]


def header_problems(name: str, settings: Any, environ: Mapping[str, str] | None = None) -> list[str]:
    """Extra headers that cannot be sent: a bad name, a control character (never quoting a value
    from the environment), an unset variable."""
    env = os.environ if environ is None else environ
    where = f"backends.{name}"
    problems: list[str] = []
    literal = getattr(settings, "extra_headers", {})
    from_env = getattr(settings, "extra_headers_env", {})
    for header in (*literal, *from_env):
        if not _TOKEN.match(header):
            problems.append(f"{where}: {header!r} is not a valid HTTP header name")
    for header, value in literal.items():
        if has_control_characters(value) or not value.isascii():
            problems.append(f"{where}.extra_headers.{header}: the value must be printable ASCII")
    for header, variable in from_env.items():
        value = env.get(variable, "").strip()
        if not value:
            problems.append(f"{where}.extra_headers_env.{header}: environment variable {variable} is not set")
        elif has_control_characters(value) or not value.isascii():
            problems.append(
                f"{where}.extra_headers_env.{header}: the value of {variable} must be printable ASCII"
            )
    return problems


def merged_headers(own: Headers, extra: Headers) -> Headers:
    """The API's headers with the extra ones added; an extra header replaces the API's header of
    the same name (Azure's ``api-key`` in place of ``authorization``, say, needs both unset)."""
    names = {name for name, _ in extra}
    return [(k, v) for k, v in own if k not in names] + extra
