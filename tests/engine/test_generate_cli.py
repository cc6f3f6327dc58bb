import json

import pytest
import torch

from dsv32.checkpoint import save_checkpoint
from dsv32.cli import main
from dsv32.config import preset
from dsv32.engine.generate import encode_prompt, load_engine
from dsv32.engine.sampling import SamplingParams
from dsv32.model.transformer import build_model
from dsv32.tokenizer import train_bpe

TEXT = ["the quick brown fox jumps over the lazy dog", "pack my box with five dozen liquor jugs"] * 20


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gen") / "ckpt"
    config = preset("tiny")
    save_checkpoint(build_model(config, seed=2), config, directory)
    train_bpe(TEXT, vocab_size=320, min_frequency=1).save(directory)
    return directory


def test_generate_streams_the_greedy_engine_output(checkpoint, capsys):
    assert main(["generate", "--checkpoint", str(checkpoint), "--prompt", "the quick", "--max-tokens", "6",
                 "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    engine, tok = load_engine(checkpoint, max_batch=1)
    prompt = encode_prompt(tok, "the quick")
    ids = engine.generate([prompt], SamplingParams(max_tokens=6, temperature=0))[0].token_ids
    assert out["token_ids"] == ids and out["prompt_tokens"] == len(prompt)
    with torch.no_grad():  # and that is the model's own greedy continuation
        logits = engine.model(torch.tensor([prompt + ids]), attention="sparse").logits[
            0, len(prompt) - 1 : -1
        ]
    assert logits.argmax(-1).tolist() == ids
    assert (
        main(["generate", "--checkpoint", str(checkpoint), "--prompt", "the quick", "--max-tokens", "3"]) == 0
    )
    assert "finish: " in capsys.readouterr().out


def test_clear_errors(checkpoint, tmp_path, capsys):
    assert main(["generate", "--checkpoint", str(tmp_path / "missing"), "--prompt", "x"]) == 2
    assert "checkpoint directory not found" in capsys.readouterr().err
    no_tok = tmp_path / "no_tok"
    config = preset("tiny")
    save_checkpoint(build_model(config, seed=1), config, no_tok)
    assert main(["generate", "--checkpoint", str(no_tok), "--prompt", "x"]) == 2
    assert "no tokenizer.json" in capsys.readouterr().err
    assert main(["generate", "--checkpoint", str(checkpoint), "--prompt", "the lazy dog " * 4,
                 "--max-seq-len", "8"]) == 2  # fmt: skip
    assert "longer than the context of 8" in capsys.readouterr().err
    assert main(["generate", "--checkpoint", str(checkpoint), "--prompt", "x", "--top-p", "2"]) == 2
    assert "top_p" in capsys.readouterr().err
