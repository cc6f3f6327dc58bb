"""Context management inside training episodes: a compaction continues the episode as a new
segment (its prompt the encoded compacted messages, all context), segments share their episode's
reward and advantage, OPSM judges the whole episode, the engine and the reference agree, records
replay to r == 1, strategy "none" is the plain episode, and a GRPO step reports the compactions."""

import copy
import json
from argparse import Namespace

import pytest
import test_engine_rollouts as engine_rollouts
import torch
from test_engine_rollouts import GREEDY, REWARD, SAMPLED, max_ratio_dev
from test_rollout import scripted_sampler

import dsv32.rl.grpo as grpo_mod
import dsv32.rl.rollout as rollout_mod
from dsv32.agent.context import SUMMARY_PREFIX
from dsv32.chat.encoding import encode_messages
from dsv32.chat.parsing import ParsedMessage
from dsv32.config import preset
from dsv32.model.transformer import build_model
from dsv32.rl.advantages import episode_advantages, group_advantages
from dsv32.rl.compaction import ContextConfig, tool_log_summary
from dsv32.rl.evaluate import pass_at_1
from dsv32.rl.grpo import GRPORunConfig, episode_log_gaps, group_jobs, plan_step, run_grpo, task_pools
from dsv32.rl.loss import GRPOConfig, grpo_loss
from dsv32.rl.policy import make_batch, policy_logprobs
from dsv32.rl.rollout import episode_jobs, run_groups
from dsv32.rl.sampler import SamplingParams
from dsv32.rl.sft import pad_id_of
from dsv32.rl.tool_tasks import CalcEpisode, generate_calc_tasks

# the same tiny model, tokenizer and one-thread setting as the engine rollout tests
model, tok, one_thread = engine_rollouts.model, engine_rollouts.tok, engine_rollouts.one_thread


def call_text(expression: str) -> str:
    return (
        f'use calculate.</think>\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="calculate">\n'
        f'<｜DSML｜parameter name="expression" string="true">{expression}</｜DSML｜parameter>\n'
        f"</｜DSML｜invoke>\n</｜DSML｜function_calls><｜end▁of▁sentence｜>"
    )


def always_calls(monkeypatch, tool: str = "calculate", arguments: dict | None = None) -> None:
    """Every sampled turn of a tiny random model parses as a call of `tool` (the tokens stay the
    model's own), so episodes run their full turn budget and compaction is exercised on both backends."""
    arguments = {"expression": "6*7"} if arguments is None else arguments
    call = {"type": "function", "function": {"name": tool, "arguments": json.dumps(arguments)}}
    parsed = ParsedMessage("", "r", [call], saw_eos=True)
    monkeypatch.setattr(rollout_mod, "parse_completion", lambda *a, **k: parsed)


def calc_groups(tok, tasks, context, group_size=2, max_turns=3):
    out = []
    for n, task in enumerate(tasks):
        jobs = episode_jobs(tok, lambda t=task: CalcEpisode(t), f"c{n}", "calc", group_size, REWARD,
                            max_turns=max_turns, context=context)  # fmt: skip
        out.append((jobs, torch.Generator().manual_seed(n)))
    return out


def prompt_len(tok, task) -> int:
    (job,) = episode_jobs(tok, lambda: CalcEpisode(task), "c", "calc", 1, REWARD)
    return len(job.prompt_ids)


def scripted_episode(model, tok, monkeypatch, strategy: str, texts: list[str], task, budget=None):
    """One reference episode whose turns are `texts`; returns (segments, job)."""
    monkeypatch.setattr(rollout_mod, "sample", scripted_sampler(tok, texts))
    context = None if budget is None else ContextConfig(strategy, budget)
    (job,) = episode_jobs(tok, lambda: CalcEpisode(task), "c", "calc", 1, REWARD, max_turns=len(texts),
                          context=context)  # fmt: skip
    return run_groups(
        model, [([job], torch.Generator().manual_seed(0))], SamplingParams(), backend="reference"
    ), job


def round_end(traj, n: int) -> int:
    """Length of the sequence after the n-th tool result (prompt, call, result, call, result, ...)."""
    runs = [i for i in range(1, len(traj.action)) if traj.action[i] != traj.action[i - 1]]
    return runs[2 * n]


