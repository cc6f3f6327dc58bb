"""Rollouts: G sampled outputs per prompt, as token sequences with the records GRPO needs.

A `Trajectory` is one output: the token ids of the whole conversation (prompt, every assistant
turn, and forced text in between), an action mask (1 on tokens the policy sampled, 0 on prompt and
FORCED tokens: tool results and the generation prompt after them are context, not actions), the
sampler's log-prob and kept-id set at each action, and the MoE routing at every processed position.

- Single-turn (`rollout_reasoning`): the prompt is the encoded system + user message; the
  completion is sampled to EOS or the token limit and scored by the task's verifier.
- Multi-turn (`rollout_episodes`): an episode (reset/step/grade: `dsv32.envs.episode.Episode` or
  `dsv32.rl.tool_tasks.CalcEpisode`) supplies system, tools and user. Each assistant turn is
  sampled; its tool calls (parsed with the tools' schemas) run in the episode, and the tool results
  are encoded with `encode_continuation` and appended as forced tokens (their routing is recorded
  from the forward that processes them, as an engine's prefill would). A turn without tool calls,
  a malformed turn, the turn limit or the context limit ends the episode; its final content is graded.
What is left out: context-management resets inside a training trajectory (a compacted prompt is a
different sequence; the strategies are exercised by `dsv32.agent` at evaluation time).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from dsv32.chat.encoding import encode_continuation, encode_messages
from dsv32.chat.parsing import ParsedMessage, ParseError, parse_completion
from dsv32.model.transformer import DeepseekV32ForCausalLM
from dsv32.rl.rewards import RewardBreakdown, RewardConfig, score
from dsv32.rl.sampler import Generation, SamplingParams, sample
from dsv32.rl.sft_data import REASONING_SYSTEM
from dsv32.rl.tasks import ReasoningTask, verify


@dataclass
class Trajectory:
    ids: list[int]
    action: list[int]
    old_logp: list[float]
    kept: list[torch.Tensor | None]
    routing: dict[int, list[torch.Tensor]]
    group: Any
    kind: str
    completions: list[str] = field(default_factory=list)
    reward: RewardBreakdown | None = None

    @property
    def n_sampled(self) -> int:
        return sum(self.action)

    def extend(self, ids: list[int], gen: Generation | None = None) -> None:
        """Append forced ids (gen None) or a generation's sampled ids with their records."""
        self.ids += ids
        if gen is None:
            self.action += [0] * len(ids)
            self.old_logp += [0.0] * len(ids)
            self.kept += [None] * len(ids)
        else:
            self.action += [1] * len(ids)
            self.old_logp += gen.logprobs
            self.kept += gen.kept


def _decode(tokenizer, tokens: list[int]) -> str:
    return tokenizer.decode(tokens)


def rollout_reasoning(
    model: DeepseekV32ForCausalLM,
    tokenizer,
    tasks: list[ReasoningTask],
    group_size: int,
    params: SamplingParams,
    reward_cfg: RewardConfig,
    gen: torch.Generator,
    thinking: bool = True,
    attention: str = "dense",
) -> list[Trajectory]:
    """group_size outputs per task, sampled as one batch per task (so a group's numbers do not
    depend on which other groups share the step: 1 and 2 processes give the same rollouts)."""
    mode = "thinking" if thinking else "chat"
    out = []
    for task in tasks:
        messages = [{"role": "system", "content": REASONING_SYSTEM}, {"role": "user", "content": task.prompt}]
        prompt_ids = tokenizer.encode(encode_messages(messages, mode))
        routing: list[dict[int, list[torch.Tensor]]] = [{} for _ in range(group_size)]
        gens = sample(model, [prompt_ids] * group_size, params, gen, routing, attention)
        for g, rec in zip(gens, routing):
            traj = Trajectory(
                list(prompt_ids),
                [0] * len(prompt_ids),
                [0.0] * len(prompt_ids),
                [None] * len(prompt_ids),
                rec,
                task.task_id,
                task.kind,
            )
            traj.extend(g.tokens, g)
            text = _decode(tokenizer, g.tokens)
            traj.completions = [text]
            traj.reward = score(
                task.prompt,
                [text],
                traj.n_sampled,
                lambda parsed, t=task: float(verify(t, parsed[-1].content)),
                reward_cfg,
                thinking,
            )
            out.append(traj)
    return out


