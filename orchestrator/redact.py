"""Keys never leave a backend: the one place secrets are hidden in what a backend says.

A :class:`Redactor` knows a batch's secrets: the keys its backends use, the values of
environment variables whose names look secret (``ANTHROPIC_API_KEY``, ``GH_TOKEN``,
``ANTHROPIC_CUSTOM_HEADERS``), and the credentials inside URLs. The runner passes every event a
backend emits and every error message through it before anything else sees them (the log, the
display, ``report``, ``tail``), and the diagnostics pass every line through :func:`known`, so no
sink has to remember to redact.

Redaction happens before any truncation downstream, and a string that was cut before it got here
(a backend quoting the first 200 characters of a line, say) still loses any piece of a secret of
:data:`FRAGMENT` characters or more that starts or ends a secret: a key cut in half leaks
neither half.
"""

from __future__ import annotations

import operator
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import attrs

REDACTED = "<redacted>"
MIN_SECRET = 8
"""Shorter values are not treated as secrets: hiding ``1`` or ``true`` everywhere would garble
text and protect nothing."""
FRAGMENT = 12
"""The shortest start or end of a secret that is hidden on its own (a secret cut by truncation)."""

_SECRET_PARTS = frozenset(
    {
        "KEY",
        "APIKEY",
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "CREDENTIAL",
        "CREDENTIALS",
        "AUTH",
        "AUTHORIZATION",
        "BEARER",
        "COOKIE",
        "HEADERS",
        "PRIVATE",
    }
)
# scheme://userinfo@ : the userinfo is a credential (user:password, or a token alone).
_URL_USERINFO = r"\b([a-z][a-z0-9+.-]*://)[^\s/?#@'\"<>]+@"
_URL_CREDENTIALS = re.compile(_URL_USERINFO, re.IGNORECASE)
_SHORTEST = min(len("a://b@"), MIN_SECRET)
"""No shorter string holds a URL credential (the shortest is ``a://b@``) or the start or end of a
known secret (at least ``MIN_SECRET`` characters): :meth:`Redactor.value` passes those unread."""
_HEADER_LINE = re.compile(r"^\s*[A-Za-z0-9-]+\s*:\s*(.+?)\s*$")
T = TypeVar("T")


def looks_secret(name: str) -> bool:
    """Whether an environment variable's name suggests a secret (``ANTHROPIC_API_KEY``, ``GH_TOKEN``,
    ``ANTHROPIC_CUSTOM_HEADERS``)."""
    return any(part in _SECRET_PARTS for part in re.split(r"[_\W]+", name.upper()))


def has_control_characters(key: str) -> bool:
    """Whether a key, once stripped, holds a control character (a newline from a pasted file, say):
    such a key cannot go in a header, and an error quoting the header would quote the key."""
    return any(ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 for char in key.strip())


def url_credentials(text: str) -> list[str]:
    """The credentials inside every URL in ``text`` (``user:password``, the password, a token)."""
    found: list[str] = []
    for match in _URL_CREDENTIALS.finditer(text):
        userinfo = match.group()[len(match.group(1)) : -1]
        found.append(userinfo)
        found.extend(part for part in userinfo.split(":", 1)[1:])
    return found


def secrets_in(value: str) -> list[str]:
    """The secrets inside one secret value: the value itself, each line of it, and the value of
    each ``Name: value`` line (a header list such as ``ANTHROPIC_CUSTOM_HEADERS``)."""
    out = [value, value.strip()]
    for line in value.splitlines():
        out.append(line.strip())
        header = _HEADER_LINE.match(line)
        if header is not None:
            out.append(header.group(1))
            out.extend(header.group(1).split()[1:])  # "Bearer TOKEN": the token alone
    return out


