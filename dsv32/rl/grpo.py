"""The GRPO loop (SPEC section 4): mixed reasoning and agentic rollouts, group advantages, mu
updates per rollout batch with the clipped, masked, KL-regularised objective of `dsv32.rl.loss`.

One step:
1. Choose `prompts_per_step` tasks (a seeded mix of reasoning tasks, calculator-tool episodes and,
   with `env_dir`, episodes in synthesized environments, `dsv32.rl.env_tasks`); rank r of W
   takes groups j with j % W == r. Each group's G outputs are sampled from the current policy
   (pi_old) with a generator seeded by (seed, step, j), so rollouts do not depend on W. With
   `rollout_backend="engine"` (default) all of a rank's groups decode as one batch in
   `dsv32.engine` (fp32 exact cache); "reference" runs the KV-cache-free `dsv32.rl.sampler`.
   With `context_strategy` (summary, discard-75, discard-all) and `context_budget`, a calc or env
   episode whose sequence passes the budget is compacted and continues as a new segment (a new
   sequence in the batch; `dsv32.rl.rollout`); reasoning tasks are single-turn and never compacted.
2. Rewards (`dsv32.rl.rewards`) and group advantages (`dsv32.rl.advantages`), per episode: the
   segments of an episode share its reward and advantage and count once in the group statistics.
3. Reference log-probs from the frozen reference model, scored with the same routing replay and
   keep mask as the policy (when those fixes are on).
4. mu optimizer updates over the same rollouts (mu > 1 makes the later updates off-policy, which is
   what OPSM guards against). Each update accumulates gradients over micro-batches with the loss
   normalised by the GLOBAL number of episodes, each row's token mean taken over its whole
   episode's sampled tokens (so an episode's weight does not grow with its segments), so W ranks
   under DDP (gradient average x W) give the single-process gradient. OPSM judges an episode cut
   into segments as one sequence: when any episode has several rows, a gradient-free forward
   before each update gives every row its episode's mean log ratio (`episode_log_gaps`; episodes
   never span ranks). MoE biases get the aux-loss-free update from the all-reduced load.
Metrics (JSONL, one line per step): reward and outcome per task kind (per episode; the outcome also
per reasoning kind, `outcome/reasoning/add`, ...), KL, clip
fraction, OPSM-masked fraction (of sequences, i.e. rows: segments of an episode count apart, masked
together), entropy, response length
(sampled tokens per episode), sequences in the batch (`segments`) and context compactions
(`compactions` = segments - episodes), and |r - 1| measured before the first update (on-policy, so
it isolates the sampler/trainer mismatch that keep routing and keep sampling mask remove).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from dsv32.checkpoint import save_checkpoint
from dsv32.data.io import atomic_write_lines
from dsv32.model.moe import update_expert_bias
from dsv32.model.transformer import DeepseekV32ForCausalLM
from dsv32.rl.advantages import episode_advantages
from dsv32.rl.compaction import ContextConfig
from dsv32.rl.env_tasks import env_tasks
from dsv32.rl.loss import GRPOConfig, grpo_loss, loss_metrics, merge_metric_sums, sequence_log_gap
from dsv32.rl.policy import TrainBatch, expert_load, make_batch, policy_logprobs
from dsv32.rl.rewards import RewardConfig
from dsv32.rl.rollout import BACKENDS, RolloutJob, Trajectory, episode_jobs, reasoning_jobs, run_groups
from dsv32.rl.sampler import SamplingParams
from dsv32.rl.sft import pad_id_of
from dsv32.rl.tasks import KINDS as REASONING_KINDS
from dsv32.rl.tasks import generate_tasks
from dsv32.rl.tool_tasks import CalcEpisode, generate_calc_tasks
from dsv32.train.config import OptimizerSettings
from dsv32.train.distributed import DistContext, all_reduce_sum, wrap_model
from dsv32.train.optim import build_optimizer, set_lr
from dsv32.train.state import (
    latest_checkpoint,
    load_model_weights,
    load_training_checkpoint,
    save_training_checkpoint,
)

log = logging.getLogger(__name__)
TASK_KINDS = ("reasoning", "calc", "env")


@dataclass
class GRPORunConfig(OptimizerSettings):
    steps: int = 20
    prompts_per_step: int = 8
    group_size: int = 4
    mu: int = 1
    micro_batch: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 48
    max_turns: int = 3
    task_mix: dict = field(default_factory=lambda: {"reasoning": 0.5, "calc": 0.5})
    difficulties: tuple = (1, 2)
    calc_levels: tuple = (1, 2, 3)
    env_dir: str | None = None  # root of synthesized environments (`dsv32 envs synth`) for kind "env"
    env_levels: tuple = (1, 2, 3)
    thinking: bool = True
    attention: str = "dense"
    rollout_backend: str = "engine"  # "engine" | "reference" (see dsv32.rl.rollout)
    context_strategy: str = "none"  # calc/env episodes: "none" | "summary" | "discard-75" | "discard-all"
    context_budget: int = 0  # tokens of an episode's sequence above which it is compacted
    scale_adv_by_std: bool = True
    seed: int = 0
    loss: GRPOConfig = field(default_factory=GRPOConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)

    def __post_init__(self) -> None:
        if isinstance(self.loss, dict):
            self.loss = GRPOConfig(**self.loss)
        if isinstance(self.reward, dict):
            self.reward = RewardConfig(**self.reward)
        for name in ("steps", "prompts_per_step", "group_size", "mu", "micro_batch", "max_new_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"GRPO {name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"GRPO lr must be > 0, got {self.lr!r}")
        if self.rollout_backend not in BACKENDS:
            raise ValueError(f"rollout_backend must be one of {BACKENDS}, got {self.rollout_backend!r}")
        if set(self.task_mix) - set(TASK_KINDS) or sum(self.task_mix.values()) <= 0:
            raise ValueError(f"task_mix must weight {TASK_KINDS}, got {self.task_mix}")
        if self.task_mix.get("env", 0) > 0 and not self.env_dir:
            raise ValueError("task_mix weights 'env' but env_dir (the synthesized environments) is not set")
        self.difficulties, self.calc_levels = tuple(self.difficulties), tuple(self.calc_levels)
        self.env_levels = tuple(self.env_levels)
        ContextConfig(self.context_strategy, self.context_budget)  # raises on a bad strategy or budget
        # log-probs are of softmax(logits / T) at the sampling temperature, on both sides of r
        self.loss = dataclasses.replace(self.loss, temperature=self.temperature)

    @property
    def context(self) -> ContextConfig:
        return ContextConfig(self.context_strategy, self.context_budget)

    @property
    def sampling(self) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_p, self.top_k, self.max_new_tokens)

    def to_dict(self) -> dict:
        return asdict(self)


def _seed(*parts) -> int:
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:15], 16)


def task_pools(cfg: GRPORunConfig) -> dict[str, list]:
    """Training tasks of every kind the mix weights."""
    kinds = [k for k in TASK_KINDS if cfg.task_mix.get(k, 0) > 0]
    n_pool = max(64, cfg.steps * cfg.prompts_per_step)
    pools: dict[str, list] = {}
    if "reasoning" in kinds:
        pools["reasoning"] = generate_tasks(n_pool, cfg.seed, "train", difficulties=cfg.difficulties)
    if "calc" in kinds:
        pools["calc"] = generate_calc_tasks(n_pool, cfg.seed + 1, "train", cfg.calc_levels)
    if "env" in kinds:
        pools["env"] = env_tasks(cfg.env_dir, "train", cfg.env_levels)
        if not pools["env"]:
            raise ValueError(f"{cfg.env_dir}: no training tasks at levels {cfg.env_levels}")
    return pools


def plan_step(cfg: GRPORunConfig, step: int, pools: dict[str, list]) -> list[tuple[str, object]]:
    """The (kind, task) of every group of a step; the same for every rank and world size."""
    rng = random.Random(_seed(cfg.seed, "plan", step))
    kinds = [k for k in TASK_KINDS if cfg.task_mix.get(k, 0) > 0]
    weights = [cfg.task_mix[k] for k in kinds]
    plan = []
    for _ in range(cfg.prompts_per_step):
        kind = rng.choices(kinds, weights)[0]
        plan.append((kind, pools[kind][rng.randrange(len(pools[kind]))]))
    return plan


def group_jobs(tokenizer, cfg: GRPORunConfig, kind: str, task) -> list[RolloutJob]:
    """The G rollout jobs of one group."""
    if kind == "reasoning":
        return reasoning_jobs(tokenizer, task, cfg.group_size, cfg.reward, cfg.thinking)
    if kind == "env":
        return episode_jobs(tokenizer, task.episode, task.task_id, "env", cfg.group_size, cfg.reward,
                            cfg.thinking, cfg.max_turns, context=cfg.context)  # fmt: skip
    return episode_jobs(tokenizer, lambda: CalcEpisode(task), task.expression, "calc", cfg.group_size,
                        cfg.reward, cfg.thinking, cfg.max_turns, context=cfg.context)  # fmt: skip


def _kind_means(
    trajs: list[Trajectory], ctx: DistContext, reasoning_kind: dict | None = None
) -> dict[str, float]:
    """Global means of reward, outcome and sampled length per task kind, over episodes (a segment
    after a compaction adds its sampled tokens to its episode, not an episode); with
    `reasoning_kind` (group -> the reasoning task's kind), also the outcome per reasoning kind
    ("outcome/reasoning/add", ...)."""
    out = {}
    reasoning_kind = reasoning_kind or {}
    per_kind = torch.zeros(2, len(REASONING_KINDS), dtype=torch.float64)  # episodes, outcome sums
    for t in trajs:
        if t.segment == 0 and t.group in reasoning_kind:
            i = REASONING_KINDS.index(reasoning_kind[t.group])
            per_kind[0, i] += 1
            per_kind[1, i] += t.reward.outcome
    all_reduce_sum(per_kind, ctx)
    for i, name in enumerate(REASONING_KINDS):
        if per_kind[0, i] > 0:
            out[f"outcome/reasoning/{name}"] = float(per_kind[1, i] / per_kind[0, i])
    for kind in TASK_KINDS:
        mine = [t for t in trajs if t.kind == kind]
        firsts = [t for t in mine if t.segment == 0]
        sums = torch.tensor(
            [
                len(firsts),
                sum(t.reward.total for t in firsts),
                sum(t.reward.outcome for t in firsts),
                sum(t.n_sampled for t in mine),
            ],
            dtype=torch.float64,
        )
        all_reduce_sum(sums, ctx)
        if sums[0] > 0:
            out[f"reward/{kind}"] = float(sums[1] / sums[0])
            out[f"outcome/{kind}"] = float(sums[2] / sums[0])
            out[f"length/{kind}"] = float(sums[3] / sums[0])
    return out


def _segment_counts(trajs: list[Trajectory], ctx: DistContext) -> dict[str, int]:
    """Global numbers of sequences in the batch and of context compactions (segments after the first)."""
    counts = torch.tensor([len(trajs), sum(t.segment > 0 for t in trajs)], dtype=torch.float64)
    all_reduce_sum(counts, ctx)
    return {"segments": int(counts[0]), "compactions": int(counts[1])}


@torch.no_grad()
def episode_log_gaps(train_model, batch: TrainBatch, cfg: GRPORunConfig) -> torch.Tensor | None:
    """Per row, OPSM's statistic for its whole episode under the current weights: the mean of
    log(pi_old / pi_theta) over the action tokens of all the episode's segments (one forward over
    the batch). None when every episode is one row, which the loss then judges by itself."""
    episodes = batch.episode
    if episodes is None or len(torch.unique(episodes)) == len(episodes):
        return None
    lc = cfg.loss
    sums = torch.zeros(len(batch), dtype=torch.float64)
    for i in range(0, len(batch), cfg.micro_batch):
        mb = batch.rows(i, i + cfg.micro_batch)
        logp = policy_logprobs(train_model, mb, lc.keep_routing, lc.keep_sampling_mask, lc.temperature,
                               cfg.attention)[0]  # fmt: skip
        sums[i : i + len(mb)] = sequence_log_gap(mb.old_logp.to(logp.dtype), logp, mb.action)[0].double()
    per_episode = torch.zeros(int(episodes.max()) + 1, dtype=torch.float64).index_add_(0, episodes, sums)
    # episode_tokens already holds each row's episode total of sampled (= action) tokens
    return (per_episode[episodes] / batch.episode_tokens.double().clamp(min=1.0)).float()


def grpo_step(
    model: DeepseekV32ForCausalLM,
    train_model,
    ref_model,
    optimizer,
    tokenizer,
    cfg: GRPORunConfig,
    step: int,
    pools,
    ctx: DistContext,
) -> dict:
    """One rollout batch and its mu updates; returns the step's metrics (global)."""
    start = time.perf_counter()
    plan = plan_step(cfg, step, pools)
    model.eval()
    mine = [(j, kind, task) for j, (kind, task) in enumerate(plan) if j % ctx.world_size == ctx.rank]
    groups = [
        (
            group_jobs(tokenizer, cfg, kind, task),
            torch.Generator().manual_seed(_seed(cfg.seed, "rollout", step, j)),
        )
        for j, kind, task in mine
    ]
    trajs: list[Trajectory] = run_groups(model, groups, cfg.sampling, cfg.attention, cfg.rollout_backend)
    labels = [(j, kind) for (j, kind, _), (jobs, _) in zip(mine, groups) for _ in jobs]
    for tr in trajs:
        tr.group, tr.kind = labels[tr.episode]
    rollout_s = time.perf_counter() - start
    rewards, groups_of = [t.reward.total for t in trajs], [t.group for t in trajs]
    adv = episode_advantages(rewards, groups_of, [t.episode for t in trajs], cfg.scale_adv_by_std)
    k = model.config.num_experts_per_tok
    batch = make_batch(trajs, adv, pad_id_of(tokenizer), k)
    lc = cfg.loss
    if lc.beta > 0:
        with torch.no_grad():
            refs = [
                policy_logprobs(
                    ref_model,
                    batch.rows(i, i + cfg.micro_batch),
                    lc.keep_routing,
                    lc.keep_sampling_mask,
                    lc.temperature,
                    cfg.attention,
                )[0]
                for i in range(0, len(batch), cfg.micro_batch)
            ]
        batch.ref_logp = torch.cat([r for r in refs], 0)
    n_global = float(len(plan) * cfg.group_size)  # episodes, not segments
    normalizer = n_global / ctx.world_size  # DDP averages gradients over ranks
    reasoning_kind = {j: task.kind for j, kind, task in mine if kind == "reasoning"}
    record: dict = {"step": step, **_kind_means(trajs, ctx, reasoning_kind), **_segment_counts(trajs, ctx)}
    model.train()
    for update in range(cfg.mu):
        lr_scale = set_lr(optimizer, step * cfg.mu + update, cfg)
        optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        entropy_sum = 0.0
        load = {layer: torch.zeros(model.config.n_routed_experts) for layer in model.gates()}
        gaps = episode_log_gaps(train_model, batch, cfg)
        for i in range(0, len(batch), cfg.micro_batch):
            mb = batch.rows(i, i + cfg.micro_batch)
            logp, entropy, out = policy_logprobs(
                train_model,
                mb,
                lc.keep_routing,
                lc.keep_sampling_mask,
                lc.temperature,
                cfg.attention,
                with_entropy=update == 0,
            )
            res = grpo_loss(logp, mb.old_logp, mb.advantages, mb.action, lc, mb.ref_logp, normalizer,
                            mb.episode_tokens, None if gaps is None else gaps[i : i + len(mb)])  # fmt: skip
            res.loss.backward()
            merge_metric_sums(sums, res.metrics)
            if entropy is not None:
                entropy_sum += float((entropy * mb.action).sum())
            for layer, counts in expert_load(mb, out.routing, model.config.n_routed_experts).items():
                load[layer] += counts
        for layer in load:
            all_reduce_sum(load[layer], ctx)
        totals = torch.tensor(
            [v for key, v in sorted(sums.items()) if not key.endswith("_max")] + [entropy_sum],
            dtype=torch.float64,
        )
        all_reduce_sum(totals, ctx)
        keys = [key for key in sorted(sums) if not key.endswith("_max")]
        sums.update({key: float(v) for key, v in zip(keys, totals[:-1])})
        peak = torch.tensor([sums.get("abs_ratio_dev_max", 0.0)])
        if ctx.enabled:
            torch.distributed.all_reduce(peak, op=torch.distributed.ReduceOp.MAX)
        sums["abs_ratio_dev_max"] = float(peak)
        grad_norm = (
            float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
            if cfg.grad_clip > 0
            else 0.0
        )
        optimizer.step()
        if cfg.bias_update_gamma > 0:
            for layer, gate in model.gates().items():
                update_expert_bias(gate, load[layer], cfg.bias_update_gamma)
        rates = loss_metrics(sums)
        if update == 0:
            record["abs_ratio_dev_before_update"] = rates["abs_ratio_dev_mean"]
            record["abs_ratio_dev_max_before_update"] = rates["abs_ratio_dev_max"]
            record["entropy"] = float(totals[-1]) / max(sums["action_tokens"], 1.0)
            record["lr"] = cfg.lr * lr_scale
        for key in ("kl", "clip_fraction", "opsm_masked_fraction", "opsm_would_mask_fraction"):
            record[key] = record.get(key, 0.0) + rates[key] / cfg.mu  # mean over the mu updates
        record["grad_norm"] = grad_norm
    model.eval()
    record["rollout_seconds"] = round(rollout_s, 3)
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record


