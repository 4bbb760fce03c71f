"""The one place that turns events and settings into JSON and back (cattrs + orjson).

A log line is the tag and the event side by side::

    {"job": "q1", "attempt": 1, "seq": 4, "ts": 0.8123, "kind": "text_delta", "text": "Hel"}

Decoding is strict: an unknown ``kind``, an unknown key or a value of the wrong type is an error,
never a silent coercion, because a log that does not read back exactly cannot be trusted for
resume or reports. The one lenient field is an error kind: older versions used other names for
some kinds, and :meth:`~orchestrator.errors.ErrorKind.parse` reads any name.
"""

from __future__ import annotations

import hashlib
import typing
from collections.abc import Callable, Mapping
from typing import Any, cast

import attrs
import cattrs
import orjson
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn

from orchestrator.errors import ErrorKind
from orchestrator.events import CONTENT_BLOCKS, EVENT_TYPES, SPANNED_EVENTS, ContentBlock, Event, Tagged

TAG_KEYS = ("job", "attempt", "seq", "ts", "kind")
_SPANNED = frozenset(cls.kind for cls in SPANNED_EVENTS)  # the kinds a line with ``seq_end`` may be
LOG_SCHEMA = 1


class DecodeError(ValueError):
    """A log line or JSON value that does not match the schema."""


def _strict(kind: Any, accept: tuple[type, ...]) -> Callable[[Any, type], Any]:
    def structure(value: Any, _: type) -> Any:
        # bool is an int subclass; a JSON true must never become 1.
        if isinstance(value, bool) and kind is not bool:
            raise DecodeError(f"expected {kind.__name__}, got {value!r}")
        if not isinstance(value, accept):
            raise DecodeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return float(cast(float, value)) if kind is float else value

    return structure


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(int, _strict(int, (int,)))
    conv.register_structure_hook(float, _strict(float, (int, float)))
    conv.register_structure_hook(str, _strict(str, (str,)))
    conv.register_structure_hook(bool, _strict(bool, (bool,)))
    # An error kind is read leniently: a name an older version wrote becomes the kind it is now,
    # and one this version does not know becomes ``unknown``, so every log stays readable.
    conv.register_structure_hook(ErrorKind, lambda v, _: ErrorKind.parse(_strict(str, (str,))(v, str)))
    conv.register_structure_hook_func(lambda t: t == Mapping[ErrorKind, int], _structure_failures)
    # orjson takes only exact str keys without a slower option.
    conv.register_unstructure_hook_func(
        lambda t: t == Mapping[ErrorKind, int], lambda v: {str(k): n for k, n in v.items()}
    )
    # Free-form payloads (tool inputs, raw backend objects) pass through untouched.
    conv.register_structure_hook_func(lambda t: t == Mapping[str, Any], lambda v, _: _require_mapping(v))
    conv.register_unstructure_hook_func(lambda t: t == Mapping[str, Any], lambda v: v)

    by_type = {cls.type: cls for cls in CONTENT_BLOCKS}

    def structure_block(value: Any, _: type) -> ContentBlock:
        mapping = dict(_require_mapping(value))
        cls = by_type.get(mapping.pop("type", None))
        if cls is None:
            raise DecodeError(f"unknown content block type {value.get('type')!r}")
        return conv.structure(mapping, cls)

    conv.register_structure_hook_func(lambda t: t == ContentBlock, structure_block)
    for cls in CONTENT_BLOCKS:
        plain = make_dict_unstructure_fn(cls, conv)
        conv.register_unstructure_hook(cls, lambda v, _p=plain, _t=cls.type: {"type": _t, **_p(v)})
    conv.register_unstructure_hook_func(lambda t: t == ContentBlock, lambda v: conv.unstructure(v, type(v)))
    return conv


def _structure_failures(value: Any, _: type) -> dict[ErrorKind, int]:
    """Failure counts by kind; two old names for one kind add up."""
    counts: dict[ErrorKind, int] = {}
    for name, count in _require_mapping(value).items():
        kind = converter.structure(name, ErrorKind)
        counts[kind] = counts.get(kind, 0) + converter.structure(count, int)
    return counts


def _require_mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise DecodeError(f"expected an object, got {type(value).__name__}")
    return value


converter = _make_converter()

# Generated per-kind functions: several times faster than attrs.asdict on the hot path.
_UNSTRUCTURE: dict[type, Callable[[Any], dict[str, Any]]] = {
    cls: make_dict_unstructure_fn(cls, converter) for cls in EVENT_TYPES.values()
}
_STRUCTURE: dict[str, Callable[[Mapping[str, Any], type], Any]] = {
    kind: make_dict_structure_fn(cls, converter, _cattrs_forbid_extra_keys=True)
    for kind, cls in EVENT_TYPES.items()
}


def event_to_dict(event: Event) -> dict[str, Any]:
    """The event's fields plus its ``kind``."""
    cls = type(event)
    return {"kind": cls.kind, **_UNSTRUCTURE[cls](event)}


# orjson writes these as they are (an ErrorKind as its name).
_JSON_NATIVE = {str, int, float, bool, str | None, int | None, float | None, bool | None, ErrorKind}


