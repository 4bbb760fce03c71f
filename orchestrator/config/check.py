"""Strict checking of TOML/JSON values against the typed fields of attrs classes.

Every problem is reported with its key path (``jobs[3].retry.max_attempts``), and nothing is
coerced: ``"8"`` is not an integer and ``"false"`` is not a boolean. Ranges come from field
metadata: ``min``/``max`` (inclusive), ``gt`` (exclusive), ``choices`` (for strings and the
items of string lists) and ``keys`` (allowed keys of a table); rules that tie fields together
from the class's ``conflicts()`` method. Values of attrs classes may come as tables (a job file)
or as instances (a library caller): both meet the same rules here.
"""

from __future__ import annotations

import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

import attrs

Problems = list[str]

MAX_DEPTH = 64
"""Deepest nesting of tables and lists accepted anywhere (a request body nests a few levels;
the JSON encoder of the log stops at 254, Python's recursion near 1,000)."""
INT_RANGE = (-(2**63), 2**63 - 1)
"""Integers are 64-bit, as in TOML (and in the log's JSON encoder)."""


def check_limits(value: Any, path: str, problems: Problems) -> bool:
    """Whether ``value`` fits what every later step can hold: at most :data:`MAX_DEPTH` levels of
    tables and lists, and 64-bit integers. Appends a problem per offending key; never recurses
    deeper than the limit itself."""
    ok = True
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, bool):
            continue
        if isinstance(item, int) and not INT_RANGE[0] <= item <= INT_RANGE[1]:
            problems.append(f"{where or 'value'}: integer out of range (integers are 64-bit)")
            ok = False
        elif isinstance(item, Mapping | list | tuple):
            if depth >= MAX_DEPTH:
                problems.append(f"{where}: nested deeper than {MAX_DEPTH} levels")
                ok = False
                continue
            pairs = list(item.items() if isinstance(item, Mapping) else enumerate(item))
            for key, child in reversed(pairs):  # reversed onto the stack: problems in file order
                # Below a few levels the key path says no more than where the nesting starts.
                child_path = join(where, key) if depth < 4 else where
                stack.append((child, child_path, depth + 1))
    return ok


