"""Checkpoints in the official Hugging Face layout: config.json, safetensors shards, index json.

Tensor names are the official ones (`model.layers.{i}.self_attn.q_a_proj.weight`, ...), so a real
DeepSeek-V3.2 checkpoint directory loads here and a dsv32 checkpoint loads in `transformers`.

Loading:
- FP8 e4m3 weights stored with a `weight_scale_inv` tensor (one fp32 scale per 128 x 128 block)
  are dequantised: W[i, j] = W_fp8[i, j] * scale_inv[i // 128, j // 128].
- Tensors of the MTP layer(s) (layer index >= num_hidden_layers) are skipped with a log line:
  dsv32 does not implement multi-token prediction.
- With `tie_word_embeddings` the head is stored once, as the embedding (a stored `lm_head.weight`
  is ignored), and the loaded model shares one Parameter between the two.
- Missing, unexpected or mis-shaped tensors raise one `CheckpointError` listing all of them.
- The model is built on the meta device and loaded tensors are assigned into it, one shard at a
  time, so a checkpoint is never held in memory twice.

Saving writes everything into a fresh temporary directory and renames it into place, so a reader
sees either the old checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dsv32.config import ModelConfig, atomic_write_text
from dsv32.model.transformer import DeepseekV32ForCausalLM, build_model

log = logging.getLogger(__name__)

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
META_NAME = "dsv32_meta.json"
FP8_BLOCK = 128
TIED_HEAD, EMBEDDING = "lm_head.weight", "model.embed_tokens.weight"
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.")


class CheckpointError(ValueError):
    """A checkpoint directory that does not match what the config expects."""


def save_checkpoint(
    model: DeepseekV32ForCausalLM | dict[str, torch.Tensor],
    config: ModelConfig,
    directory: str | Path,
    max_shard_bytes: int = 2 * 1024**3,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write config.json, sharded safetensors and the index json; replaces `directory` atomically."""
    directory = Path(directory)
    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    state = {name: t.detach().contiguous().cpu() for name, t in state.items()}
    if config.tie_word_embeddings:  # one tensor on disk, as Hugging Face writes tied heads
        state.pop(TIED_HEAD, None)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(state, key=_tensor_order):
        nbytes = state[name].numel() * state[name].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = state[name]
        size += nbytes
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.staging-"))
    try:
        weight_map = {}
        for i, shard in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(staging / fname), metadata={"format": "pt"})
            weight_map.update({name: fname for name in shard})
        total = sum(t.numel() * t.element_size() for t in state.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (staging / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        config.to_json(staging / "config.json")
        if meta is not None:
            (staging / META_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        _replace_directory(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _replace_directory(new: Path, target: Path) -> None:
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)


def _tensor_order(name: str) -> tuple[int, str]:
    match = _LAYER_RE.match(name)
    return (int(match.group(1)) if match else (-1 if "embed" in name else 1 << 30), name)


def _shard_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {directory}")
    index = directory / INDEX_NAME
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CheckpointError(
                f"{index} is not a valid safetensors index (needs 'weight_map'): {err}"
            ) from err
        files = [directory / f for f in sorted(set(weight_map.values()))]
        missing = [str(f.name) for f in files if not f.exists()]
        if missing:
            raise CheckpointError(f"{index} names shard files that do not exist: {missing}")
        return files
    if (directory / SINGLE_NAME).exists():
        return [directory / SINGLE_NAME]
    raise CheckpointError(f"{directory} holds neither {INDEX_NAME} nor {SINGLE_NAME}")


def dequantize_fp8_blocks(
    weight: torch.Tensor, scale_inv: torch.Tensor, block: int = FP8_BLOCK
) -> torch.Tensor:
    """W[i, j] = W_fp8[i, j] * scale_inv[i // block, j // block] (edge blocks may be partial)."""
    rows, cols = weight.shape
    expected = (-(-rows // block), -(-cols // block))
    if tuple(scale_inv.shape) != expected:
        raise CheckpointError(
            f"weight_scale_inv shape {tuple(scale_inv.shape)} does not match weight {(rows, cols)} "
            f"with {block}x{block} blocks (expected {expected})"
        )
    scale = scale_inv.float().repeat_interleave(block, 0)[:rows].repeat_interleave(block, 1)[:, :cols]
    return weight.float() * scale


def read_state_dict(directory: str | Path, config: ModelConfig) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint, FP8 blocks dequantised to fp32, MTP tensors skipped."""
    directory = Path(directory)
    state: dict[str, torch.Tensor] = {}
    skipped_mtp = 0
    for path in _shard_files(directory):
        try:
            with safe_open(str(path), framework="pt") as f:
                for name in f.keys():
                    match = _LAYER_RE.match(name)
                    if match and int(match.group(1)) >= config.num_hidden_layers:
                        skipped_mtp += 1
                        continue
                    state[name] = f.get_tensor(name)
        except Exception as err:  # the reader raises its own error types for corrupt files
            raise CheckpointError(f"cannot read safetensors file {path}: {err}") from err
    if skipped_mtp:
        log.info("skipped %d MTP-layer tensors (multi-token prediction is not implemented)", skipped_mtp)
    for name in [n for n in state if n.endswith(".weight_scale_inv")]:
        weight_name = name[: -len("_scale_inv")]
        if weight_name not in state:
            raise CheckpointError(f"{name} has no matching {weight_name}")
        state[weight_name] = dequantize_fp8_blocks(state[weight_name], state.pop(name))
    if config.tie_word_embeddings and EMBEDDING in state:
        # A tied head is the embedding, whether or not the file also stores a copy of it.
        state[TIED_HEAD] = state[EMBEDDING]
    return state


def check_state_dict(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], where: str) -> None:
    """Raise one CheckpointError naming every missing, unexpected and mis-shaped tensor."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [
        f"{n}: checkpoint {tuple(state[n].shape)} vs model {tuple(expected[n].shape)}"
        for n in sorted(set(state) & set(expected))
        if tuple(state[n].shape) != tuple(expected[n].shape)
    ]
    problems = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if items:
            shown = "\n    ".join(items[:20]) + (
                f"\n    ... and {len(items) - 20} more" if len(items) > 20 else ""
            )
            problems.append(f"  {len(items)} {title} tensor(s):\n    {shown}")
    if problems:
        raise CheckpointError(f"checkpoint {where} does not match its config:\n" + "\n".join(problems))


def load_model(
    directory: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    config: ModelConfig | None = None,
) -> DeepseekV32ForCausalLM:
    """Build the model on the meta device and assign the checkpoint's tensors into it."""
    directory = Path(directory)
    config = config or ModelConfig.from_json(directory / "config.json")
    model = build_model(config, device="meta")
    expected = model.state_dict()
    state = read_state_dict(directory, config)
    check_state_dict(state, expected, str(directory))
    for name, tensor in state.items():
        keep_fp32 = (
            name.endswith("mlp.gate.weight") or "e_score_correction_bias" in name or "weights_proj" in name
        )
        target = torch.float32 if keep_fp32 else (dtype or expected[name].dtype)
        if not tensor.dtype.is_floating_point:
            target = tensor.dtype
        # A fresh, aligned copy (one tensor at a time): buffers handed out by the safetensors reader can
        # sit at offsets that send BLAS down different kernels, breaking bit-exact reproduction.
        state[name] = tensor.to(device=device, dtype=target, copy=True)
    model.load_state_dict(state, assign=True, strict=True)
    model.tie_weights()
    return model


def read_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / META_NAME
    return json.loads(path.read_text()) if path.exists() else {}


def write_meta(directory: str | Path, meta: dict[str, Any]) -> None:
    atomic_write_text(Path(directory) / META_NAME, json.dumps(meta, indent=2) + "\n")
