"""Structured output: a job's JSON Schema checked once when it is loaded, and a reply checked
against it after every attempt. The one rule, for every backend.

The validator is ``jsonschema-rs`` (every draft from 4 to 2020-12, compiled once per schema),
imported on first use: a batch without a schema does not pay its import.
A schema may refer only to itself (``#/$defs/...``): a ``$ref`` or ``$schema`` naming another
document is refused, never fetched, so loading a job file reads no network and no other file.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import orjson

from orchestrator.spec import OutputSchema

if TYPE_CHECKING:
    import jsonschema_rs


def _refuse(uri: str) -> Any:
    raise ValueError(f"{uri}: a schema may refer only to itself; other documents are not fetched")


@functools.cache
def _no_fetching() -> jsonschema_rs.Registry:
    import jsonschema_rs

    return jsonschema_rs.Registry([], retriever=_refuse)


def schema_problems(schema: Any) -> list[tuple[str, str]]:
    """What is wrong with ``schema`` as a JSON Schema: ``(key path inside it, problem)`` pairs,
    empty when it is a valid schema this validator can compile."""
    import jsonschema_rs

    if not isinstance(schema, Mapping | bool):
        return [("", "expected a JSON Schema (a table or a JSON object)")]
    try:
        jsonschema_rs.meta.validate(
            schema if isinstance(schema, bool) else dict(schema), registry=_no_fetching()
        )
        _compiled(_canonical(schema))
    except jsonschema_rs.ValidationError as exc:
        return [(_pointer(exc.instance_path), exc.message)]
    except (jsonschema_rs.ReferencingError, ValueError) as exc:
        return [("", _first_line(str(exc)))]
    return []


@attrs.frozen
class Invalid:
    """Why a reply is not the structured output asked for: the validator's message."""

    message: str


def check_reply(schema: OutputSchema, text: str) -> Any:
    """The reply's parsed JSON value when it meets ``schema``, else :class:`Invalid` saying why.

    Total: any text gives a value or an :class:`Invalid`, never an exception. Surrounding white
    space is allowed; a JSON value followed by anything else is not JSON.
    """
    import jsonschema_rs

    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return Invalid(f"the reply is not JSON: {exc}")
    try:
        validator = _compiled(_canonical(schema.schema))
        error = next(iter(validator.iter_errors(value)), None)
    except (ValueError, jsonschema_rs.ValidationError) as exc:  # a value the validator cannot hold
        return Invalid(f"the reply cannot be checked: {_first_line(str(exc))}")
    if error is None:
        return value
    at = _pointer(error.instance_path)
    return Invalid(f"the reply does not match the schema{' at ' + at if at else ''}: {error.message}")


def schema_json(schema: OutputSchema) -> str:
    """The schema's canonical JSON text (sorted keys), as sent where a backend takes a string."""
    return _canonical(schema.schema)


def _canonical(schema: Mapping[str, Any] | bool) -> str:
    return orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode()


@functools.lru_cache(maxsize=256)
def _compiled(schema_text: str) -> jsonschema_rs.Validator:
    # Keyed by the canonical text: 100k jobs sharing one schema compile it once.
    import jsonschema_rs

    return jsonschema_rs.validator_for(orjson.loads(schema_text), retriever=_refuse)


def _pointer(path: Sequence[str | int]) -> str:
    """A path inside a JSON value as dotted keys with list indexes: ``items[0].name``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