def did_you_mean(word: object, choices: typing.Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a choice is close to ``word``, else ``""``."""
    if not isinstance(word, str):
        return ""
    import difflib  # only for a misspelt key: not on every import

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe(value: Any) -> str:
    """A short phrase for a value as the user wrote it, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f'string "{shown}"'
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    """The resolved field types of ``cls`` (cached: job files can hold 100,000 jobs)."""
    return typing.get_type_hints(cls)


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _unicode(text: str) -> bool:
    """Whether ``text`` is Unicode text: no lone surrogate (ASCII, the usual case, at C speed)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def refuse_lone_surrogates(value: Any, path: str, problems: Problems) -> None:
    """Add a problem for each string in ``value`` (a string, a mapping's keys and values, a list's
    or tuple's items, an attrs instance's fields) that holds a lone UTF-16 surrogate.

    Such a Python string is not Unicode text: the log, a results file and every provider refuse
    it. Only a library caller can pass one (TOML, JSON and UTF-8 files cannot hold it), so the
    library's entry points call this on what they are given, before anything runs."""
    if isinstance(value, str):
        if not _unicode(value):
            problems.append(f"{path}: not Unicode text (it holds a lone surrogate)")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and not _unicode(key):
                problems.append(f"{path}: a key is not Unicode text (it holds a lone surrogate)")
            else:  # (the path names the key: only a key that is text may be shown)
                refuse_lone_surrogates(item, join(path, key) if isinstance(key, str) else path, problems)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            refuse_lone_surrogates(item, join(path, i), problems)
    elif attrs.has(type(value)):
        for field in attrs.fields(type(value)):
            refuse_lone_surrogates(getattr(value, field.name), join(path, field.name), problems)


def check_value(value: Any, hint: Any, path: str, meta: Mapping[str, Any], problems: Problems) -> Any:
    """Check ``value`` against the type ``hint``; append problems, return the checked value.

    Lists become tuples and tables of attrs classes become instances, so the result can be
    passed straight to the attrs constructor.
    """
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        non_none = [o for o in options if o is not type(None)]
        if len(non_none) == 1:
            return check_value(value, non_none[0], path, meta, problems)
        words = [o for o in non_none if typing.get_origin(o) is typing.Literal]
        numbers = [o for o in non_none if o in (int, float)]
        if len(words) == 1 and len(numbers) == 1 and len(non_none) == 2:
            # A named setting or a number (``burst = "full"`` or ``burst = 10``).
            if isinstance(value, str):
                return _check_choice(value, typing.get_args(words[0]), path, problems)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return check_value(value, numbers[0], path, meta, problems)
            choices = ", ".join(repr(c) for c in typing.get_args(words[0]))
            problems.append(f"{path}: expected {choices} or a number, got {describe(value)}")
            return None
        raise TypeError(f"unsupported union {hint!r}")
    if origin is typing.Literal:
        return _check_choice(value, typing.get_args(hint), path, problems)
    if hint is bool:
        return _check_type(value, bool, "true or false", path, problems)
    if hint is int:
        value = _check_type(value, int, "an integer", path, problems)
        return _check_range(value, path, meta, problems)
    if hint is float:
        value = _check_type(value, (int, float), "a number", path, problems)
        if value is not None and not math.isfinite(value):
            # TOML has nan and inf; every range check passes NaN, and an infinite limit is
            # better said by leaving the key out.
            problems.append(f"{path}: expected a finite number, got {value}")
            return None
        return _check_range(float(value), path, meta, problems) if value is not None else None
    if hint is str:
        value = _check_type(value, str, "a string", path, problems)
        if value is not None and "\0" in value and not meta.get("text"):
            # Names, paths, URLs: the operating system refuses a NUL in every one of them.
            problems.append(f"{path}: contains a NUL character")
            return None
        if value is not None and "choices" in meta:
            return _check_choice(value, meta["choices"], path, problems)
        return value
    if origin is tuple:
        item_hint = typing.get_args(hint)[0]
        if not isinstance(value, list | tuple):
            problems.append(f"{path}: expected a list, got {describe(value)}")
            return None
        return tuple(check_value(v, item_hint, join(path, i), meta, problems) for i, v in enumerate(value))
    if origin in (dict, Mapping, typing.Mapping) or hint in (dict, Mapping):
        args = typing.get_args(hint)
        item_hint = args[1] if args else Any
        if not isinstance(value, Mapping):
            problems.append(f"{path}: expected a table, got {describe(value)}")
            return None
        allowed = meta.get("keys")
        checked = {}
        for key, item in value.items():
            if allowed is not None and key not in allowed:
                problems.append(
                    f"{join(path, key)}: unknown key{did_you_mean(key, allowed)}; known: {', '.join(allowed)}"
                )
                continue
            checked[key] = check_value(item, item_hint, join(path, key), meta, problems)
        return checked
    if attrs.has(hint):
        if isinstance(value, hint):
            return check_instance(value, path, problems)
        fields = check_table(value, hint, path, problems)
        return None if fields is None else build(hint, fields, path, problems)
    raise TypeError(f"unsupported type {hint!r}")


def check_table(
    value: Any, cls: type, path: str, problems: Problems, *, skip: frozenset[str] = frozenset()
) -> dict[str, Any] | None:
    """Check a table against the fields of attrs class ``cls`` without requiring any key.

    Returns the checked fields (to merge with other layers), or None when ``value`` is not a
    table. Keys in ``skip`` are left to the caller.
    """
    if not isinstance(value, Mapping):
        problems.append(f"{path}: expected a table, got {describe(value)}")
        return None
    fields = {f.name: f for f in attrs.fields(cls) if f.init}
    hints = type_hints(cls)
    checked: dict[str, Any] = {}
    for key, item in value.items():
        if key in skip:
            continue
        field = fields.get(key)
        if field is None:
            problems.append(f"{join(path, key)}: unknown key{did_you_mean(key, fields)}")
            continue
        checked[key] = check_value(item, hints[key], join(path, key), field.metadata, problems)
    return checked


def build(cls: type, fields: Mapping[str, Any], path: str, problems: Problems) -> Any:
    """Construct ``cls`` from checked fields; missing required fields and conflicts are problems."""
    missing = [
        f.name for f in attrs.fields(cls) if f.init and f.default is attrs.NOTHING and f.name not in fields
    ]
    for name in missing:
        problems.append(f"{join(path, name)}: required")
    if missing or any(v is None and not _nullable(cls, k) for k, v in fields.items()):
        return None
    return _without_conflicts(cls(**fields), path, problems)


def check_instance(value: Any, path: str, problems: Problems) -> Any:
    """Check an attrs instance made by a caller against its class's rules (the field metadata
    and ``conflicts()``) as if it had been read as a table; return it, or None on problems."""
    start = len(problems)
    cls: type = type(value)
    hints = type_hints(cls)
    for field in attrs.fields(cls):
        if field.init:
            item = getattr(value, field.name)
            check_value(item, hints[field.name], join(path, field.name), field.metadata, problems)
    if len(problems) > start:
        return None
    return _without_conflicts(value, path, problems)


def conflicts(value: Any) -> list[tuple[str | None, str]]:
    """The problems of an object's fields taken together (its ``conflicts()``; none without one)."""
    method = getattr(value, "conflicts", None)
    return method() if method is not None else []


def _without_conflicts(value: Any, path: str, problems: Problems) -> Any:
    found = conflicts(value)
    for key, text in found:
        problems.append(f"{path if key is None else join(path, key)}: {text}")
    return None if found else value


def _nullable(cls: type, name: str) -> bool:
    hint = type_hints(cls)[name]
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def _check_type(value: Any, kind: type | tuple[type, ...], wanted: str, path: str, problems: Problems) -> Any:
    if isinstance(value, bool) and kind is not bool:
        problems.append(f"{path}: expected {wanted}, got {describe(value)}")
        return None
    if not isinstance(value, kind):
        problems.append(f"{path}: expected {wanted}, got {describe(value)}")
        return None
    return value


def _check_range(value: Any, path: str, meta: Mapping[str, Any], problems: Problems) -> Any:
    if value is None:
        return None
    if "min" in meta and value < meta["min"]:
        problems.append(f"{path}: must be >= {meta['min']}, got {value}")
    elif "gt" in meta and value <= meta["gt"]:
        problems.append(f"{path}: must be > {meta['gt']}, got {value}")
    elif "max" in meta and value > meta["max"]:
        problems.append(f"{path}: must be <= {meta['max']}, got {value}")
    else:
        return value
    return None


def _check_choice(value: Any, choices: typing.Sequence[Any], path: str, problems: Problems) -> Any:
    if any(value == c and type(value) is type(c) for c in choices):
        return value
    shown = ", ".join(repr(c) if not isinstance(c, str) else c for c in choices)
    hint = did_you_mean(value, [str(c) for c in choices]) if isinstance(value, str) else ""
    problems.append(f"{path}: {describe(value)} is not one of: {shown}{hint}")
    return None
