"""Rollouts: G sampled outputs per prompt, as token sequences with the records GRPO needs.

A `Trajectory` is one output: the token ids of the whole conversation (prompt, every assistant
turn, and forced text in between), an action mask (1 on tokens the policy sampled, 0 on prompt and
FORCED tokens: tool results and the generation prompt after them are context, not actions), the
sampler's log-prob and kept-id set at each action, and the MoE routing at every processed position.

A rollout job decides what happens between turns; a driver samples the turns:
- `ReasoningJob` (single turn): the prompt is the encoded system + user message; the completion is
  sampled to EOS or the token limit and scored by the task's verifier.
- `EpisodeJob` (multi-turn): an episode (reset/step/grade: `dsv32.envs.episode.Episode` or
  `dsv32.rl.tool_tasks.CalcEpisode`) supplies system, tools and user. Each assistant turn is
  sampled; its tool calls (parsed with the tools' schemas) run in the episode, and the tool results
  are encoded with `encode_continuation` and appended as forced tokens. A turn without tool calls,
  a malformed turn, the turn limit or the context limit ends the episode; its final content is graded.
  With a context strategy (`dsv32.rl.compaction.ContextConfig`: summary, discard-75, discard-all)
  and a token budget, an episode whose sequence passes the budget after a turn's tool results (and
  that will take another turn) has its messages compacted, and continues as a NEW SEGMENT: a new
  sequence whose prompt is `encode_messages(compacted)` (all context, action mask 0) followed by the
  next sampled turns. The old segment ends with that turn's tool results (forced, unprocessed).
  Every segment is one `Trajectory` (`episode`, `segment` say whose and which); all segments of an
  episode carry the episode's reward (graded once, length penalty over all its sampled tokens) and
  `episode_tokens`, its total number of sampled tokens, which the GRPO loss divides by so that an
  episode weighs the same however many segments it was cut into (`dsv32.rl.loss`). Group advantages
  count episodes, not segments (`dsv32.rl.advantages.episode_advantages`).
- `run_groups(model, [(jobs, generator), ...], params, backend=...)` runs groups of jobs:
  - "engine" (the fast path): every job of every group is one keep_open request of ONE
    `dsv32.engine.Engine` (fp32 exact cache, so records replay to r == 1), decoded as a batch; a
    request's seed is drawn from its group's generator, so a group's outputs depend only on that
    generator, not on the other groups in the batch (up to float summation order). Tool results go
    in with `handle.extend`, reusing the cached prefix; routing, kept sets and log-probs come from
    the engine's `SequenceRecord`. A compaction closes the job's request and submits the new
    segment's prompt as a new keep_open request (seeded with the job's seed + segment index).
  - "reference": `dsv32.rl.sampler.sample` (no KV cache), one batch per group and turn; it is the
    slow path the engine is tested against.
  The two keep the same sets and record the same things; their random draws differ (see the
  sampler's docstring), so they agree token for token only under greedy (top_k = 1) decoding.
`rollout_reasoning` / `rollout_episodes` are the one-kind entry points (default: reference).
What is left out: a summary sampled from the policy (the summary strategy uses the extractive
`dsv32.rl.compaction.tool_log_summary`; see there why). With the engine a request also stops at the
model's context (`max_position_embeddings`), where the reference would run on past it.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from dsv32.chat.encoding import encode_continuation, encode_messages
from dsv32.chat.parsing import ParsedMessage, ParseError, parse_completion
from dsv32.engine.cache import CacheSpec
from dsv32.engine.records import SequenceRecord
from dsv32.engine.scheduler import Engine
from dsv32.model.transformer import DeepseekV32ForCausalLM
from dsv32.rl.compaction import ContextConfig, compact
from dsv32.rl.rewards import RewardBreakdown, RewardConfig, score
from dsv32.rl.sampler import Generation, SamplingParams, engine_params, sample
from dsv32.rl.sft_data import REASONING_SYSTEM
from dsv32.rl.tasks import ReasoningTask, verify

BACKENDS = ("engine", "reference")
ENGINE_MAX_BATCH = 32  # decode batch (and cache) bound; further requests wait for a free slot


@dataclass
class Trajectory:
    ids: list[int]
    action: list[int]
    old_logp: list[float]
    kept: list[torch.Tensor | None]
    routing: dict[int, list[torch.Tensor]]
    group: Any
    kind: str
    completions: list[str] = field(default_factory=list)  # the turns sampled in this segment
    reward: RewardBreakdown | None = None  # the episode's, shared by all its segments
    episode: int = 0  # index of the job (episode) in its `run_groups` call
    segment: int = 0  # 0, then 1, 2, ... after each context compaction
    episode_tokens: int | None = None  # sampled tokens of the whole episode (None: this sequence's)

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

    @classmethod
    def from_record(cls, record: SequenceRecord, group: Any, kind: str) -> Trajectory:
        """A trajectory holding an engine record: sampled tokens are actions, forced ones context."""
        p = len(record.prompt_ids)
        routing = record.routing
        per_layer = {}
        if routing is not None:
            routing = routing.long()
            per_layer = {layer: list(routing[:, j].unbind(0)) for j, layer in enumerate(record.moe_layers)}
        return cls(
            record.all_ids,
            [0] * p + [int(s) for s in record.sampled],
            [0.0] * p + list(record.logprobs),
            [None] * p + list(record.kept_ids),
            per_layer,
            group,
            kind,
        )


class RolloutJob(abc.ABC):
    """One trajectory's logic between turns (the driver samples the turns)."""

    prompt_ids: list[int]
    group: Any
    kind: str
    max_tokens: int  # no turn starts once the trajectory is this long

    def __init__(self) -> None:
        self.turns = 0
        self.completions: list[str] = []

    @abc.abstractmethod
    def wants_turn(self, n_ids: int) -> bool: ...

    @abc.abstractmethod
    def on_turn(self, tokens: list[int]) -> list[int] | None:
        """Take a sampled turn; return the forced ids that follow it, or None to end here."""
        ...

    @abc.abstractmethod
    def finish(self, segments: list[Trajectory]) -> None:
        """Score the finished rollout: set completions and reward on each of its segments (one
        unless the job compacted its context)."""
        ...

    def new_segment(self) -> list[int] | None:
        """Asked after `on_turn` returned forced ids: the prompt of a new segment when the job has
        just compacted its context (the current sequence ends after those forced ids), else None."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook: most jobs hold nothing
        """Release what the job holds (an episode's environment)."""


class ReasoningJob(RolloutJob):
    def __init__(self, tokenizer, task: ReasoningTask, reward_cfg: RewardConfig, thinking: bool = True):
        super().__init__()
        self.tokenizer, self.task, self.reward_cfg, self.thinking = tokenizer, task, reward_cfg, thinking
        messages = [{"role": "system", "content": REASONING_SYSTEM}, {"role": "user", "content": task.prompt}]
        self.prompt_ids = tokenizer.encode(encode_messages(messages, "thinking" if thinking else "chat"))
        self.group, self.kind = task.task_id, task.kind
        self.max_tokens = len(self.prompt_ids) + 1

    def wants_turn(self, n_ids: int) -> bool:
        return self.turns == 0

    def on_turn(self, tokens: list[int]) -> None:
        self.turns += 1
        self.completions.append(self.tokenizer.decode(tokens))
        return None

    def finish(self, segments: list[Trajectory]) -> None:
        (traj,) = segments
        traj.completions = list(self.completions)
        traj.reward = score(
            self.task.prompt,
            traj.completions,
            traj.n_sampled,
            lambda parsed, t=self.task: float(verify(t, parsed[-1].content)),
            self.reward_cfg,
            self.thinking,
        )


class EpisodeJob(RolloutJob):
    def __init__(self, tokenizer, episode, group: Any, kind: str, reward_cfg: RewardConfig,
                 thinking: bool = True, max_turns: int = 4, max_tokens: int = 2048,
                 context: ContextConfig | None = None):  # fmt: skip
        super().__init__()
        self.tokenizer, self.episode, self.group, self.kind = tokenizer, episode, group, kind
        self.reward_cfg, self.thinking, self.max_turns, self.max_tokens = (
            reward_cfg,
            thinking,
            max_turns,
            max_tokens,
        )
        self.mode = "thinking" if thinking else "chat"
        self.start = episode.reset()
        self.tools = self.start["tools"]
        self.messages = [
            {"role": "system", "content": self.start["system"], "tools": self.tools},
            {"role": "user", "content": self.start["user"]},
        ]
        self.prompt_ids = tokenizer.encode(encode_messages(self.messages, self.mode))
        self.parsed: list[ParsedMessage] = []
        self.context = context or ContextConfig()
        self.context.check_prompt(len(self.prompt_ids))
        self.strategy = self.context.make()
        self.segment_len = len(self.prompt_ids)  # ids of the current segment, as the driver holds them
        self.segment_turns = [0]  # the turn each segment starts with
        self.compacted: list[list[dict]] = []  # the conversation after each compaction
        self._restart: list[int] | None = None

    def wants_turn(self, n_ids: int) -> bool:
        return self.turns < self.max_turns and n_ids < self.max_tokens

    def on_turn(self, tokens: list[int]) -> list[int] | None:
        self.turns += 1
        self.segment_len += len(tokens)
        text = self.tokenizer.decode(tokens)
        self.completions.append(text)
        msg = parse_completion(text, tools=self.tools, thinking=self.thinking)
        if isinstance(msg, ParseError) or not msg.saw_eos:
            return None  # malformed or cut off: the episode ends here
        self.parsed.append(msg)
        if not msg.tool_calls:
            return None
        assistant = msg.to_openai()
        results = []
        for n, call in enumerate(msg.tool_calls):
            call = {**call, "id": call.get("id") or f"call_{len(self.completions)}_{n}"}
            step = self.episode.step(call)
            results.append({"role": "tool", "tool_call_id": call["id"], "content": step["content"]})
        assistant["tool_calls"] = [{**c, "id": r["tool_call_id"]} for c, r in zip(msg.tool_calls, results)]
        forced = self.tokenizer.encode(encode_continuation(self.messages + [assistant], results, self.mode))
        self.messages += [assistant, *results]
        self.segment_len += len(forced)
        self._compact_if_over_budget()
        return forced

    def _compact_if_over_budget(self) -> None:
        """Compact the conversation when the segment passed the budget and another turn follows."""
        over = self.context.enabled and self.segment_len > self.context.budget
        if not over or self.turns >= self.max_turns:
            return
        compacted = compact(self.messages, self.strategy)
        if compacted is None:
            return
        ids = self.tokenizer.encode(encode_messages(compacted, self.mode))
        if not self.wants_turn(len(ids)):
            return  # the compacted prompt leaves no room for a turn: the old segment runs on
        self.messages, self._restart, self.segment_len = list(compacted), ids, len(ids)
        self.segment_turns.append(self.turns)
        self.compacted.append(compacted)  # not aliased: later turns extend self.messages in place

    def new_segment(self) -> list[int] | None:
        ids, self._restart = self._restart, None
        return ids

    def finish(self, segments: list[Trajectory]) -> None:
        if len(segments) != len(self.segment_turns):
            n = len(self.segment_turns)
            raise RuntimeError(f"{len(segments)} segments for an episode that started {n}")
        turns = self.parsed
        answer = turns[-1].content if turns and not turns[-1].tool_calls else None

        def outcome(_parsed) -> float:
            return float(self.episode.grade(answer).reward) if answer is not None else 0.0

        n_sampled = sum(seg.n_sampled for seg in segments)
        reward = score(self.start["user"], list(self.completions), n_sampled, outcome, self.reward_cfg,
                       self.thinking, self.tools)  # fmt: skip
        bounds = self.segment_turns + [len(self.completions)]
        for k, seg in enumerate(segments):
            seg.completions = self.completions[bounds[k] : bounds[k + 1]]
            seg.reward = reward

    def close(self) -> None:
        self.episode.close()


def reasoning_jobs(tokenizer, task: ReasoningTask, group_size: int, reward_cfg: RewardConfig,
                   thinking: bool = True) -> list[RolloutJob]:  # fmt: skip
    return [ReasoningJob(tokenizer, task, reward_cfg, thinking) for _ in range(group_size)]


def episode_jobs(tokenizer, make_episode: Callable[[], Any], group: Any, kind: str, group_size: int,
                 reward_cfg: RewardConfig, thinking: bool = True, max_turns: int = 4,
                 max_tokens: int = 2048,
                 context: ContextConfig | None = None) -> list[RolloutJob]:  # fmt: skip
    """group_size episodes of one task (make_episode() gives a fresh episode each)."""
    jobs: list[RolloutJob] = []
    try:
        for _ in range(group_size):
            episode = make_episode()
            try:
                jobs.append(EpisodeJob(tokenizer, episode, group, kind, reward_cfg, thinking, max_turns,
                                       max_tokens, context))  # fmt: skip
            except BaseException:
                episode.close()
                raise
    except BaseException:
        for job in jobs:
            job.close()
        raise
    return jobs


def run_groups(model: DeepseekV32ForCausalLM, groups: list[tuple[list[RolloutJob], torch.Generator]],
               params: SamplingParams, attention: str = "dense",
               backend: str = "engine") -> list[Trajectory]:  # fmt: skip
    """Run every job; its segments (one unless it compacted its context) in job order, scored.
    Jobs are closed before this returns."""
    if backend not in BACKENDS:
        raise ValueError(f"rollout backend must be one of {BACKENDS}, got {backend!r}")
    jobs = [job for group, _ in groups for job in group]
    try:
        if backend == "reference":
            per_job = []
            for group, gen in groups:
                per_job += _run_reference(model, group, params, gen, attention)
        else:
            seeds = [s for group, gen in groups for s in _seeds(gen, len(group))]
            per_job = _run_engine(model, jobs, params, seeds, attention)
        for episode, (job, segments) in enumerate(zip(jobs, per_job)):
            total = sum(seg.n_sampled for seg in segments)
            for k, seg in enumerate(segments):
                seg.episode, seg.segment, seg.episode_tokens = episode, k, total
            job.finish(segments)
    finally:
        for job in jobs:
            job.close()
    return [seg for segments in per_job for seg in segments]


def _seeds(gen: torch.Generator, n: int) -> list[int]:
    return torch.randint(0, 2**62, (n,), generator=gen).tolist() if n else []


def _prompt_only(prompt_ids: list[int], job: RolloutJob) -> Trajectory:
    p = len(prompt_ids)
    return Trajectory(list(prompt_ids), [0] * p, [0.0] * p, [None] * p, {}, job.group, job.kind)


def _run_reference(model, jobs: list[RolloutJob], params: SamplingParams, gen: torch.Generator,
                   attention: str) -> list[list[Trajectory]]:  # fmt: skip
    """All jobs of a group in one batch per turn (forced ids extend the row; the next turn's forward
    processes them, recording their routing as an engine's prefill would). A compaction starts a
    new row for the job from the new segment's prompt."""
    segments = [[_prompt_only(job.prompt_ids, job)] for job in jobs]
    active = list(range(len(jobs)))
    while True:
        active = [i for i in active if jobs[i].wants_turn(len(segments[i][-1].ids))]
        if not active:
            return segments
        rows = [segments[i][-1] for i in active]
        gens = sample(model, [t.ids for t in rows], params, gen, [t.routing for t in rows], attention)
        still = []
        for i, row, g in zip(active, rows, gens):
            row.extend(g.tokens, g)
            forced = jobs[i].on_turn(g.tokens)
            if forced is not None:
                row.extend(forced)
                restart = jobs[i].new_segment()
                if restart is not None:
                    segments[i].append(_prompt_only(restart, jobs[i]))
                still.append(i)
        active = still


def _run_engine(model, jobs: list[RolloutJob], params: SamplingParams, seeds: list[int],
                attention: str) -> list[list[Trajectory]]:  # fmt: skip
    """Every job a keep_open request of one engine. After each engine step, each request whose turn
    ended goes to its job at once (the others keep decoding): its forced ids either resume it with
    `extend` or, when the job takes no further turn, are appended to the trajectory unprocessed.
    When the job compacted its context, the request is closed (its segment ends with the forced
    ids, unprocessed) and the new segment's prompt is submitted as a new request."""
    if not jobs:
        return []
    # The longest context a request can reach: a turn starts below the job's max_tokens and adds
    # at most max_new_tokens (a reasoning job's max_tokens is its prompt length + 1).
    bound = max(job.max_tokens - 1 + params.max_new_tokens for job in jobs)
    engine = Engine(model, max_batch=min(len(jobs), ENGINE_MAX_BATCH), max_seq_len=bound + 1,
                    cache_spec=CacheSpec.exact(), attention=attention)  # fmt: skip
    per_request = [engine_params(params, seed) for seed in seeds]
    segments: list[list[Trajectory]] = [[] for _ in jobs]
    handles, seg_start = {}, {}

    def submit(i: int, prompt_ids: list[int]) -> None:
        if len(prompt_ids) >= engine.max_seq_len:
            raise ValueError(f"rollout prompt of {len(prompt_ids)} tokens does not fit the "
                             f"model's context of {engine.max_seq_len}")  # fmt: skip
        k = len(segments[i])  # a later segment gets its own seed, derived from the job's
        request = per_request[i] if k == 0 else engine_params(params, (seeds[i] + k) % 2**62)
        handles[i] = engine.submit(prompt_ids, request, keep_open=True)
        seg_start[i] = 0

    def end_segment(i: int, tail: list[int]) -> None:
        handles[i].close()
        traj = Trajectory.from_record(handles[i].record, jobs[i].group, jobs[i].kind)
        traj.extend(tail)
        segments[i].append(traj)

    try:
        for i, job in enumerate(jobs):
            if job.wants_turn(len(job.prompt_ids)):
                submit(i, job.prompt_ids)
            else:
                segments[i].append(_prompt_only(job.prompt_ids, job))
        live = set(handles)
        while live:
            if not engine.has_work():
                raise RuntimeError(f"engine idle with {len(live)} unfinished rollouts")
            engine.step()
            for i in sorted(live):
                done = handles[i].completion()
                if done.finish_reason is None:
                    continue
                if done.finish_reason not in ("stop", "length"):
                    raise RuntimeError(f"rollout request ended with {done.finish_reason!r}")
                forced = jobs[i].on_turn(done.token_ids[seg_start[i] :])
                restart = jobs[i].new_segment() if forced is not None else None
                if forced is not None and restart is None:
                    n_ids = len(done.prompt_ids) + len(done.token_ids) + len(forced)
                    if jobs[i].wants_turn(n_ids) and n_ids < engine.max_seq_len:
                        handles[i].extend(forced, per_request[i])
                        seg_start[i] = len(done.token_ids) + len(forced)
                        continue
                end_segment(i, forced or [])
                if restart is not None:
                    submit(i, restart)
                else:
                    live.discard(i)
    finally:
        for handle in handles.values():
            handle.cancel()  # no-op for closed requests; frees the cache after an error
    return segments


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
    backend: str = "reference",
) -> list[Trajectory]:
    """group_size outputs per task. Reference: one batch per task, drawing from `gen` in task order
    (so a group's numbers do not depend on which other groups share the step); engine: one batch
    for all, each request seeded from `gen` in the same order."""
    groups = [(reasoning_jobs(tokenizer, task, group_size, reward_cfg, thinking), gen) for task in tasks]
    return run_groups(model, groups, params, attention, backend)


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
    backend: str = "reference",
    context: ContextConfig | None = None,
) -> list[Trajectory]:
    """group_size multi-turn episodes of one task (make_episode() gives a fresh episode each); an
    episode whose context was compacted gives several segments (see the module docstring)."""
    jobs = episode_jobs(tokenizer, make_episode, group, kind, group_size, reward_cfg, thinking, max_turns,
                        max_tokens, context)  # fmt: skip
    return run_groups(model, [(jobs, gen)], params, attention, backend)


def trajectory_to_json(traj: Trajectory, tokenizer) -> dict:
    return {
        "group": str(traj.group),
        "kind": traj.kind,
        "episode": traj.episode,
        "segment": traj.segment,
        "completions": traj.completions,
        "reward": traj.reward.to_json() if traj.reward else None,
        "n_sampled": traj.n_sampled,
        "text": tokenizer.decode(traj.ids),
    }


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)
