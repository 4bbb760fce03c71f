"""Progress for library callers: the notebook display's HTML."""

from __future__ import annotations

from rich.text import Text

from orchestrator.cli.display import Progress
from orchestrator.cli.live import in_notebook, to_html
from orchestrator.events import AttemptStarted, BatchStarted, JobQueued, Tagged, TextDelta


def test_model_text_in_the_notebook_display_is_escaped() -> None:
    html = to_html(Text("<script>alert(1)</script> [bold]x[/bold]"))
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "[bold]x[/bold]" in html  # not markup either


async def test_the_display_shows_what_is_running() -> None:
    progress = Progress()
    await progress.deliver(
        [
            Tagged(None, 0, 0, 0.0, BatchStarted(run_id="r", jobs=1, started_at="t")),
            Tagged("j1", 0, 0, 0.0, JobQueued(backend="sim", model=None, content_hash="h")),
            Tagged("j1", 1, 1, 0.0, AttemptStarted(backend="sim")),
            Tagged("j1", 1, 2, 0.1, TextDelta(text="<i>hi</i>")),
        ]
    )
    html = to_html(progress.renderable(1.0))
    assert "0/1 done" in html and "&lt;i&gt;hi&lt;/i&gt;" in html


def test_outside_a_kernel_there_is_no_notebook() -> None:
    assert not in_notebook()
