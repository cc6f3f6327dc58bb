"""Inference engine: paged latent + indexer-key cache, DSA prefill/decode with the model's own modules,
batched sampling, continuous batching with cancellation and forced insertions, and RL records.

Modules: cache (PagedCache, CacheSpec), runner (ModelRunner), experts (batched routed experts),
fused (decode-time fused projections, rotation matrices),
sampling (SamplingParams, sampler), records (SequenceRecord, recompute_logprobs), handles and
scheduler (Engine, RequestHandle, TokenEvent), generate (load_engine, stream_text), commands
(`dsv32 generate`).
"""
