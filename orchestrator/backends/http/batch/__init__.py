"""The batch-API backends (``anthropic-batch``, ``openai-batch``): the same jobs as the streaming
``anthropic``/``openai`` backends, sent in remote batches at the providers' batch price.

:mod:`.collector` gathers attempts into chunks, submits and polls them; :mod:`.replay` turns a
finished request's complete reply into the stream events a streamed attempt gives; :mod:`.remote`
holds the shared control-endpoint calls and the backend; :mod:`.create` the create call and the
search for a batch whose create call was in doubt; :mod:`.anthropic` and :mod:`.openai` the two
providers' wire formats.
"""
