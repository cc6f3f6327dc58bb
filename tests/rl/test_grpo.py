"""The GRPO loop: 2 gloo processes give the same update as 1 process; the step logs its metrics."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from dsv32.chat.encoding import encode_messages
from dsv32.rl.sft_data import cold_start_mix
from dsv32.tokenizer import train_bpe

WORKER = r"""
import json, os, sys, torch
torch.set_num_threads(1)
from dsv32.config import preset
from dsv32.model.transformer import build_model
from dsv32.rl.grpo import GRPORunConfig, run_grpo
from dsv32.rl.loss import GRPOConfig
from dsv32.tokenizer import Tokenizer
from dsv32.train.distributed import init_distributed, shutdown
import dsv32.rl.rewards as rewards
# An untrained model's outputs all score alike; a reward that varies with the sampled text gives the
# groups non-zero advantages, which is all this test needs (it compares world sizes, not learning).
rewards.language_consistency = lambda prompt, response: (sum(map(ord, response)) % 7) / 6
tok_path, out_path = sys.argv[1], sys.argv[2]
ctx = init_distributed("cpu")
model = build_model(preset("tiny"), seed=11)
# Adam's first steps move every parameter by about lr * sign(grad), so float noise in a near-zero
# gradient (summation order differs between 1 and 2 ranks) would flip whole updates; a large eps
# keeps the update proportional to the gradient, which is what the comparison is about.
cfg = GRPORunConfig(steps=2, eps=1e-2, prompts_per_step=4, group_size=2, max_new_tokens=6, micro_batch=3,
                    lr=1e-3,
                    task_mix={"reasoning": 1.0}, top_p=0.9, temperature=1.2, mu=2,
                    loss=GRPOConfig(beta=0.05, opsm_delta=0.05))
hist = run_grpo(model, Tokenizer.load(tok_path), cfg, ctx)
if ctx.is_main:
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, out_path + ".pt")
    json.dump(hist, open(out_path + ".json", "w"))
shutdown(ctx)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(world: int, tok_path: str, out: str) -> None:
    port = _free_port()
    procs = []
    for rank in range(world):
        env = {
            **os.environ,
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        if world == 1:
            env = {k: v for k, v in env.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, tok_path, out], env=env))
    for p in procs:
        assert p.wait(timeout=240) == 0


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    ex = cold_start_mix(60, 0)
    tok = train_bpe([encode_messages(e["messages"], e["thinking_mode"]) for e in ex], 512)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(path)
    return str(path)


def test_two_gloo_processes_equal_one(tokenizer_file, tmp_path):
    _launch(1, tokenizer_file, str(tmp_path / "one"))
    _launch(2, tokenizer_file, str(tmp_path / "two"))
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    for name in one:
        diff = (one[name].float() - two[name].float()).abs().max().item()
        assert diff < 1e-5, (name, diff)
    h1 = json.loads((tmp_path / "one.json").read_text())
    h2 = json.loads((tmp_path / "two.json").read_text())
    assert len(h1) == len(h2) == 2 and h1[0]["grad_norm"] > 0
    assert {k for k in h1[0] if k.startswith("outcome/")} == {k for k in h2[0] if k.startswith("outcome/")}
    for a, b in zip(h1, h2):
        for key in (
            "reward/reasoning",
            "length/reasoning",
            "kl",
            "clip_fraction",
            "opsm_masked_fraction",
            "opsm_would_mask_fraction",
            "entropy",
            "abs_ratio_dev_before_update",
            *[key for key in a if key.startswith("outcome/reasoning/")],
        ):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    assert h1[0]["abs_ratio_dev_before_update"] < 1e-5  # on-policy with both fixes: r == 1
    assert h1[1]["kl"] > 0  # the policy has moved away from the reference
    assert h1[1]["abs_ratio_dev_before_update"] < 1e-5  # r == 1 again after the first step's updates


def test_outcome_is_reported_per_reasoning_kind():
    """Each reasoning kind's outcome is the mean over its groups' episodes (first segments only)."""
    from types import SimpleNamespace

    from dsv32.rl.grpo import _kind_means
    from dsv32.train.distributed import DistContext

    def traj(group, kind, outcome, segment=0):
        reward = SimpleNamespace(total=outcome, outcome=outcome)
        return SimpleNamespace(group=group, kind=kind, reward=reward, segment=segment, n_sampled=4)

    trajs = [traj(0, "reasoning", 1.0), traj(0, "reasoning", 0.0), traj(1, "reasoning", 1.0)]
    trajs += [traj(2, "reasoning", 0.0), traj(3, "calc", 1.0), traj(3, "calc", 1.0, segment=1)]
    means = _kind_means(trajs, DistContext(), {0: "add", 1: "sort", 2: "sort"})
    assert means["outcome/reasoning"] == 0.5
    assert (means["outcome/reasoning/add"], means["outcome/reasoning/sort"]) == (0.5, 0.5)
    assert "outcome/reasoning/count" not in means and means["outcome/calc"] == 1.0
