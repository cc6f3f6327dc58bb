import json

import pytest
import torch

from dsv32.engine.cache import CacheSpec
from dsv32.engine.records import SequenceRecord, recompute_logprobs
from dsv32.engine.sampling import SamplingParams
from dsv32.engine.scheduler import Engine
from dsv32.rl.logprobs import dense_keep_mask, token_logprobs

from .support import random_prompts

PARAMS = SamplingParams(max_tokens=8, temperature=0.8, top_p=0.85, top_k=40, seed=3, ignore_eos=True)


def _rollout(model, attention, spec=None):
    prompt, tool = random_prompts(model.config, [14, 4], seed=12)
    engine = Engine(model, max_batch=2, page_size=8, max_seq_len=64, cache_spec=spec or CacheSpec.exact(),
                    attention=attention, prefill_chunk=8)  # fmt: skip
    handle = engine.submit(prompt, PARAMS, keep_open=True)
    handle.result()
    handle.extend(tool, PARAMS)  # a tool result in the middle: forced tokens, not actions
    handle.result()
    handle.close()
    return handle.record


@pytest.mark.parametrize("attention", ["dense", "sparse"])
def test_replay_reproduces_recorded_logprobs(tiny_model, attention):
    rec = _rollout(tiny_model, attention)
    assert sum(rec.sampled) == 16 and rec.sampled.count(False) == 4
    assert all(k is not None and 0 < len(k) <= 40 for k, s in zip(rec.kept_ids, rec.sampled) if s)
    sampled = torch.tensor(rec.sampled)
    got = recompute_logprobs(tiny_model, rec, attention)
    assert torch.allclose(got[sampled], torch.tensor(rec.logprobs)[sampled], atol=1e-5)


def test_routing_replay_matters_when_the_router_moves(tiny_model):
    rec = _rollout(tiny_model, "sparse")
    sampled = torch.tensor(rec.sampled)
    recorded = torch.tensor(rec.logprobs)[sampled]
    saved = {i: g.e_score_correction_bias.clone() for i, g in tiny_model.gates().items()}
    try:  # a load-balancing update moves expert choice without changing any weight
        with torch.no_grad():
            for g in tiny_model.gates().values():
                g.e_score_correction_bias.add_(torch.randn_like(g.e_score_correction_bias))
        replayed = recompute_logprobs(tiny_model, rec, "sparse", replay=True)[sampled]
        fresh = recompute_logprobs(tiny_model, rec, "sparse", replay=False)[sampled]
    finally:
        with torch.no_grad():
            for i, g in tiny_model.gates().items():
                g.e_score_correction_bias.copy_(saved[i])
    assert torch.allclose(replayed, recorded, atol=1e-5)
    assert (fresh - recorded).abs().max() > 1e-3


def test_training_arrays_feed_the_rl_logprobs(tiny_model):
    rec = _rollout(tiny_model, "dense")
    arrays = rec.training_arrays()
    ids, action = arrays["input_ids"][None], arrays["action_mask"]
    assert ids.shape[1] == len(rec.prompt_ids) + len(rec.token_ids)
    with torch.no_grad():
        logits = tiny_model(ids, replay_routing=arrays["replay_routing"]).logits
    keep = dense_keep_mask([arrays["kept_ids"]], tuple(ids.shape), tiny_model.config.vocab_size)
    logp, _ = token_logprobs(logits, ids, keep, temperature=PARAMS.temperature)
    assert torch.allclose(logp[0][action], arrays["old_logprobs"][action], atol=1e-5)


def test_compact_cache_records_are_close(tiny_model):
    rec = _rollout(tiny_model, "sparse", CacheSpec.compact())
    sampled = torch.tensor(rec.sampled)
    got = recompute_logprobs(tiny_model, rec, "sparse")
    assert (got[sampled] - torch.tensor(rec.logprobs)[sampled]).abs().max() < 0.05


def test_dict_round_trip_and_validation(tiny_model):
    rec = _rollout(tiny_model, "dense")
    back = SequenceRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert back.token_ids == rec.token_ids and back.sampled == rec.sampled and back.logprobs == rec.logprobs
    assert torch.equal(back.routing, rec.routing)
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(back.kept_ids, rec.kept_ids))
    bad = rec.to_dict()
    bad["logprobs"] = bad["logprobs"][:-1]
    with pytest.raises(ValueError, match="per-token lists"):
        SequenceRecord.from_dict(bad)
    with pytest.raises(ValueError, match="not a sequence record"):
        SequenceRecord.from_dict({"prompt_ids": [1]})
