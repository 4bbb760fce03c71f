"""The stylesheet and the timeline script of the HTML report, inlined into every page.

They are package data files (``report.css``, ``report.js``), read once with
:mod:`importlib.resources`, so editors, linters and formatters see them as what they are. The
script reads the JSON in ``#timeline-data`` (layout: the ``fields`` list of
:mod:`orchestrator.report.html`), indexes attempts by row, and draws only the rows in view on a
canvas that stays put (``position: sticky``) while its container scrolls, so 10,000 jobs cost
what 100 do. Hover finds the attempt (or backoff) under the pointer in that row alone.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def asset(name: str) -> str:
    """The text of one asset file of this package (``report.css``, ``report.js``)."""
    return files(__name__).joinpath(name).read_text(encoding="utf-8")
