"""Prompt templates: ``{column}`` fields filled with a row's values, as text.

The syntax is ``str.format``'s without its machinery: ``{name}`` inserts the row's value for
the column ``name`` (everything between the braces, spaces and dots included, is the column
name), ``{{`` and ``}}`` are literal braces. Nothing is evaluated: no attribute or index
access, no conversions, no format specs; a value is inserted as text, so a value that itself
contains ``{text}`` stays exactly that. Strings go in as they are; any other value (a number, a
list from a JSONL row) goes in as its JSON text.

Pure: :func:`parse` raises only :class:`TemplateError`, :meth:`Template.render` only
:class:`MissingColumn`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import orjson


class TemplateError(ValueError):
    """A template that does not parse; the message says where (1-based character position)."""


class MissingColumn(KeyError):
    """A row lacks a column the template names."""

    def __init__(self, column: str) -> None:
        super().__init__(column)
        self.column = column

    def __str__(self) -> str:
        return f"column {self.column!r} is missing"


@attrs.frozen
class Template:
    """A parsed template: literal text and column names, alternating (``parts[0]`` is text)."""

    source: str
    parts: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """The column names the template uses, in order of first use."""
        return tuple(dict.fromkeys(self.parts[1::2]))

    def render(self, row: Mapping[str, Any]) -> str:
        """The template filled with ``row``'s values; raises :class:`MissingColumn` (the first
        column, in template order, that ``row`` lacks)."""
        parts = self.parts
        if len(parts) == 1:
            return parts[0]
        out = [parts[0]]
        for i in range(1, len(parts), 2):
            name = parts[i]
            try:
                value = row[name]
            except KeyError:
                raise MissingColumn(name) from None
            out.append(as_text(value))
            out.append(parts[i + 1])
        return "".join(out)


def as_text(value: Any) -> str:
    """A row value as it goes into a prompt: a string as is, anything else as its JSON text."""
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return str(value)


def parse(source: str) -> Template:
    """Parse ``source``; raises :class:`TemplateError` for a lone ``{`` or ``}``, an empty
    ``{}`` or a ``{`` inside a field."""
    parts: list[str] = []
    text: list[str] = []
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if c == "{":
            if source.startswith("{{", i):
                text.append("{")
                i += 2
                continue
            end = source.find("}", i + 1)
            inner = source.find("{", i + 1)
            if end == -1:
                raise TemplateError(f"unclosed '{{' at character {i + 1}")
            if inner != -1 and inner < end:
                raise TemplateError(
                    f"'{{' inside a field at character {inner + 1} (write '{{{{' for a brace)"
                )
            name = source[i + 1 : end]
            if not name:
                raise TemplateError(f"empty field '{{}}' at character {i + 1}: name a column")
            parts.append("".join(text))
            parts.append(name)
            text = []
            i = end + 1
        elif c == "}":
            if source.startswith("}}", i):
                text.append("}")
                i += 2
                continue
            raise TemplateError(f"single '}}' at character {i + 1} (write '}}}}' for a brace)")
        else:
            # Copy the run of plain text up to the next brace in one slice.
            nxt = min((p for p in (source.find("{", i), source.find("}", i)) if p != -1), default=n)
            text.append(source[i:nxt])
            i = nxt
    parts.append("".join(text))
    return Template(source, tuple(parts))