def test_compaction_continues_as_a_new_segment(model, tok, monkeypatch):
    task, other = generate_calc_tasks(2, 0)
    answer = f"done.</think>{task.answer}<｜end▁of▁sentence｜>"
    texts = [call_text(other.expression), call_text(task.expression), answer]
    (plain,), _ = scripted_episode(model, tok, monkeypatch, "none", texts, task)
    budget = round_end(plain, 1)  # the first round fits, the second passes the budget
    segs, job = scripted_episode(model, tok, monkeypatch, "discard-75", texts, task, budget)
    assert [s.segment for s in segs] == [0, 1] and {s.episode for s in segs} == {0}
    first, second = segs
    # the first segment: prompt, call, result, call, result (forced, left unprocessed)
    assert first.ids == plain.ids[: round_end(plain, 2)] and first.action == plain.action[: len(first.ids)]
    assert first.completions == texts[:2] and second.completions == texts[2:]
    # discard-75 of two rounds keeps the newest: system, user, the second call and its result
    (compacted,) = job.compacted
    assert [m["role"] for m in compacted] == ["system", "user", "assistant", "tool"]
    assert task.expression in compacted[2]["tool_calls"][0]["function"]["arguments"]
    assert compacted[3]["content"] == task.answer
    prompt = tok.encode(encode_messages(compacted, "thinking"))
    sampled = tok.encode(answer)
    assert second.ids == prompt + sampled
    assert second.action == [0] * len(prompt) + [1] * len(sampled)
    assert second.old_logp[: len(prompt)] == [0.0] * len(prompt)
    # one grade for the episode, carried by both segments
    assert first.reward is second.reward and first.reward.outcome == 1.0
    assert first.episode_tokens == second.episode_tokens == first.n_sampled + second.n_sampled
    # the records replay: a full forward over each segment gives its recorded log-probs
    assert max_ratio_dev(model, segs) < 1e-5


def test_summary_strategy_restarts_from_the_task_and_a_tool_log(model, tok, monkeypatch):
    task, other = generate_calc_tasks(2, 1)
    texts = [
        call_text(other.expression),
        call_text(task.expression),
        f"x.</think>{task.answer}<｜end▁of▁sentence｜>",
    ]
    (plain,), _ = scripted_episode(model, tok, monkeypatch, "none", texts, task)
    segs, job = scripted_episode(model, tok, monkeypatch, "summary", texts, task, round_end(plain, 1))
    (compacted,) = job.compacted
    assert [m["role"] for m in compacted] == ["system", "user", "user"]
    assert compacted[2]["content"] == (
        f"{SUMMARY_PREFIX}\n"
        f'- calculate({{"expression": "{other.expression}"}}) -> {other.answer}\n'
        f'- calculate({{"expression": "{task.expression}"}}) -> {task.answer}'
    )
    assert segs[1].ids[: len(segs[1].ids) - segs[1].n_sampled] == tok.encode(
        encode_messages(compacted, "thinking")
    )
    # a second summary carries the first one's lines over
    call = {"type": "function", "function": {"name": "calculate", "arguments": '{"expression": "1+1"}'}}
    later = compacted + [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "2"},
    ]
    assert tool_log_summary(later).splitlines()[-1] == '- calculate({"expression": "1+1"}) -> 2'
    assert len(tool_log_summary(later).splitlines()) == 3


def test_engine_and_reference_agree_on_segments(model, tok, monkeypatch):
    always_calls(monkeypatch)
    tasks = generate_calc_tasks(2, 2)
    budget = max(prompt_len(tok, t) for t in tasks) + 1  # every turn passes it
    for strategy in ("summary", "discard-all"):
        context = ContextConfig(strategy, budget)
        ref = run_groups(model, calc_groups(tok, tasks, context), GREEDY, backend="reference")
        groups = calc_groups(tok, tasks, context)
        eng = run_groups(model, groups, GREEDY, backend="engine")
        # 4 episodes of 3 turns: compactions after turns 1 and 2, none after the last
        assert [t.segment for t in eng] == [0, 1, 2] * 4
        assert [t.episode for t in eng] == [e for e in range(4) for _ in range(3)]
        for a, b in zip(ref, eng):
            assert a.ids == b.ids and a.action == b.action and a.completions == b.completions
            assert (a.episode, a.segment, a.episode_tokens) == (b.episode, b.segment, b.episode_tokens)
            assert torch.allclose(torch.tensor(a.old_logp), torch.tensor(b.old_logp), atol=1e-5)
            for layer in a.routing:
                assert torch.equal(torch.stack(a.routing[layer]), torch.stack(b.routing[layer]))
        # every later segment opens with the encoded compacted prompt, all context, then samples
        jobs = [job for group, _ in groups for job in group]
        for t in eng:
            if t.segment:
                prompt = tok.encode(encode_messages(jobs[t.episode].compacted[t.segment - 1], "thinking"))
                assert t.ids[: len(prompt)] == prompt and not any(t.action[: len(prompt)])
                assert t.action[len(prompt)] == 1


