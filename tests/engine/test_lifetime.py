"""Request lifetime: a finished request leaves no state in the engine; records only when asked."""

import gc
import weakref

import pytest

from dsv32.engine.cache import CacheSpec
from dsv32.engine.sampling import SamplingParams
from dsv32.engine.scheduler import Engine

from .support import random_prompts

GREEDY = SamplingParams(max_tokens=5, temperature=0, ignore_eos=True)
SAMPLED = SamplingParams(max_tokens=5, temperature=0.9, top_k=30, seed=4, ignore_eos=True)


def _engine(model, **kw):
    return Engine(model, max_batch=3, page_size=8, max_seq_len=64, prefill_chunk=8,
                  cache_spec=CacheSpec.exact(), **kw)  # fmt: skip


def test_server_style_requests_leave_no_state(tiny_model):
    engine = _engine(tiny_model, records=False)
    prompts = random_prompts(tiny_model.config, [4, 9, 6, 11, 5, 7, 8, 3], seed=20)
    engine.start()
    try:
        handles = [engine.submit(p, SAMPLED if i % 2 else GREEDY) for i, p in enumerate(prompts)]
        watched = [weakref.ref(h._req) for h in handles]
        handles[1].cancel()  # cancelled (maybe before it ran)
        stream = handles[2].stream(timeout=60)
        next(stream)  # a consumer that goes away after one event (the request still runs to its end)
        stream.close()
        outs = [h.result() for h in handles[3:]] + [handles[0].result()]
        for h in handles[1:3]:
            h._req.segment_done.wait(60)
    finally:
        engine.stop()
    assert engine.request_ids() == [] and not engine.has_work()
    assert engine.cache.free_pages == engine.cache.n_pages
    assert not any(h.request_id in engine.cache for h in handles)
    # Server-style records: tokens and log-probabilities only.
    for out in outs:
        assert len(out.token_ids) == 5 and len(out.record.logprobs) == 5
        assert out.record.routing is None and all(k is None for k in out.record.kept_ids)
        with pytest.raises(ValueError, match="detailed record"):
            out.record.training_arrays()
    # Once the caller drops its handles and completions, nothing keeps a request alive.
    del handles, outs, stream, h, out
    gc.collect()
    assert all(ref() is None for ref in watched)


def test_records_off_gives_the_same_tokens(tiny_model):
    prompts = random_prompts(tiny_model.config, [6, 20], seed=21)
    full = _engine(tiny_model).generate(prompts, [GREEDY, SAMPLED])
    light = _engine(tiny_model, records=False).generate(prompts, [GREEDY, SAMPLED])
    for a, b in zip(full, light):
        assert a.token_ids == b.token_ids and a.record.logprobs == b.record.logprobs
        assert a.record.routing is not None and b.record.routing is None


def test_rl_style_keep_open_records_survive_and_close_releases(tiny_model):
    engine = _engine(tiny_model, records=False)  # a server default; this request asks for records
    prompt, tool = random_prompts(tiny_model.config, [7, 3], seed=22)
    handle = engine.submit(prompt, SAMPLED, keep_open=True, record=True)
    handle.result()
    assert engine.request_ids() == [handle.request_id]  # paused: held, with its cache
    handle.extend(tool, SAMPLED)
    handle.result()
    handle.close()
    assert engine.request_ids() == [] and engine.cache.free_pages == engine.cache.n_pages
    rec = handle.record
    assert rec.detailed and rec.routing.shape[0] == len(rec.all_ids) - 1
    arrays = rec.training_arrays()
    assert int(arrays["action_mask"].sum()) == 10
    assert all(k is not None for k, s in zip(rec.kept_ids, rec.sampled) if s)
