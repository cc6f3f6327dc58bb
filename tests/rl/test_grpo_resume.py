"""GRPO checkpoints: a run stopped after a checkpoint and resumed equals the uninterrupted run."""

import json

import pytest
import torch

import dsv32.rl.grpo as grpo
from dsv32.chat.encoding import encode_messages
from dsv32.config import preset
from dsv32.model.transformer import build_model
from dsv32.rl.grpo import GRPORunConfig, run_grpo
from dsv32.rl.loss import GRPOConfig
from dsv32.rl.sft_data import cold_start_mix
from dsv32.tokenizer import train_bpe

TIMING = ("seconds", "rollout_seconds")


@pytest.fixture(scope="module")
def tok():
    ex = cold_start_mix(40, 0)
    return train_bpe([encode_messages(e["messages"], e["thinking_mode"]) for e in ex], 512)


def _cfg() -> GRPORunConfig:
    return GRPORunConfig(steps=3, prompts_per_step=2, group_size=2, max_new_tokens=6, micro_batch=4,
                         lr=1e-3, top_p=0.9, temperature=1.2, mu=2, loss=GRPOConfig(beta=0.05))  # fmt: skip


def _strip(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def test_resumed_grpo_equals_the_uninterrupted_run(tok, tmp_path, monkeypatch):
    import dsv32.rl.rewards as rewards

    # varied rewards so the updates are not all zero (an untrained model's outputs score alike)
    monkeypatch.setattr(
        rewards, "language_consistency", lambda prompt, response: (sum(map(ord, response)) % 7) / 6
    )
    straight = build_model(preset("tiny"), seed=3)
    full = run_grpo(straight, tok, _cfg(), metrics_path=tmp_path / "a.jsonl")

    real_step = grpo.grpo_step

    def stop_at_step_2(*args, **kwargs):
        if args[6] == 2:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    run = tmp_path / "run"
    monkeypatch.setattr(grpo, "grpo_step", stop_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        run_grpo(build_model(preset("tiny"), seed=3), tok, _cfg(), metrics_path=run / "m.jsonl", run_dir=run,
                 save_every=2)  # fmt: skip
    assert (run / "reference").is_dir() and (run / "checkpoints" / "step_000002").is_dir()
    with (run / "m.jsonl").open("a") as f:  # a record past the checkpoint (as if step 3 had been logged)
        f.write(json.dumps({"step": 99}) + "\n")
    monkeypatch.setattr(grpo, "grpo_step", real_step)
    resumed_model = build_model(preset("tiny"), seed=7)  # other weights: the checkpoint must overwrite them
    resumed = run_grpo(resumed_model, tok, _cfg(), metrics_path=run / "m.jsonl", run_dir=run, save_every=2)
    assert _strip(resumed) == _strip(full)
    logged = [json.loads(line) for line in (run / "m.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [0, 1, 2]
    for (name, a), b in zip(straight.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name
    assert (run / "checkpoints" / "step_000003").is_dir()


def test_resume_without_reference_is_refused(tok, tmp_path):
    run = tmp_path / "run"
    cfg = GRPORunConfig(
        steps=1, prompts_per_step=1, group_size=2, max_new_tokens=4, loss=GRPOConfig(beta=0.05)
    )
    run_grpo(build_model(preset("tiny"), seed=3), tok, cfg, run_dir=run, save_every=1)
    import shutil

    shutil.rmtree(run / "reference")
    with pytest.raises(FileNotFoundError, match="reference"):
        run_grpo(build_model(preset("tiny"), seed=3), tok, cfg, run_dir=run, save_every=1)