def test_sampled_segments_replay_to_ratio_one(model, tok, monkeypatch):
    always_calls(monkeypatch)
    tasks = generate_calc_tasks(2, 3)
    context = ContextConfig("summary", max(prompt_len(tok, t) for t in tasks) + 1)
    trajs = run_groups(model, calc_groups(tok, tasks, context), SAMPLED, backend="engine")
    assert max(t.segment for t in trajs) == 2
    assert max_ratio_dev(model, trajs, temperature=0.8) < 1e-5
    assert max_ratio_dev(model, trajs, keep_mask=False, temperature=0.8) > 1e-2
    ref = run_groups(model, calc_groups(tok, tasks, context), SAMPLED, backend="reference")
    assert max(t.segment for t in ref) == 2 and max_ratio_dev(model, ref, temperature=0.8) < 1e-5


def test_segments_share_reward_and_advantage_counted_per_episode():
    rewards = [1.0, 1.0, 1.0, 0.0, 0.5, 0.5, 2.0, 0.0]
    groups = ["a"] * 6 + ["b", "b"]
    episodes = [0, 0, 0, 1, 2, 2, 3, 4]  # episode 0 in three segments, 2 in two
    adv = episode_advantages(rewards, groups, episodes)
    by_hand = group_advantages([1.0, 0.0, 0.5, 2.0, 0.0], ["a", "a", "a", "b", "b"])
    assert torch.equal(adv, by_hand[[0, 0, 0, 1, 2, 2, 3, 4]])
    assert not torch.allclose(adv, group_advantages(rewards, groups))  # segments are not group members
    with pytest.raises(ValueError, match="episode 1"):
        episode_advantages([1.0, 0.0], ["a", "a"], [1, 1])
    with pytest.raises(ValueError, match="one entry per sequence"):
        episode_advantages([1.0], ["a"], [0, 1])


def test_segments_share_reward_and_advantage_in_a_rollout(model, tok, monkeypatch):
    always_calls(monkeypatch)
    tasks = generate_calc_tasks(2, 4)
    context = ContextConfig("discard-all", max(prompt_len(tok, t) for t in tasks) + 1)
    trajs = run_groups(model, calc_groups(tok, tasks, context), SAMPLED, backend="engine")
    adv = episode_advantages(
        [t.reward.total for t in trajs], [t.group for t in trajs], [t.episode for t in trajs]
    )
    firsts = [i for i, t in enumerate(trajs) if t.segment == 0]
    assert torch.equal(
        adv[firsts],
        group_advantages([trajs[i].reward.total for i in firsts], [trajs[i].group for i in firsts]),
    )
    for t, a in zip(trajs, adv):
        head = firsts[t.episode]
        assert t.reward is trajs[head].reward and a == adv[head]
        assert t.episode_tokens == sum(s.n_sampled for s in trajs if s.episode == t.episode)


def test_an_episode_weighs_the_same_in_one_or_two_sequences():
    g = torch.Generator().manual_seed(0)
    logp, old, ref = (torch.randn(1, 9, generator=g) * 0.3 - 1.0 for _ in range(3))
    action = torch.tensor([[0, 1, 1, 1, 0, 0, 1, 1, 1]], dtype=torch.bool)
    cfg = GRPOConfig(beta=0.05)
    whole = grpo_loss(logp, old, torch.tensor([0.7]), action, cfg, ref, normalizer=1.0)
    split_a, split_b = action.clone(), action.clone()
    split_a[0, 4:], split_b[0, :4] = False, False  # the same tokens as two segments
    two = lambda tokens: grpo_loss(  # noqa: E731
        logp.repeat(2, 1), old.repeat(2, 1), torch.tensor([0.7, 0.7]), torch.cat([split_a, split_b]), cfg,
        ref.repeat(2, 1), normalizer=1.0, episode_tokens_B=tokens,
    )  # fmt: skip
    assert torch.allclose(two(torch.tensor([6.0, 6.0])).loss, whole.loss, atol=1e-7)
    assert not torch.allclose(two(None).loss, whole.loss, atol=1e-3)  # per-segment means double the weight
    with pytest.raises(ValueError, match="episode_tokens"):
        two(torch.tensor([6.0]))


