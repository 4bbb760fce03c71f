"""The one place that turns events and settings into JSON and back (cattrs + orjson).

A log line is the tag and the event side by side, fields at their defaults left out
(:data:`FIELD_DEFAULTS`)::

    {"job": "q1", "attempt": 1, "seq": 4, "ts": 0.8123, "kind": "text_delta", "text": "Hel"}

(The log writer leaves out more, what earlier lines of the job say: :mod:`orchestrator.record.lines`.)
Decoding is strict: an unknown ``kind``, an unknown key or a value of the wrong type is an error,
never a silent coercion, because a log that does not read back exactly cannot be trusted for
resume or reports. The one lenient field is an error kind: older versions used other names for
some kinds, and :meth:`~orchestrator.errors.ErrorKind.parse` reads any name.
"""

from __future__ import annotations

import hashlib
import typing
from collections.abc import Callable, Container, Mapping
from typing import Any, cast

import attrs
import cattrs
import orjson
from cattrs.gen import make_dict_unstructure_fn

from orchestrator.errors import ErrorKind
from orchestrator.events import (
    CONTENT_BLOCKS,
    EVENT_TYPES,
    SPANNED_EVENTS,
    ContentBlock,
    Event,
    Tagged,
    Tokens,
)

TAG_KEYS = ("job", "attempt", "seq", "ts", "kind")
_SPANNED = frozenset(cls.kind for cls in SPANNED_EVENTS)  # the kinds a line with ``seq_end`` may be
LOG_SCHEMA = 3
"""1: every field of every line written; 2: fields at their defaults, and what earlier lines of
the job say, left out (:mod:`orchestrator.record.lines`); 3: besides, records of one job that
follow one another share a line. This version reads all three."""


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


class _PerKind(dict[Any, Any]):
    """Generated functions, one per event kind (or class), each made the first time it is asked
    for: a process that reads or writes a few kinds (a report) does not pay to compile them all.
    A key that names no kind is missing (KeyError; ``.get`` gives None), and is not kept."""

    def __init__(self, make: Callable[[Any], Any], keys: Container[Any]) -> None:
        super().__init__()
        self._make = make
        self._keys = keys

    def __missing__(self, key: Any) -> Any:
        if key not in self._keys:
            raise KeyError(key)
        made = self[key] = self._make(key)
        return made

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self[key]
        except (KeyError, TypeError):
            return default


_CLASSES = frozenset(EVENT_TYPES.values())

# Generated per-kind functions: several times faster than attrs.asdict on the hot path.
_UNSTRUCTURE: dict[type, Callable[[Any], dict[str, Any]]] = _PerKind(
    lambda cls: make_dict_unstructure_fn(cls, converter), _CLASSES
)


def event_to_dict(event: Event) -> dict[str, Any]:
    """The event's fields plus its ``kind``."""
    cls = type(event)
    return {"kind": cls.kind, **_UNSTRUCTURE[cls](event)}


# orjson writes these as they are (an ErrorKind as its name).
_JSON_NATIVE = {str, int, float, bool, str | None, int | None, float | None, bool | None, ErrorKind}
_EMPTY_DICT: dict[str, Any] = {}


def _field_defaults(cls: type) -> dict[str, Any]:
    """What a reader puts back for each field a line leaves out: its default; None for an
    optional field without one; empty for a mapping or a tuple without one. Fields of no such
    kind are always written."""
    hints = typing.get_type_hints(cls)
    defaults: dict[str, Any] = {}
    for field in attrs.fields(cls):
        hint = hints[field.name]
        if isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            defaults[field.name] = field.default.factory()
        elif field.default is not attrs.NOTHING:
            defaults[field.name] = field.default
        elif type(None) in typing.get_args(hint):
            defaults[field.name] = None
        elif typing.get_origin(hint) in (Mapping, tuple):
            defaults[field.name] = {} if typing.get_origin(hint) is Mapping else ()
    for value in defaults.values():
        # a reader's filled-in value must be JSON data of a kind the structure hooks take
        assert value in (None, (), _EMPTY_DICT) or type(value) in (int, float, str, bool), (cls, value)
    return defaults