def _answer(turns: list[ParsedMessage]) -> str | None:
    return turns[-1].content if turns and not turns[-1].tool_calls else None


def rollout_episodes(
    model: DeepseekV32ForCausalLM,
    tokenizer,
    make_episode: Callable[[], Any],
    group: Any,
    kind: str,
    group_size: int,
    params: SamplingParams,
    reward_cfg: RewardConfig,
    gen: torch.Generator,
    thinking: bool = True,
    max_turns: int = 4,
    max_tokens: int = 2048,
    attention: str = "dense",
) -> list[Trajectory]:
    """group_size multi-turn episodes of one task (make_episode() gives a fresh episode each)."""
    mode = "thinking" if thinking else "chat"
    episodes = [make_episode() for _ in range(group_size)]
    starts = [ep.reset() for ep in episodes]
    tools = starts[0]["tools"]
    messages = [
        [{"role": "system", "content": s["system"], "tools": tools}, {"role": "user", "content": s["user"]}]
        for s in starts
    ]
    trajs = []
    for msgs in messages:
        ids = tokenizer.encode(encode_messages(msgs, mode))
        trajs.append(Trajectory(ids, [0] * len(ids), [0.0] * len(ids), [None] * len(ids), {}, group, kind))
    parsed_turns: list[list[ParsedMessage]] = [[] for _ in episodes]
    active = list(range(group_size))
    try:
        for _turn in range(max_turns):
            active = [i for i in active if len(trajs[i].ids) < max_tokens]
            if not active:
                break
            gens = sample(
                model,
                [trajs[i].ids for i in active],
                params,
                gen,
                [trajs[i].routing for i in active],
                attention,
            )
            still = []
            for i, g in zip(active, gens):
                trajs[i].extend(g.tokens, g)
                text = _decode(tokenizer, g.tokens)
                trajs[i].completions.append(text)
                msg = parse_completion(text, tools=tools, thinking=thinking)
                if isinstance(msg, ParseError) or not msg.saw_eos:
                    continue  # malformed or cut off: the episode ends here
                parsed_turns[i].append(msg)
                if not msg.tool_calls:
                    continue
                assistant = msg.to_openai()
                results = []
                for n, call in enumerate(msg.tool_calls):
                    call = {**call, "id": call.get("id") or f"call_{len(trajs[i].completions)}_{n}"}
                    step = episodes[i].step(call)
                    results.append({"role": "tool", "tool_call_id": call["id"], "content": step["content"]})
                assistant["tool_calls"] = [
                    {**c, "id": r["tool_call_id"]} for c, r in zip(msg.tool_calls, results)
                ]
                forced = encode_continuation(messages[i] + [assistant], results, mode)
                messages[i] += [assistant, *results]
                trajs[i].extend(tokenizer.encode(forced))
                still.append(i)
            active = still
        for i, traj in enumerate(trajs):
            answer = _answer(parsed_turns[i])

            def outcome(_parsed, ep=episodes[i], ans=answer) -> float:
                return float(ep.grade(ans).reward) if ans is not None else 0.0

            traj.reward = score(
                starts[i]["user"], traj.completions, traj.n_sampled, outcome, reward_cfg, thinking, tools
            )
    finally:
        for ep in episodes:
            ep.close()
    return trajs


def trajectory_to_json(traj: Trajectory, tokenizer) -> dict:
    return {
        "group": str(traj.group),
        "kind": traj.kind,
        "completions": traj.completions,
        "reward": traj.reward.to_json() if traj.reward else None,
        "n_sampled": traj.n_sampled,
        "text": tokenizer.decode(traj.ids),
    }


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)
