from __future__ import annotations

import typing
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator import codec
from orchestrator.config.check import type_hints
from orchestrator.errors import ErrorKind
from orchestrator.events import CONTENT_BLOCKS, EVENT_TYPES, BatchSummary, Tagged, Tokens, UsageReported

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)


def strategy_for(hint: Any) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:  # a JSON value (structured output)
        return json_values
    if hint is str:
        return st.text()
    if hint is int:
        return st.integers(0, 2**40)
    if hint is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if hint is bool:
        return st.booleans()
    if hint is ErrorKind:
        return st.sampled_from(ErrorKind)
    if origin in (typing.Union, __import__("types").UnionType):
        if all(attrs.has(a) for a in args):  # the content block union
            return st.one_of([strategy_for(a) for a in args])
        return st.one_of([strategy_for(a) if a is not type(None) else st.none() for a in args])
    if origin is tuple and args[-1] is not Ellipsis:  # a fixed-size tuple, e.g. a (start, end) range
        return st.tuples(*[strategy_for(a) for a in args])
    if origin is tuple:
        return st.lists(strategy_for(args[0]), max_size=3).map(tuple)
    if origin is not None and "Mapping" in repr(origin):
        if args and args[1] is int:
            return st.dictionaries(strategy_for(args[0]), st.integers(0, 100), max_size=3)
        if args and args[1] is str:
            return st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)
        return json_objects
    if attrs.has(hint):
        return st.builds(hint, **{f.name: strategy_for(type_hints(hint)[f.name]) for f in attrs.fields(hint)})
    raise NotImplementedError(hint)


events = st.one_of([strategy_for(cls) for cls in EVENT_TYPES.values()])
tags = st.tuples(
    st.none() | st.text(min_size=1), st.integers(0, 50), st.integers(0, 10**6), st.floats(0, 1e6)
)


@given(tags, events)
def test_every_event_survives_a_trip_through_a_log_line(tag: tuple[Any, ...], event: Any) -> None:
    tagged = Tagged(*tag, event)
    line = codec.encode_tagged(tagged)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert codec.decode_tagged(orjson.loads(line)) == tagged


@given(tags, events)
def test_a_log_line_is_the_tag_then_the_fields_not_at_their_defaults_in_order(
    tag: tuple[Any, ...], event: Any
) -> None:
    job, attempt, seq, ts = tag
    full = {"job": job, "attempt": attempt, "seq": seq, "ts": ts, **codec.event_to_dict(event)}
    line = codec.tagged_to_dict(Tagged(job, attempt, seq, ts, event))
    assert [k for k in full if k in line] == list(line)  # the full line's keys, in its order
    defaults = codec.FIELD_DEFAULTS[event.kind]
    for name in full.keys() - line.keys():  # left out: at its default, and the reader fills that in
        assert name in defaults and name not in codec.CONTEXT_FIELDS.get(event.kind, ())
        assert _as_json(full[name]) == _as_json(defaults[name])
    for name in line.keys() & defaults.keys() - set(codec.CONTEXT_FIELDS.get(event.kind, ())):
        assert _as_json(line[name]) != _as_json(defaults[name])  # written: not at its default
    assert codec.encode_tagged(Tagged(job, attempt, seq, ts, event)) == orjson.dumps(
        line, option=orjson.OPT_APPEND_NEWLINE
    )


def _as_json(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value))


def test_token_counts_leave_out_their_zeros() -> None:
    line = codec.tagged_to_dict(Tagged("a", 1, 2, 0.5, UsageReported(Tokens(3, 0, 0, 4))))
    assert line == {
        "job": "a",
        "attempt": 1,
        "seq": 2,
        "ts": 0.5,
        "kind": "usage",
        "tokens": {"input": 3, "cache_creation": 4},
    }
    assert codec.decode_tagged(line).event == UsageReported(Tokens(3, 0, 0, 4))


def test_event_fields_never_collide_with_the_tag() -> None:
    for cls in EVENT_TYPES.values():
        names = {f.name for f in attrs.fields(cls)}
        assert not names & set(codec.TAG_KEYS), cls


def test_kinds_are_unique_and_stable() -> None:
    assert len(EVENT_TYPES) == len({cls.kind for cls in EVENT_TYPES.values()})
    assert {
        "text_delta",
        "tool_call",
        "stream_finished",
        "retry_scheduled",
        "job_failed",
        "batch_finished",
    } <= set(EVENT_TYPES)
    assert len({b.type for b in CONTENT_BLOCKS}) == len(CONTENT_BLOCKS)


def line(**fields: Any) -> dict[str, Any]:
    return {"job": "a", "attempt": 1, "seq": 0, "ts": 0.5, **fields}


@pytest.mark.parametrize(
    "obj, message",
    [
        (line(kind="no_such_kind"), "unknown event kind"),
        (line(kind="text_delta", text="x", extra=1), "extra"),
        (line(kind="text_delta", text=5), "expected str"),
        (line(kind="job_succeeded", attempts="2"), "expected int"),
        (line(kind="job_failed", error_kind="x", message="m", retryable=1, attempts=1), "expected bool"),
        (line(kind="usage", tokens={"input": True}), "expected int"),
        (line(kind="usage", tokens={"input": 1, "outputs": 2}), "extra fields"),
        (line(kind="usage", tokens={"input": 1, "output": 2, "cached": 3}), "extra fields"),
        (line(kind="usage", tokens=[1, 2]), "expected an object"),
        ({"job": "a", "seq": 0, "ts": 0.0, "kind": "text_delta", "text": ""}, "attempt"),
        (line(kind="assistant_message", content=[{"type": "image"}]), "content block"),
    ],
)
def test_decoding_is_strict(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(codec.DecodeError, match=message):
        codec.decode_tagged(obj)


def test_summary_json_is_one_line_with_every_field() -> None:
    summary = BatchSummary(
        jobs=2, succeeded=1, failed=1, tokens=Tokens(1, 2, 3, 4), failures={ErrorKind.AUTH: 1}
    )
    data = codec.summary_json(summary)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    decoded = orjson.loads(data)
    assert decoded["tokens"] == {"input": 1, "output": 2, "cache_read": 3, "cache_creation": 4}
    assert codec.structure(decoded, BatchSummary) == summary


def test_content_hash_ignores_key_order_but_not_values() -> None:
    assert codec.content_hash({"a": 1, "b": 2}) == codec.content_hash({"b": 2, "a": 1})
    assert codec.content_hash({"a": 1}) != codec.content_hash({"a": 2})
