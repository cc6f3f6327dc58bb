"""Rollouts on the tiny MoE model: records, r == 1 with both fixes, r != 1 without either, and
tool-result tokens outside the loss."""

import pytest
import torch

import dsv32.rl.rollout as rollout_mod
from dsv32.chat.encoding import encode_messages
from dsv32.config import preset
from dsv32.model.moe import update_expert_bias
from dsv32.model.transformer import build_model
from dsv32.rl.advantages import group_advantages
from dsv32.rl.logprobs import dense_keep_mask, token_logprobs
from dsv32.rl.loss import GRPOConfig, grpo_loss
from dsv32.rl.policy import make_batch, policy_logprobs
from dsv32.rl.rewards import RewardConfig
from dsv32.rl.rollout import rollout_episodes, rollout_reasoning
from dsv32.rl.sampler import Generation, SamplingParams, keep_set
from dsv32.rl.sft_data import cold_start_mix
from dsv32.rl.tasks import generate_tasks
from dsv32.rl.tool_tasks import CalcEpisode, generate_calc_tasks
from dsv32.tokenizer import train_bpe


@pytest.fixture(scope="module")
def setup():
    ex = cold_start_mix(60, 0)
    tok = train_bpe([encode_messages(e["messages"], e["thinking_mode"]) for e in ex], 512)
    model = build_model(preset("tiny"), seed=3)
    model.eval()
    return model, tok


REWARD = RewardConfig(length_budget=20, length_limit=40)


def test_keep_set_top_k_and_top_p():
    logits = torch.log(torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05]))
    assert keep_set(logits, SamplingParams(top_k=2)).tolist() == [True, True, False, False, False]
    assert keep_set(logits, SamplingParams(top_p=0.7)).tolist() == [True, True, False, False, False]
    assert keep_set(logits, SamplingParams(top_p=0.71)).tolist() == [True, True, True, False, False]
    assert keep_set(logits, SamplingParams(top_p=0.9, top_k=2)).tolist() == [True, True, False, False, False]
    assert keep_set(logits, SamplingParams()) is None


def ratio_stats(model, trajs, tok, keep_routing, keep_mask, temperature):
    adv = group_advantages([t.reward.total for t in trajs], [t.group for t in trajs])
    batch = make_batch(trajs, adv, 1, model.config.num_experts_per_tok)
    with torch.no_grad():
        logp, _, _ = policy_logprobs(model, batch, keep_routing, keep_mask, temperature)
    return ((logp - batch.old_logp).abs() * batch.action).max().item()


@pytest.mark.parametrize("keep_mask", [True, False])
def test_policy_logprobs_score_only_actions_like_a_full_forward(setup, keep_mask):
    model, tok = setup
    params = SamplingParams(temperature=0.8, top_p=0.9, top_k=40, max_new_tokens=10)
    trajs = rollout_reasoning(
        model, tok, generate_tasks(2, 1), 2, params, REWARD, torch.Generator().manual_seed(1)
    )
    batch = make_batch(trajs, torch.tensor([1.0, -1.0, 0.5, -0.5]), 1, model.config.num_experts_per_tok)
    action = batch.action.bool()
    logp, entropy, out = policy_logprobs(model, batch, True, keep_mask, 0.8, with_entropy=True)
    assert out.logits.shape == (int(action.sum()), model.config.vocab_size)  # the head ran on actions only
    # reference: every position's log-prob from the full-vocabulary head on every position
    full = model(batch.ids[:, :-1], replay_routing=batch.routing)
    keep = dense_keep_mask(batch.kept, tuple(batch.ids.shape), full.logits.shape[-1]) if keep_mask else None
    ref_logp, ref_entropy = token_logprobs(full.logits, batch.ids, keep, 0.8, with_entropy=True)
    assert torch.allclose(logp[action], ref_logp[action], atol=1e-5)
    assert torch.allclose(entropy[action], ref_entropy[action], atol=1e-5)
    assert (logp[~action] == 0).all() and (entropy[~action] == 0).all()
    # the same gradient flows into the weights
    model.zero_grad()
    (logp * batch.advantages[:, None]).sum().backward()
    grad = model.lm_head.weight.grad.clone()
    model.zero_grad()
    (ref_logp * action * batch.advantages[:, None]).sum().backward()
    assert torch.allclose(grad, model.lm_head.weight.grad, atol=1e-5)
    model.zero_grad()


