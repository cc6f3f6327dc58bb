"""SFT: loss on assistant tokens only; cold-start mix proportions; presets and ablation switches."""

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
