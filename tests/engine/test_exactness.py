"""The engine against the model's full teacher-forced forward (the reference path)."""

import pytest
import torch

from dsv32.engine.cache import CacheSpec
from dsv32.engine.sampling import SamplingParams
from dsv32.engine.scheduler import Engine

from .support import random_prompts

GREEDY = SamplingParams(max_tokens=14, temperature=0, ignore_eos=True)


def _reference_logits(model, prompt, completion, attention):
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        return model(ids, attention=attention).logits[0, len(prompt) - 1 : -1]


@pytest.mark.parametrize("attention", ["dense", "sparse"])
def test_greedy_decode_is_argmax_of_full_forward(tiny_model, attention):
    config = tiny_model.config
    # Prompts longer than a prefill chunk (7) and, with the completion, than index_topk (16).
    prompts = random_prompts(config, [9, 20], seed=1)
    engine = Engine(tiny_model, max_batch=2, page_size=8, max_seq_len=64, cache_spec=CacheSpec.exact(),
                    attention=attention, prefill_chunk=7)  # fmt: skip
    for prompt, out in zip(prompts, engine.generate(prompts, GREEDY)):
        ref = _reference_logits(tiny_model, prompt, out.token_ids, attention)
        assert ref.argmax(-1).tolist() == out.token_ids  # every step
        ref_logp = torch.log_softmax(ref, -1).gather(-1, torch.tensor(out.token_ids)[:, None])[:, 0]
        assert torch.allclose(ref_logp, torch.tensor(out.record.logprobs), atol=1e-5)
    if attention == "sparse":  # the comparison is about sparse attention: it differs from dense here
        ids = torch.tensor([prompts[1] + out.token_ids])
        with torch.no_grad():
            gap = (tiny_model(ids, attention="sparse").logits - tiny_model(ids).logits).abs().max()
        assert gap > 1e-3


@pytest.mark.parametrize("attention", ["dense", "sparse"])
def test_compact_cache_is_close_to_the_fp32_forward(tiny_model, attention):
    config = tiny_model.config
    prompt = random_prompts(config, [30], seed=2)[0]
    engine = Engine(tiny_model, max_batch=1, page_size=8, max_seq_len=64, attention=attention)
    assert engine.cache.spec == CacheSpec.compact()
    handle = engine.submit(prompt, SamplingParams(max_tokens=6, temperature=0, ignore_eos=True))
    out = handle.result()
    ref = _reference_logits(tiny_model, prompt, out.token_ids, attention)
    ref_logp = torch.log_softmax(ref, -1).gather(-1, torch.tensor(out.token_ids)[:, None])[:, 0]
    # bf16 latents and FP8 indexer keys: log-probabilities within a few hundredths of fp32.
    assert (ref_logp - torch.tensor(out.record.logprobs)).abs().max() < 0.05


@pytest.mark.parametrize("attention", ["dense", "sparse"])
def test_prefills_batched_in_one_forward_equal_the_full_forward(tiny_model, attention):
    # Three 12-token prompts and one of 5 share a 64-token prefill budget: the three run as one forward.
    prompts = random_prompts(tiny_model.config, [12, 12, 5, 12], seed=3)
    engine = Engine(tiny_model, max_batch=4, page_size=8, max_seq_len=64, cache_spec=CacheSpec.exact(),
                    attention=attention, prefill_chunk=64)  # fmt: skip
    groups, inner = [], engine.runner.prefill_batch
    engine.runner.prefill_batch = lambda ids, *a, **k: groups.append(len(ids)) or inner(ids, *a, **k)
    outs = engine.generate(prompts, GREEDY)
    assert sorted(groups[:2]) == [1, 3]
    for prompt, out in zip(prompts, outs):
        ref = _reference_logits(tiny_model, prompt, out.token_ids, attention)
        assert ref.argmax(-1).tolist() == out.token_ids
        ref_logp = torch.log_softmax(ref, -1).gather(-1, torch.tensor(out.token_ids)[:, None])[:, 0]
        assert torch.allclose(ref_logp, torch.tensor(out.record.logprobs), atol=1e-5)


@pytest.mark.parametrize("attention", ["dense", "sparse"])
def test_bf16_weights_decode_follows_the_bf16_full_forward(tiny_model, attention, tmp_path):
    # bf16 weights as `load_model(dtype=bfloat16)` gives them (gate, routing bias and indexer head
    # weights stay fp32): the engine's step differs from the full forward only in bf16 rounding.
    from dsv32.checkpoint import load_model, save_checkpoint

    directory = save_checkpoint(tiny_model, tiny_model.config, tmp_path / "ckpt")
    model = load_model(directory, dtype=torch.bfloat16)
    assert model.lm_head.weight.dtype == torch.bfloat16
    prompts = random_prompts(model.config, [9, 20], seed=4)
    engine = Engine(model, max_batch=2, page_size=8, max_seq_len=64, cache_spec=CacheSpec.exact(),
                    attention=attention, prefill_chunk=7)  # fmt: skip
    for prompt, out in zip(prompts, engine.generate(prompts, GREEDY)):
        ref = _reference_logits(model, prompt, out.token_ids, attention).float()
        ref_logp = torch.log_softmax(ref, -1)
        chosen = ref_logp.gather(-1, torch.tensor(out.token_ids)[:, None])[:, 0]
        assert (chosen - torch.tensor(out.record.logprobs)).abs().max() < 0.05  # seen: 0.002-0.03
        # every engine token is the reference's argmax or within bf16 noise of it (seen: <= 0.02)
        assert (ref_logp.max(-1).values - chosen).max() < 0.05
        assert (chosen == ref_logp.max(-1).values).float().mean() > 0.8