def test_ratio_is_one_with_both_fixes_and_not_without(setup):
    model, tok = setup
    params = SamplingParams(temperature=0.8, top_p=0.9, top_k=40, max_new_tokens=12)
    gen = torch.Generator().manual_seed(0)
    trajs = rollout_reasoning(model, tok, generate_tasks(2, 0), 3, params, REWARD, gen)
    assert all(t.n_sampled > 0 for t in trajs)
    assert ratio_stats(model, trajs, tok, True, True, 0.8) < 1e-5  # r == 1 up to float error
    assert ratio_stats(model, trajs, tok, True, False, 0.8) > 1e-2  # no keep sampling mask: r < 1
    # The trainer's routing state drifts from the sampler's (the aux-loss-free bias update that
    # follows every step; theta itself unchanged): replayed routing is immune, fresh routing is not.
    trainer = build_model(preset("tiny"), seed=3)
    trainer.load_state_dict(model.state_dict())
    trainer.eval()
    for gate in trainer.gates().values():
        update_expert_bias(gate, torch.arange(8.0) ** 2, gamma=0.5)
    assert ratio_stats(trainer, trajs, tok, True, True, 0.8) < 1e-5
    assert ratio_stats(trainer, trajs, tok, False, True, 0.8) > 1e-2


def scripted_sampler(tok, texts):
    """Stands in for `sample`: emits the given turn texts as if sampled, with the model's real
    log-probs and routing records (one forward per turn), so the trajectory is exactly scorable."""
    turns = iter(texts)

    @torch.no_grad()
    def fake(model, prompts, params, gen, routing, attention="dense"):
        text = next(turns)
        out = []
        for prompt, rec in zip(prompts, routing):
            script = tok.encode(text)
            ids = torch.tensor([list(prompt) + script[:-1]])
            res = model(ids, attention=attention, return_routing=True)
            for layer, r in res.routing.items():
                rec.setdefault(layer, []).extend(r[0, len(rec.get(layer, [])) :].unbind(0))
            logp = torch.log_softmax(res.logits[0, len(prompt) - 1 :].float(), -1)
            g = Generation(
                script, [float(logp[i, t]) for i, t in enumerate(script)], [None] * len(script), True
            )
            out.append(g)
        return out

    return fake


def test_multi_turn_forced_tokens_have_no_gradient(setup, monkeypatch):
    model, tok = setup
    task = generate_calc_tasks(1, 0)[0]
    call = (
        f'use calculate.</think>\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="calculate">\n'
        f'<｜DSML｜parameter name="expression" string="true">{task.expression}</｜DSML｜parameter>\n'
        f"</｜DSML｜invoke>\n</｜DSML｜function_calls><｜end▁of▁sentence｜>"
    )
    answer = f"done.</think>{task.answer}<｜end▁of▁sentence｜>"
    monkeypatch.setattr(rollout_mod, "sample", scripted_sampler(tok, [call, answer]))
    gen = torch.Generator().manual_seed(1)
    (tr,) = rollout_episodes(
        model, tok, lambda: CalcEpisode(task), "calc0", "calc", 1, SamplingParams(), REWARD, gen, max_turns=3
    )
    assert tr.reward.outcome == 1.0 and tr.reward.well_formed and len(tr.completions) == 2
    # prompt, sampled call, forced tool result (+ the generation prompt after it), sampled answer
    text_of = lambda lo, hi: tok.decode(tr.ids[lo:hi])  # noqa: E731
    runs, start = [], 0
    for i in range(1, len(tr.action) + 1):
        if i == len(tr.action) or tr.action[i] != tr.action[start]:
            runs.append((tr.action[start], text_of(start, i)))
            start = i
    assert [a for a, _ in runs] == [0, 1, 0, 1]
    assert (
        runs[2][1]
        == f"\n\n<function_results>\n<result>{task.answer}</result>\n</function_results>\n\n<think>"
    )
    batch = make_batch([tr, tr], torch.tensor([1.0, -1.0]), 1, model.config.num_experts_per_tok)
    model.zero_grad()
    logp, _, _ = policy_logprobs(model, batch, True, True, 1.0)
    assert ((logp - batch.old_logp).abs() * batch.action).max() < 1e-5  # the records are exact
    logp.retain_grad()
    ref = batch.old_logp - 0.3 * batch.action
    out = grpo_loss(logp, batch.old_logp, batch.advantages + 0.5, batch.action, GRPOConfig(beta=0.1), ref)
    out.loss.backward()
    assert (logp.grad[~batch.action] == 0).all() and (logp.grad[batch.action] != 0).all()
