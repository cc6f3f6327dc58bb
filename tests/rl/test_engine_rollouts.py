"""Rollouts on the engine against the reference sampler: greedy decoding gives the same trajectories
(tokens, log-probs, kept sets, routing, forced tool text); sampled records replay to r == 1 under
keep routing + keep sampling mask and not without them; a group does not depend on its batch mates."""

import pytest
import torch

from dsv32.chat.encoding import encode_messages
from dsv32.config import preset
from dsv32.model.moe import update_expert_bias
from dsv32.model.transformer import build_model
from dsv32.rl.evaluate import pass_at_1
from dsv32.rl.grpo import GRPORunConfig
from dsv32.rl.policy import make_batch, policy_logprobs
from dsv32.rl.rewards import RewardConfig
from dsv32.rl.rollout import RolloutJob, episode_jobs, reasoning_jobs, run_groups
from dsv32.rl.sampler import SamplingParams
from dsv32.rl.sft_data import cold_start_mix
from dsv32.rl.tasks import generate_tasks
from dsv32.rl.tool_tasks import CalcEpisode, generate_calc_tasks
from dsv32.tokenizer import train_bpe

GREEDY = SamplingParams(top_k=1, max_new_tokens=6)
SAMPLED = SamplingParams(temperature=0.8, top_p=0.9, top_k=40, max_new_tokens=6)
REWARD = RewardConfig(length_budget=20, length_limit=40)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny matrices: thread start-up and contention with other processes cost more than they give
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model(preset("tiny"), seed=5).eval()
    with torch.no_grad():  # a non-trivial routing bias, so expert choice is not just the score order
        for gate in m.gates().values():
            gate.e_score_correction_bias.normal_(0, 0.05)
    return m


@pytest.fixture(scope="module")
def tok():
    ex = cold_start_mix(40, 0)
    return train_bpe([encode_messages(e["messages"], e["thinking_mode"]) for e in ex], 512)


class ScriptedTurns(RolloutJob):
    """`turns` sampled turns, each followed by the same forced ids (after the last one too, which then
    stay unprocessed at the end, as a final tool result would); no turn starts at max_tokens."""

    def __init__(self, prompt: list[int], forced: list[int], turns: int, max_tokens: int = 10_000):
        super().__init__()
        self.prompt_ids, self.forced, self.n_turns, self.max_tokens = prompt, forced, turns, max_tokens
        self.group, self.kind = "scripted", "scripted"

    def wants_turn(self, n_ids: int) -> bool:
        return self.turns < self.n_turns and n_ids < self.max_tokens

    def on_turn(self, tokens: list[int]) -> list[int]:
        self.turns += 1
        return list(self.forced)

    def finish(self, segments) -> None:
        (traj,) = segments
        traj.completions = [f"turn {i}" for i in range(self.turns)]


def scripted_groups(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(2, 512, (n,), generator=g).tolist() for n in (5, 9, 13)]
    forced = [torch.randint(2, 512, (n,), generator=g).tolist() for n in (3, 2, 4)]
    jobs = [
        ScriptedTurns(prompts[0], forced[0], 3),
        ScriptedTurns(prompts[1], forced[1], 3, max_tokens=len(prompts[1]) + 3),  # context limit: one turn
        ScriptedTurns(prompts[2], forced[2], 2),
    ]
    return [
        (jobs[:2], torch.Generator().manual_seed(seed + 1)),
        (jobs[2:], torch.Generator().manual_seed(seed + 2)),
    ]


def max_ratio_dev(model, trajs, keep_routing=True, keep_mask=True, temperature=1.0):
    batch = make_batch(trajs, torch.zeros(len(trajs)), 1, model.config.num_experts_per_tok)
    with torch.no_grad():
        logp, _, _ = policy_logprobs(model, batch, keep_routing, keep_mask, temperature)
    return ((logp - batch.old_logp).abs() * batch.action).max().item()


def test_greedy_multi_turn_matches_reference(model):
    ref = run_groups(model, scripted_groups(), GREEDY, backend="reference")
    eng = run_groups(model, scripted_groups(), GREEDY, backend="engine")
    for a, b in zip(ref, eng):
        assert a.ids == b.ids and a.action == b.action and a.completions == b.completions
        assert torch.allclose(torch.tensor(a.old_logp), torch.tensor(b.old_logp), atol=1e-5)
        assert [None if k is None else k.tolist() for k in a.kept] == [
            None if k is None else k.tolist() for k in b.kept
        ]
        assert sorted(a.routing) == sorted(b.routing) == model.config.moe_layers
        for layer in a.routing:
            n = len(b.routing[layer])
            assert n == len(a.routing[layer]) and torch.equal(
                torch.stack(a.routing[layer]), torch.stack(b.routing[layer])
            )
    # the turn structure: prompt, then (sampled turn, forced ids) per turn; the last forced ids
    # are appended unprocessed, so the routing covers everything before them
    full, limited, two = eng
    assert len(full.completions) == 3 and len(limited.completions) == 1 and len(two.completions) == 2
    for tr, forced in ((full, 3), (limited, 2), (two, 4)):
        assert tr.action[-forced:] == [0] * forced and tr.action[-forced - 1] == 1
        assert len(tr.routing[model.config.moe_layers[0]]) == len(tr.ids) - forced - 1