FIELD_DEFAULTS: dict[str, dict[str, Any]] = {kind: _field_defaults(cls) for kind, cls in EVENT_TYPES.items()}
"""Per kind, the fields a log line leaves out when they hold this value (log schema 2)."""


def compact_tokens(tokens: Tokens | None) -> dict[str, int] | None:
    """Token counts as a log line writes them: the counts that are not zero."""
    if tokens is None:
        return None
    counts = {"input": tokens.input, "output": tokens.output}
    if tokens.cache_read:
        counts["cache_read"] = tokens.cache_read
    if tokens.cache_creation:
        counts["cache_creation"] = tokens.cache_creation
    if not counts["output"]:
        del counts["output"]
    if not counts["input"]:
        del counts["input"]
    return counts


def _line_builder(
    kind: str, cls: type, always: Container[str], omit: Mapping[str, str], *, head: bool = True
) -> Callable[..., dict[str, Any]]:
    """Generate the function that turns a tagged event of ``cls`` into its log line's dict: the
    tag, then the fields that do not hold their default (:data:`FIELD_DEFAULTS`; the fields in
    ``always`` are written whatever they hold), JSON-native fields read as they are and the
    others through the converter's hooks (token counts through :func:`compact_tokens`). The
    log encodes every event, so this is the codec's hot path.

    ``omit`` maps a tag key (``attempt``, ``seq``) or a field to a Python expression (of ``t``,
    the tagged event, ``e``, its event, and ``k``, the function's second argument): the key is
    left out when its value equals the expression's, whatever ``always`` and the defaults say.
    ``head`` false: the record's fields only, without ``job``, ``ts`` and ``kind`` (a record in
    a line's ``then``). The function is ``line(t, k=None)``."""
    hints = typing.get_type_hints(cls)
    defaults = FIELD_DEFAULTS[kind]
    scope: dict[str, Any] = {"_tokens": compact_tokens}
    tail = "'ts': t.ts, 'kind': " + repr(kind) if head else ""
    body = ["def line(t, k=None):", "    e = t.event"]
    tags = [name for name in ("attempt", "seq") if name in omit]
    if tags:  # the usual record states neither: one dict display for it
        usual = " and ".join(f"t.{name} == ({omit[name]})" for name in tags)
        body.append(f"    if {usual} and t.seq_end is None:")
        body.append("        d = {" + ("'job': t.job_id, " + tail if head else "") + "}")
        body.append("    else:")
        body.append("        d = {" + ("'job': t.job_id" if head else "") + "}")
        for name in ("attempt", "seq"):
            test = f"t.{name} != ({omit[name]})" if name in omit else "True"
            body.append(f"        if {test}:")
            body.append(f"            d[{name!r}] = t.{name}")
        body.append("        if t.seq_end is not None:")
        body.append("            d['seq_end'] = t.seq_end")
        if head:
            body.append("        d['ts'] = t.ts")
            body.append(f"        d['kind'] = {kind!r}")
    else:
        tag = ("'job': t.job_id, " if head else "") + "'attempt': t.attempt, 'seq': t.seq, "
        body.append("    if t.seq_end is None:")
        body.append("        d = {" + tag + tail + "}")
        body.append("    else:")
        body.append("        d = {" + tag + "'seq_end': t.seq_end, " + tail + "}")
    for field in attrs.fields(cls):
        name, hint = field.name, hints[field.name]
        if hint in _JSON_NATIVE:
            value = f"e.{name}"
        elif hint in (Tokens, Tokens | None):
            value = f"_tokens(e.{name})"
        else:
            scope[f"_{name}"] = converter.get_unstructure_hook(hint)
            value = f"_{name}(e.{name})"
        if name in omit:
            test = f"e.{name} != ({omit[name]})"
        elif name in always or name not in defaults:
            body.append(f"    d[{name!r}] = {value}")
            continue
        else:
            default = defaults[name]
            scope[f"_default_{name}"] = default
            test = f"e.{name} is not None" if default is None else f"e.{name} != _default_{name}"
        body.append(f"    if {test}:")
        body.append(f"        d[{name!r}] = {value}")
    body.append("    return d")
    where = "log line" if head else "log record in then"
    exec(compile("\n".join(body) + "\n", f"<{where} of {kind}>", "exec"), scope)
    return cast(Callable[..., dict[str, Any]], scope["line"])


