"""The two batch backends as the tests run them: each one's model, fake store and fake server."""

from __future__ import annotations

from orchestrator.testing.anthropic.batches import anthropic_batch_store, open_fake_anthropic_batches
from orchestrator.testing.openai.batches import open_fake_openai_batches, openai_batch_store

PROVIDERS = {
    "anthropic-batch": ("claude-sonnet-4-5", anthropic_batch_store, open_fake_anthropic_batches),
    "openai-batch": ("gpt-4o-mini", openai_batch_store, open_fake_openai_batches),
}
