import json

import pytest

from dsv32.demo.runner import RunContext, Stage, run_stages


def _stages(calls, fail_on=None):
    def make(name):
        def run(ctx):
            calls.append(name)
            if name == fail_on:
                raise RuntimeError(f"{name} broke")
            previous = sorted(ctx.results)
            return {"headline": f"{name} ok", "saw": previous}

        return Stage(name, f"does {name}", run)

    return [make(n) for n in ("a", "b", "c")]


def test_stages_run_in_order_and_resume_skips_finished(tmp_path):
    calls = []
    ctx = RunContext(tmp_path, "tiny")
    with pytest.raises(RuntimeError, match="b broke"):
        run_stages(_stages(calls, fail_on="b"), ctx, echo=lambda _: None)
    assert calls == ["a", "b"]
    assert (tmp_path / "stages" / "a.json").exists() and not (tmp_path / "stages" / "b.json").exists()
    calls.clear()
    lines = []
    results = run_stages(_stages(calls), RunContext(tmp_path, "tiny"), echo=lines.append)
    assert calls == ["b", "c"]  # a was done earlier
    assert "a: done earlier, skipped" in lines[0]
    assert results["c"]["saw"] == ["a", "b"]
    saved = json.loads((tmp_path / "stages" / "c.json").read_text())
    assert saved["order"] == 3 and saved["headline"] == "c ok" and saved["seconds"] >= 0


def test_force_and_only(tmp_path):
    calls = []
    run_stages(_stages(calls), RunContext(tmp_path, "tiny"), echo=lambda _: None)
    calls.clear()
    run_stages(_stages(calls), RunContext(tmp_path, "tiny"), only=["b"], force=True, echo=lambda _: None)
    assert calls == ["b"]
    with pytest.raises(ValueError, match="unknown stage"):
        run_stages(_stages(calls), RunContext(tmp_path, "tiny"), only=["zzz"], echo=lambda _: None)


@pytest.mark.parametrize("preset, expected", [
    ("tiny", [("pretrain", None)]),
    ("small", [("pretrain_short_1", None), ("pretrain_short_2", "pretrain_short_1"),
               ("pretrain_short_3", "pretrain_short_2"), ("pretrain_short_4", "pretrain_short_3"),
               ("pretrain", "pretrain_short_4")]),
])  # fmt: skip
def test_demo_pretraining_runs_the_recipe_curriculum_first(tmp_path, monkeypatch, preset, expected):
    import dsv32.demo.stages as stages

    calls = []
    monkeypatch.setattr(stages, "_train", lambda ctx, run, stage, init: calls.append((run, init)) or {})
    stages.stage_pretrain(RunContext(tmp_path, preset))
    assert calls == expected
