"""Training checkpoints: model, optimizer, schedule position, data position and RNG, atomically.

Layout of `RUN_DIR/checkpoints/step_000123/`:
- the model in the official layout (`dsv32.checkpoint.save_checkpoint`: config.json, safetensors,
  dsv32_meta.json with stage and step), so the directory also loads as a plain model checkpoint;
- `optimizer.safetensors` (every optimizer tensor, named `state/<parameter name>/<key>`, plus the
  torch RNG state as `rng/torch`) and `optimizer.json` (the parameter groups' hyper-parameters);
- `trainer_state.json` (optimizer steps taken, data-loader position) and `train_config.json`;
- `tokenizer.json`.
No pickle anywhere. A checkpoint is assembled in `.partial-step_...` and renamed into place, so
`step_*` directories are always complete; after each save only the newest `keep_last` remain.

State dicts go through `torch.distributed.checkpoint.state_dict` with full (unsharded) tensors, so
the same files serve a single process, DDP and FSDP2 (each rank loads the full tensors and keeps its
shard). Only rank 0 writes.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from dsv32.checkpoint import read_state_dict, save_checkpoint
from dsv32.config import ModelConfig, atomic_write_text

log = logging.getLogger(__name__)

STEP_RE = re.compile(r"^step_(\d{6,})$")
TRAINER_STATE = "trainer_state.json"
OPTIM_TENSORS = "optimizer.safetensors"
OPTIM_GROUPS = "optimizer.json"
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete training checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_RE.match(p.name))]
    return [p for _, p in sorted(found) if (p / TRAINER_STATE).is_file()]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a run directory (its latest) or a checkpoint directory itself."""
    path = Path(path)
    if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise FileNotFoundError(f"{path} is neither a model checkpoint nor a run directory with checkpoints")
    return latest


def _optim_to_files(optim_sd: dict) -> tuple[dict[str, torch.Tensor], list[dict]]:
    tensors = {}
    for name, entries in optim_sd["state"].items():
        for key, value in entries.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"state/{name}/{key}"] = tensor.detach().cpu().contiguous()
    groups = []
    for group in optim_sd["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()})
    return tensors, groups


def save_training_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    config: ModelConfig,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    train_config: dict[str, Any],
    tokenizer_path: Path | None,
    meta: dict[str, Any],
    keep_last: int,
    rank: int = 0,
) -> Path | None:
    """Write checkpoint `step` (every rank must call: state gathering is collective)."""
    model_sd = get_model_state_dict(model, options=FULL)
    optim_sd = get_optimizer_state_dict(model, optimizer, options=FULL)
    if rank != 0:
        return None
    root = Path(run_dir) / "checkpoints"
    final = root / f"step_{step:06d}"
    partial = root / f".partial-{final.name}"
    shutil.rmtree(partial, ignore_errors=True)
    save_checkpoint(model_sd, config, partial, meta={**meta, "step": step})
    tensors, groups = _optim_to_files(optim_sd)
    tensors["rng/torch"] = torch.get_rng_state()
    save_file(tensors, str(partial / OPTIM_TENSORS))
    atomic_write_text(partial / OPTIM_GROUPS, json.dumps(groups, indent=1) + "\n")
    atomic_write_text(partial / "train_config.json", json.dumps(train_config, indent=2) + "\n")
    atomic_write_text(partial / TRAINER_STATE, json.dumps({**trainer_state, "step": step}, indent=2) + "\n")
    if tokenizer_path is not None:
        shutil.copyfile(tokenizer_path, partial / "tokenizer.json")
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)
    for old in checkpoint_dirs(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("saved checkpoint %s", final)
    return final


def load_model_weights(model: torch.nn.Module, directory: Path, config: ModelConfig) -> None:
    """Copy a checkpoint's weights (and expert-bias buffers) into an existing, possibly wrapped model."""
    state = read_state_dict(directory, config)
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=True))


def load_training_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore optimizer and RNG in place; returns the trainer state (step, loader position).

    The model's weights are loaded separately by the caller, before DDP/FSDP wrapping, by the same
    `load_model_weights` call as `--init-from`; the optimizer state goes through
    `set_optimizer_state_dict`, which shards it to match the wrapped model."""
    state_path = directory / TRAINER_STATE
    if not state_path.is_file():
        raise FileNotFoundError(f"{directory} has no {TRAINER_STATE}: not a training checkpoint")
    trainer_state = json.loads(state_path.read_text())
    groups = json.loads((directory / OPTIM_GROUPS).read_text())
    state: dict[str, dict[str, torch.Tensor]] = {}
    rng = None
    with safe_open(str(directory / OPTIM_TENSORS), framework="pt") as f:
        for key in f.keys():
            if key == "rng/torch":
                rng = f.get_tensor(key)
                continue
            _, name, entry = key.split("/")
            state.setdefault(name, {})[entry] = f.get_tensor(key).clone()
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    current = [n for g in optimizer.param_groups for n in g.get("param_names", [])]
    saved = [n for g in groups for n in g["params"]]
    if sorted(current) != sorted(saved):
        raise ValueError(f"optimizer in {directory} was built for other parameters than this stage's")
    # The parameter sets match (checked above); a parameter may still have no state because it never
    # had a gradient (e.g. the indexer under GRPO's LM-only loss), so missing state is not an error.
    set_optimizer_state_dict(
        model,
        optimizer,
        {"state": state, "param_groups": groups},
        options=StateDictOptions(full_state_dict=True, strict=False),
    )
    if rng is not None:
        torch.set_rng_state(rng)
    return trainer_state
