"""The backend registry: names to modules, imported only when a batch uses them.

Each backend module exposes ``KIND``, an object satisfying
:class:`~orchestrator.backends.base.BackendKind`. Importing lazily keeps ``import orchestrator``
and ``orchestrate --help`` fast and keeps optional dependencies optional.
"""

from __future__ import annotations

import importlib

from orchestrator.backends.base import Backend, BackendKind, Emit

SIMULATOR = "sim"
"""The backend whose answers and costs are made up: summaries count the jobs that ran on it."""

_MODULES: dict[str, str | BackendKind] = {
    SIMULATOR: "orchestrator.backends.sim.backend",
    "local": "orchestrator.backends.local.backend",
    "claude-code": "orchestrator.backends.claude_code.backend",
    "anthropic": "orchestrator.backends.http.anthropic",
    "openai": "orchestrator.backends.http.openai",
    "anthropic-batch": "orchestrator.backends.http.batch.anthropic",
    "openai-batch": "orchestrator.backends.http.batch.openai",
}


def known_backends() -> list[str]:
    """Every backend name, sorted."""
    return sorted(_MODULES)


def backend_kind(name: str) -> BackendKind:
    """The backend called ``name``; raises KeyError for an unknown name."""
    entry = _MODULES[name]
    if not isinstance(entry, str):
        return entry
    kind: BackendKind = importlib.import_module(entry).KIND
    return kind


def register(name: str, kind: str | BackendKind) -> None:
    """Make a backend available as ``name``: a :class:`BackendKind` object, or the dotted name
    of a module defining ``KIND`` (imported on first use)."""
    _MODULES[name] = kind


def unregister(name: str) -> None:
    _MODULES.pop(name, None)


__all__ = ["Backend", "BackendKind", "Emit", "backend_kind", "known_backends", "register", "unregister"]
