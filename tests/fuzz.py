"""Fuzzing the decoders: random JSON, mutations of real events, and the check of what comes out.

A decoder is total when, whatever it is fed, it returns events of the types it declares with
fields of the types they declare, or raises :class:`~orchestrator.errors.BackendError`.
:func:`check_events` is the first half of that claim; each decoder's fuzz test states the second.
"""

from __future__ import annotations

import collections.abc
import copy
import types
import typing
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
from hypothesis import strategies as st

from orchestrator.events import STREAM_EVENTS

Path = tuple[str | int, ...]

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
"""Any JSON value (integers beyond 64 bits included: a parser may read them as floats)."""


def _paths(value: Any, prefix: Path = ()) -> Iterator[Path]:
    """Every place inside ``value`` (not the root) that holds a value."""
    items: Sequence[tuple[str | int, Any]]
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return
    for key, child in items:
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))


def _replace(value: Any, path: Path, new: Any) -> None:
    for key in path[:-1]:
        value = value[key]
    value[path[-1]] = new


@st.composite
def mutated(draw: st.DrawFn, original: Any) -> Any:
    """``original`` (a real event's JSON) with one to three of its values replaced by random JSON."""
    value = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(value))
        if not paths:
            return draw(JSON)
        _replace(value, draw(st.sampled_from(paths)), draw(JSON))
    return value


def stream_of(valid: Sequence[Any]) -> st.SearchStrategy[list[Any]]:
    """A stream like ``valid`` (JSON values, in order) with some values mutated, some random
    values inserted and some dropped."""

    @st.composite
    def build(draw: st.DrawFn) -> list[Any]:
        out: list[Any] = []
        for value in valid:
            match draw(st.sampled_from(["keep", "keep", "keep", "mutate", "drop", "insert"])):
                case "keep":
                    out.append(value)
                case "mutate":
                    out.append(draw(mutated(value)))
                case "insert":
                    out.extend([draw(JSON), value])
        return out

    return build()


def check_events(events: Sequence[Any], allowed: tuple[type, ...] = STREAM_EVENTS) -> None:
    """Each event is of an ``allowed`` type and every field holds a value of its declared type."""
    for event in events:
        assert isinstance(event, allowed), f"{event!r} is not one of {[t.__name__ for t in allowed]}"
        check_fields(event)


def check_fields(value: Any) -> None:
    """Every attrs field of ``value`` holds a value of its declared type (recursively)."""
    cls = type(value)
    attrs.resolve_types(cls)
    for field in attrs.fields(cls):
        _check(getattr(value, field.name), field.type, f"{cls.__name__}.{field.name}")


def _check(value: Any, declared: Any, where: str) -> None:
    origin = typing.get_origin(declared)
    args = typing.get_args(declared)
    if declared is Any:
        return
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                _check(value, arg, where)
            except AssertionError:
                continue
            return
        raise AssertionError(f"{where} = {value!r} is not {declared}")
    if declared is type(None):
        assert value is None, f"{where} = {value!r} is not None"
    elif declared in (str, bool):
        assert isinstance(value, declared), f"{where} = {value!r} is not a {declared.__name__}"
    elif declared is int:
        assert isinstance(value, int) and not isinstance(value, bool), f"{where} = {value!r} is not an int"
    elif declared is float:
        assert isinstance(value, int | float) and not isinstance(value, bool), (
            f"{where} = {value!r} is not a float"
        )
    elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        assert isinstance(value, tuple), f"{where} = {value!r} is not a tuple"
        for n, item in enumerate(value):
            _check(item, args[0], f"{where}[{n}]")
    elif origin in (collections.abc.Mapping, dict):
        assert isinstance(value, collections.abc.Mapping), f"{where} = {value!r} is not a mapping"
        for key, item in value.items():
            _check(key, args[0], f"{where} key")
            _check(item, args[1], f"{where}[{key!r}]")
    elif isinstance(declared, type) and attrs.has(declared):
        assert isinstance(value, declared), f"{where} = {value!r} is not a {declared.__name__}"
        check_fields(value)
    else:
        raise AssertionError(f"{where}: no check for the type {declared}")
