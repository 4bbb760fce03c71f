"""``python -m orchestrator.testing.anthropic``: serve the fake until Ctrl-C (``--help`` for options)."""

from orchestrator.testing.anthropic.server import main

main()
