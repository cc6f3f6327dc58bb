"""Advantages, reasoning tasks and rule-based rewards."""

import collections
import random
import statistics

import pytest

from dsv32.chat.tokens import EOS
from dsv32.rl.advantages import group_advantages
from dsv32.rl.rewards import RewardConfig, language_consistency, length_penalty, score
from dsv32.rl.tasks import KINDS, generate_tasks, make_task, verify


def test_group_advantages_match_per_group_statistics():
    rewards = [1.0, 0.0, 0.5, 2.0, 2.0, 3.0, 7.0]
    groups = ["a", "a", "a", "b", "b", "b", "c"]
    adv = group_advantages(rewards, groups, eps=0.0)
    for g in ("a", "b"):
        rs = [r for r, gg in zip(rewards, groups) if gg == g]
        mean, std = statistics.mean(rs), statistics.stdev(rs)
        got = [a for a, gg in zip(adv.tolist(), groups) if gg == g]
        assert got == pytest.approx([(r - mean) / std for r in rs])
    assert adv[6] == 0.0  # a group of one
    centred = group_advantages(rewards, groups, scale_by_std=False)
    assert centred[:3].tolist() == pytest.approx([0.5, -0.5, 0.0])
    assert group_advantages([1.0, 1.0], [0, 0]).tolist() == [0.0, 0.0]  # equal rewards: no signal
    with pytest.raises(ValueError, match="group_ids"):
        group_advantages([1.0], [0, 1])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_task_answers_are_correct(kind, difficulty):
    rng = random.Random(difficulty)
    for _ in range(20):
        task = make_task(kind, rng, difficulty)
        p = task.prompt
        if kind == "add":
            a, b = p.removeprefix("What is ").removesuffix("?").split(" + ")
            expected = str(int(a) + int(b))
        elif kind == "sort":
            expected = " ".join(map(str, sorted(int(v) for v in p.removeprefix("Sort ascending: ").split())))
        elif kind == "count":
            target, letters = p.removeprefix("How many ").removesuffix("?").split(" in ")
            expected = str(letters.split().count(target))
        else:
            lhs, c = p.removeprefix("Solve ").removesuffix(".").split(" = ")
            a, b = lhs.split("x + ")
            expected = str((int(c) - int(b)) // int(a))
            assert (int(c) - int(b)) % int(a) == 0
        assert task.answer == expected
        assert verify(task, f"  {expected} ") and not verify(task, expected + "0")
        assert task.reasoning.endswith(f"{task.answer}.")


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_count_answers_are_not_guessable(difficulty):
    """Every count 0..length about equally often (a binomial count would reward always answering 2)."""
    rng, length = random.Random(0), 3 + 3 * difficulty
    answers = collections.Counter(
        int(make_task("count", rng, difficulty).answer) for _ in range(200 * (length + 1))
    )
    assert sorted(answers) == list(range(length + 1))
    assert max(answers.values()) < 260 and min(answers.values()) > 140  # 200 expected each


def test_splits_are_disjoint_and_deterministic():
    train = generate_tasks(200, seed=1)
    held = generate_tasks(40, seed=2, split="heldout")
    assert {t.prompt for t in train}.isdisjoint({t.prompt for t in held})
    assert all(t.split == "train" for t in train) and all(t.split == "heldout" for t in held)
    assert [t.prompt for t in generate_tasks(200, seed=1)] == [t.prompt for t in train]
    assert {t.kind for t in train} == set(KINDS)
    with pytest.raises(ValueError, match="kind"):
        make_task("divide", random.Random(0))


CFG = RewardConfig(
    format_weight=0.2, length_budget=10, length_limit=20, length_weight=0.5, consistency_weight=0.1
)


def test_reward_components():
    good = f"7+5=12</think>12{EOS}"
    r = score("What is 7 + 5?", [good], 8, lambda m: float(m[-1].content == "12"), CFG)
    assert (r.total, r.outcome, r.well_formed, r.length_penalty, r.consistency) == (1.0, 1.0, True, 0.0, 1.0)
    wrong = score("What is 7 + 5?", [f"hm</think>13{EOS}"], 8, lambda m: float(m[-1].content == "12"), CFG)
    assert wrong.total == 0.0
    truncated = score("What is 7 + 5?", ["7+5=12</think>12"], 8, lambda m: 1.0, CFG)
    assert not truncated.well_formed and truncated.total == pytest.approx(-0.2)
    empty_reasoning = score("q", [f"</think>12{EOS}"], 3, lambda m: 1.0, CFG)
    assert not empty_reasoning.well_formed
    long = score("What is 7 + 5?", [good], 15, lambda m: 1.0, CFG)
    assert long.length_penalty == 0.5 and long.total == pytest.approx(0.75)
    relaxed = RewardConfig(length_penalty=False, length_budget=10, length_limit=20)
    assert length_penalty(1000, relaxed) == 0.0 and length_penalty(1000, CFG) == 1.0
    mixed = score("What is seven?", [f"七加五</think>twelve{EOS}"], 5, lambda m: 1.0, CFG)
    assert mixed.consistency == pytest.approx(6 / 9) and mixed.total == pytest.approx(1 - 0.1 * 3 / 9)
    chat = score("q", [f"12{EOS}"], 2, lambda m: 1.0, CFG, thinking=False)
    assert chat.well_formed and chat.total == 1.0
    with pytest.raises(ValueError, match="outcome"):
        score("q", [good], 2, lambda m: 2.0, CFG)


def test_language_consistency_counts_letters_only():
    assert language_consistency("Hello", "123 + 456 = 579") == 1.0
    assert language_consistency("你好吗", "ok 好") == pytest.approx(1 / 3)
