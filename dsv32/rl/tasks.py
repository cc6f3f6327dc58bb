"""Reasoning tasks with verifiable answers and worked reasoning (SFT data and RL prompts).

Four kinds, each generated from a seeded `random.Random`:
- `add`: multi-digit addition, reasoned column by column with carries;
- `sort`: sort a short list of integers ascending, reasoned by repeatedly taking the smallest;
- `count`: how many times a letter occurs in a string of letters, reasoned by a running count (the
  count uniform over 0..length, so no answer is a good guess);
- `equation`: solve a*x + b = c for an integer x, reasoned by isolating x.

`difficulty` (1-3) scales the sizes (digits, list length, string length, coefficient range).
Every task carries its exact answer string and a worked solution written the way the model should
reason in `<think>`; `verify` accepts a final answer equal to the expected one after whitespace
normalisation (the content after `</think>`, so reasoning may say anything).

Splits: a task is held out when a hash of its prompt falls in the held-out bucket (1 in 8), so
train and held-out prompts never coincide whatever seeds produce them.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass

KINDS = ("add", "sort", "count", "equation")
HELDOUT_BUCKETS = 8  # one bucket of eight is held out


@dataclass(frozen=True)
class ReasoningTask:
    kind: str
    difficulty: int
    prompt: str
    answer: str
    reasoning: str

    @property
    def task_id(self) -> str:
        return hashlib.sha256(self.prompt.encode()).hexdigest()[:12]

    @property
    def split(self) -> str:
        return "heldout" if int(self.task_id, 16) % HELDOUT_BUCKETS == 0 else "train"

    def to_json(self) -> dict:
        return {**asdict(self), "task_id": self.task_id, "split": self.split}


def normalize_answer(text: str) -> str:
    return " ".join(text.strip().split())


def verify(task: ReasoningTask, content: str) -> bool:
    """True when the final answer equals the task's answer (whitespace-normalised)."""
    return normalize_answer(content) == normalize_answer(task.answer)


def _add(rng: random.Random, difficulty: int) -> ReasoningTask:
    digits = 1 + difficulty
    a, b = rng.randrange(10 ** (digits - 1), 10**digits), rng.randrange(10 ** (digits - 1), 10**digits)
    steps, carry = [], 0
    da, db = str(a)[::-1], str(b)[::-1]
    for i in range(max(len(da), len(db))):
        x, y = int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0
        s = x + y + carry
        steps.append(f"{x}+{y}+{carry}={s}, write {s % 10} carry {s // 10}.")
        carry = s // 10
    if carry:
        steps.append(f"write {carry}.")
    steps.append(f"so {a + b}.")
    return ReasoningTask("add", difficulty, f"What is {a} + {b}?", str(a + b), " ".join(steps))


def _sort(rng: random.Random, difficulty: int) -> ReasoningTask:
    values = [rng.randrange(0, 10 * difficulty + 10) for _ in range(2 + 2 * difficulty)]
    remaining, steps, done = list(values), [], []
    while remaining:
        smallest = min(remaining)
        remaining.remove(smallest)
        done.append(smallest)
        steps.append(f"take {smallest}.")
    steps.append("so " + " ".join(map(str, done)) + ".")
    prompt = "Sort ascending: " + " ".join(map(str, values))
    return ReasoningTask("sort", difficulty, prompt, " ".join(map(str, done)), " ".join(steps))


def _count(rng: random.Random, difficulty: int) -> ReasoningTask:
    letters = "abcde"[: 2 + difficulty]
    length = 3 + 3 * difficulty
    target = rng.choice(letters)
    # the count is drawn uniformly from 0..length, then placed: with letters drawn independently it
    # would be binomial, and always answering its mode (2) would beat counting (RL learns the guess)
    at = set(rng.sample(range(length), rng.randrange(length + 1)))
    others = letters.replace(target, "")
    text = "".join(target if i in at else rng.choice(others) for i in range(length))
    steps, n = [], 0
    for ch in text:
        n += ch == target
        steps.append(f"{ch} {n}.")
    prompt = f"How many {target} in {' '.join(text)}?"
    return ReasoningTask("count", difficulty, prompt, str(n), " ".join(steps))


def _equation(rng: random.Random, difficulty: int) -> ReasoningTask:
    a = rng.randrange(2, 3 + 3 * difficulty)
    x = rng.randrange(0, 5 + 5 * difficulty)
    b = rng.randrange(0, 10 * difficulty)
    c = a * x + b
    steps = f"{a}x = {c} - {b} = {c - b}. x = {c - b} / {a} = {x}."
    return ReasoningTask("equation", difficulty, f"Solve {a}x + {b} = {c}.", str(x), steps)


_MAKERS = {"add": _add, "sort": _sort, "count": _count, "equation": _equation}


def make_task(kind: str, rng: random.Random, difficulty: int = 1) -> ReasoningTask:
    if kind not in _MAKERS:
        raise ValueError(f"unknown reasoning task kind {kind!r}; expected one of {list(KINDS)}")
    if difficulty not in (1, 2, 3):
        raise ValueError(f"difficulty must be 1, 2 or 3, got {difficulty}")
    return _MAKERS[kind](rng, difficulty)


def generate_tasks(
    n: int,
    seed: int,
    split: str = "train",
    kinds: tuple[str, ...] = KINDS,
    difficulties: tuple[int, ...] = (1, 2),
) -> list[ReasoningTask]:
    """n distinct tasks of the split ("train" or "heldout"), kinds and difficulties round-robin."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    rng = random.Random(seed)
    out: list[ReasoningTask] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * (n + 10):
            raise ValueError(f"could not find {n} distinct {split} tasks of kinds {kinds}")
        i = len(out)
        task = make_task(kinds[i % len(kinds)], rng, difficulties[(i // len(kinds)) % len(difficulties)])
        if task.split == split and task.prompt not in seen:
            seen.add(task.prompt)
            out.append(task)
    return out
