"""The post-training recipe: cold-start SFT, then GRPO, with pass@1 before and after.

`run_recipe(out_dir, size="tiny"|"small", init=None)`:
1. data: the cold-start mix (`dsv32.rl.sft_data.cold_start_mix`) written to `sft.jsonl`;
2. model and tokenizer: from `init` (a checkpoint holding `tokenizer.json`, or a training run
   directory such as `dsv32 train recipe`'s `pretrain/`, whose latest checkpoint is used) or,
   without one, a fresh preset model and a BPE trained on the SFT text (vocabulary = the preset's);
3. SFT (`dsv32.rl.sft.run_sft`), checkpoint `sft/`, pass@1 on held-out reasoning and calculator
   tasks (levels 1-3);
4. GRPO (`dsv32.rl.grpo.run_grpo`) from the SFT model with the preset `v3.2` (or `speciale`),
   checkpoint `grpo/`, pass@1 again; `results.json` holds both tables and the metric histories.
With `env_dir` (environments from `dsv32 envs synth`), the synthesized environments join in: expert
trajectories of their training tasks in the SFT data, a third of the GRPO groups on their training
tasks, and pass@1 on their held-out tasks (levels 1-3) next to the other two.
The `tiny` size is sized to finish in a few minutes on 2 CPU cores and demonstrates the pipeline
only: a 1.3M-parameter model trained for seconds does not learn these tasks, so its pass@1 numbers
are not evidence of the method. The `small` size (a fresh model with the output head tied to the
embedding, or `init`) is the headline: 1,200 SFT steps and 120 GRPO steps, pass@1 on 128 held-out
reasoning tasks (with a per-kind breakdown) and 24 calculator episodes. Ablations are `run_grpo`
with one `GRPOConfig` switch turned off.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from dsv32.chat.encoding import encode_messages
from dsv32.checkpoint import load_model, save_checkpoint
from dsv32.config import atomic_write_text, preset
from dsv32.model.transformer import build_model
from dsv32.rl.env_tasks import env_tasks
from dsv32.rl.evaluate import heldout_tasks, pass_at_1
from dsv32.rl.grpo import GRPORunConfig, run_grpo
from dsv32.rl.presets import grpo_preset
from dsv32.rl.sft import SFTConfig, run_sft
from dsv32.rl.sft_data import cold_start_mix, env_expert_examples, write_jsonl
from dsv32.tokenizer import Tokenizer, train_bpe
from dsv32.train.state import resolve_checkpoint

log = logging.getLogger(__name__)

SIZES = {
    # examples, SFT steps/batch/lr, GRPO steps/prompts/G, held-out counts, max new tokens, and
    # overrides of a fresh model's preset
    "tiny": dict(
        examples=300,
        sft_steps=40,
        sft_batch=8,
        sft_lr=3e-3,
        grpo_steps=2,
        prompts=4,
        group=4,
        eval_r=8,
        eval_c=3,
        max_new=40,
        model_overrides={},
    ),
    "small": dict(
        examples=4000,
        sft_steps=1200,
        sft_batch=16,
        sft_lr=1e-3,
        grpo_steps=120,
        prompts=8,
        group=8,
        eval_r=128,
        eval_c=24,
        max_new=96,
        # copying from the prompt (digits, letters) is what these tasks need; a tied head learns it
        # sooner (README, "Learning retrieval at small scale")
        model_overrides=dict(tie_word_embeddings=True, initializer_range=0.05),
    ),
}


def load_init(path: str | Path):
    """(model, tokenizer) from a checkpoint directory, or from a training run directory (its latest
    checkpoint), that holds `tokenizer.json`."""
    checkpoint = resolve_checkpoint(path)
    if not (checkpoint / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{checkpoint}/tokenizer.json not found: the model to start from needs it")
    return load_model(checkpoint), Tokenizer.load(checkpoint / "tokenizer.json")


def fresh_model(size: str, examples: list[dict], seed: int = 0):
    """(model, tokenizer): the size's preset with its overrides, and a BPE trained on the SFT text."""
    config = preset("tiny" if size == "tiny" else "small")
    texts = [encode_messages(e["messages"], e["thinking_mode"]) for e in examples]
    tokenizer = train_bpe(texts, config.vocab_size)
    config = config.replace(vocab_size=tokenizer.vocab_size, **SIZES[size]["model_overrides"])
    return build_model(config, seed=seed), tokenizer


def sft_config(size: str, seed: int = 0) -> SFTConfig:
    s = SIZES[size]
    return SFTConfig(steps=s["sft_steps"], batch_size=s["sft_batch"], lr=s["sft_lr"], log_every=10, seed=seed)


def run_recipe(
    out_dir: str | Path,
    size: str = "tiny",
    init: str | Path | None = None,
    variant: str = "v3.2",
    seed: int = 0,
    env_dir: str | Path | None = None,
) -> dict:
    if size not in SIZES:
        raise ValueError(f"recipe size must be one of {sorted(SIZES)}, got {size!r}")
    s = SIZES[size]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    examples = cold_start_mix(s["examples"], seed)
    env_heldout, env_grpo = [], {}
    if env_dir is not None:
        train_envs = env_tasks(env_dir, "train")
        env_heldout = env_tasks(env_dir, "heldout")[: s["eval_c"]]
        env_grpo = {"env_dir": str(env_dir), "task_mix": {"reasoning": 1.0, "calc": 1.0, "env": 1.0}}
        ids = {t.task_id for t in train_envs}
        for path in sorted({t.env_dir for t in train_envs}):
            examples += env_expert_examples(path, thinking=True, task_ids=ids)
    write_jsonl(out / "sft.jsonl", examples)
    if init is not None:
        model, tokenizer = load_init(init)
    else:
        model, tokenizer = fresh_model(size, examples, seed)
    tokenizer.save(out / "tokenizer.json")
    heldout_r, heldout_c = heldout_tasks(s["eval_r"], s["eval_c"], seed)

    def evaluate() -> dict:
        return pass_at_1(model, tokenizer, heldout_r, heldout_c, max_new_tokens=s["max_new"], env=env_heldout)

    sft_hist = run_sft(model, tokenizer, examples, sft_config(size, seed), out / "sft_metrics.jsonl")
    save_checkpoint(model, model.config, out / "sft")
    tokenizer.save(out / "sft" / "tokenizer.json")
    before = evaluate()
    log.info("pass@1 after SFT: %s", before)
    grpo_cfg: GRPORunConfig = grpo_preset(
        variant,
        steps=s["grpo_steps"],
        prompts_per_step=s["prompts"],
        group_size=s["group"],
        max_new_tokens=s["max_new"],
        seed=seed,
        **env_grpo,
    )
    grpo_hist = run_grpo(model, tokenizer, grpo_cfg, metrics_path=out / "grpo_metrics.jsonl")
    save_checkpoint(model, model.config, out / "grpo")
    tokenizer.save(out / "grpo" / "tokenizer.json")
    after = evaluate()
    log.info("pass@1 after GRPO: %s", after)
    result = {
        "size": size,
        "variant": variant,
        "init": str(init) if init else None,
        "env_dir": str(env_dir) if env_dir else None,
        "pass_at_1_sft": before,
        "pass_at_1_grpo": after,
        "sft_final_loss": sft_hist[-1]["loss"],
        "grpo": grpo_hist,
        "grpo_config": grpo_cfg.to_dict(),
        "seconds": round(time.perf_counter() - start, 1),
    }
    atomic_write_text(out / "results.json", json.dumps(result, indent=2, default=str) + "\n")
    torch.set_grad_enabled(True)
    return result