def environment_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Secret values of an environment: those of names that :func:`looks_secret`, and the
    credentials of every URL in any value (``HTTPS_PROXY=http://user:pass@proxy``)."""
    env = os.environ if environ is None else environ
    found: list[str] = []
    for name, value in env.items():
        if looks_secret(name):
            found.extend(secrets_in(value))
        if "@" in value:
            found.extend(url_credentials(value))
    return found


class Redactor:
    """Hides known secrets and URL credentials in strings and in every string inside a value.

    Immutable once built; cheap when there is nothing to hide (at most one regular-expression
    search per string; none for a string too short to hold a secret, and with no secret known
    none for a string without an ``@``).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = frozenset(s for s in secrets if len(s) >= MIN_SECRET)
        # Each secret is found by its first and its last FRAGMENT characters, then the match is
        # grown to as much of the secret as the text holds on that side.
        self._heads: dict[str, list[str]] = {}
        self._tails: dict[str, list[str]] = {}
        for secret in self.secrets:
            k = min(FRAGMENT, len(secret))
            self._heads.setdefault(secret[:k], []).append(secret)
            self._tails.setdefault(secret[-k:], []).append(secret)
        anchors = sorted({*self._heads, *self._tails}, key=len, reverse=True)
        self._anchors = re.compile("|".join(map(re.escape, anchors))) if anchors else None
        # One search says whether there is anything to do: the anchors, or a URL with userinfo.
        self._any = re.compile("|".join([f"(?i:{_URL_USERINFO})", *map(re.escape, anchors)]))

    def text(self, text: str) -> str:
        """``text`` with every known secret (or a start or end of one) and every URL credential
        replaced by ``<redacted>``."""
        if self._any.search(text) is None:
            return text
        if self._anchors is not None:
            text = self._hide_secrets(text)
        return _URL_CREDENTIALS.sub(lambda m: m.group(1) + REDACTED + "@", text)

    def _hide_secrets(self, text: str) -> str:
        assert self._anchors is not None
        spans: list[tuple[int, int]] = []
        for match in self._anchors.finditer(text):
            start, end = match.span()
            anchor = match.group()
            for secret in self._heads.get(anchor, ()):
                grown, limit = end, min(len(text), start + len(secret))
                while grown < limit and text[grown] == secret[grown - start]:
                    grown += 1
                spans.append((start, grown))
            for secret in self._tails.get(anchor, ()):
                grown, offset = start, len(secret) - len(anchor)
                while grown > 0 and offset > 0 and text[grown - 1] == secret[offset - 1]:
                    grown, offset = grown - 1, offset - 1
                spans.append((grown, end))
        if not spans:
            return text
        spans.sort()
        out: list[str] = []
        cursor = 0
        for start, end in spans:
            if end <= cursor:
                continue
            if start >= cursor:
                out.append(text[cursor:start])
                out.append(REDACTED)
            cursor = end
        out.append(text[cursor:])
        return "".join(out)

    def value(self, value: T) -> T:
        """``value`` with :meth:`text` applied to every string inside it (attrs instances, mappings,
        lists and tuples are rebuilt only where something changed)."""
        # Every event a backend sends comes here: first ask, in one pass over the fields that may
        # hold text, whether anything needs hiding (almost never); only then rebuild.
        kind = type(value)
        fields = _GETTERS.get(kind)
        if fields is None and kind not in _GETTERS:
            fields = _GETTERS[kind] = _fields_getter(kind)
        if fields is not None:
            search = None if self._anchors is None else self._any.search
            for field in fields(value):
                field_kind = type(field)
                if field_kind is str:
                    # Too short to hold a URL credential or an anchor (both at least _SHORTEST
                    # characters); with no secret known, only a URL credential, which needs an @.
                    if len(field) < _SHORTEST or (
                        "@" not in field if search is None else search(field) is None
                    ):
                        continue
                elif field_kind in _ATOMS or (field_kind in _CONTAINERS and not field):
                    continue
                break  # a match, or a value to look inside
            else:
                return value
        return _rewrite(value, self.text)  # type: ignore[no-any-return]


_ATOMS = frozenset({bool, int, float, type(None)})
_CONTAINERS = frozenset({tuple, list, dict})
# An attrs class's fields that may hold text, found once per type (None: not an attrs class).
_FIELDS: dict[type, tuple[str, ...] | None] = {}
# For each type seen by Redactor.value: a function giving the tuple of its fields that may hold
# text (attrs classes), or None (any other type).
_GETTERS: dict[type, Callable[[Any], tuple[Any, ...]] | None] = {}


def _fields_getter(kind: type) -> Callable[[Any], tuple[Any, ...]] | None:
    if not attrs.has(kind):
        return None
    names = _FIELDS.get(kind)
    if names is None:
        names = _FIELDS[kind] = _text_fields(kind)
    if not names:
        return lambda value: ()
    if len(names) == 1:
        (name,) = names
        return lambda value: (getattr(value, name),)
    return operator.attrgetter(*names)  # one C call for the whole tuple


def _text_fields(cls: type) -> tuple[str, ...]:
    """The init fields of an attrs class whose declared type may hold a string somewhere: a
    field typed as numbers, booleans or None (or attrs classes of only those, like token
    counts) never does, and is not visited for each event."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation this cannot resolve: visit every field
        hints = {}
    return tuple(
        field.name for field in attrs.fields(cls) if field.init and _may_hold_text(hints.get(field.name, Any))
    )


def _may_hold_text(hint: Any) -> bool:
    if hint in _ATOMS:
        return False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_may_hold_text(arg) for arg in typing.get_args(hint))
    if isinstance(hint, type) and attrs.has(hint):
        return bool(_text_fields(hint))
    return True


