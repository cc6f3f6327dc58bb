"""SFT: loss on assistant tokens only; cold-start mix proportions; presets and ablation switches."""

import json

import pytest
import torch

from dsv32.chat.encoding import encode_messages
from dsv32.config import preset
from dsv32.model.transformer import build_model
from dsv32.rl.presets import ablation, grpo_preset
from dsv32.rl.sft import collate, sft_loss, tokenize_examples
from dsv32.rl.sft_data import cold_start_mix, read_jsonl, write_jsonl
from dsv32.tokenizer import train_bpe


def test_sft_loss_is_cross_entropy_on_assistant_tokens_only(tmp_path):
    ex = cold_start_mix(40, 1)
    assert {e["source"] for e in ex} == {"reasoning", "reasoning_chat", "agentic", "agentic_chat"}
    assert sum(e["source"] == "reasoning" for e in ex) == 18  # 0.45 of 40
    write_jsonl(tmp_path / "d.jsonl", ex)
    assert read_jsonl(tmp_path / "d.jsonl") == ex
    tok = train_bpe([encode_messages(e["messages"], e["thinking_mode"]) for e in ex], 512)
    rows = tokenize_examples(ex[:4], tok, 1024)
    ids, mask = collate(rows, 2)
    model = build_model(preset("tiny"), seed=0)
    loss, _ = sft_loss(model, ids, mask)
    full_logits = model(ids[:, :-1]).logits  # every position, then the assistant ones picked here
    logp = torch.log_softmax(full_logits.float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    m = mask[:, 1:]
    assert loss.item() == pytest.approx(-(logp[m]).mean().item(), rel=1e-5)
    # the trained text of a reasoning example is exactly reasoning</think>answer<EOS>
    r = next(i for i, e in enumerate(ex[:4]) if e["source"] == "reasoning")
    trained = tok.decode([t for t, k in zip(rows[r].ids, rows[r].mask) if k])
    msg = ex[r]["messages"][-1]
    assert trained == f"{msg['reasoning_content']}</think>{msg['content']}<｜end▁of▁sentence｜>"


def test_presets_and_ablations_switch_one_fix():
    base = grpo_preset("v3.2", steps=1)
    assert base.reward.length_penalty and not grpo_preset("speciale").reward.length_penalty
    assert all((base.loss.unbiased_kl, base.loss.opsm, base.loss.keep_routing, base.loss.keep_sampling_mask))
    assert not ablation(base, "no-unbiased-kl").loss.unbiased_kl
    no_opsm = ablation(base, "no-opsm")
    assert not no_opsm.loss.opsm and no_opsm.mu == 4
    no_mask = ablation(base, "no-keep-mask")
    assert not no_mask.loss.keep_sampling_mask and no_mask.top_p == 0.9
    assert not ablation(base, "no-keep-routing").loss.keep_routing
    with pytest.raises(ValueError, match="ablation"):
        ablation(base, "no-clip")


SFT_WORKER = r"""
import json, sys, torch
torch.set_num_threads(1)
from dsv32.config import preset
from dsv32.model.transformer import build_model
from dsv32.rl.sft import SFTConfig, run_sft
from dsv32.rl.sft_data import read_jsonl
from dsv32.tokenizer import Tokenizer
from dsv32.train.distributed import init_distributed, shutdown
tok_path, data_path, out = sys.argv[1:4]
ctx = init_distributed("cpu")
model = build_model(preset("tiny"), seed=2)
# a large Adam eps keeps updates proportional to the gradient (float-noise sign flips of near-zero
# gradients would otherwise differ between 1 and 2 ranks); bias updates on, to test the load reduction
cfg = SFTConfig(steps=3, batch_size=4, lr=3e-3, eps=1e-2, log_every=1, bias_update_gamma=0.01)
hist = run_sft(model, Tokenizer.load(tok_path), read_jsonl(data_path), cfg, ctx=ctx)
if ctx.is_main:
    torch.save(model.state_dict(), out + ".pt")
    json.dump(hist, open(out + ".json", "w"))
shutdown(ctx)
"""


def test_sft_in_two_processes_equals_one(tmp_path):
    import os
    import subprocess
    import sys

    ex = cold_start_mix(24, 3)
    write_jsonl(tmp_path / "d.jsonl", ex)
    tok = train_bpe([encode_messages(e["messages"], e["thinking_mode"]) for e in ex], 512)
    tok.save(tmp_path / "tok.json")
    worker = tmp_path / "worker.py"
    worker.write_text(SFT_WORKER)
    args = [str(worker), str(tmp_path / "tok.json"), str(tmp_path / "d.jsonl")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for world in (1, 2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world),
               *args, str(tmp_path / f"w{world}")]  # fmt: skip
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
    one, two = (json.loads((tmp_path / f"w{w}.json").read_text()) for w in (1, 2))
    assert [r["trained_tokens"] for r in one] == [r["trained_tokens"] for r in two]
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    s1, s2 = (torch.load(tmp_path / f"w{w}.pt") for w in (1, 2))
    for name in s1:
        torch.testing.assert_close(s2[name], s1[name], rtol=1e-4, atol=1e-5, msg=name)
