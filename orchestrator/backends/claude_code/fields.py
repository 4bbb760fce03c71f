"""Checked reads of the values in the Claude Code CLI's JSON lines.

Every value the CLI prints is read through one of these before use: a field of an unexpected
type reads as empty (or None), so an odd line is decoded as far as it makes sense instead of
raising. Pure and total: no function here raises, whatever it is given.
"""

from __future__ import annotations

from typing import Any


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


def number_or_none(value: Any) -> float | None:
    """``value`` as a float if it is a number, else None (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