def _rewrite(value: Any, text: Callable[[str], str]) -> Any:
    """``value`` with ``text`` applied to every string in it, rebuilt only where one changed.
    On the path of every event, so the common cases come first."""
    kind = type(value)
    if kind is str:
        return text(value)
    if kind in _ATOMS:
        return value
    names = _FIELDS.get(kind, ())
    if names == () and kind not in _FIELDS:  # first sight of this type
        names = _FIELDS[kind] = _text_fields(kind) if attrs.has(kind) else None
    if names is not None:
        changes = {}
        for name in names:
            old = getattr(value, name)
            field_kind = type(old)
            if field_kind in _ATOMS:
                continue
            new = text(old) if field_kind is str else _rewrite(old, text)
            if new is not old:
                changes[name] = new
        return attrs.evolve(value, **changes) if changes else value
    if not value and (kind is tuple or kind is dict or kind is list):
        return value  # empty: the common case (no tools, no data), without the ABC check below
    if isinstance(value, str):
        return text(value)
    if isinstance(value, Mapping):
        items = [(_rewrite(k, text), _rewrite(v, text)) for k, v in value.items()]
        if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(items, value.items(), strict=True)):
            return value
        return dict(items)
    if isinstance(value, list | tuple):
        parts = [_rewrite(v, text) for v in value]
        if all(p is v for p, v in zip(parts, value, strict=True)):
            return value
        return parts if isinstance(value, list) else tuple(parts)
    return value


_known: set[str] = set()
_known_redactor: Redactor | None = None


def remember(secrets: Iterable[str]) -> Redactor:
    """A redactor for ``secrets``; they are also added to the process-wide :func:`known` ones."""
    global _known_redactor
    redactor = Redactor(secrets)
    if not redactor.secrets <= _known:
        _known.update(redactor.secrets)
        _known_redactor = None
    return redactor


def known() -> Redactor:
    """Every secret any batch in this process has used, and the environment's as it was at the
    first call (for diagnostics, which have no batch at hand)."""
    global _known_redactor
    if _known_redactor is None:
        _known.update(environment_secrets())
        _known_redactor = Redactor(_known)
    return _known_redactor


def batch_redactor(backends: Mapping[str, tuple[Any, Any]]) -> Redactor:
    """The redactor of one batch. ``backends`` maps each backend the batch uses to its kind and
    settings; a kind may name the secrets it uses (``secrets(settings) -> list[str]``, its API
    key). Adds the environment's secrets and the credentials of URLs in the settings."""
    found = environment_secrets()
    for kind, settings in backends.values():
        secrets = getattr(kind, "secrets", None)
        if secrets is not None:
            found.extend(secrets(settings))
        _rewrite(settings, lambda text: _collect(found, url_credentials(text), text))
    return remember(found)


def _collect(into: list[str], found: list[str], text: str) -> str:
    into.extend(found)
    return text
