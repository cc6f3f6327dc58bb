"""The retrieval probe: its metrics by hand, and a short run through the CLI."""

import json
import math

import pytest
import torch

from dsv32.cli import main
from dsv32.model.transformer import build_model
from dsv32.train.probe import answer_metrics, parse_curriculum


def test_answer_metrics_by_hand():
    eos = 1
    # two rows: row 0 has targets [5, 7, EOS], row 1 has [4, EOS]; the argmax misses row 1's 4
    targets = torch.tensor([5, 7, eos, 4, eos])
    rows = torch.tensor([0, 0, 0, 1, 1])
    logits = torch.full((5, 8), -5.0)
    for i, t in enumerate([5, 7, eos, 3, eos]):
        logits[i, t] = 5.0
    m = answer_metrics(logits, targets, rows, eos)
    assert m["accuracy"] == pytest.approx(2 / 3)  # 5 and 7 right, 4 wrong; EOS not counted
    assert m["exact_match"] == pytest.approx(0.5)
    assert m["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, targets)))
    # by answer position: first tokens 5 (right) and 4 (wrong), second 7 (right), no third word
    assert (m["p0"], m["p1"]) == (0.5, 1.0) and math.isnan(m["p2"])


def test_probe_cli_short_run(capsys, tmp_path, monkeypatch):
    import dsv32.train.probe as probe

    built = []
    monkeypatch.setattr(
        probe, "build_model", lambda cfg, seed: built.append(cfg) or build_model(cfg, seed=seed)
    )
    args = ["train", "probe-retrieval", "--preset", "tiny", "--seq-len", "112", "--batch-size", "2",
            "--steps", "3", "--log-every", "2", "--tie-head", "--cache-dir", str(tmp_path),
            "--max-files", "40", "--model-set", "embedding_initializer_range=0.5"]  # fmt: skip
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["step"] for r in result["history"]] == [2, 3]
    assert result["config"]["tie_head"] and result["config"]["seq_len"] == 112
    assert result["config"]["max_files"] == 40
    assert built[0].embedding_initializer_range == 0.5 and built[0].tie_word_embeddings
    assert main(args[:-1] + ["embedding_range=0.5"]) == 2
    assert "embedding_range" in capsys.readouterr().err
    for r in result["history"]:
        assert r["loss"] > 0 and 0 <= r["exact_match"] <= 1
    with pytest.raises(ValueError, match="unknown task"):
        probe.run_probe(probe.ProbeConfig(task="nope"), tmp_path)


def test_held_out_metrics_are_those_of_one_batch_of_fresh_samples(capsys, tmp_path):
    import dsv32.train.probe as probe

    args = ["train", "probe-retrieval", "--preset", "tiny", "--seq-len", "112", "--batch-size", "2",
            "--steps", "1", "--tie-head", "--cache-dir", str(tmp_path), "--max-files", "40",
            "--eval-lens", "112,150", "--eval-samples", "10"]  # fmt: skip
    assert main(args) == 0
    history = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["history"]
    assert [(r.get("eval_seq_len"), r.get("n")) for r in history[1:]] == [(112, 10), (150, 10)]
    # the chunked evaluation (8 + 2 rows) equals answer_metrics over all 10 rows at once
    data = probe.DataConfig(vocab_size=512, max_files=40)
    tok = probe.get_tokenizer(data, probe.load_corpus(data), tmp_path)
    tasks = probe.LongContextTasks(tok, code_texts=[], options=probe.task_options(data))
    model = probe.build_model(probe.preset("tiny").replace(vocab_size=tok.vocab_size), seed=0).eval()
    seeds = [probe.derive_seed(7919, i) for i in range(10)]
    ids_t, mask_t = probe._task_batch(tasks, "passkey", 150, seeds, tok.eos_id)
    with torch.no_grad():
        logits = model(ids_t[:, :-1], logits_at=mask_t).logits
    whole = probe.answer_metrics(logits, ids_t[:, 1:][mask_t], mask_t.nonzero()[:, 0], tok.eos_id)
    chunked = probe.held_out_metrics(model, tasks, "passkey", 150, 10, 0, tok.eos_id)
    assert chunked == {k: round(v, 4) for k, v in whole.items() if k != "loss"}
    assert not set(seeds) & {probe.derive_seed(0, i) for i in range(1000)}  # never a training sample


def test_probe_curriculum_runs_phases_in_order(capsys, tmp_path, monkeypatch):
    import dsv32.train.probe as probe

    built = []
    real_build = probe.build_model
    monkeypatch.setattr(probe, "build_model", lambda c, seed: built.append(c) or real_build(c, seed=seed))
    args = ["train", "probe-retrieval", "--preset", "tiny", "--curriculum", "112x2:2,160x1:1",
            "--log-every", "5", "--tie-head", "--cache-dir", str(tmp_path), "--max-files", "40"]  # fmt: skip
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # one record at the end of each phase, steps counted across phases
    assert [(r["step"], r["seq_len"]) for r in result["history"]] == [(2, 112), (3, 160)]
    assert built[0].tie_word_embeddings


def test_parse_curriculum():
    assert parse_curriculum("80x32:120, 2048x2:60") == [(80, 32, 120), (2048, 2, 60)]
    for bad in ("80x32", "80:10", "80x0:5", "ax1:1"):
        with pytest.raises(ValueError, match="curriculum phase"):
            parse_curriculum(bad)


def test_probe_kv_queries_ask_more_keys_in_training_batches_only(capsys, tmp_path, monkeypatch):
    import dsv32.train.probe as probe

    digits = []  # (training, digits supervised per row) for every batch
    real = probe._task_batch

    def spy(tasks, task, seq_len, seeds, pad_id, training=False):
        ids, mask = real(tasks, task, seq_len, seeds, pad_id, training)
        texts = [tasks.tok.decode(row[1:][m].tolist()) for row, m in zip(ids, mask)]
        digits.append((training, [sum(c.isdigit() for c in t) for t in texts]))
        return ids, mask

    monkeypatch.setattr(probe, "_task_batch", spy)
    args = ["train", "probe-retrieval", "--preset", "tiny", "--task", "kv_recall", "--n-pairs", "3",
            "--kv-queries", "3", "--seq-len", "160", "--batch-size", "2", "--steps", "1",
            "--cache-dir", str(tmp_path), "--max-files", "40", "--eval-lens", "160",
            "--eval-samples", "2"]  # fmt: skip
    assert main(args) == 0
    # three five-digit values per training row, one per held-out row
    assert digits == [(True, [15, 15]), (False, [5, 5])]
