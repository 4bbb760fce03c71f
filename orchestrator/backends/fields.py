"""Checked reads of the values in a provider's JSON, for every backend's decoder.

Every value a provider sends is read through one of these before use, so a decoder is total:
whatever JSON arrives, it produces events with correctly typed fields or a
:class:`~orchestrator.errors.BackendError`, never another exception.

Two families, for two kinds of field:

* lenient reads (``dict_or_empty``, ``str_or_none``, ...) for fields that only label or count
  (ids, model names, token counts, notices): a value of an unexpected type reads as empty (or
  None), and the line is decoded as far as it makes sense. None of them raises.
* strict reads (``object_at``, ``str_at``, ...) for fields the reply is made of (text, tool
  calls, stop reasons, the structure around them): a missing field or ``null`` reads as empty,
  but a value of the wrong type raises a retryable ``protocol`` error naming the field, since
  the reply can no longer be trusted and another attempt may get a sound stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.errors import ErrorKind, RetryableError

"""The error kind of a stream that breaks its provider's format."""

# --- lenient: an odd value reads as empty -----------------------------------------------------


def dict_or_empty(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else ``{}``."""
    return value if isinstance(value, dict) else {}


def list_or_empty(value: Any) -> list[Any]:
    """``value`` if it is a JSON array, else ``[]``."""
    return value if isinstance(value, list) else []


def str_or_none(value: Any) -> str | None:
    """``value`` if it is a string, else None."""
    return value if isinstance(value, str) else None


def int_or_none(value: Any) -> int | None:
    """``value`` if it is an integer, else None (``true`` is not 1 here)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def count_or_zero(value: Any) -> int:
    """``value`` if it is a count (an integer of at least 0), else 0."""
    count = int_or_none(value)
    return count if count is not None and count >= 0 else 0


def number_or_none(value: Any) -> float | None:
    """``value`` as a float if it is a number, else None (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


# --- strict: a wrong-typed value is a protocol error ---------------------------------------------


def malformed(where: str, what: str) -> RetryableError:
    """The error for a stream whose ``where`` (an event name, a key path) is ``what``."""
    return RetryableError(f"malformed stream: {where} {what}", kind=ErrorKind.PROTOCOL)


def object_at(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    """``data[key]`` if it is a JSON object, ``{}`` if missing or null; else a protocol error."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _wrong_type(where, key, value, "an object")
    return value


def list_at(data: Mapping[str, Any], key: str, where: str) -> list[Any]:
    """``data[key]`` if it is a JSON array, ``[]`` if missing or null; else a protocol error."""
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _wrong_type(where, key, value, "an array")
    return value


def str_at(data: Mapping[str, Any], key: str, where: str) -> str | None:
    """``data[key]`` if it is a string, None if missing or null; else a protocol error."""
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _wrong_type(where, key, value, "a string")


def int_at(data: Mapping[str, Any], key: str, where: str) -> int | None:
    """``data[key]`` if it is an integer, None if missing or null; else a protocol error."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(where, key, value, "an integer")
    return value


def as_object(value: Any, where: str) -> Mapping[str, Any]:
    """``value`` if it is a JSON object; else a protocol error (an array item, say)."""
    if not isinstance(value, dict):
        raise malformed(where, f"is {_json_type(value)}, not an object")
    return value


def _wrong_type(where: str, key: str, value: Any, expected: str) -> RetryableError:
    return malformed(f"{where}.{key}", f"is {_json_type(value)}, not {expected}")


def _json_type(value: Any) -> str:
    match value:
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "a string"
        case list():
            return "an array"
        case dict():
            return "an object"
        case None:
            return "null"
        case _:
            return type(value).__name__
