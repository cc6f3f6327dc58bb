"""Where post-training starts (`load_init`: a checkpoint or a run directory) and how a run ends
(`save_final`: the final weights join the run directory without wiping it)."""

import pytest
import torch

from dsv32.checkpoint import save_checkpoint
from dsv32.config import preset
from dsv32.model.transformer import build_model
from dsv32.rl.commands import save_final
from dsv32.rl.recipe import load_init
from dsv32.tokenizer import train_bpe
from dsv32.train.state import TRAINER_STATE


def _save(model, tok, directory):
    save_checkpoint(model, model.config, directory)
    tok.save(directory / "tokenizer.json")
    (directory / TRAINER_STATE).write_text("{}")


def test_a_run_directory_starts_from_its_latest_checkpoint(tmp_path):
    tok = train_bpe(["12 + 30 = 42, sorted: 1 2 3"] * 4, 300)
    config = preset("tiny").replace(vocab_size=tok.vocab_size)
    early, late = build_model(config, seed=0), build_model(config, seed=1)
    _save(early, tok, tmp_path / "run" / "checkpoints" / "step_000010")
    _save(late, tok, tmp_path / "run" / "checkpoints" / "step_000200")
    for path in (tmp_path / "run", tmp_path / "run" / "checkpoints" / "step_000200"):
        model, loaded_tok = load_init(path)
        for (name, got), want in zip(model.state_dict().items(), late.state_dict().values()):
            assert torch.equal(got, want), name
        assert loaded_tok.encode("12 + 30") == tok.encode("12 + 30")


def test_a_start_without_its_tokenizer_is_refused(tmp_path):
    model = build_model(preset("tiny"), seed=0)
    save_checkpoint(model, model.config, tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="ckpt/tokenizer.json not found"):
        load_init(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="neither a model checkpoint nor a run directory"):
        load_init(tmp_path / "empty")


def test_the_final_save_keeps_the_run_directory(tmp_path):
    tok = train_bpe(["12 + 30 = 42, sorted: 1 2 3"] * 4, 300)
    config = preset("tiny").replace(vocab_size=tok.vocab_size)
    run = tmp_path / "run"
    (run / "checkpoints" / "step_000010").mkdir(parents=True)
    (run / "grpo_metrics.jsonl").write_text('{"step": 0}\n')
    for seed in (0, 1):  # a second save replaces the weights, not the metrics
        final = build_model(config, seed=seed)
        save_final(final, tok, run)
    assert (run / "grpo_metrics.jsonl").read_text() == '{"step": 0}\n'
    assert (run / "checkpoints" / "step_000010").is_dir()
    model, _ = load_init(run)
    for (name, got), want in zip(model.state_dict().items(), final.state_dict().values()):
        assert torch.equal(got, want), name
    assert not list(tmp_path.glob(".run*"))  # no staging left behind
