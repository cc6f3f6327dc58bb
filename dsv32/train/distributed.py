"""Data parallelism applied after the model is built: DDP or FSDP2, launched with torchrun.

`init_distributed()` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); with WORLD_SIZE
absent or 1 it returns a single-process context and nothing is initialised. Backend: nccl when CUDA
is available, else gloo. `wrap_model` returns the module to call in the training step:
- world size 1: the model itself (no-op);
- "ddp": `DistributedDataParallel` (gradients all-reduced, averaged, during backward; buffers are
  not broadcast because every rank applies the same all-reduced MoE bias update);
- "fsdp": FSDP2 `fully_shard` on every layer's attention and MLP, then on the root (parameters
  sharded over ranks, gathered per module for compute; gradients reduce-scattered and averaged).
The trainer keeps a reference to the unwrapped model for metrics, gates and checkpoints.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistContext:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if world_size <= 1:
        return DistContext(device=torch.device(device or ("cuda" if use_cuda else "cpu")))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    log.info("rank %d of %d on %s", rank, world_size, dev)
    return DistContext(rank, world_size, local_rank, dev)


def wrap_model(model: nn.Module, ctx: DistContext, kind: str = "ddp") -> nn.Module:
    if not ctx.enabled:
        return model
    if kind == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
        # find_unused_parameters: frozen stages and unselected experts leave parameters without grad.
        return DistributedDataParallel(
            model, device_ids=ids, broadcast_buffers=False, find_unused_parameters=True
        )
    if kind == "fsdp":
        from torch.distributed.fsdp import fully_shard

        # The causal LM calls each block's attention and MLP modules directly (blocks have no
        # forward), so those are the units whose forward hooks gather and free their parameters.
        for block in model.model.layers:
            fully_shard(block.self_attn)
            fully_shard(block.mlp)
        fully_shard(model)
        return model
    raise ValueError(f"parallel kind must be 'ddp' or 'fsdp', got {kind!r}")


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum over ranks in place (no-op in a single process)."""
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        # Every rank reaches teardown before any closes its connections: a rank tearing down gloo
        # while another still uses the group can abort the process ("terminate called ...").
        dist.barrier()
        dist.destroy_process_group()