def test_strategy_none_is_the_plain_episode(model, tok):
    tasks = generate_calc_tasks(2, 5)
    budget = max(prompt_len(tok, t) for t in tasks)
    base = run_groups(model, calc_groups(tok, tasks, None), SAMPLED, backend="engine")
    for context in (ContextConfig("none", budget), ContextConfig("discard-75", 10**6)):
        other = run_groups(model, calc_groups(tok, tasks, context), SAMPLED, backend="engine")
        assert [t.ids for t in other] == [t.ids for t in base] and len(base) == 4
        assert [t.old_logp for t in other] == [t.old_logp for t in base]
        assert [t.reward.total for t in other] == [t.reward.total for t in base]
        assert all(t.segment == 0 and t.episode_tokens == t.n_sampled for t in other)
    # the loss with every episode in one sequence is the per-sequence mean, bit for bit
    batch = make_batch(base, torch.linspace(-1, 1, 4), 1, model.config.num_experts_per_tok)
    logp = batch.old_logp - 0.1 * batch.action
    cfg = GRPOConfig(beta=0.0)
    plain = grpo_loss(logp, batch.old_logp, batch.advantages, batch.action, cfg)
    tokens = grpo_loss(
        logp, batch.old_logp, batch.advantages, batch.action, cfg, None, None, batch.episode_tokens
    )
    assert torch.equal(plain.loss, tokens.loss)


def test_pass_at_1_grades_each_compacted_episode_once(model, tok, monkeypatch):
    always_calls(monkeypatch)
    tasks = generate_calc_tasks(3, 2)
    context = ContextConfig("discard-all", max(prompt_len(tok, t) for t in tasks) + 1)
    scores = pass_at_1(model, tok, [], tasks, max_new_tokens=8, max_turns=3, context=context)
    # the same greedy episodes, graded by hand: one outcome per episode, lengths summed over segments
    greedy = SamplingParams(top_k=1, max_new_tokens=8)
    segments = run_groups(model, calc_groups(tok, tasks, context, group_size=1), greedy)
    assert [t.segment for t in segments] == [0, 1, 2] * 3 and scores["segments/calc"] == 3.0
    episodes = [[t for t in segments if t.episode == e] for e in range(3)]
    assert scores["calc"] == sum(e[0].reward.outcome for e in episodes) / 3
    assert scores["length/calc"] == sum(t.n_sampled for t in segments) / 3
    # a budget never reached: the plain evaluation, plus one segment per episode
    wide = pass_at_1(
        model, tok, [], tasks, max_new_tokens=8, max_turns=3, context=ContextConfig("summary", 10**6)
    )
    plain = pass_at_1(model, tok, [], tasks, max_new_tokens=8, max_turns=3)
    assert wide.pop("segments/calc") == 1.0 and wide == plain
    assert plain["length/calc"] > 8  # more than one turn per episode


def test_bad_context_settings_are_rejected(tok):
    with pytest.raises(ValueError, match="unknown context strategy 'discard-50'"):
        ContextConfig("discard-50", 100)
    with pytest.raises(ValueError, match="parallel-fewest-step"):
        ContextConfig("parallel-fewest-step", 100)
    with pytest.raises(ValueError, match="context budget must be an integer >= 1"):
        ContextConfig("summary", 0)
    task = generate_calc_tasks(1, 0)[0]
    n = prompt_len(tok, task)
    with pytest.raises(ValueError, match=f"budget of {n - 1} tokens is below the episode's prompt of {n}"):
        episode_jobs(
            tok, lambda: CalcEpisode(task), "c", "calc", 2, REWARD, context=ContextConfig("summary", n - 1)
        )
    with pytest.raises(ValueError, match="unknown context strategy"):
        GRPORunConfig(context_strategy="drop")
    with pytest.raises(ValueError, match="context budget"):
        GRPORunConfig(context_strategy="discard-all")


def test_cli_context_arguments():
    from dsv32.rl.commands import _task_mix_args, register

    def parse(*extra):
        import argparse

        parser = argparse.ArgumentParser()
        register(parser)
        return parser.parse_args(["grpo", "--init", "I", "--out", "O", *extra])

    assert "context_strategy" not in _task_mix_args(parse())
    out = _task_mix_args(parse("--context-strategy", "discard-75", "--context-budget", "900"))
    assert out["context_strategy"] == "discard-75" and out["context_budget"] == 900
    with pytest.raises(SystemExit, match="--context-budget"):
        _task_mix_args(parse("--context-strategy", "summary"))
    with pytest.raises(SystemExit):
        parse("--context-strategy", "parallel-fewest-step", "--context-budget", "9")
    assert _task_mix_args(Namespace(max_turns=2, env_dir=None, env_levels="1", task_mix=None)) == {
        "max_turns": 2
    }


