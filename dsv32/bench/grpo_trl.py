"""One GRPO optimisation step in dsv32 vs TRL's `GRPOTrainer`, side by side in one run.

Both sides train the same tiny model: dsv32's `DeepseekV32ForCausalLM` and, for TRL, the same
weights exported with `dsv32.checkpoint.save_checkpoint` and loaded by transformers'
`DeepseekV32ForCausalLM` (offline, float32, eager attention). Both see the same batch: `prompts`
prompts of `prompt_len` random tokens, `group` completions each of at most `completion_len` tokens
sampled from the model by `dsv32.rl.sampler` (top_p = 1, so no keep mask is needed to match), the
sampler's log-probabilities as pi_old, a fixed reference log-probability per token, and group
advantages of fixed random rewards.

TRL is configured as the V3.2 objective: `loss_type="grpo"` (per-sequence mean, then mean over
sequences), `use_bias_correction_kl=True` (the unbiased KL), `off_policy_mask_threshold=delta`
(OPSM), `beta > 0`. GRPOTrainer's `train()` would also generate and score rollouts each step, so the
timed step is the optimisation step only, on a prepared batch:
- TRL: `trainer.compute_loss(model, inputs)` (its `_compute_loss`: fused LM-head log-probs over the
  completion, OPSM, clipped ratio, bias-corrected KL) + `accelerator.backward` + gradient clipping
  at 1.0 + the optimizer from `trainer.create_optimizer()` + `zero_grad`; `inputs` carries
  `old_per_token_logps` and `ref_per_token_logps`, so no extra forward runs.
- dsv32: `policy_logprobs` (forward on ids[:, :-1], head and log-probs on the completion tokens) +
  `grpo_loss` + backward + gradient clipping at 1.0 + a `torch.optim.AdamW` with TRL's optimizer
  settings + zero_grad.
  Rows: `dsv32` computes the function TRL computes (fresh routing, full-vocabulary log-probs);
  `dsv32 +keep` also replays the recorded MoE routing and applies the (here all-true) keep mask,
  i.e. the full V3.2 path.
Attention, two regimes (`--index-topk`): transformers' port always runs the indexer and its top-k.
With index_topk >= the sequence length DSA is exactly dense, so dsv32 runs its dense path and both
compute the same function (the losses agree to float error). With the tiny preset's index_topk = 16
both run DSA, but an untrained indexer gives many queries exact ties at the top-k boundary (all
ReLUs zero), which the two implementations break differently; the losses then differ by the
attention to a few different tokens, and the step times compare two DSA implementations.
Reps alternate between the sides so both see the same machine load; medians are reported.
Before any update the two losses are computed on identical weights and must agree (float error of
two implementations of the same model, reported as `loss_abs_diff`).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from dsv32.checkpoint import save_checkpoint
from dsv32.config import preset
from dsv32.model.transformer import DeepseekV32ForCausalLM, build_model
from dsv32.rl.advantages import group_advantages
from dsv32.rl.loss import GRPOConfig, LossOutput, grpo_loss
from dsv32.rl.policy import TrainBatch, policy_logprobs
from dsv32.rl.sampler import SamplingParams, sample

log = logging.getLogger(__name__)


@dataclass
class FixedBatch:
    """A GRPO batch in both layouts' terms: prompt [B, P] + completion [B, C] (right-padded)."""

    prompt_ids: torch.Tensor  # [B, P]
    completion_ids: torch.Tensor  # [B, C]
    completion_mask: torch.Tensor  # [B, C] 1 on sampled tokens
    old_logp: torch.Tensor  # [B, C] pi_old (sampler) log-probs, 0 on padding
    ref_logp: torch.Tensor  # [B, C]
    advantages: torch.Tensor  # [B]
    routing: dict[int, torch.Tensor]  # layer -> [B, P+C-1, k] recorded by the sampler

    @property
    def ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], 1)


