"""The settings of each backend a batch names (``[backends.NAME]``), and its rate limits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from orchestrator.backends import backend_kind, known_backends
from orchestrator.config.check import Problems, build, check_table, did_you_mean, join
from orchestrator.spec import BackendLimits

_LIMIT_KEYS = frozenset(f.name for f in attrs.fields(BackendLimits))


_ANSWER_SETTINGS = ("model", "model_path", "base_url")


def answer_settings(settings: Any) -> dict[str, Any]:
    """The batch-wide settings of a backend that shape its answers (which model, which server):
    part of each of its jobs' content hashes."""
    return {k: getattr(settings, k) for k in _ANSWER_SETTINGS if getattr(settings, k, None) is not None}


def resolve_backends(
    table: Any, path: str, problems: Problems
) -> tuple[dict[str, Any], dict[str, BackendLimits]]:
    """Each backend's own settings, and the rate limits the runner applies to it, from a table
    of backend names found at ``path``."""
    settings: dict[str, Any] = {}
    limits: dict[str, BackendLimits] = {}
    if not isinstance(table, Mapping):
        problems.append(f"{path}: expected a table of backend names")
        return settings, limits
    for name, value in table.items():
        where = join(path, name)
        if name not in known_backends():
            problems.append(
                f"{where}: unknown backend{did_you_mean(name, known_backends())}; "
                f"known: {', '.join(known_backends())}"
            )
            continue
        cls = backend_kind(name).Settings
        checked = check_table(value, cls, where, problems, skip=_LIMIT_KEYS)
        if checked is not None:
            settings[name] = build(cls, checked, where, problems)
            own = {k: v for k, v in value.items() if k in _LIMIT_KEYS}
            limits[name] = build(
                BackendLimits, check_table(own, BackendLimits, where, problems) or {}, where, problems
            )
    return settings, limits
