"""The simulator's structured replies: JSON made from a job's ``output_schema``, valid or wrong on
purpose (the ``output`` option), so retries of invalid output can be tested without a model.

A valid reply is the smallest value the schema's common keywords describe (``type``,
``properties`` and ``required``, ``enum``, ``const``, ``minimum``, ``minLength``, ``minItems``,
``anyOf``/``oneOf``/``allOf``, local ``$ref``); schemas beyond that (``pattern``, say) may not be
met, and the runner's check then says so, as it would of a real model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from orchestrator.output import Invalid, check_reply
from orchestrator.spec import OutputSchema

REPLIES = ("valid", "invalid", "not_json")
_NOT_JSON = "Sure! Here is the answer you asked for."
_WRONG: tuple[Any, ...] = ("a string where the schema wants something else", 0, [], {}, None, True)


def structured_reply(schema: OutputSchema, kind: str) -> str:
    """The reply text of kind ``kind`` (one of :data:`REPLIES`) for ``schema``."""
    if kind == "not_json":
        return _NOT_JSON
    if kind == "invalid":
        for value in _WRONG:
            text = orjson.dumps(value).decode()
            if isinstance(check_reply(schema, text), Invalid):
                return text
        return _NOT_JSON  # the schema takes any JSON value: only a reply that is not JSON fails
    return orjson.dumps(_example(schema.schema, schema.schema, 0)).decode()


def _example(node: Any, root: Any, depth: int) -> Any:
    if not isinstance(node, Mapping) or depth > 32:
        return None if node is False else {}
    if "const" in node:
        return node["const"]
    if isinstance(node.get("enum"), list) and node["enum"]:
        return node["enum"][0]
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            key = part.replace("~1", "/").replace("~0", "~")
            target = target.get(key) if isinstance(target, Mapping) else None
        return _example(target, root, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(node.get(key), list) and node[key]:
            return _example(node[key][0], root, depth + 1)
    kind = node.get("type")
    if isinstance(kind, list):
        kind = kind[0] if kind else None
    if kind is None:
        kind = "object" if "properties" in node else "array" if "items" in node else None
    if kind == "object":
        properties = node.get("properties")
        if not isinstance(properties, Mapping):
            return {}
        return {str(k): _example(v, root, depth + 1) for k, v in properties.items()}
    if kind == "array":
        count = node.get("minItems", 0) if isinstance(node.get("minItems"), int) else 0
        return [_example(node.get("items", {}), root, depth + 1) for _ in range(min(count, 100))]
    if kind == "string":
        length = node.get("minLength", 0) if isinstance(node.get("minLength"), int) else 0
        return "x" * min(max(length, 1), 1000)
    if kind in ("integer", "number"):
        low = node.get("minimum", node.get("exclusiveMinimum", 0))
        low = low if isinstance(low, int | float) and not isinstance(low, bool) else 0
        value = max(0, low) + (1 if "exclusiveMinimum" in node else 0)
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return {}
