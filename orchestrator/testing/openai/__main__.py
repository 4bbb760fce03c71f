"""``python -m orchestrator.testing.openai``: serve the fake until Ctrl-C (``--help`` for options)."""

from orchestrator.testing.openai.server import main

main()
