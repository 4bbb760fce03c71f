"""The batch-API backends (``anthropic-batch``, ``openai-batch``): the same jobs as the streaming
``anthropic``/``openai`` backends, sent in remote batches at the providers' batch price.

:mod:`.collector` gathers attempts into chunks, submits and polls them (:mod:`.provider`: what it
needs of a provider's endpoints); :mod:`.left` reads what an earlier run's log says it left at the
provider (batches, create calls sent without an answer logged); :mod:`.replay` turns a
finished request's complete reply into the stream events a streamed attempt gives; :mod:`.remote`
holds the shared control-endpoint calls and the backend; :mod:`.create` the create call and the
search for a batch whose create call was in doubt; :mod:`.anthropic` and :mod:`.openai` the two
providers' wire formats.
"""
