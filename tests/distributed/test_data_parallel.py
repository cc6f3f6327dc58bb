"""Two gloo processes under torchrun give the same losses as one process with the same global batch.

Tolerance: relative 1e-5 on every step's LM loss, 1e-4 on the gradient norm and on the indexer KL
(a KL between nearly equal distributions is a small difference of logs, so it keeps fewer digits). The
global-token normalisation makes the objective identical; what remains is float summation order
(per-rank matmuls over half the batch, then an all-reduce of gradients).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dsv32.train.config import DataConfig, TrainConfig
from dsv32.train.runner import train_stage

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("dp_worker.py")


@pytest.fixture(scope="module")
def data_cfg(tmp_path_factory) -> DataConfig:
    cache = tmp_path_factory.mktemp("dist-cache")
    return DataConfig(
        tasks=["passkey"], max_files=120, vocab_size=512, text_rows=16, task_samples=8,
        eval_samples=2, val_rows=2, cache_dir=str(cache),
    )  # fmt: skip


def _torchrun(
    cfg: TrainConfig, tmp: Path, name: str, init_from: Path | None = None, stop_after: int | None = None
) -> dict:
    cfg_path, out = tmp / f"{name}.json", tmp / f"{name}-out.json"
    cfg.to_json(cfg_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "STOP_AFTER": str(stop_after or "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), str(cfg_path), str(tmp / name), str(out)]  # fmt: skip
    cmd += [str(init_from)] if init_from else []
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


def _compare(single: list[dict], double: list[dict], keys=("lm_loss",)) -> None:
    assert len(single) == len(double)
    for a, b in zip(single, double):
        assert a["target_tokens"] == b["target_tokens"]
        for key in keys:
            rel = 1e-5 if key == "lm_loss" else 1e-4
            assert b[key] == pytest.approx(a[key], rel=rel), (key, a["step"])
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one(parallel, data_cfg, tmp_path):
    common = dict(
        stage="pretrain", seq_len=128, steps=3, lr=3e-3, warmup_steps=0, data=data_cfg, parallel=parallel
    )
    single = train_stage(TrainConfig(batch_size=4, **common), tmp_path / "single", progress=False)
    double = _torchrun(TrainConfig(batch_size=2, **common), tmp_path, "double")
    _compare(single.metrics, double["metrics"])
    assert double["final_eval"]["val_loss"] == pytest.approx(single.final_eval["val_loss"], rel=1e-5)


@pytest.mark.parametrize("stage", ["dsa-warmup", "dsa-sparse"])
def test_two_process_dsa_stage_matches_one(stage, data_cfg, tmp_path):
    pre = train_stage(
        TrainConfig(stage="pretrain", seq_len=128, batch_size=4, steps=1, data=data_cfg),
        tmp_path / "pre",
        progress=False,
    ).checkpoint
    common = dict(stage=stage, seq_len=128, steps=2, lr=1e-3, warmup_steps=0, index_topk=16, data=data_cfg)
    single = train_stage(
        TrainConfig(batch_size=4, **common), tmp_path / "single", init_from=pre, progress=False
    )
    double = _torchrun(TrainConfig(batch_size=2, **common), tmp_path, "double", init_from=pre)
    _compare(single.metrics, double["metrics"], keys=("lm_loss", "indexer_kl"))


def test_fsdp_resume_continues_exactly(data_cfg, tmp_path):
    """Two FSDP2 processes stopped after step 2 and resumed match an uninterrupted 2-process run."""
    cfg = TrainConfig(
        stage="pretrain", seq_len=128, batch_size=2, steps=4, lr=3e-3, warmup_steps=1, save_every=2,
        data=data_cfg, parallel="fsdp",
    )  # fmt: skip
    full = _torchrun(cfg, tmp_path, "full")["metrics"]
    first = _torchrun(cfg, tmp_path, "cut", stop_after=2)["metrics"]
    second = _torchrun(cfg, tmp_path, "cut")["metrics"]
    assert [m["step"] for m in first + second] == [1, 2, 3, 4]
    assert [m["lm_loss"] for m in first + second] == [m["lm_loss"] for m in full]
    assert [m["grad_norm"] for m in first + second] == [m["grad_norm"] for m in full]
