"""The stages of `dsv32 demo`, in order. Each is a thin call into the library; what a stage does is
in its title, and what it found is in its JSON result (headline + the data the report plots).

Sizes come from the preset's recipe (`dsv32/recipes/headline-<preset>.json`) and `DEMO_SIZES`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from dsv32.demo.runner import RunContext, Stage

log = logging.getLogger(__name__)

# Per-preset sizes of the stages that are not part of the training recipe.
DEMO_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "envs_per_category": 3, "search_docs": 300, "search_questions": 8, "agent_max_steps": 6,
        "agent_window": 2048, "attention_quick": True,
    },
    "small": {
        "envs_per_category": 12, "search_docs": 2000, "search_questions": 30, "agent_max_steps": 12,
        "agent_window": 8192, "attention_quick": True,
    },
}  # fmt: skip


def sizes(ctx: RunContext) -> dict[str, Any]:
    return {**DEMO_SIZES[ctx.preset], **ctx.options.get("sizes", {})}


def _recipe(ctx: RunContext) -> dict:
    from dsv32.train.recipe import load_recipe

    if "recipe" not in ctx.options:
        ctx.options["recipe"] = load_recipe(ctx.preset)
    return ctx.options["recipe"]


def _train(ctx: RunContext, run: str, stage: str, init: str | None) -> dict:
    from dsv32.train.plots import read_metrics
    from dsv32.train.recipe import stage_config
    from dsv32.train.runner import train_stage

    root = ctx.stage_dir("dsa")
    cfg = stage_config(_recipe(ctx), run, stage, root)
    train_stage(cfg, root / run, init_from=root / init if init else None, progress=True)
    records = read_metrics(root / run)
    losses = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train" and "loss" in r]
    result: dict[str, Any] = {"run_dir": str(root / run), "steps": cfg.steps, "loss_curve": losses}
    if losses:
        result["headline"] = f"{cfg.steps} steps, loss {losses[0][1]:.3f} -> {losses[-1][1]:.3f}"
    recall = [(r["step"], r["recall"]) for r in records if r.get("kind") == "recall"]
    if recall:
        result["recall_curve"] = recall
        result["headline"] += f", indexer recall {recall[0][1]:.2f} -> {recall[-1][1]:.2f}"
    return result


def stage_tokenizer(ctx: RunContext) -> dict:
    from dsv32.train.data import get_tokenizer, load_corpus
    from dsv32.train.recipe import stage_config

    cfg = stage_config(_recipe(ctx), "pretrain", "pretrain", ctx.stage_dir("dsa"))
    corpus = load_corpus(cfg.data)
    tok = get_tokenizer(cfg.data, corpus, Path(cfg.data.cache_dir))
    files = len(corpus.split_files("train"))
    return {
        "vocab_size": tok.vocab_size,
        "headline": f"{tok.vocab_size}-token byte-level BPE on {files} stdlib files",
    }


def stage_pretrain(ctx: RunContext) -> dict:
    from dsv32.train.recipe import recipe_runs

    # The recipe's curriculum runs (if any) are part of pretraining: each starts from the one before.
    runs = [(run, init) for run, stage, init in recipe_runs(_recipe(ctx), False) if stage == "pretrain"]
    for run, init in runs[:-1]:
        _train(ctx, run, "pretrain", init)
    return _train(ctx, "pretrain", "pretrain", runs[-1][1])


def stage_dsa_warmup(ctx: RunContext) -> dict:
    return _train(ctx, "warmup", "dsa-warmup", "pretrain")


def stage_dsa_sparse(ctx: RunContext) -> dict:
    return _train(ctx, "sparse", "dsa-sparse", "warmup")


def stage_long_context_eval(ctx: RunContext) -> dict:
    from dsv32.evaluate.longctx import EvalSettings, evaluate_checkpoint

    root = ctx.stage_dir("dsa")
    settings = EvalSettings(**{k: v for k, v in _recipe(ctx).get("eval", {}).items() if k != "extra"})
    dense = evaluate_checkpoint(root / "pretrain", "dense", settings)
    sparse = evaluate_checkpoint(root / "sparse", "sparse", settings)
    (root / "eval.json").write_text(json.dumps({"dense": dense, "sparse": sparse}, indent=2))

    def mean_acc(r: dict) -> float:
        values = [v for by_len in r["accuracy"].values() for v in by_len.values()]
        return sum(values) / max(len(values), 1)

    return {
        "accuracy": {"dense": dense["accuracy"], "sparse": sparse["accuracy"]},
        "val_loss": {"dense": dense["val_loss"], "sparse": sparse["val_loss"]},
        "indexer_recall": sparse["indexer_recall"],
        "headline": (
            f"mean exact match dense {mean_acc(dense):.2f} vs sparse {mean_acc(sparse):.2f}; "
            f"val loss {dense['val_loss']:.3f} vs {sparse['val_loss']:.3f}; "
            f"indexer recall {sparse['indexer_recall']:.2f}"
        ),
    }


def _checkpoint(ctx: RunContext, stage: str, key: str = "checkpoint") -> Path:
    if stage not in ctx.results or key not in ctx.results[stage]:
        raise ValueError(f"stage {stage!r} must finish before this one (rerun `dsv32 demo` without --only)")
    return Path(ctx.results[stage][key])


def stage_post_training(ctx: RunContext) -> dict:
    from dsv32.rl.recipe import run_recipe
    from dsv32.train.state import latest_checkpoint

    sparse = latest_checkpoint(ctx.stage_dir("dsa") / "sparse")
    out = ctx.stage_dir("post")
    result = run_recipe(out, size=ctx.preset, init=sparse, seed=ctx.seed)
    rewards: dict[str, list] = {}
    for record in result["grpo"]:
        for key, value in record.items():
            if key.startswith("reward/"):
                rewards.setdefault(key.removeprefix("reward/"), []).append((record["step"], value))
    before, after = result["pass_at_1_sft"], result["pass_at_1_grpo"]
    return {
        "checkpoint": str(out / "grpo"),
        "pass_at_1_sft": before,
        "pass_at_1_grpo": after,
        "reward_curves": rewards,
        "headline": f"SFT from the sparse model, then GRPO ({result['variant']}); pass@1 {_pass(before)} -> "
        f"{_pass(after)} (a model this small is not expected to learn the tasks)",
    }


def _pass(table: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in table.items() if isinstance(v, (int, float)))


def stage_agent_eval(ctx: RunContext) -> dict:
    """Every context strategy on the search environment: the trained model behind dsv32's own server,
    and the deterministic scripted policy as a reference that can actually solve the questions."""
    from openai import OpenAI

    from dsv32.agent.evaluate import EvalConfig, evaluate
    from dsv32.agent.scripted import ScriptedServer
    from dsv32.agent.scripted_search import SearchPolicy
    from dsv32.agent.search_env import SearchEnvironment
    from dsv32.serve.loading import load_server_state
    from dsv32.serve.server import running_server

    size = sizes(ctx)
    env = SearchEnvironment.build(size["search_docs"], size["search_questions"], seed=ctx.seed)
    strategies = ("none", "summary", "discard-75", "discard-all", "parallel-fewest-step")
    out = ctx.stage_dir("agent_eval")
    accuracy, steps = {}, {}
    scripted_cfg = EvalConfig(strategies, max_steps=24, context_window=2500, parallel_n=2)
    with ScriptedServer(SearchPolicy()) as server:
        client = OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60)
        report = evaluate(env, client, "scripted", scripted_cfg, out / "scripted")
    accuracy["search (scripted policy)"] = {k: v["accuracy"] for k, v in report["strategies"].items()}
    steps["search (scripted policy)"] = {k: v["mean_steps"] for k, v in report["strategies"].items()}
    state = load_server_state(_checkpoint(ctx, "post_training"))
    model_cfg = EvalConfig(strategies, max_steps=size["agent_max_steps"], context_window=size["agent_window"],
                           parallel_n=2, concurrency=2)  # fmt: skip
    with running_server(state) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        report = evaluate(env, client, state.model_name, model_cfg, out / "model",
                          request_kwargs={"max_tokens": 64, "temperature": 0.0})  # fmt: skip
    accuracy["search (trained model)"] = {k: v["accuracy"] for k, v in report["strategies"].items()}
    steps["search (trained model)"] = {k: v["mean_steps"] for k, v in report["strategies"].items()}
    scripted = accuracy["search (scripted policy)"]
    return {
        "accuracy": accuracy,
        "mean_steps": steps,
        "headline": "scripted policy: "
        + ", ".join(f"{k} {v:.2f}" for k, v in scripted.items())
        + f"; trained model best {max(accuracy['search (trained model)'].values()):.2f}",
    }


def stage_serving(ctx: RunContext) -> dict:
    from dsv32.serve.smoke import serving_smoke_test

    result = serving_smoke_test(_checkpoint(ctx, "post_training"))
    ok = result["finish_reason"] in ("stop", "length") and result["stream_matches"]
    return {
        **result,
        "ok": ok,
        "headline": f"openai client chat + stream via dsv32 serve: {'ok' if ok else 'FAILED'}",
    }


def stage_env_synthesis(ctx: RunContext) -> dict:
    from collections import Counter

    from dsv32.envs.pipeline import load_candidates, synthesize_many
    from dsv32.envs.stats import difficulty_rows

    out = ctx.stage_dir("envs")
    summary = synthesize_many(out, sizes(ctx)["envs_per_category"] * 10, seed=ctx.seed)
    records = load_candidates(out)
    per_category = Counter(r["category"] for r in records if r["kept"])
    difficulty = difficulty_rows(records)
    return {
        "summary": summary,
        "tasks_per_category": dict(per_category),
        "difficulty": difficulty,
        "headline": f"{summary['n_envs']} environments, {summary['n_tasks']} verified tasks; "
        + "baseline pass rate "
        + ", ".join(f"L{d['level']} {d['pass_rate']:.2f}" for d in difficulty),
    }


def stage_attention_cost(ctx: RunContext) -> dict:
    """Per-token attention time at DeepSeek-V3.2's shape, dense vs DSA (the quick length set)."""
    import argparse

    from dsv32.bench import attention

    out = ctx.stage_dir("attention_cost")
    parser = argparse.ArgumentParser()
    attention.add_arguments(parser)
    attention.run(parser.parse_args(["--quick", "--out", str(out)]))
    result = json.loads((out / "attention.json").read_text())
    rows = [
        {"phase": r["phase"], "context": r["length"], "ratio": r["ratio"],
         "dense_ms": r["dense_s"] * 1e3, "dsa_ms": r["dsa_s"] * 1e3}
        for r in result["rows"]
    ]  # fmt: skip
    longest = {
        ph: max((r for r in rows if r["phase"] == ph), key=lambda r: r["context"])
        for ph in ("decode", "prefill")
    }
    return {
        "rows": rows,
        "headline": ", ".join(
            f"{ph} at {r['context']}: dense/DSA time {r['ratio']:.2f}" for ph, r in longest.items()
        ),
    }


STAGES: list[Stage] = [
    Stage("tokenizer", "train a byte-level BPE with the DeepSeek-V3.2 special tokens", stage_tokenizer),
    Stage("pretrain", "dense pretraining on stdlib text + synthetic long-context tasks", stage_pretrain),
    Stage("dsa_warmup", "dense warm-up: only the indexers train, KL to the attention", stage_dsa_warmup),
    Stage("dsa_sparse", "sparse training: top-k attention, LM loss + detached indexer KL", stage_dsa_sparse),
    Stage("long_context_eval", "exact match, val loss and recall: dense vs sparse", stage_long_context_eval),
    Stage(
        "env_synthesis", "synthesize verifiable agent environments and gate their tasks", stage_env_synthesis
    ),
    Stage("post_training", "cold-start SFT, then GRPO with the four V3.2 fixes", stage_post_training),
    Stage("agent_eval", "every context strategy on the search environment", stage_agent_eval),
    Stage(
        "attention_cost", "per-token attention time, dense MLA vs DSA, official shape", stage_attention_cost
    ),
    Stage("serving", "serve the final model and chat through the openai client", stage_serving),
]
