"""A job's ``output_schema`` (inline: a table or JSON text) or ``output_schema_file`` (a JSON
file, relative to the job file), read and checked as a JSON Schema with key paths in problems."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from orchestrator.config.check import Problems, describe, join
from orchestrator.config.files import open_regular, unreadable
from orchestrator.output import schema_problems
from orchestrator.spec import OutputSchema

KEYS = ("output_schema", "output_schema_file")


def read_output_schema(
    key: str, value: Any, where: str, problems: Problems, *, base: Path | None
) -> OutputSchema | None:
    """The schema that ``key = value`` (one of :data:`KEYS`) sets, checked; None with problems
    appended (each naming ``where`` and the key path inside the schema). A file is read from
    ``base`` (the job file's folder; the working directory when None)."""
    schema: Any
    if key == "output_schema_file":
        if not isinstance(value, str) or not value or "\0" in value:
            problems.append(f"{where}: expected a path to a JSON file, got {describe(value)}")
            return None
        path = (base or Path()) / value
        try:
            with open_regular(path) as f:
                schema = orjson.loads(f.read())
        except OSError as exc:
            problems.append(f"{where}: {path}: {unreadable(exc)}")
            return None
        except orjson.JSONDecodeError as exc:
            problems.append(f"{where}: {path}: invalid JSON: {exc}")
            return None
        shown = f"{where} ({path})"
    elif isinstance(value, str):
        try:
            schema = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            problems.append(f"{where}: invalid JSON: {exc}")
            return None
        shown = where
    elif isinstance(value, Mapping):
        schema, shown = value, where
    elif isinstance(value, OutputSchema):
        schema, shown = value.schema, where
    else:
        problems.append(f"{where}: expected a JSON Schema (a table or JSON text), got {describe(value)}")
        return None
    found = schema_problems(schema)
    for inside, problem in found:
        problems.append(f"{join(shown, inside) if inside else shown}: not a valid JSON Schema: {problem}")
    return None if found else OutputSchema(_plain(schema))


def _plain(value: Any) -> Any:
    """The schema as plain dicts and lists (a TOML table may hold other mappings)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
