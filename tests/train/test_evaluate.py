"""Long-context evaluation: one-pass exact match == greedy decoding; checkpoints side by side; CLI."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from dsv32.cli import main
from dsv32.data.longctx import LongContextSample, exact_match
from dsv32.evaluate.longctx import answer_correct, compare_table, evaluate_checkpoint
from dsv32.train.runner import train_stage

V = 50


def _sample(prompt, answer_ids, eos=1):
    return LongContextSample("passkey", 0, len(prompt) + len(answer_ids) + 1, tuple(prompt), "".join(
        chr(ord("a") + i) for i in answer_ids), tuple(answer_ids), eos, "")  # fmt: skip


class Memoriser(torch.nn.Module):
    """Predicts the stored continuation of a known prefix, with chosen wrong answers ('corrupt')."""

    def __init__(self, sequences, corrupt):
        super().__init__()
        self.sequences, self.corrupt = sequences, corrupt  # corrupt: {(seq index, answer position)}

    def forward(self, ids, **kwargs):
        b, t = ids.shape
        logits = torch.zeros(b, t, V)
        for bi in range(b):
            row = ids[bi].tolist()
            si = next(i for i, seq in enumerate(self.sequences) if seq[0] == row[0])
            seq = self.sequences[si]
            for j in range(t):
                nxt = seq[j + 1] if j + 1 < len(seq) and seq[: j + 1] == row[: j + 1] else 2
                if (si, j - (len(seq) - len(self.answers[si]) - 2)) in self.corrupt:
                    nxt = (nxt + 7) % V
                logits[bi, j, nxt] = 1.0
        return SimpleNamespace(logits=logits)


def _greedy(model, prompt, eos, max_new):
    ids = list(prompt)
    out = []
    for _ in range(max_new):
        nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        if nxt == eos:
            break
        out.append(nxt)
        ids.append(nxt)
    return out


def test_one_pass_exact_match_equals_greedy_decoding():
    samples = [_sample([10 + i, 20, 21, 22, 23], [30 + i, 31, 32]) for i in range(4)]
    seqs = [[*s.prompt_ids, *s.answer_ids, s.eos_id] for s in samples]
    model = Memoriser(seqs, corrupt={(1, 0), (2, 2), (3, 3)})  # 3 = the EOS position
    model.answers = [s.answer_ids for s in samples]
    got = answer_correct(model, samples, "dense", None, batch_size=2)
    for s, (ok, _) in zip(samples, got):
        greedy = _greedy(model, s.prompt_ids, s.eos_id, len(s.answer_ids) + 1)
        as_text = "".join(chr(ord("a") + i - 30) if 30 <= i < 40 else "?" for i in greedy)
        want_text = "".join(chr(ord("a") + i - 30) for i in s.answer_ids)
        # greedy decoding with a stop at EOS and at most len(answer)+1 tokens
        stopped = len(greedy) == len(s.answer_ids)
        assert ok == (exact_match(as_text, want_text) and stopped)
    assert [ok for ok, _ in got] == [True, False, False, False]


@pytest.fixture(scope="module")
def two_runs(data_cfg, tmp_path_factory):
    from dsv32.train.config import TrainConfig

    root = tmp_path_factory.mktemp("eval-runs")
    common = dict(seq_len=128, batch_size=2, steps=1, warmup_steps=0, data=data_cfg)
    pre = train_stage(TrainConfig(stage="pretrain", **common), root / "pre", progress=False)
    train_stage(TrainConfig(stage="dsa-sparse", index_topk=16, **common), root / "sp",
                         init_from=pre.checkpoint, progress=False)  # fmt: skip
    return root / "pre", root / "sp"


def test_side_by_side_and_cli(two_runs, tmp_path, capsys):
    pre, sp = two_runs
    dense = evaluate_checkpoint(pre)
    sparse = evaluate_checkpoint(sp)
    assert (dense["attention"], sparse["attention"], sparse["index_topk"]) == ("dense", "sparse", 16)
    assert set(dense["accuracy"]) == {"passkey"} and "129" in dense["accuracy"]["passkey"]
    assert dense["val_loss"] > 0 and 0 < sparse["indexer_recall"] <= sparse["oracle_recall"] + 1e-6
    table = compare_table({"dense": dense, "sparse": sparse})
    assert (
        "| passkey @ 129 (acc %) |" in table and "sparse k=16" in table and "| oracle top-k recall |" in table
    )
    out = tmp_path / "e.json"
    rc = main(["eval", "long-context", "--checkpoint", str(pre), "--checkpoint", str(sp), "--label", "d",
               "--label", "s", "--n", "2", "--needle", "--json", str(out)])  # fmt: skip
    assert rc == 0
    data = json.loads(out.read_text())
    assert set(data) == {"d", "s"} and data["s"]["attention"] == "sparse"
    assert data["d"]["val_loss"] == pytest.approx(dense["val_loss"], rel=1e-6)
    assert "needle" not in dense and len(data["s"]["needle"]["passkey@129"]["hit_per_layer"]) == len(
        sparse["indexer_recall_per_layer"]
    )
    printed = capsys.readouterr().out
    assert "| metric | d | s |" in printed and "| passkey @ 129 needle in top-k, per layer |" in printed
    assert main(["eval", "long-context", "--checkpoint", str(pre), "--label", "a", "--label", "b"]) == 2
    assert main(["eval", "long-context", "--checkpoint", str(tmp_path / "missing")]) == 2