def build_batch(
    model: DeepseekV32ForCausalLM,
    prompts: int,
    group: int,
    prompt_len: int,
    completion_len: int,
    seed: int = 0,
    stale: float = 0.6,
    ref_noise: float = 0.3,
) -> FixedBatch:
    """Sample `group` completions for each of `prompts` random prompts; make pi_old stale.

    pi_old = the sampler's log-prob plus a per-sequence offset drawn from U(0, 2*stale), so the
    mean log(pi_old/pi_theta) of about half the sequences passes delta = stale and OPSM masks those
    with a negative advantage; pi_ref = the sampler's log-prob plus N(0, ref_noise) per token.
    Sampling uses dense attention (the sampler re-runs the whole prefix per token, and DSA there
    costs minutes); the log-probs are inputs of the step either way.
    """
    if min(prompts, group, prompt_len, completion_len) < 1:
        raise ValueError("prompts, group, prompt_len and completion_len must all be >= 1")
    v = model.config.vocab_size
    g = torch.Generator().manual_seed(seed)
    # ids 0 and 1 are BOS/EOS; prompts avoid EOS so rows only stop inside the completion
    prompt_rows = torch.randint(2, v, (prompts, prompt_len), generator=g).repeat_interleave(group, 0)
    b = prompts * group
    routing_rec: list[dict[int, list[torch.Tensor]]] = [{} for _ in range(b)]
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=completion_len)
    model.eval()
    gens = sample(model, prompt_rows.tolist(), params, g, routing_rec)
    completion = torch.ones(b, completion_len, dtype=torch.long)  # EOS id pads
    mask = torch.zeros(b, completion_len, dtype=torch.long)
    sampler_logp = torch.zeros(b, completion_len)
    for i, gen in enumerate(gens):
        n = len(gen.tokens)
        completion[i, :n] = torch.tensor(gen.tokens)
        mask[i, :n] = 1
        sampler_logp[i, :n] = torch.tensor(gen.logprobs)
    # routing of positions 0..P+C-2 (what a forward on ids[:, :-1] processes); rows that stopped
    # early are filled by a forward on the padded row, whose padding positions carry no loss
    t = prompt_len + completion_len
    with torch.no_grad():
        ids = torch.cat([prompt_rows, completion], 1)[:, :-1]
        fresh = model(ids, return_routing=True).routing
    routing = {}
    for layer, ids_BTK in fresh.items():
        rec = ids_BTK.clone()
        for i in range(b):
            got = routing_rec[i].get(layer, [])[: t - 1]
            if got:
                rec[i, : len(got)] = torch.stack(got)
        routing[layer] = rec
    offset = torch.rand(b, 1, generator=g) * 2 * stale
    old = (sampler_logp + offset) * mask
    ref = (sampler_logp + torch.randn(b, completion_len, generator=g) * ref_noise) * mask
    rewards = torch.rand(b, generator=g).round()  # pass/fail outcomes
    adv = group_advantages(rewards, [i // group for i in range(b)]).float()
    return FixedBatch(prompt_rows, completion, mask, old, ref, adv, routing)


def dsv32_train_batch(batch: FixedBatch) -> TrainBatch:
    b, p = batch.prompt_ids.shape
    ids = batch.ids
    zeros = torch.zeros(b, p)
    action = torch.cat([torch.zeros(b, p, dtype=torch.bool), batch.completion_mask.bool()], 1)
    kept = [[None] * ids.shape[1] for _ in range(b)]
    tb = TrainBatch(ids, action, torch.cat([zeros, batch.old_logp], 1), kept, batch.routing, batch.advantages)
    tb.ref_logp = torch.cat([zeros, batch.ref_logp], 1)
    return tb


def trl_inputs(batch: FixedBatch) -> dict[str, torch.Tensor]:
    return {
        "prompt_ids": batch.prompt_ids,
        "prompt_mask": torch.ones_like(batch.prompt_ids),
        "completion_ids": batch.completion_ids,
        "completion_mask": batch.completion_mask,
        "advantages": batch.advantages,
        "old_per_token_logps": batch.old_logp,
        "ref_per_token_logps": batch.ref_logp,
    }


def dsv32_loss(model, tb: TrainBatch, cfg: GRPOConfig, attention: str, keep: bool) -> LossOutput:
    """grpo_loss of the batch under `model`; keep=True turns on keep routing and the keep mask."""
    logp, _, _ = policy_logprobs(model, tb, keep, keep, cfg.temperature, attention)
    return grpo_loss(logp, tb.old_logp, tb.advantages, tb.action, cfg, tb.ref_logp)


def word_tokenizer(vocab_size: int):
    """A transformers tokenizer whose token 't{i}' is id i (TRL needs one; ids are given directly)."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t2"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="t0", eos_token="t1", pad_token="t1"
    )


def trl_trainer(
    hf_dir: str | Path,
    work_dir: str | Path,
    batch_size: int,
    group: int,
    completion_len: int,
    cfg: GRPOConfig,
    lr: float = 2e-4,
):
    """GRPOTrainer on the exported checkpoint with the V3.2 loss settings (raises ImportError without trl)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers
    from datasets import Dataset
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer

    hf = transformers.DeepseekV32ForCausalLM.from_pretrained(
        str(hf_dir), dtype=torch.float32, attn_implementation="eager"
    )
    args = TRLConfig(
        output_dir=str(Path(work_dir) / "trl"),
        per_device_train_batch_size=batch_size,
        num_generations=group,
        max_completion_length=completion_len,
        loss_type="grpo",
        beta=cfg.beta,
        epsilon=cfg.clip_eps_low,
        epsilon_high=cfg.clip_eps_high,
        use_bias_correction_kl=cfg.unbiased_kl,
        off_policy_mask_threshold=cfg.opsm_delta if cfg.opsm else None,
        temperature=cfg.temperature,
        learning_rate=lr,
        weight_decay=0.0,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        gradient_accumulation_steps=1,
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        dataloader_num_workers=0,
    )
    data = Dataset.from_dict({"prompt": ["t5 t6"] * batch_size})
    trainer = GRPOTrainer(
        model=hf,
        reward_funcs=lambda completions, **_: [0.0] * len(completions),
        args=args,
        train_dataset=data,
        processing_class=word_tokenizer(hf.config.vocab_size),
    )
    # set by Trainer's training loop; one optimiser step per batch here
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    return trainer


def trl_loss(trainer, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return trainer.compute_loss(trainer.model, inputs)


def _step(loss_fn, params, optimizer, backward=None) -> float:
    start = time.perf_counter()
    loss = loss_fn()
    (backward or torch.Tensor.backward)(loss)
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def compare(
    prompts: int = 4,
    group: int = 4,
    prompt_len: int = 24,
    completion_len: int = 40,
    reps: int = 5,
    seed: int = 0,
    beta: float = 0.04,
    delta: float = 0.5,
    index_topk: int | None = None,
) -> dict:
    """Time both sides on the tiny preset (with `index_topk` replaced when given) and compare losses."""
    cfg = GRPOConfig(beta=beta, opsm_delta=delta, unbiased_kl=True, opsm=True)
    config = preset("tiny")
    if index_topk is not None:
        config = config.replace(index_topk=index_topk)
    model = build_model(config, seed=seed)
    attention = "sparse" if prompt_len + completion_len - 1 > config.index_topk else "dense"
    batch = build_batch(model, prompts, group, prompt_len, completion_len, seed, delta)
    tb = dsv32_train_batch(batch)
    inputs = trl_inputs(batch)
    with tempfile.TemporaryDirectory() as work:
        save_checkpoint(model, config, Path(work) / "hf")
        trainer = trl_trainer(Path(work) / "hf", work, len(tb), group, completion_len, cfg)
        hf = trainer.model
        ours = {"dsv32": model, "dsv32 +keep": copy.deepcopy(model)}
        for m in ours.values():
            m.train()
        # the losses on identical weights, before any update
        loss_trl = float(trl_loss(trainer, inputs).detach())
        first = dsv32_loss(model, tb, cfg, attention, keep=False)
        loss_ours = float(first.loss.detach())
        loss_keep = float(dsv32_loss(ours["dsv32 +keep"], tb, cfg, attention, keep=True).loss.detach())
        trl_opt = trainer.create_optimizer()
        settings = {k: trl_opt.defaults[k] for k in ("lr", "betas", "eps", "weight_decay", "fused")}
        opts = {name: torch.optim.AdamW(m.parameters(), **settings) for name, m in ours.items()}
        steps = {
            "trl": lambda: _step(
                lambda: trl_loss(trainer, inputs), hf.parameters(), trl_opt, trainer.accelerator.backward
            ),
            "dsv32": lambda: _step(
                lambda: dsv32_loss(ours["dsv32"], tb, cfg, attention, False).loss,
                ours["dsv32"].parameters(),
                opts["dsv32"],
            ),
            "dsv32 +keep": lambda: _step(
                lambda: dsv32_loss(ours["dsv32 +keep"], tb, cfg, attention, True).loss,
                ours["dsv32 +keep"].parameters(),
                opts["dsv32 +keep"],
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in steps}
        for fn in steps.values():  # warm-up
            fn()
        for _ in range(reps):
            for name, fn in steps.items():
                times[name].append(fn())
    med = {name: statistics.median(ts) for name, ts in times.items()}
    return {
        "benchmark": "grpo_trl",
        "preset": "tiny",
        "index_topk": config.index_topk,
        "batch": len(tb),
        "prompts": prompts,
        "group": group,
        "prompt_len": prompt_len,
        "completion_len": completion_len,
        "completion_tokens": int(batch.completion_mask.sum()),
        "attention": attention,
        "threads": torch.get_num_threads(),
        "reps": reps,
        "beta": beta,
        "opsm_delta": delta,
        "opsm_masked_rows": int(first.metrics["opsm_masked_sequences"]),
        "trl_seconds": med["trl"],
        "dsv32_seconds": med["dsv32"],
        "dsv32_keep_seconds": med["dsv32 +keep"],
        "trl_over_dsv32": med["trl"] / med["dsv32"],
        "trl_over_dsv32_keep": med["trl"] / med["dsv32 +keep"],
        "loss_trl": loss_trl,
        "loss_dsv32": loss_ours,
        "loss_dsv32_keep": loss_keep,
        "loss_abs_diff": abs(loss_trl - loss_ours),
        "times": times,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group", type=int, default=4, help="G completions per prompt")
    parser.add_argument("--prompt-len", type=int, default=24)
    parser.add_argument("--completion-len", type=int, default=40)
    parser.add_argument(
        "--index-topk",
        default="64,16",
        help="comma-separated DSA top-k values, one regime each (>= prompt+completion: exactly dense)",
    )
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="directory for grpo_trl.json and grpo_trl.png")


def run(args: argparse.Namespace) -> int:
    from dsv32.bench.common import format_table, parse_lengths, save_figure, set_threads
    from dsv32.data.io import atomic_write_json

    try:
        import trl  # noqa: F401
    except ImportError:
        raise ValueError(
            "the TRL comparison needs trl: pip install trl --no-deps && pip install accelerate datasets"
        ) from None
    if args.reps < 1:
        raise ValueError(f"--reps must be >= 1, got {args.reps}")
    topks = parse_lengths(args.index_topk, "--index-topk")
    threads = set_threads(args.threads)
    results = [
        compare(
            args.prompts, args.group, args.prompt_len, args.completion_len, args.reps, args.seed, index_topk=k
        )
        for k in topks
    ]
    first = results[0]
    print(
        f"one GRPO optimisation step, tiny preset, B={first['batch']} (G={first['group']}), "
        f"prompt {first['prompt_len']} + completion {first['completion_len']} tokens, {threads} threads"
    )
    rows = []
    for res in results:
        regime = f"top-k {res['index_topk']} ({res['attention']})"
        rows += [
            [regime, "TRL GRPOTrainer", res["trl_seconds"], 1.0, res["loss_trl"]],
            [regime, "dsv32", res["dsv32_seconds"], res["trl_over_dsv32"], res["loss_dsv32"]],
            [regime, "dsv32 +keep", res["dsv32_keep_seconds"], res["trl_over_dsv32_keep"]]
            + [res["loss_dsv32_keep"]],
        ]
    print(format_table(["DSA regime", "side", "step s (median)", "TRL s / side s", "loss at step 0"], rows))
    for res in results:
        diff = res["loss_abs_diff"]
        print(f"top-k {res['index_topk']}: loss |TRL - dsv32| on identical weights {diff:.2e}")
    summary = {
        "benchmark": "grpo_trl",
        "threads": threads,
        "regimes": [{k: v for k, v in res.items() if k != "times"} for res in results],
    }
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "grpo_trl.json", {**summary, "times": [res["times"] for res in results]})
        _plot(rows, out / "grpo_trl.png", save_figure)
    print(json.dumps(summary))
    return 0


def _plot(rows: list[list], path: Path, save_figure) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    colors = {"TRL GRPOTrainer": "#888888", "dsv32": "#1f77b4", "dsv32 +keep": "#2ca02c"}
    ax.bar([f"{r[1]}\n{r[0]}" for r in rows], [r[2] for r in rows], color=[colors[r[1]] for r in rows])
    ax.set_ylabel("seconds per GRPO step (median)")
    ax.tick_params(axis="x", labelsize=6)
    save_figure(fig, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dsv32.bench.grpo_trl", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
