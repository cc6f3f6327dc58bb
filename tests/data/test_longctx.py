"""Long-context tasks: exact length, determinism, answers checked by independent solvers, masks, scoring."""

from __future__ import annotations

import re

import numpy as np
import pytest

from dsv32.data.longctx import (
    TASKS,
    LongContextTasks,
    TaskOptions,
    accuracy,
    derive_seed,
    exact_match,
    training_example,
)


@pytest.fixture(scope="module")
def tasks(tokenizer, code_texts) -> LongContextTasks:
    return LongContextTasks(tokenizer, code_texts=code_texts)


def _solve(task: str, prompt: str) -> str:
    """Answer a prompt by reading its text only (a reference independent of the generator)."""
    if task == "passkey":
        keys = set(re.findall(r"The pass key is (\d+)\. Remember it\. (\d+) is the pass key\.", prompt)[0])
        assert len(keys) == 1
        return keys.pop()
    if task == "kv_recall":
        pairs = dict(re.findall(r"^Pair: ([a-z]+)(\d+)$", prompt, flags=re.M))
        return pairs[re.search(r"Which number was paired with ([a-z]+)\?", prompt).group(1)]
    if task == "var_track":
        env: dict[str, str] = {}
        for name, rhs in re.findall(r"^VAR ([A-Z]+) = (VAR [A-Z]+|\d+)$", prompt, flags=re.M):
            env[name] = env[rhs[4:]] if rhs.startswith("VAR ") else rhs
        return env[re.search(r"What is the value of VAR ([A-Z]+)\?", prompt).group(1)]
    if task == "code_needle":
        name = re.search(r"what is the value of ([A-Z_]+)\?", prompt).group(1)
        values = re.findall(rf"^{name} = (\d+)$", prompt, flags=re.M)
        assert len(values) == 1
        return values[0]
    raise AssertionError(task)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("context_len", [300, 1024, 2048])
def test_sample_fills_context_exactly_and_solver_agrees(tasks, tokenizer, task, context_len):
    for seed in range(3):
        s = tasks.sample(task, context_len, seed)
        assert s.n_tokens == context_len
        assert s.prompt_ids[0] == tokenizer.bos_id
        assert list(s.answer_ids) == tokenizer.encode(s.answer)
        assert tokenizer.decode(s.prompt_ids[1:]) == s.prompt
        assert _solve(task, s.prompt) == s.answer


@pytest.mark.parametrize("task", TASKS)
def test_deterministic_by_seed(tokenizer, code_texts, task):
    a = LongContextTasks(tokenizer, code_texts=code_texts).sample(task, 700, 11)
    b = LongContextTasks(tokenizer, code_texts=code_texts).sample(task, 700, 11)
    c = LongContextTasks(tokenizer, code_texts=code_texts).sample(task, 700, 12)
    assert a == b and a.meta == b.meta
    assert a.prompt_ids != c.prompt_ids


def test_sample_sets_are_deterministic_and_distinct(tasks):
    first = tasks.samples("passkey", 256, 20, seed=5)
    assert [s.seed for s in first] == [derive_seed(5, i) for i in range(20)]
    assert first == tasks.samples("passkey", 256, 20, seed=5)
    assert len({s.answer for s in first}) > 15  # five-digit keys rarely collide
    assert {s.seed for s in first}.isdisjoint(s.seed for s in tasks.samples("passkey", 256, 20, seed=6))


def test_needles_start_lines_and_depths_spread(tasks):
    depths = []
    for seed in range(40):
        s = tasks.sample("passkey", 1024, seed)
        assert re.search(r"(^|\n)The pass key is \d+\.", s.prompt)
        depths.append(s.meta["depths"][0])
    assert min(depths) < 0.2 and max(depths) > 0.8  # depth is drawn over the whole context


def test_code_needle_is_early_and_named_uniquely(tasks, code_texts):
    for seed in range(10):
        s = tasks.sample("code_needle", 2048, seed)
        assert s.meta["depths"][0] < 0.4
        assert not any(s.meta["name"] in t for t in code_texts)
        assert s.prompt.count(s.meta["name"]) == 3  # defined once, asked once, restated in the answer line


def test_var_track_hops_and_chains(tokenizer, code_texts):
    gen = LongContextTasks(tokenizer, code_texts=code_texts, options=TaskOptions(n_hops=5, n_chains=3))
    s = gen.sample("var_track", 1024, 0)
    assert len(re.findall(r"^VAR [A-Z]+ = ", s.prompt, flags=re.M)) == 3 * 6
    assert len(re.findall(r"^VAR [A-Z]+ = \d+$", s.prompt, flags=re.M)) == 3
    assert _solve("var_track", s.prompt) == s.answer


def test_kv_recall_pair_count(tokenizer, code_texts):
    gen = LongContextTasks(tokenizer, code_texts=code_texts, options=TaskOptions(n_pairs=13))
    s = gen.sample("kv_recall", 1024, 3)
    assert len(re.findall(r"^Pair: [a-z]+\d+$", s.prompt, flags=re.M)) == 13


def test_kv_recall_key_is_one_token_right_before_its_value(tokenizer, code_texts):
    """The queried key is a single token that occurs only in its pair, in the question and as the
    prompt's last token; in the pair the value's first token follows it directly."""
    gen = LongContextTasks(tokenizer, code_texts=code_texts, options=TaskOptions(n_pairs=6))
    for seed in range(5):
        s = gen.sample("kv_recall", 700, seed)
        ids = list(s.prompt_ids)
        key_id = ids[-1]
        assert tokenizer.decode([key_id]) == " " + s.meta["key"]
        where = [j for j, t in enumerate(ids) if t == key_id]
        assert len(where) == 3  # the pair, "paired with KEY?", "Pair: KEY"
        assert ids[where[0] + 1 : where[0] + 1 + len(s.answer_ids)] == list(s.answer_ids)
    with pytest.raises(ValueError, match="needs 100000 one-token key words"):
        LongContextTasks(tokenizer, options=TaskOptions(n_pairs=100_000)).sample("kv_recall", 700, 0)


