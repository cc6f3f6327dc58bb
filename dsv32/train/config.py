"""Training configuration: dataclasses that map 1:1 to JSON, with `key=value` overrides.

A run directory stores the resolved `train_config.json` next to the model's `config.json`, so a
checkpoint says how it was made. A stage config file is either a flat `TrainConfig` object or a
recipe-style object `{"common": {...}, "stages": {"pretrain": {...}, ...}}` from which one stage is
picked (common keys first, the stage's keys on top). Overrides use dotted keys for nested fields
(`data.max_files=50`) and parse values as JSON when they can (`lr=3e-4`, `autocast="bf16"`,
`model_overrides={"index_topk": 64}`), else keep the string.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STAGES = ("pretrain", "dsa-warmup", "dsa-sparse")
SCHEDULES = ("cosine", "wsd", "constant")
AUTOCAST = ("none", "bf16")
LOSS_WEIGHTINGS = ("token", "row")
TASK_LOSS = ("answer", "full")


@dataclass
class DataConfig:
    tokenizer: str | None = None  # tokenizer.json to use; None: train a BPE on the corpus (cached)
    vocab_size: int = 512  # for a trained tokenizer; the model's vocab follows the tokenizer
    split_digits: bool = False  # trained tokenizer: one digit per token (dsv32.tokenizer.train_bpe)
    max_files: int | None = None  # stdlib files to index (a sorted prefix); None: all
    val_fraction: float = 0.05
    cache_dir: str | None = None  # tokenizer and shard cache; None: <run_dir>/cache
    text_rows: int | None = None  # training rows of packed stdlib text (strided subset); None: all
    tasks: list[str] = field(default_factory=lambda: ["passkey", "kv_recall", "var_track", "code_needle"])
    task_samples: int = 64  # training samples per task
    induction_rows: int = 0  # synthetic rows of repeated random spans (dsv32.data.induction); 0: none
    task_loss: str = "answer"  # "answer": loss on answer + EOS only; "full": on every token after BOS
    task_seed: int = 1
    n_pairs: int = 8
    kv_queries: int = 1  # kv_recall training rows ask this many of the n_pairs keys (dsv32.data.longctx)
    n_hops: int = 3
    n_chains: int = 2
    val_rows: int = 8  # validation rows of stdlib text for the validation loss
    eval_samples: int = 16  # held-out samples per task for exact-match accuracy
    eval_seed: int = 1_000_003


@dataclass
class OptimizerSettings:
    """The AdamW, schedule and MoE-bias fields that `train.optim.build_optimizer` and `set_lr` read
    (besides `steps`); `TrainConfig` and the post-training configs extend it."""

    lr: float = 2e-4
    indexer_lr: float | None = None  # lr of the indexer parameter groups; None: lr
    warmup_steps: int = 0
    schedule: str = "constant"
    decay_steps: int = 0  # wsd: length of the final linear decay; 0: 20% of steps
    min_lr_ratio: float = 1.0
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    bias_update_gamma: float = 1e-3  # MoE aux-loss-free bias step (not in dsa-warmup: routing frozen)


@dataclass
class TrainConfig(OptimizerSettings):
    stage: str = "pretrain"
    preset: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    seq_len: int = 128
    batch_size: int = 4  # per rank, per micro-batch
    grad_accum: int = 1
    steps: int = 100
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 10
    schedule: str = "cosine"
    weight_decay: float = 0.1
    balance_loss_weight: float = 0.0  # optional sequence-wise balance loss
    indexer_loss_weight: float = 1.0
    index_topk: int | None = None  # dsa stages: top-k (None: model config)
    autocast: str = "none"  # "bf16" autocast on CPU measured slower here (see dsv32 train bench-precision)
    # "token": the LM loss is the mean over every supervised token of the global batch; "row": the
    # mean over rows of each row's own token mean (a 4-token answer row weighs as much as a text row)
    loss_weighting: str = "token"
    seed: int = 0
    log_every: int = 1
    eval_every: int = 0  # validation loss every N steps (0: only at the end)
    recall_every: int = 0  # indexer recall on a validation batch every N steps (0: never)
    save_every: int = 0  # checkpoint every N steps (0: only at the end)
    keep_last: int = 2
    parallel: str = "ddp"  # under torchrun: "ddp" or "fsdp"
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        if isinstance(self.data, dict):
            self.data = _from_dict(DataConfig, self.data, "data")
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"invalid training config: {msg}")

        need(self.stage in STAGES, f"stage must be one of {STAGES}, got {self.stage!r}")
        need(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        need(self.autocast in AUTOCAST, f"autocast must be one of {AUTOCAST}, got {self.autocast!r}")
        need(
            self.loss_weighting in LOSS_WEIGHTINGS,
            f"loss_weighting must be one of {LOSS_WEIGHTINGS}, got {self.loss_weighting!r}",
        )
        need(self.parallel in ("ddp", "fsdp"), f"parallel must be 'ddp' or 'fsdp', got {self.parallel!r}")
        for name in ("seq_len", "batch_size", "grad_accum", "steps", "log_every", "keep_last"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
        for name in ("warmup_steps", "decay_steps", "eval_every", "recall_every", "save_every"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 0, f"{name} must be an integer >= 0, got {value!r}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(0.0 <= self.min_lr_ratio <= 1.0, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        need(self.grad_clip >= 0, f"grad_clip must be >= 0, got {self.grad_clip}")
        need(
            self.index_topk is None or self.index_topk >= 1, f"index_topk must be >= 1, got {self.index_topk}"
        )
        need(isinstance(self.model_overrides, dict), "model_overrides must be a JSON object")
        need(self.data.task_loss in TASK_LOSS, f"data.task_loss must be one of {TASK_LOSS}")
        need(self.data.induction_rows >= 0, "data.induction_rows must be >= 0")
        need(
            isinstance(self.data.kv_queries, int) and 1 <= self.data.kv_queries <= self.data.n_pairs,
            f"data.kv_queries must be an integer in [1, data.n_pairs={self.data.n_pairs}], "
            f"got {self.data.kv_queries!r}",
        )
        need(self.data.task_samples >= 0 and self.data.eval_samples >= 0, "sample counts must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return _from_dict(cls, data, "training config")

    def to_json(self, path: str | Path) -> None:
        from dsv32.config import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(_read_json(Path(path)))


def _from_dict(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; expected some of {sorted(names)}")
    return cls(**data)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def stage_dict(data: dict[str, Any], stage: str) -> dict[str, Any]:
    """The flat config of `stage` from a flat or recipe-style (`common` + `stages`) object."""
    if "stages" not in data:
        return {**data, "stage": stage}
    stages = data["stages"]
    if stage not in stages:
        raise ValueError(f"recipe config has no stage {stage!r}; it has {sorted(stages)}")
    merged = merge(data.get("common", {}), stages[stage])
    return {**merged, "stage": stage}


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: values of `top` win; nested dicts are merged key by key."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "model_overrides":
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], value parsed as JSON, or the raw string)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    if not key:
        raise ValueError(f"override {text!r} has an empty key")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = json.loads(json.dumps(data))
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {text!r}: {part!r} is not an object")
        node[path[-1]] = value
    return out


def load_stage_config(path: str | Path | None, stage: str, overrides: list[str] | None = None) -> TrainConfig:
    """TrainConfig for `stage` from an optional config file plus `key=value` overrides."""
    data = stage_dict(_read_json(Path(path)), stage) if path else {"stage": stage}
    return TrainConfig.from_dict(apply_overrides(data, overrides or []))
