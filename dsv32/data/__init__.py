"""Training data: the stdlib text corpus, synthetic long-context tasks, token shards, packing, loading.

- `corpus`: Python standard-library source of the running interpreter, split train/val by path hash.
- `longctx`: passkey, associative recall, variable tracking and needle-in-code samples; exact match.
- `shards`: tokenised corpora cached as memory-mapped `.npy` shards with a validated JSON manifest.
- `packing`: fixed-length rows of L+1 tokens with loss masks (next-token targets).
- `loader`: seeded per-epoch shuffling, rank-sharded batches, resumable position.
- `io`: atomic file writes; `commands`: the `dsv32 data` verbs.
"""
