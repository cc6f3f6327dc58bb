"""pass@1 on held-out tasks: greedy decoding (top-k = 1), one output per task, graded by the same
verifiers as the RL rewards (a reasoning task's exact answer; a tool episode's grader).

Every task is one rollout job; with `backend="engine"` (default) all of them decode as one batch in
`dsv32.engine` (multi-turn episodes resume with their tool results in the same batch); "reference"
runs them one task at a time on the KV-cache-free `dsv32.rl.sampler`. Greedy decoding makes the two
give the same outputs (up to float ties between the two largest logits)."""

from __future__ import annotations

import torch

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
) -> dict[str, float]:
    """{"reasoning": pass@1, "calc": pass@1, "calc/L{level}": ..., "length/...": mean sampled tokens}."""
    params = SamplingParams(top_k=1, max_new_tokens=max_new_tokens)
    reward = RewardConfig(length_penalty=False)
    gen = torch.Generator().manual_seed(0)
    groups = [(reasoning_jobs(tokenizer, task, 1, reward, thinking), gen) for task in reasoning]
    for task in calc:
        jobs = episode_jobs(tokenizer, lambda t=task: CalcEpisode(t), task.expression, "calc", 1, reward,
                            thinking, max_turns)  # fmt: skip
        groups.append((jobs, gen))
    trajs = run_groups(model, groups, params, attention, backend)
    r_trajs, c_trajs = trajs[: len(reasoning)], trajs[len(reasoning) :]
    out: dict[str, float] = {}
    if reasoning:
        out["reasoning"] = sum(t.reward.outcome for t in r_trajs) / len(r_trajs)
        out["length/reasoning"] = sum(t.n_sampled for t in r_trajs) / len(r_trajs)
    if calc:
        by_level: dict[int, list[float]] = {}
        for task, tr in zip(calc, c_trajs):
            by_level.setdefault(task.level, []).append(tr.reward.outcome)
        scores = [s for v in by_level.values() for s in v]
        out["calc"] = sum(scores) / len(scores)
        out.update({f"calc/L{lv}": sum(v) / len(v) for lv, v in sorted(by_level.items())})
        out["length/calc"] = sum(t.n_sampled for t in c_trajs) / len(c_trajs)
    return out