def run_grpo(
    model: DeepseekV32ForCausalLM,
    tokenizer,
    cfg: GRPORunConfig,
    ctx: DistContext | None = None,
    metrics_path: str | Path | None = None,
    ref_model: DeepseekV32ForCausalLM | None = None,
    run_dir: str | Path | None = None,
    save_every: int = 0,
    keep_last: int = 2,
) -> list[dict]:
    """Train `model` in place for cfg.steps GRPO steps; returns the per-step metrics.

    With `run_dir` and `save_every` > 0, a training checkpoint (`dsv32.train.state`: weights,
    optimizer, step) is written every `save_every` steps and after the last, and the frozen
    reference once, to `run_dir/reference`. A run directory that already holds checkpoints is
    resumed from the newest: weights, optimizer and reference are restored and the metrics file is
    cut back to the checkpoint's step, so the continued run equals an uninterrupted one (rollouts
    are seeded by (seed, step, group), nothing else carries over)."""
    ctx = ctx or DistContext()
    if save_every < 0 or keep_last < 1:
        raise ValueError(f"need save_every >= 0 and keep_last >= 1, got {save_every}, {keep_last}")
    run_dir = Path(run_dir) if run_dir is not None else None
    resume_from = latest_checkpoint(run_dir) if run_dir is not None else None
    if resume_from is not None:
        load_model_weights(model, resume_from, model.config)
    ref = ref_model
    if ref is None and cfg.loss.beta > 0:
        ref = copy.deepcopy(model)
        if resume_from is not None:  # the reference is the model GRPO started from, not the resumed one
            load_model_weights(ref, _reference_dir(run_dir), ref.config)
    if ref is not None:
        ref.eval().requires_grad_(False)
    pools = task_pools(cfg)
    optimizer = build_optimizer(model, cfg)
    train_model = wrap_model(model, ctx, "ddp")
    start = 0
    if resume_from is not None:
        start = int(load_training_checkpoint(resume_from, model, optimizer)["step"])
        log.info("resuming GRPO from %s at step %d", resume_from, start)
    elif run_dir is not None and save_every and ref is not None and ctx.is_main:
        save_checkpoint(ref, ref.config, run_dir / "reference")
    path = Path(metrics_path) if metrics_path and ctx.is_main else None
    history = _metrics_until(path, start) if path is not None else []
    for step in range(start, cfg.steps):
        record = grpo_step(model, train_model, ref, optimizer, tokenizer, cfg, step, pools, ctx)
        history.append(record)
        log.info("grpo step %d %s", step, {k: round(v, 4) for k, v in record.items() if isinstance(v, float)})
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        done = step + 1
        if run_dir is not None and save_every and (done % save_every == 0 or done == cfg.steps):
            save_training_checkpoint(run_dir, done, model, model.config, optimizer, {}, cfg.to_dict(), None,
                                     {"stage": "grpo"}, keep_last, ctx.rank)  # fmt: skip
    return history


def _reference_dir(run_dir: Path) -> Path:
    ref = run_dir / "reference"
    if not ref.is_dir():
        raise FileNotFoundError(f"{run_dir} has GRPO checkpoints but no reference/ to compute the KL against")
    return ref


def _metrics_until(path: Path, steps: int) -> list[dict]:
    """The first `steps` records of a metrics file, which is rewritten to hold just those (records
    past the checkpoint being resumed from are redone)."""
    if not path.is_file():
        if steps:
            raise FileNotFoundError(f"resuming at step {steps} but the metrics file {path} is missing")
        return []
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(records) < steps:
        raise ValueError(f"{path} has {len(records)} records; the checkpoint is at step {steps}")
    atomic_write_lines(path, [json.dumps(r) + "\n" for r in records[:steps]])
    return records[:steps]
