"""Synthesized environments in post-training: task pools, episodes, GRPO groups and pass@1."""

import sqlite3

import pytest
import torch

from dsv32.chat.encoding import encode_messages
from dsv32.config import preset
from dsv32.envs.pipeline import synthesize_many
from dsv32.model.transformer import build_model
from dsv32.rl.env_tasks import env_tasks
from dsv32.rl.evaluate import pass_at_1
from dsv32.rl.grpo import GRPORunConfig, plan_step, run_grpo, task_pools
from dsv32.rl.sft_data import cold_start_mix
from dsv32.tokenizer import train_bpe


@pytest.fixture(scope="module")
def env_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("envs")
    synthesize_many(root, 6, seed=3, workers=1, k=1, categories=["budgeting", "inventory"], progress=False)
    return root


def test_pools_split_every_task_once_and_filter_levels(env_root):
    train, heldout = env_tasks(env_root, "train"), env_tasks(env_root, "heldout")
    every = {(t.env_dir, t.task_id) for t in env_tasks(env_root, "train", (1, 2, 3, 4, 5))} | {
        (t.env_dir, t.task_id) for t in env_tasks(env_root, "heldout", (1, 2, 3, 4, 5))
    }
    assert train and not {t.task_id for t in train} & {t.task_id for t in heldout}
    assert {(t.env_dir, t.task_id) for t in train + heldout} <= every
    assert all(t.level == 1 for t in env_tasks(env_root, "train", (1,)))
    with pytest.raises(ValueError, match="split"):
        env_tasks(env_root, "test")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        env_tasks(env_root / "missing")
    with pytest.raises(ValueError, match="no environments"):
        env_tasks(env_root / "budgeting-00000")  # an environment, not a root of environments


def test_episode_from_env_closes_its_database_connections(env_root):
    episode = env_tasks(env_root)[0].episode()
    assert episode.reset()["user"]
    episode.close()
    for conn in (episode.db, episode.pristine):
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("select 1")


def test_env_mix_needs_env_dir():
    with pytest.raises(ValueError, match="env_dir"):
        GRPORunConfig(task_mix={"env": 1.0})


def test_grpo_step_and_pass_at_1_on_environment_tasks(env_root):
    torch.manual_seed(0)
    ex = cold_start_mix(40, 0)
    tok = train_bpe([encode_messages(e["messages"], e["thinking_mode"]) for e in ex], 512)
    cfg = GRPORunConfig(steps=1, prompts_per_step=2, group_size=2, max_new_tokens=4, max_turns=1,
                        task_mix={"env": 1.0, "calc": 0.0}, env_dir=str(env_root))  # fmt: skip
    pools = task_pools(cfg)
    assert set(pools) == {"env"} and all(t.split == "train" for t in pools["env"])
    plan = plan_step(cfg, 0, pools)
    assert [k for k, _ in plan] == ["env", "env"] and all(t in pools["env"] for _, t in plan)
    model = build_model(preset("tiny"), seed=1)
    record = run_grpo(model, tok, cfg)[0]
    assert {"reward/env", "outcome/env", "length/env"} <= set(record)
    assert "reward/calc" not in record and 0 < record["length/env"] <= cfg.max_new_tokens
    heldout = env_tasks(env_root, "train")[:3]  # any tasks will do for the shape of the result
    scores = pass_at_1(model, tok, [], [], max_new_tokens=4, max_turns=1, env=heldout)
    levels = {t.level for t in heldout}
    assert set(scores) == {"env", "length/env"} | {f"env/L{lv}" for lv in levels}
    assert 0.0 <= scores["env"] <= 1.0


def test_grpo_step_compacts_environment_episodes(env_root, monkeypatch):
    from test_rollout_context import always_calls

    from dsv32.rl.grpo import group_jobs

    ex = cold_start_mix(40, 0)
    tok = train_bpe([encode_messages(e["messages"], e["thinking_mode"]) for e in ex], 512)
    base = dict(steps=1, prompts_per_step=2, group_size=2, max_new_tokens=4, max_turns=3,
                task_mix={"env": 1.0}, env_dir=str(env_root))  # fmt: skip
    probe = GRPORunConfig(**base)
    jobs = [
        job
        for kind, task in plan_step(probe, 0, task_pools(probe))
        for job in group_jobs(tok, probe, kind, task)
    ]
    budget = max(len(job.prompt_ids) for job in jobs) + 1
    for job in jobs:
        job.close()
    tool = jobs[0].tools[0]["function"]["name"]
    always_calls(monkeypatch, tool, {})  # every turn calls an environment tool
    cfg = GRPORunConfig(**base, context_strategy="discard-75", context_budget=budget)
    record = run_grpo(build_model(preset("tiny"), seed=1), tok, cfg)[0]
    assert record["compactions"] == 8 and record["segments"] == 12  # after turns 1 and 2 of 4 episodes


def test_cli_task_mix_arguments():
    from argparse import Namespace

    from dsv32.rl.commands import _task_mix_args

    args = Namespace(max_turns=2, env_dir="E", env_levels="1,3", task_mix=None)
    assert _task_mix_args(args) == {
        "max_turns": 2, "env_dir": "E", "env_levels": (1, 3),
        "task_mix": {"reasoning": 1.0, "calc": 1.0, "env": 1.0},
    }  # fmt: skip
    args = Namespace(max_turns=3, env_dir=None, env_levels="1", task_mix="reasoning=0.7,calc=0.3")
    assert _task_mix_args(args)["task_mix"] == {"reasoning": 0.7, "calc": 0.3}
    with pytest.raises(SystemExit, match="--task-mix"):
        _task_mix_args(Namespace(max_turns=3, env_dir=None, env_levels="1", task_mix="reasoning:1"))
