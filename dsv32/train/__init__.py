"""Training: configs, AdamW and schedules, the step/loop, checkpoints, data parallelism, the stages.

- `config`: `TrainConfig`/`DataConfig` (JSON 1:1, `key=value` overrides, recipe-style stage files).
- `optim`: parameter groups and warm-up + cosine / WSD / constant schedules.
- `data`: tokenizer, training rows (stdlib text + long-context tasks), validation and eval samples.
- `trainer`: one optimizer step (accumulation, global-token normalisation, clipping, MoE bias).
- `runner`: a stage into a run directory (resume, hooks, metrics JSONL, checkpoints).
- `state`: atomic training checkpoints (safetensors, JSON; no pickle), keep-last-N.
- `distributed`: DDP / FSDP2 after construction under torchrun; no-op in one process.
- `stages`: pretrain, dsa-warmup, dsa-sparse; `metrics`: MFU, load balance, indexer recall.
- `recipe`: the dense -> DSA headline experiment; `commands`: the `dsv32 train` verbs.
"""