def _line_builder(kind: str, cls: type) -> Callable[[Tagged], dict[str, Any]]:
    """Generate the function that turns a tagged event of ``cls`` into its log line's dict: the
    tag and the fields in one dict display, JSON-native fields read as they are and the others
    through the converter's hooks. The log encodes every event, so this is the codec's hot path;
    it builds exactly what ``{tag, "kind", **event_to_dict(event)}`` would, in the same order."""
    hints = typing.get_type_hints(cls)
    hooks: dict[str, Any] = {}
    items = ["'job': t.job_id", "'attempt': t.attempt", "'seq': t.seq", "'ts': t.ts", f"'kind': {kind!r}"]
    for field in attrs.fields(cls):
        if hints[field.name] in _JSON_NATIVE:
            items.append(f"{field.name!r}: e.{field.name}")
        else:
            hooks[f"_{field.name}"] = converter.get_unstructure_hook(hints[field.name])
            items.append(f"{field.name!r}: _{field.name}(e.{field.name})")
    source = f"def line(t):\n    e = t.event\n    return {{{', '.join(items)}}}\n"
    exec(compile(source, f"<log line of {kind}>", "exec"), hooks)
    return cast(Callable[[Tagged], dict[str, Any]], hooks["line"])


_LINE: dict[type, Callable[[Tagged], dict[str, Any]]] = {
    cls: _line_builder(kind, cls) for kind, cls in EVENT_TYPES.items()
}


def tagged_to_dict(tagged: Tagged) -> dict[str, Any]:
    """A log line as a dict: ``job``, ``attempt``, ``seq`` (and ``seq_end`` for a record that
    stands for several deltas), ``ts``, ``kind``, then the fields."""
    line = _LINE[type(tagged.event)](tagged)
    if tagged.seq_end is None:
        return line
    # update() keeps the keys already present in place: seq_end lands right after seq.
    spanned = {"job": None, "attempt": None, "seq": None, "seq_end": tagged.seq_end}
    spanned.update(line)
    return spanned


def encode_tagged(tagged: Tagged) -> bytes:
    """One log line, newline included."""
    return orjson.dumps(tagged_to_dict(tagged), option=orjson.OPT_APPEND_NEWLINE)


def decode_event(kind: str, fields: Mapping[str, Any]) -> Event:
    """Rebuild an event from its kind and fields; raises :class:`DecodeError` if they do not fit."""
    structure = _STRUCTURE.get(kind)
    if structure is None:
        raise DecodeError(f"unknown event kind {kind!r}")
    try:
        event: Event = structure(fields, EVENT_TYPES[kind])
    except DecodeError:
        raise
    except Exception as exc:  # cattrs reports through several exception types; name the kind
        raise DecodeError(f"bad {kind} event: {_describe(exc)}") from exc
    return event


def decode_tagged(obj: Mapping[str, Any]) -> Tagged:
    """Rebuild a tagged event from a decoded log line (a dict)."""
    fields = dict(obj)
    try:
        job, attempt, seq, ts, kind = (fields.pop(k) for k in TAG_KEYS)
    except KeyError as exc:
        raise DecodeError(f"log line lacks {exc.args[0]!r}") from None
    if not (job is None or isinstance(job, str)) or not isinstance(kind, str):
        raise DecodeError("log line has a bad job or kind")
    if type(attempt) is not int or type(seq) is not int or type(ts) not in (int, float):
        raise DecodeError("log line has a bad attempt, seq or ts")
    seq_end = fields.pop("seq_end", None)
    if seq_end is not None and (type(seq_end) is not int or seq_end <= seq or kind not in _SPANNED):
        raise DecodeError("log line has a bad seq_end")
    return Tagged(job, attempt, seq, float(ts), decode_event(kind, fields), seq_end)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return str(exc) or type(exc).__name__


def to_jsonable(value: Any) -> Any:
    """Unstructure any settings value (attrs objects included) into JSON-ready data."""
    return converter.unstructure(value)


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    option = orjson.OPT_SORT_KEYS if sort_keys else 0
    return orjson.dumps(to_jsonable(value), option=option | orjson.OPT_NON_STR_KEYS)


def content_hash(payload: Mapping[str, Any]) -> str:
    """A short stable hash of a JSON-able payload (keys sorted, attrs objects unstructured).

    Plain JSON data is hashed as orjson writes it, with no converter pass: the same bytes the
    converter would give (so hashes in existing logs still match on resume), at a fraction of
    the cost, which counts when a job file holds a million jobs.
    """
    try:
        data = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # attrs objects or other values the converter has to unstructure first
        data = dumps(payload, sort_keys=True)
    return hashlib.sha256(data).hexdigest()[:16]


def structure(value: Any, cls: type) -> Any:
    """Strictly structure JSON data into ``cls`` (used for settings read back from a log)."""
    return converter.structure(value, cls)


def summary_json(summary: Any) -> bytes:
    """The batch summary as one JSON line: the same bytes live (``--json``) and from a log."""
    return orjson.dumps(converter.unstructure(summary), option=orjson.OPT_APPEND_NEWLINE)