def line_builders(
    omit: Callable[[type], Mapping[str, str]], *, head: bool
) -> Mapping[type, Callable[..., dict[str, Any]]]:
    """Per event class (each made the first time it is asked for), the function ``line(t, k)``
    that turns a tagged event into its log line's dict (``head``) or, without ``job``, ``ts``
    and ``kind``, the fields of a record in a line's ``then``: as :func:`tagged_to_dict` makes
    it, except that each key ``omit(cls)`` names is left out exactly when it holds what its
    expression (of ``t``, ``e`` and ``k``) gives. For a writer that leaves out what a reader
    knows (:mod:`orchestrator.record.lines`): one dict built, none copied or trimmed."""
    return _PerKind(
        lambda cls: _line_builder(cls.kind, cls, CONTEXT_FIELDS.get(cls.kind, ()), omit(cls), head=head),
        _CLASSES,
    )


CONTEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "attempt_started": ("backend",),
    "stream_finished": ("tokens", "session_id"),
    "job_succeeded": ("attempts",),
    "job_failed": ("attempts",),
    "job_cancelled": ("attempts",),
}
"""Fields whose value a reader takes from earlier lines of the same job when a line leaves them
out (see :mod:`orchestrator.record.lines`): a line written without that context writes them."""

_LINE: dict[type, Callable[[Tagged], dict[str, Any]]] = _PerKind(
    lambda cls: _line_builder(cls.kind, cls, CONTEXT_FIELDS.get(cls.kind, ()), _EMPTY_DICT), _CLASSES
)


def tagged_to_dict(tagged: Tagged) -> dict[str, Any]:
    """A log line as a dict, standing on its own: ``job``, ``attempt``, ``seq`` (and ``seq_end``
    for a record that stands for several deltas), ``ts``, ``kind``, then the fields that do not
    hold their default. (A log writer leaves out more: :mod:`orchestrator.record.lines`.)"""
    return _LINE[type(tagged.event)](tagged)


def encode_tagged(tagged: Tagged) -> bytes:
    """One log line standing on its own, newline included."""
    return orjson.dumps(_LINE[type(tagged.event)](tagged), option=orjson.OPT_APPEND_NEWLINE)


_MISSING: Any = object()