def test_grpo_step_reports_compactions(tok, monkeypatch):
    always_calls(monkeypatch)
    base = dict(
        steps=1, prompts_per_step=2, group_size=2, max_new_tokens=4, max_turns=3, task_mix={"calc": 1.0}
    )
    probe = GRPORunConfig(**base)
    plan = plan_step(probe, 0, task_pools(probe))
    jobs = [job for kind, task in plan for job in group_jobs(tok, probe, kind, task)]
    budget = max(len(job.prompt_ids) for job in jobs) + 1
    for job in jobs:
        job.close()
    cfg = GRPORunConfig(**base, context_strategy="discard-all", context_budget=budget)
    seen = []

    def spy(trajs, adv, *args):
        seen.append((trajs, adv))
        return make_batch(trajs, adv, *args)

    monkeypatch.setattr(grpo_mod, "make_batch", spy)
    record = run_grpo(build_model(preset("tiny"), seed=1), tok, cfg)[0]
    ((trajs, adv),) = seen
    firsts = [i for i, t in enumerate(trajs) if t.segment == 0]
    by_hand = group_advantages([trajs[i].reward.total for i in firsts], [trajs[i].group for i in firsts])
    assert torch.equal(adv, by_hand[[t.episode for t in trajs]])
    # 4 episodes of 3 turns, each compacted after its first and second turn
    assert record["compactions"] == 8 and record["segments"] == 12
    assert 0 < record["length/calc"] <= 3 * cfg.max_new_tokens and torch.isfinite(
        torch.tensor(record["grad_norm"])
    )
    plain = run_grpo(build_model(preset("tiny"), seed=1), tok, probe)[0]
    assert plain["compactions"] == 0 and plain["segments"] == 4


def test_opsm_judges_an_episode_as_a_whole(model, tok, monkeypatch):
    """Every row gets its episode's mean log(pi_old / pi_theta) over all its segments (by hand below),
    so OPSM keeps or masks an episode's segments together where per-row means would split them."""
    always_calls(monkeypatch)
    tasks = generate_calc_tasks(2, 4)
    context = ContextConfig("discard-all", max(prompt_len(tok, t) for t in tasks) + 1)
    trajs = run_groups(model, calc_groups(tok, tasks, context), SAMPLED, backend="engine")
    adv = -torch.ones(len(trajs))  # OPSM only masks negative advantages
    batch = make_batch(trajs, adv, pad_id_of(tok), model.config.num_experts_per_tok)
    moved = copy.deepcopy(model)  # theta != theta_old
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    cfg = GRPORunConfig(micro_batch=3)
    gaps = episode_log_gaps(moved, batch, cfg)
    lc = cfg.loss
    with torch.no_grad():
        logp = policy_logprobs(moved, batch, lc.keep_routing, lc.keep_sampling_mask, lc.temperature)[0]
    own = [(float(((batch.old_logp[i] - logp[i]) * batch.action[i]).sum()), float(batch.action[i].sum()))
           for i in range(len(batch))]  # fmt: skip
    rows_of: dict[int, list[int]] = {}
    for i, t in enumerate(trajs):
        rows_of.setdefault(t.episode, []).append(i)
    assert max(len(rows) for rows in rows_of.values()) == 3  # each episode in three segments
    for rows in rows_of.values():
        whole = sum(own[i][0] for i in rows) / sum(own[i][1] for i in rows)
        assert gaps[rows].tolist() == pytest.approx([whole] * len(rows), abs=1e-5)
    # A threshold between two segments' own means: per row they split, per episode they do not.
    rows = next(r for r in rows_of.values() if len({round(own[i][0] / own[i][1], 4) for i in r}) > 1)
    means = sorted(own[i][0] / own[i][1] for i in rows)
    lc = GRPOConfig(beta=0.0, opsm_delta=(means[0] + means[-1]) / 2)
    split = grpo_loss(logp, batch.old_logp, adv, batch.action, lc)
    whole = grpo_loss(logp, batch.old_logp, adv, batch.action, lc, opsm_gap_B=gaps)
    assert len(set(split.seq_mask[rows].tolist())) == 2 and len(set(whole.seq_mask[rows].tolist())) == 1
    for r in rows_of.values():
        assert len(set(whole.seq_mask[r].tolist())) == 1
    batch.episode = torch.arange(len(batch))  # one row per episode: the loss judges rows itself
    assert episode_log_gaps(moved, batch, cfg) is None
    with pytest.raises(ValueError, match="opsm_gap"):
        grpo_loss(logp, batch.old_logp, adv, batch.action, lc, opsm_gap_B=gaps[:2])
