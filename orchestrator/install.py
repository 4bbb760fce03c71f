"""How this project is installed: its distribution name on PyPI and the commands that add an extra.

The import package is ``orchestrator`` and the command ``orchestrate``, but the distribution is
``orchestrator-llm`` (``orchestrator`` on PyPI is an unrelated project). Every message that tells
a user what to install builds its command here, so no message names the wrong package.
"""

from __future__ import annotations

DISTRIBUTION = "orchestrator-llm"


def install_extra(extra: str) -> str:
    """The shell command that installs this project with one optional extra, quoted for a shell."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"
