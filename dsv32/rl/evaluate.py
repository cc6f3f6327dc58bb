"""pass@1 on held-out tasks: greedy decoding (top-k = 1), one output per task, graded by the same
verifiers as the RL rewards (a reasoning task's exact answer; a tool episode's grader).

Every task is one rollout job; with `backend="engine"` (default) all of them decode as one batch in
`dsv32.engine` (multi-turn episodes resume with their tool results in the same batch); "reference"
runs them one task at a time on the KV-cache-free `dsv32.rl.sampler`. Greedy decoding makes the two
give the same outputs (up to float ties between the two largest logits)."""

from __future__ import annotations

import torch

from dsv32.rl.env_tasks import EnvTask
from dsv32.rl.rewards import RewardConfig
from dsv32.rl.rollout import episode_jobs, reasoning_jobs, run_groups
from dsv32.rl.sampler import SamplingParams
from dsv32.rl.tasks import ReasoningTask
from dsv32.rl.tool_tasks import CalcEpisode, CalcTask


@torch.no_grad()
def pass_at_1(
    model,
    tokenizer,
    reasoning: list[ReasoningTask],
    calc: list[CalcTask],
    max_new_tokens: int = 64,
    thinking: bool = True,
    max_turns: int = 3,
    attention: str = "dense",
    backend: str = "engine",
    env: list[EnvTask] = (),
) -> dict[str, float]:
    """{"reasoning": pass@1, "calc": ..., "calc/L{level}": ..., "env": ..., "env/L{level}": ...,
    "length/{kind}": mean sampled tokens}, for the kinds given tasks."""
    params = SamplingParams(top_k=1, max_new_tokens=max_new_tokens)
    reward = RewardConfig(length_penalty=False)
    gen = torch.Generator().manual_seed(0)
    groups = [(reasoning_jobs(tokenizer, task, 1, reward, thinking), gen) for task in reasoning]
    episodes = {
        "calc": [(t.level, lambda t=t: CalcEpisode(t), t.expression) for t in calc],
        "env": [(t.level, t.episode, t.task_id) for t in env],
    }
    for kind, tasks in episodes.items():
        for _, make, key in tasks:
            groups.append((episode_jobs(tokenizer, make, key, kind, 1, reward, thinking, max_turns), gen))
    trajs = run_groups(model, groups, params, attention, backend)
    out: dict[str, float] = {}
    if reasoning:
        r_trajs = trajs[: len(reasoning)]
        out["reasoning"] = sum(t.reward.outcome for t in r_trajs) / len(r_trajs)
        out["length/reasoning"] = sum(t.n_sampled for t in r_trajs) / len(r_trajs)
    at = len(reasoning)
    for kind, tasks in episodes.items():
        kind_trajs, at = trajs[at : at + len(tasks)], at + len(tasks)
        if not tasks:
            continue
        by_level: dict[int, list[float]] = {}
        for (level, _, _), tr in zip(tasks, kind_trajs):
            by_level.setdefault(level, []).append(tr.reward.outcome)
        out[kind] = sum(t.reward.outcome for t in kind_trajs) / len(kind_trajs)
        out.update({f"{kind}/L{lv}": sum(v) / len(v) for lv, v in sorted(by_level.items())})
        out[f"length/{kind}"] = sum(t.n_sampled for t in kind_trajs) / len(kind_trajs)
    return out