def test_training_example_masks_answer_and_eos_only(tasks, tokenizer):
    s = tasks.sample("kv_recall", 512, 1)
    ids, mask = training_example(s)
    assert ids.dtype == np.int64 and len(ids) == 512 and ids[-1] == tokenizer.eos_id
    assert mask.sum() == len(s.answer_ids) + 1
    assert not mask[: len(s.prompt_ids)].any()
    assert tokenizer.decode(ids[mask][:-1]) == s.answer


def test_full_loss_example_masks_every_token_but_bos(tasks):
    s = tasks.sample("passkey", 512, 1)
    ids, mask = training_example(s, full_loss=True)
    assert np.array_equal(ids, training_example(s)[0])
    assert not mask[0] and mask[1:].all()


def test_needle_spans_cover_the_needle_lines(tokenizer, code_texts):
    gen = LongContextTasks(tokenizer, code_texts=code_texts, options=TaskOptions(n_pairs=5))
    s = gen.sample("kv_recall", 600, 2)
    lines = [tokenizer.decode(list(s.prompt_ids[a:b])) for a, b in s.meta["needle_spans"]]
    assert lines == re.findall(r"Pair: [a-z]+\d+\n", s.prompt)
    ((a, b),) = gen.sample("passkey", 300, 2).meta["needle_spans"]
    assert tokenizer.decode(list(gen.sample("passkey", 300, 2).prompt_ids[a:b])).startswith("The pass key is")


def test_kv_recall_training_rows_ask_more_keys_with_their_own_values(tokenizer, code_texts):
    """kv_queries = 4 with 4 pairs: three follow-ups, each a key of the prompt (drawn with
    replacement, so over seeds some repeat) answered by the value written after that key; the loss
    mask covers exactly the answers and EOS, and the row still fills the context."""
    gen = LongContextTasks(tokenizer, code_texts=code_texts, options=TaskOptions(n_pairs=4, kv_queries=4))
    repeats = 0
    for seed in range(8):
        s = gen.sample("kv_recall", 300, seed, training=True)
        pairs = dict(re.findall(r"^Pair: ([a-z]+)(\d+)$", s.prompt, flags=re.M))
        asked = [tokenizer.decode(list(q)).split("Pair: ")[1] for q, _ in s.followups]
        assert len(asked) == 3 and set(asked) <= set(pairs)
        repeats += len(set(asked + [s.meta["key"]])) < 4
        assert [tokenizer.decode(list(a)) for _, a in s.followups] == [pairs[k] for k in asked]
        ids, mask = training_example(s)
        assert len(ids) == s.n_tokens == 300 and ids[-1] == tokenizer.eos_id
        assert tokenizer.decode(ids[mask][:-1]) == s.answer + "".join(pairs[k] for k in asked)
        assert not mask[: len(s.prompt_ids)].any()
    assert repeats > 0  # not every key exactly once: the last answer is not given by elimination


def test_kv_recall_follow_ups_are_for_training_only(tokenizer, code_texts):
    """Evaluation samples (training=False) ask one key and equal those of kv_queries = 1."""
    many = LongContextTasks(tokenizer, code_texts=code_texts, options=TaskOptions(n_pairs=3, kv_queries=3))
    one = LongContextTasks(tokenizer, code_texts=code_texts, options=TaskOptions(n_pairs=3))
    assert many.sample("kv_recall", 256, 7) == one.sample("kv_recall", 256, 7)
    assert many.sample("kv_recall", 256, 7).followups == ()
    assert one.sample("kv_recall", 256, 7, training=True) == one.sample("kv_recall", 256, 7)
    assert many.sample("passkey", 256, 7, training=True) == one.sample("passkey", 256, 7)
    with pytest.raises(ValueError, match="asks 1 to n_pairs=3 keys per row, got kv_queries=4"):
        LongContextTasks(tokenizer, options=TaskOptions(n_pairs=3, kv_queries=4)).sample(
            "kv_recall", 256, 0, training=True
        )


def test_question_restates_the_needle_up_to_the_value(tasks):
    """The answer continues a phrase that occurs verbatim before it in the prompt (induction-style)."""
    leads = {"passkey": r"The pass key is ", "kv_recall": r"Pair: [a-z]+", "code_needle": r"# Answer: \w+ = "}
    for task, pattern in leads.items():
        s = tasks.sample(task, 600, 2)
        lead = s.prompt.rsplit("\n", 1)[1]
        assert re.fullmatch(pattern, lead)
        phrase = lead.removeprefix("# Answer: ")
        assert phrase + s.answer in s.prompt[: -len(lead)]


def test_too_small_context_and_bad_task(tasks):
    with pytest.raises(ValueError, match="too small for task 'kv_recall'"):
        tasks.sample("kv_recall", 40, 0)
    with pytest.raises(ValueError, match="unknown task"):
        tasks.sample("needle", 512, 0)
    with pytest.raises(ValueError, match="context_len"):
        tasks.sample("passkey", 0, 0)


def test_exact_match_and_accuracy(tasks):
    assert exact_match(" 12345\n", "12345")
    assert not exact_match("12345 6", "12345")
    assert not exact_match("1234", "12345")
    samples = tasks.samples("passkey", 256, 4, seed=0)
    preds = [samples[0].answer, "0", samples[2].answer + " ", "nope"]
    assert accuracy(samples, preds) == 0.5
    with pytest.raises(ValueError, match="4 samples but 3 predictions"):
        accuracy(samples, preds[:3])
