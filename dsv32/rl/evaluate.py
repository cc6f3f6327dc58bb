"""pass@1 on held-out tasks: greedy decoding (top-k = 1), one output per task, graded by the same
verifiers as the RL rewards (a reasoning task's exact answer; a tool episode's grader)."""

from __future__ import annotations

import torch

from dsv32.rl.rewards import RewardConfig
from dsv32.rl.rollout import rollout_episodes, rollout_reasoning
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
) -> dict[str, float]:
    """{"reasoning": pass@1, "calc": pass@1, "calc/L{level}": ..., "length/...": mean sampled tokens}."""
    params = SamplingParams(top_k=1, max_new_tokens=max_new_tokens)
    reward = RewardConfig(length_penalty=False)
    gen = torch.Generator().manual_seed(0)
    out: dict[str, float] = {}
    if reasoning:
        trajs = []
        for task in reasoning:
            trajs += rollout_reasoning(model, tokenizer, [task], 1, params, reward, gen, thinking, attention)
        out["reasoning"] = sum(t.reward.outcome for t in trajs) / len(trajs)
        out["length/reasoning"] = sum(t.n_sampled for t in trajs) / len(trajs)
    if calc:
        by_level: dict[int, list[float]] = {}
        lengths = []
        for task in calc:
            (tr,) = rollout_episodes(
                model,
                tokenizer,
                lambda t=task: CalcEpisode(t),
                task.expression,
                "calc",
                1,
                params,
                reward,
                gen,
                thinking,
                max_turns,
                attention=attention,
            )
            by_level.setdefault(task.level, []).append(tr.reward.outcome)
            lengths.append(tr.n_sampled)
        scores = [s for v in by_level.values() for s in v]
        out["calc"] = sum(scores) / len(scores)
        out.update({f"calc/L{lv}": sum(v) / len(v) for lv, v in sorted(by_level.items())})
        out["length/calc"] = sum(lengths) / len(lengths)
    return out
