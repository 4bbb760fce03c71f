"""Progress for library callers (``run_batch_async(..., progress=True)``): in a Jupyter notebook a
display that updates in place under the cell, elsewhere the command line's progress on stderr.

The notebook display is the same rich renderable the terminal panel shows, exported as HTML with
inline styles and swapped into one IPython display (no ipywidgets needed). Model text in it is
data: rich's HTML export escapes it.
"""

from __future__ import annotations

import importlib
import io
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import trio
from rich.console import Console, RenderableType
from rich.text import Text

from orchestrator.cli.display import Progress, run_progress
from orchestrator.run.bus import Subscriber
from orchestrator.run.host import alongside

T = TypeVar("T")
_PRE = '<pre style="font-family: monospace; line-height: 1.35; margin: 0">{code}</pre>'


def in_notebook() -> bool:
    """True inside a Jupyter kernel (an IPython shell with a kernel), without importing IPython."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def to_html(renderable: RenderableType, width: int = 110) -> str:
    """``renderable`` as a self-contained HTML fragment (inline styles, text escaped)."""
    # force_jupyter=False: in a kernel rich would otherwise display what it prints, as well
    console = Console(
        record=True, file=io.StringIO(), width=width, color_system="truecolor", force_jupyter=False
    )
    console.print(renderable)
    return console.export_html(inline_styles=True, code_format=_PRE)


async def run_notebook_progress(progress: Progress, *, interval: float = 0.5) -> None:
    """Show ``progress`` under the running cell until cancelled; the last frame stays."""
    # IPython has no type hints: its display functions are used as they are.
    ipython_display: Any = importlib.import_module("IPython.display")
    HTML, display = ipython_display.HTML, ipython_display.display
    start = trio.current_time()
    handle: Any = display(HTML(""), display_id=True)
    try:
        while True:
            handle.update(HTML(to_html(progress.renderable(trio.current_time() - start))))
            await trio.sleep(interval)
    finally:
        final = Text(progress.status_line(trio.current_time() - start), style="bold")
        handle.update(HTML(to_html(final)))


async def with_progress(run: Callable[[Sequence[Subscriber]], Awaitable[T]]) -> T:
    """``run([progress])`` while the progress is drawn (notebook or stderr); returns its result.

    What ``run`` raises comes out as it is; the drawing ends with it.
    """
    progress = Progress()

    async def draw(_: trio.CancelScope) -> None:
        if in_notebook():
            await run_notebook_progress(progress)
        else:
            await run_progress(progress, tty=sys.stderr.isatty())

    result = await alongside(lambda: run([progress]), draw)
    assert result is not None  # the drawing never tears the run down
    return result
