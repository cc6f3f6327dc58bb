"""The headline experiment: dense pretraining -> indexer warm-up -> sparse training, evaluated side
by side with the dense model, plus the ablation that skips the warm-up.

A recipe is JSON: `common` (TrainConfig keys shared by all stages), `stages` (`pretrain`,
`dsa-warmup`, `dsa-sparse`: per-stage keys on top), optional `ablation` (keys on top of `dsa-sparse`
for the no-warm-up run), optional `curriculum` (keys on top of `pretrain` for a first, short-context
pretraining run that the main one starts from; or a list of such objects, run in order, each
starting from the one before) and `eval` (`EvalSettings` keys; `extra: true` also
evaluates the warmed-up model with sparse attention before sparse training). Names resolve to
`dsv32/recipes/headline-<name>.json` (package data).

Output directory: run directories [`pretrain_short/` | `pretrain_short_1/`, ...,] `pretrain/`,
`warmup/`, `sparse/`, `sparse_no_warmup/`, `cache/` (tokenizer and shards, shared), `results.json`,
`results.md` and `losses.png`, `recall.png`, `accuracy.png`. A stage whose run already holds its
final checkpoint is not re-run, so an interrupted recipe continues where it stopped (an interrupted
stage resumes exactly).
Parity targets reported: the dense model at least 90% passkey and 50% kv_recall at its trained
length; sparse vs dense within 2 accuracy points per task and validation loss within 2%.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from dsv32.config import atomic_write_text
from dsv32.train.config import TrainConfig, apply_overrides, stage_dict
from dsv32.train.state import latest_checkpoint

log = logging.getLogger(__name__)

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


def recipe_runs(spec: dict, ablation: bool = True) -> list[tuple[str, str, str | None]]:
    """(run directory, stage, run it starts from), in order. A recipe with a `curriculum` object
    (dotted overrides of the pretrain stage, e.g. {"seq_len": 128, "batch_size": 32, "steps": 900})
    first pretrains under those settings ("pretrain_short") and starts the main pretraining from it;
    a list of such objects runs them in order ("pretrain_short_1", ...), each from the one before.
    Retrieval forms at short context long before it does at 2048 (see README)."""
    runs, previous = [], None
    for name in curriculum_runs(spec):
        runs.append((name, "pretrain", previous))
        previous = name
    runs += [
        ("pretrain", "pretrain", previous),
        ("warmup", "dsa-warmup", "pretrain"),
        ("sparse", "dsa-sparse", "warmup"),
    ]
    return runs + [("sparse_no_warmup", "dsa-sparse", "pretrain")] if ablation else runs


def curriculum_runs(spec: dict) -> dict[str, dict[str, Any]]:
    """Run name -> the pretrain overrides of that curriculum run (empty without a curriculum)."""
    phases = spec.get("curriculum") or []
    if isinstance(phases, dict):
        return {"pretrain_short": phases}
    if not isinstance(phases, list) or not all(isinstance(p, dict) for p in phases):
        raise ValueError(f"recipe 'curriculum' must be an object or a list of objects, got {phases!r}")
    return {f"pretrain_short_{i + 1}": p for i, p in enumerate(phases)}


def load_recipe(recipe: str | Path | dict, overrides: list[str] | None = None) -> dict[str, Any]:
    if isinstance(recipe, dict):
        data = recipe
    else:
        path = Path(recipe)
        if not path.suffix:
            path = RECIPES_DIR / f"headline-{recipe}.json"
        if not path.is_file():
            known = sorted(p.stem.removeprefix("headline-") for p in RECIPES_DIR.glob("headline-*.json"))
            raise FileNotFoundError(f"recipe {recipe!r} not found at {path}; known names: {known}")
        data = json.loads(path.read_text())
    if "stages" not in data:
        raise ValueError("a recipe needs a 'stages' object with pretrain, dsa-warmup and dsa-sparse")
    return apply_overrides(data, overrides or [])


def stage_config(recipe: dict, run: str, stage: str, out_dir: Path) -> TrainConfig:
    data = stage_dict(recipe, stage)
    changes = recipe.get("ablation", {}) if run == "sparse_no_warmup" else curriculum_runs(recipe).get(run)
    if changes:
        data = apply_overrides(data, [f"{k}={json.dumps(v)}" for k, v in changes.items()])
    data.setdefault("data", {})
    if not data["data"].get("cache_dir"):
        data["data"]["cache_dir"] = str(out_dir / "cache")
    return TrainConfig.from_dict(data)


def parity(results: dict[str, dict], dense: str, sparse: str) -> dict:
    d, s = results[dense], results[sparse]
    per_task = {}
    for task, by_len in d["accuracy"].items():
        for length, acc in by_len.items():
            other = s["accuracy"].get(task, {}).get(length)
            if other is not None:
                per_task[f"{task}@{length}"] = round(100 * (other - acc), 2)
    loss_rel = (s["val_loss"] - d["val_loss"]) / d["val_loss"]
    return {
        "accuracy_delta_points": per_task,
        "accuracy_within_2_points": all(abs(v) <= 2.0 for v in per_task.values()),
        "val_loss_relative": round(loss_rel, 5),
        "val_loss_within_2_percent": abs(loss_rel) <= 0.02,
    }


def dense_gate(result: dict) -> dict:
    acc = result["accuracy"]

    def best(task):
        return max(acc.get(task, {}).values(), default=None)

    pk, kv = best("passkey"), best("kv_recall")
    return {
        "passkey": pk,
        "kv_recall": kv,
        "passkey_at_least_90": pk is not None and pk >= 0.9,
        "kv_recall_at_least_50": kv is not None and kv >= 0.5,
    }


def run_recipe(
    recipe: str | Path | dict,
    out_dir: str | Path,
    overrides: list[str] | None = None,
    *,
    ablation: bool = True,
    progress: bool = True,
) -> dict:
    """Run the whole experiment into `out_dir`; returns (and writes) the results dictionary."""
    from dsv32.evaluate.longctx import EvalSettings, compare_table, evaluate_checkpoint
    from dsv32.train.plots import plot_recipe, read_metrics
    from dsv32.train.runner import train_stage

    out_dir = Path(out_dir)
    spec = load_recipe(recipe, overrides)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "recipe.json", json.dumps(spec, indent=2) + "\n")
    timings: dict[str, float] = {}
    dirs: dict[str, Path] = {}
    for run, stage, init in recipe_runs(spec, ablation):
        cfg = stage_config(spec, run, stage, out_dir)
        dirs[run] = out_dir / run
        latest = latest_checkpoint(dirs[run])
        if (
            latest is not None
            and json.loads((latest / "trainer_state.json").read_text())["step"] >= cfg.steps
        ):
            log.info("%s: already complete at %s", run, latest)
            continue
        start = time.perf_counter()
        log.info("recipe stage %s (%s, %d steps)", run, stage, cfg.steps)
        train_stage(cfg, dirs[run], init_from=dirs[init] if init else None, progress=progress)
        timings[run] = round(time.perf_counter() - start, 1)
    ev = dict(spec.get("eval", {}))
    extra = ev.pop("extra", False)
    settings = EvalSettings(**ev)
    start = time.perf_counter()
    evals = {"dense": (dirs["pretrain"], "dense"), "sparse": (dirs["sparse"], "sparse")}
    if ablation:
        evals["sparse_no_warmup"] = (dirs["sparse_no_warmup"], "sparse")
    if extra:
        evals["warmup_only_sparse"] = (dirs["warmup"], "sparse")
        evals["no_training_sparse"] = (dirs["pretrain"], "sparse")
    results = {
        label: evaluate_checkpoint(path, attention, settings) for label, (path, attention) in evals.items()
    }
    timings["eval"] = round(time.perf_counter() - start, 1)
    recall_curve = [
        {"step": r["step"], "recall": r["recall"], "oracle_recall": r.get("oracle_recall")}
        for r in read_metrics(dirs["warmup"])
        if r["kind"] == "recall"
    ]
    summary = {
        "recipe": spec.get("name"),
        "results": results,
        "dense_gate": dense_gate(results["dense"]),
        "parity": parity(results, "dense", "sparse"),
        "parity_no_warmup": parity(results, "dense", "sparse_no_warmup") if ablation else None,
        "warmup_recall": recall_curve,
        "stage_seconds": timings,
    }
    plots = plot_recipe(out_dir, dirs, results)
    summary["plots"] = [p.name for p in plots]
    atomic_write_text(out_dir / "results.json", json.dumps(summary, indent=2) + "\n")
    table = compare_table(results)
    md = [f"# Recipe {spec.get('name')}", "", table, "", "Dense gate: " + json.dumps(summary["dense_gate"]),
          "Parity (sparse vs dense): " + json.dumps(summary["parity"]),
          "Parity without warm-up: " + json.dumps(summary["parity_no_warmup"]),
          "Warm-up recall (step: recall / oracle): "
          + ", ".join(f"{r['step']}: {r['recall']:.3f} / {r['oracle_recall']:.3f}" for r in recall_curve),
          "Seconds per stage: " + json.dumps(timings), ""]  # fmt: skip
    atomic_write_text(out_dir / "results.md", "\n".join(md))
    return summary