def _reader_builder(kind: str, cls: type) -> Callable[..., Tagged]:
    """Generate the function that reads a log line of ``kind`` (a dict) into a tagged event:
    ``read(line, job, seq, attempt, ts=None, known=2)``, where ``seq``, ``attempt`` and ``ts``
    stand for what a line that leaves them out means (None: it must state them) and ``known``
    counts the keys of ``line`` the caller read itself (``job`` and ``kind``). The tag and each
    field are read and type-checked in place (simple types inline, others through the
    converter's strict hooks), a field left out takes its default (:data:`FIELD_DEFAULTS`), and
    any other key is refused.
    What cattrs' strict structuring did, without copying the line or going through a generic
    hook per field: a report reads every line of a log."""
    hints = typing.get_type_hints(cls)
    defaults = FIELD_DEFAULTS[kind]
    scope: dict[str, Any] = {"_cls": cls, "_M": _MISSING, "_bad": _bad_field, "_extra": _extra_keys}
    scope.update(_kind=kind, _tokens=_structure_tokens, _Error=DecodeError, _failed=_hook_failed)
    scope.update(_Tagged=Tagged, _spanned=kind in _SPANNED)
    body: list[str] = []  # the statements inside the function's try block, indented from there

    def add(depth: int, statement: str) -> None:
        body.append("        " + "    " * depth + statement)

    # ``known``: the keys of ``o`` the caller read (job and kind of a line; none of a record in a
    # line's ``then``, whose kind is beside it and whose ts the caller may give)
    for tag in ("seq", "attempt"):
        add(0, f"v = o.get({tag!r}, _M)")
        add(0, "if v is not _M:")
        add(1, f"{tag} = v")
        add(1, "known += 1")
        add(0, f"elif {tag} is None:")
        add(1, f"raise _Error(\"log line lacks '{tag}'\")")
    add(0, "v = o.get('ts', _M)")
    add(0, "if v is not _M:")
    add(1, "ts = v")
    add(1, "known += 1")
    add(0, "elif ts is None:")
    add(1, "raise _Error(\"log line lacks 'ts'\")")
    add(0, "if type(attempt) is not int or type(seq) is not int or type(ts) is not float:")
    add(1, "if type(attempt) is not int or type(seq) is not int or type(ts) is not int:")
    add(2, "raise _Error('log line has a bad attempt, seq or ts')")
    add(1, "ts = float(ts)")
    add(0, "seq_end = o.get('seq_end')")
    add(0, "if 'seq_end' in o:")
    add(1, "known += 1")
    add(1, "if seq_end is not None and (not _spanned or type(seq_end) is not int or seq_end <= seq):")
    add(2, "raise _Error('log line has a bad seq_end')")
    for field in attrs.fields(cls):
        name, hint = field.name, hints[field.name]
        value = f"f_{name}"
        add(0, f"{value} = o.get({name!r}, _M)")
        if name in defaults:
            scope[f"_d_{name}"] = defaults[name]
            add(0, f"if {value} is _M:")
            add(1, f"{value} = {'{}' if defaults[name] == _EMPTY_DICT else f'_d_{name}'}")
            add(0, "else:")
            add(1, "known += 1")
            depth = 1
        else:
            add(0, f"if {value} is _M:")
            add(1, f"raise _bad(_kind, {name!r}, 'a value', None, True)")
            add(0, "known += 1")
            depth = 0
        optional = type(None) in typing.get_args(hint)
        base = next(t for t in typing.get_args(hint) if t is not type(None)) if optional else hint
        if optional:
            add(depth, f"if {value} is not None:")
            depth += 1
        if base is Tokens:
            add(depth, f"{value} = _tokens({value})")
        elif base in (str, int, bool):
            add(depth, f"if type({value}) is not {base.__name__}:")
            add(depth + 1, f"raise _bad(_kind, {name!r}, {base.__name__!r}, {value})")
        elif base is float:
            add(depth, f"if type({value}) is not float:")
            add(depth + 1, f"if type({value}) is not int:")
            add(depth + 2, f"raise _bad(_kind, {name!r}, 'float', {value})")
            add(depth + 1, f"{value} = float({value})")
        else:
            scope[f"_h_{name}"], scope[f"_t_{name}"] = converter.get_structure_hook(hint), hint
            add(depth, f"{value} = _h_{name}({value}, _t_{name})")
    add(0, "if len(o) != known:")
    add(1, "_extra(_kind, o)")
    event = f"_cls({', '.join(f'{f.name}=f_{f.name}' for f in attrs.fields(cls))})"
    add(0, f"return _Tagged(job, attempt, seq, ts, {event}, seq_end)")
    source = "\n".join(
        [
            "def read(o, job, seq, attempt, ts=None, known=2):",
            "    try:",
            *body,
            "    except _Error:",
            "        raise",
            "    except Exception as exc:  # the converter's hooks fail in several ways: name the kind",
            "        raise _failed(_kind, exc) from exc",
        ]
    )
    exec(compile(source + "\n", f"<log line reader of {kind}>", "exec"), scope)
    return cast(Callable[..., Tagged], scope["read"])


