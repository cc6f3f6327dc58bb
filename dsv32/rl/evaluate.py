"""pass@1 on held-out tasks: greedy decoding (top-k = 1), one output per task, graded by the same
verifiers as the RL rewards (a reasoning task's exact answer; a tool episode's grader).

Every task is one rollout job; with `backend="engine"` (default) all of them decode as one batch in
`dsv32.engine` (multi-turn episodes resume with their tool results in the same batch); "reference"
runs them one task at a time on the KV-cache-free `dsv32.rl.sampler`. Greedy decoding makes the two
give the same outputs (up to float ties between the two largest logits).

`context` applies a context-management strategy to the tool episodes as in GRPO training
(`dsv32.rl.compaction`): an episode may then run as several sequences (segments); it is graded once,
and its length is the sampled tokens of all its segments."""

from __future__ import annotations

import torch

from dsv32.rl.compaction import ContextConfig
from dsv32.rl.env_tasks import EnvTask
from dsv32.rl.rewards import RewardConfig
from dsv32.rl.rollout import episode_jobs, reasoning_jobs, run_groups
from dsv32.rl.sampler import SamplingParams
from dsv32.rl.tasks import ReasoningTask, generate_tasks
from dsv32.rl.tool_tasks import CalcEpisode, CalcTask, generate_calc_tasks


def heldout_tasks(n_reasoning: int, n_calc: int, seed: int = 0) -> tuple[list[ReasoningTask], list[CalcTask]]:
    """The held-out reasoning tasks and calculator episodes the post-training recipe, its ablations
    and `dsv32 eval pass-at-1` all score (seeds seed + 100 and seed + 101), so their numbers compare."""
    reasoning = generate_tasks(n_reasoning, seed + 100, "heldout")
    return reasoning, generate_calc_tasks(n_calc, seed + 101, "heldout")


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
    context: ContextConfig | None = None,
) -> dict[str, float]:
    """{"reasoning": pass@1, "reasoning/{task kind}": ..., "calc": ..., "calc/L{level}": ..., "env": ...,
    "env/L{level}": ..., "length/{kind}": mean sampled tokens per task}, for the kinds given tasks;
    with `context`, also "segments/{kind}": mean sequences per tool episode."""
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
            jobs = episode_jobs(tokenizer, make, key, kind, 1, reward, thinking, max_turns, context=context)
            groups.append((jobs, gen))
    per_task: list[list] = [[] for _ in groups]  # the segments of each task's one sequence or episode
    for traj in run_groups(model, groups, params, attention, backend):
        per_task[traj.episode].append(traj)
    outcomes = [segs[0].reward.outcome for segs in per_task]
    lengths = [sum(t.n_sampled for t in segs) for segs in per_task]
    out: dict[str, float] = {}
    if reasoning:
        out["reasoning"] = sum(outcomes[: len(reasoning)]) / len(reasoning)
        out["length/reasoning"] = sum(lengths[: len(reasoning)]) / len(reasoning)
        by_kind: dict[str, list[float]] = {}
        for task, outcome in zip(reasoning, outcomes):
            by_kind.setdefault(task.kind, []).append(outcome)
        out.update({f"reasoning/{k}": sum(v) / len(v) for k, v in sorted(by_kind.items())})
    at = len(reasoning)
    for kind, tasks in episodes.items():
        span, at = slice(at, at + len(tasks)), at + len(tasks)
        if not tasks:
            continue
        by_level: dict[int, list[float]] = {}
        for (level, _, _), outcome in zip(tasks, outcomes[span]):
            by_level.setdefault(level, []).append(outcome)
        out[kind] = sum(outcomes[span]) / len(tasks)
        out.update({f"{kind}/L{lv}": sum(v) / len(v) for lv, v in sorted(by_level.items())})
        out[f"length/{kind}"] = sum(lengths[span]) / len(tasks)
        if context is not None:
            out[f"segments/{kind}"] = sum(len(segs) for segs in per_task[span]) / len(tasks)
    return out