def test_sampled_records_replay_to_ratio_one(model):
    trajs = run_groups(model, scripted_groups(3), SAMPLED, backend="engine")
    assert all(t.n_sampled > 6 for t in trajs[::2])  # several turns were sampled
    assert max_ratio_dev(model, trajs, temperature=0.8) < 1e-5
    assert max_ratio_dev(model, trajs, keep_mask=False, temperature=0.8) > 1e-2
    # a router that drifted (bias update, theta unchanged): replayed routing is immune, fresh is not
    trainer = build_model(preset("tiny"), seed=5)
    trainer.load_state_dict(model.state_dict())
    trainer.eval()
    for gate in trainer.gates().values():
        update_expert_bias(gate, torch.arange(8.0) ** 2, gamma=0.5)
    assert max_ratio_dev(trainer, trajs, temperature=0.8) < 1e-5
    assert max_ratio_dev(trainer, trajs, keep_routing=False, temperature=0.8) > 1e-2


def test_group_does_not_depend_on_batch_mates(model):
    together = run_groups(model, scripted_groups(7), SAMPLED, backend="engine")
    alone = run_groups(model, scripted_groups(7)[1:], SAMPLED, backend="engine")
    assert together[2].ids == alone[0].ids
    assert torch.allclose(torch.tensor(together[2].old_logp), torch.tensor(alone[0].old_logp), atol=1e-5)


def test_reasoning_and_tool_episodes_greedy_match_reference(model, tok):
    task = generate_tasks(1, 3)[0]
    calc = generate_calc_tasks(1, 4)[0]

    def groups():
        gen = torch.Generator().manual_seed(0)
        return [
            (reasoning_jobs(tok, task, 2, REWARD), gen),
            (episode_jobs(tok, lambda: CalcEpisode(calc), "c", "calc", 1, REWARD, max_turns=2), gen),
        ]

    ref = run_groups(model, groups(), GREEDY, backend="reference")
    eng = run_groups(model, groups(), GREEDY, backend="engine")
    assert [t.ids for t in ref] == [t.ids for t in eng]
    assert [t.completions for t in ref] == [t.completions for t in eng]
    assert [t.reward.total for t in ref] == [t.reward.total for t in eng]
    assert [t.kind for t in eng] == [task.kind, task.kind, "calc"]
    tasks = generate_tasks(2, 5)
    assert pass_at_1(model, tok, tasks, [calc], 4, backend="engine") == pass_at_1(
        model, tok, tasks, [calc], 4, backend="reference"
    )


def test_unknown_backend_is_rejected(model):
    with pytest.raises(ValueError, match="rollout backend"):
        run_groups(model, scripted_groups(), GREEDY, backend="fast")
    with pytest.raises(ValueError, match="rollout_backend"):
        GRPORunConfig(rollout_backend="fast")


def test_grpo_rejects_a_non_positive_lr():
    with pytest.raises(ValueError, match="GRPO lr must be > 0, got 0.0"):
        GRPORunConfig(lr=0.0)
    assert GRPORunConfig(lr=5e-4).lr == 5e-4


def test_pass_at_1_reports_each_reasoning_kind(monkeypatch):
    """Per-kind pass@1 is the share of that kind's tasks whose one rollout succeeded."""
    from types import SimpleNamespace

    import dsv32.rl.evaluate as evaluate

    tasks = generate_tasks(8, 3)  # kinds round-robin: add, sort, count, equation, add, ...
    solved = {0, 2, 4, 6, 7}  # add twice, count twice, equation once

    def fake_run_groups(model, groups, params, attention, backend):
        return [
            SimpleNamespace(episode=i, reward=SimpleNamespace(outcome=float(i in solved)), n_sampled=3)
            for i in range(len(groups))
        ]

    monkeypatch.setattr(evaluate, "run_groups", fake_run_groups)
    monkeypatch.setattr(evaluate, "reasoning_jobs", lambda *a, **k: [])  # no tokenizer needed
    scores = pass_at_1(None, None, tasks, [])
    assert [t.kind for t in tasks[:4]] == ["add", "sort", "count", "equation"]
    assert scores["reasoning"] == 5 / 8
    assert (scores["reasoning/add"], scores["reasoning/sort"]) == (1.0, 0.0)
    assert (scores["reasoning/count"], scores["reasoning/equation"]) == (1.0, 0.5)


def test_grpo_command_passes_mu_to_the_config(capsys):
    from dsv32.cli import main

    # the config is built (and checked) before the model is loaded, so no checkpoint is needed
    assert main(["train", "grpo", "--init", "/nonexistent", "--out", "/nonexistent/out", "--mu", "0"]) == 2
    assert "GRPO mu must be an integer >= 1, got 0" in capsys.readouterr().err
