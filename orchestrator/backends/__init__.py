"""The backend registry: names to modules, imported only when a batch uses them.

Each backend module exposes ``KIND``, an object satisfying
:class:`~orchestrator.backends.base.BackendKind`. Importing lazily keeps ``import orchestrator``
and ``orchestrate --help`` fast and keeps optional dependencies optional.
"""

from __future__ import annotations

import importlib

from .base import Backend, BackendKind, Emit

_MODULES: dict[str, str] = {
    "sim": "orchestrator.backends.sim",
}


def known_backends() -> list[str]:
    """Every backend name, sorted."""
    return sorted(_MODULES)


def backend_kind(name: str) -> BackendKind:
    """The backend called ``name``; raises KeyError for an unknown name."""
    module = importlib.import_module(_MODULES[name])
    kind: BackendKind = module.KIND
    return kind


def register(name: str, module: str) -> None:
    """Make a backend in ``module`` (which defines ``KIND``) available as ``name``."""
    _MODULES[name] = module


__all__ = ["Backend", "BackendKind", "Emit", "backend_kind", "known_backends", "register"]