def _hook_failed(kind: str, exc: Exception) -> DecodeError:
    return DecodeError(f"bad {kind} event: {_describe(exc)}")


_TOKEN_NAMES = ("input", "output", "cache_read", "cache_creation")


def _structure_tokens(value: Any) -> Tokens:
    """Token counts from a line: the counts it leaves out are zero; each must be an int. (A
    :class:`Tokens` passes as it is: what a log reader fills in from earlier lines, never JSON.)"""
    if type(value) is not dict:
        if type(value) is Tokens:
            return value
        raise DecodeError(f"tokens: expected an object, got {type(value).__name__}")
    get = value.get
    counts = (get("input", 0), get("output", 0), get("cache_read", 0), get("cache_creation", 0))
    for count in counts:
        if type(count) is not int:
            raise DecodeError("tokens: expected int counts")
    if not (len(value) == 2 and "input" in value and "output" in value):  # else: the usual two
        extra = sorted(str(k) for k in value if k not in _TOKEN_NAMES)
        if extra:
            raise DecodeError(f"tokens: extra fields {extra}")
    return Tokens(*counts)


def _bad_field(kind: str, name: str, expected: str, value: Any, missing: bool = False) -> DecodeError:
    if missing:
        return DecodeError(f"bad {kind} event: {name!r} is missing")
    return DecodeError(f"bad {kind} event: {name}: expected {expected}, got {type(value).__name__}")


def _extra_keys(kind: str, obj: Mapping[str, Any]) -> None:
    names = {f.name for f in attrs.fields(EVENT_TYPES[kind])} | {*TAG_KEYS, "seq_end", "then"}
    extra = sorted(str(k) for k in obj if k not in names)
    raise DecodeError(f"bad {kind} event: extra fields {', '.join(extra) or '(none)'}")


_READ: dict[str, Callable[..., Tagged]] = _PerKind(
    lambda kind: _reader_builder(kind, EVENT_TYPES[kind]), EVENT_TYPES
)


def decode_tagged(
    obj: Mapping[str, Any], seq: int | None = None, attempt: int | None = None, *, more: bool = False
) -> Tagged:
    """Rebuild a tagged event from a decoded log line (a dict). ``seq`` and ``attempt`` are what a
    line that leaves them out stands for (None: the line must state them); fields it leaves out
    take their defaults (:data:`FIELD_DEFAULTS`). ``more``: the line also holds a ``then`` list
    of further records (read by :mod:`orchestrator.record.lines`), and this is its first record.
    Raises :class:`DecodeError` if the line does not fit: an unknown kind or key, a missing
    field, a value of the wrong type."""
    job, kind = obj.get("job", _MISSING), obj.get("kind", _MISSING)
    if job is _MISSING or kind is _MISSING:
        raise DecodeError(f"log line lacks {'job' if job is _MISSING else 'kind'!r}")
    if not (job is None or type(job) is str) or type(kind) is not str:
        raise DecodeError("log line has a bad job or kind")
    read = _READ.get(kind)
    if read is None:
        raise DecodeError(f"unknown event kind {kind!r}")
    return read(obj, job, seq, attempt, None, 3 if more else 2)


def decode_fields(
    kind: Any, fields: Mapping[str, Any], job: str | None, seq: int, attempt: int, ts: float
) -> Tagged:
    """A record of a line's ``then`` list: its ``kind`` and ``fields`` (which may state ``seq``,
    ``attempt``, ``seq_end`` and ``ts``, else the ones given stand). Raises :class:`DecodeError`
    as :func:`decode_tagged` does."""
    read = _READ.get(kind) if type(kind) is str else None
    if read is None:
        raise DecodeError(f"unknown event kind {kind!r}")
    return read(fields, job, seq, attempt, ts, 0)


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
