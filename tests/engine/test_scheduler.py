import asyncio

import pytest
import torch

from dsv32.engine.cache import CacheSpec
from dsv32.engine.sampling import SamplingParams
from dsv32.engine.scheduler import Engine

from .support import random_prompts


class LetterTokenizer:
    """id i decodes to one letter: enough to test stop strings and text deltas."""

    vocab_size = 512

    def decode(self, ids):
        return "".join(chr(97 + i % 26) for i in ids)


def _engine(model, **kw):
    kw.setdefault("cache_spec", CacheSpec.exact())
    return Engine(model, max_batch=kw.pop("max_batch", 4), page_size=8, max_seq_len=64, prefill_chunk=8, **kw)


def test_batched_equals_one_at_a_time(tiny_model):
    prompts = random_prompts(tiny_model.config, [3, 17, 9, 12], seed=5)
    params = [
        SamplingParams(max_tokens=6, temperature=0, ignore_eos=True),
        SamplingParams(max_tokens=9, temperature=0.9, top_p=0.9, seed=1, ignore_eos=True),
        SamplingParams(max_tokens=4, temperature=1.2, top_k=20, seed=2, ignore_eos=True),
        SamplingParams(max_tokens=7, temperature=0, repetition_penalty=1.3, ignore_eos=True),
    ]
    engine = _engine(tiny_model, max_batch=3)  # 4 requests, 3 slots: the 4th joins when one leaves
    batched = engine.generate(prompts, params)
    for prompt, p, out in zip(prompts, params, batched):
        single = engine.generate([prompt], p)[0]
        assert single.token_ids == out.token_ids
        assert torch.allclose(
            torch.tensor(single.record.logprobs), torch.tensor(out.record.logprobs), atol=1e-5
        )
        assert len(out.token_ids) == p.max_tokens and out.finish_reason == "length"
    assert engine.cache.free_pages == engine.cache.n_pages


def test_seeded_sampling_is_reproducible_and_seeds_differ(tiny_model):
    prompt = random_prompts(tiny_model.config, [6], seed=6)[0]
    engine = _engine(tiny_model)

    def run(seed, others):
        params = SamplingParams(max_tokens=12, temperature=1.0, seed=seed, ignore_eos=True)
        extra = [SamplingParams(max_tokens=5, temperature=1.0, ignore_eos=True)] * others
        return engine.generate([prompt] + [prompt[:3]] * others, [params] + extra)[0].token_ids

    assert run(11, 0) == run(11, 2)  # same seed, different batch company
    assert run(11, 0) != run(12, 0)


def test_cancel_frees_pages_at_once_and_others_continue(tiny_model):
    prompts = random_prompts(tiny_model.config, [10, 14], seed=7)
    params = SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)
    engine = _engine(tiny_model)
    expected = engine.generate([prompts[0]], params)[0].token_ids
    keep, victim = engine.submit(prompts[0], params), engine.submit(prompts[1], params)
    for _ in range(4):
        engine.step()
    free_before = engine.cache.free_pages
    victim.cancel()
    assert engine.cache.free_pages == free_before + engine.cache.pages_for(14 + 20)
    assert victim.request_id not in engine.cache and keep.request_id in engine.cache
    events = list(victim.stream())
    assert events[-1].finish_reason == "cancelled"
    assert keep.result().token_ids == expected
    victim.cancel()  # cancelling twice is harmless


def test_stop_token_and_stop_string(tiny_model):
    prompt = random_prompts(tiny_model.config, [8], seed=8)[0]
    engine = _engine(tiny_model, tokenizer=LetterTokenizer())
    free = engine.generate([prompt], SamplingParams(max_tokens=10, temperature=0, ignore_eos=True))[0]
    stop_id = free.token_ids[3]
    first = free.token_ids.index(stop_id)
    out = engine.generate([prompt], SamplingParams(max_tokens=10, temperature=0, stop_token_ids=(stop_id,)))[
        0
    ]
    assert out.token_ids == free.token_ids[: first + 1] and out.finish_reason == "stop"
    text = LetterTokenizer().decode(free.token_ids)
    stop = text[4:6]
    out = engine.generate(
        [prompt], SamplingParams(max_tokens=10, temperature=0, ignore_eos=True, stop=(stop,))
    )[0]
    assert out.finish_reason == "stop" and out.text == text[: text.index(stop)]


def test_keep_open_forced_insertion_and_extend(tiny_model):
    config = tiny_model.config
    prompt, tool = random_prompts(config, [7, 5], seed=9)
    engine = _engine(tiny_model)
    handle = engine.submit(
        prompt, SamplingParams(max_tokens=4, temperature=0, ignore_eos=True), keep_open=True
    )
    first = handle.result()
    assert first.finish_reason == "length" and len(first.token_ids) == 4
    assert engine.cache.capacity(handle.request_id) > 0  # paused, the cache is kept
    handle.extend(tool, SamplingParams(max_tokens=3, temperature=0, ignore_eos=True))
    events = list(handle.stream())
    assert [e.token_id for e in events if e.forced] == tool
    handle.close()
    assert engine.cache.free_pages == engine.cache.n_pages
    rec = handle.record
    assert rec.sampled == [True] * 4 + [False] * 5 + [True] * 3
    # The whole thing equals a fresh greedy run on prompt + first segment + tool text.
    ref = engine.generate([prompt + first.token_ids + tool], SamplingParams(max_tokens=3, temperature=0,
                                                                           ignore_eos=True))[0]  # fmt: skip
    assert rec.token_ids[-3:] == ref.token_ids
    assert rec.routing.shape[0] == len(rec.all_ids) - 1


def test_force_mid_generation(tiny_model):
    prompt, tool = random_prompts(tiny_model.config, [6, 3], seed=10)
    engine = _engine(tiny_model)
    handle = engine.submit(prompt, SamplingParams(max_tokens=6, temperature=0, ignore_eos=True))
    while len(handle.record.token_ids) < 2:
        engine.step()
    handle.force(tool)
    out = handle.result()
    assert out.record.sampled == [True, True, False, False, False, True, True, True, True]
    assert out.token_ids[2:5] == tool


def test_background_thread_and_asyncio(tiny_model):
    prompts = random_prompts(tiny_model.config, [5, 9], seed=11)
    params = SamplingParams(max_tokens=5, temperature=0, ignore_eos=True)
    engine = _engine(tiny_model)
    expected = [o.token_ids for o in engine.generate(prompts, params)]
    engine.start()
    try:

        async def collect(prompt):
            handle = engine.submit(prompt, params)
            return [e.token_id async for e in handle.astream() if e.token_id is not None]

        async def main():
            return await asyncio.gather(*(collect(p) for p in prompts))

        assert asyncio.run(main()) == expected
        assert [t.token_id for t in engine.submit(prompts[0], params).stream(timeout=60)] == expected[0]
    finally:
        engine.stop()
    assert not engine.running


def test_bad_requests(tiny_model):
    engine = _engine(tiny_model)
    with pytest.raises(ValueError, match="does not fit the context of 64"):
        engine.submit([3] * 64)
    with pytest.raises(ValueError, match="at least one token"):
        engine.submit([])
    with pytest.raises(ValueError, match="stop strings need"):
        engine.submit([3], SamplingParams(stop=("x",)))
    with pytest.raises(ValueError, match=r"\[0, 512\)"):
        engine.submit([600])
    with pytest.raises(ValueError, match="unknown request"):
        engine.extend("nope", [1])
