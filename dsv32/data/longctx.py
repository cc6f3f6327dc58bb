"""Synthetic long-context tasks with exact answers, sized in tokens.

Four tasks, each sample a prompt and a short exact answer (digits):
- `passkey`: a five-digit pass key stated once inside neutral prose; asked at the end.
- `kv_recall`: `n_pairs` lines "Pair: KEYVALUE" scattered through prose, KEY a one-token word and
  VALUE a number written right after it; one key queried (multi-query associative recall: the
  token before the value is the key itself, so finding the value is one-token induction among
  distractors; a multi-token key or a shared word such as " is" between key and value would ask
  for a multi-token match instead). With `kv_queries` > 1 a training row asks more keys after the
  answer, each as "\nPair:KEY" followed by its value (see "Training rows" below).
- `var_track`: `n_chains` chains of assignments `VAR A = 12345`, `VAR B = VAR A`, ... (`n_hops` links
  each), statements scattered in order through prose; the value of the last variable of one chain
  is asked, so the model must follow every hop.
- `code_needle`: a constant `NAME = 12345` inserted early (depth 2-30%) into real standard-library
  source; its value is asked at the end.

Layout in token ids: `BOS, header, filler..., needle, filler..., needle, ..., question | answer, EOS`;
`meta["needle_spans"]` holds each needle's [start, end) in the prompt.
The question ends by restating the needle's own words up to the value ("The pass key is ",
"Pair: KEY", "# Answer: NAME = "), so the answer continues a phrase seen in the
context: retrieval then is what induction-style copying heads do (match the phrase, copy what
followed it), with no separate question-answer mapping to learn.
Pieces are encoded separately and concatenated, so a sample's canonical form is its ids (the
`prompt` text is their decoding). The filler is cut to make prompt + answer + EOS exactly
`context_len` tokens; needles are placed at line starts of the filler (a depth drawn by the
seed, moved to the next line start, or the last one when none follows). Everything is drawn
from `random.Random` seeded by (task, context_len, seed), so a sample is a pure function of
those and of the tokenizer and code texts.
Scoring is exact match of the stripped prediction against the answer.

Training rows (`training_example`): prompt + answer + follow-ups + EOS, the loss on the answer,
each follow-up's answer and EOS. Follow-ups exist only in samples built with `training=True` and
only for kv_recall with `kv_queries` > 1: one query is one supervised lookup, so a row that asks
kv_queries keys teaches the key-to-value lookup that many times (the multi-query form of
associative recall). The follow-up keys are drawn with replacement, so no answer can be had by
elimination. Evaluation samples never have them, so what is scored stays one question.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import random
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

TASKS = ("passkey", "kv_recall", "var_track", "code_needle")

# Neutral filler sentences (no digits, no words the questions ask about).
_PROSE = (
    "The grass is green and the sky is blue.",
    "A river runs past the old mill at the edge of town.",
    "Clouds drift slowly over the hills in the afternoon.",
    "The baker opens the shop early and sells warm bread.",
    "Children walk to school along the quiet road.",
    "The library keeps its oldest books in a cool room.",
    "Rain taps on the window while the kettle boils.",
    "A small boat waits by the pier for the morning tide.",
    "The garden has roses, tulips and a row of tall sunflowers.",
    "Lanterns glow along the path when evening comes.",
    "The train leaves the station and heads north through the valley.",
    "Birds gather on the wire before flying south.",
    "The market is busy with people buying fruit and cheese.",
    "An owl calls from the forest after midnight.",
    "Snow covers the mountain pass for most of the winter.",
    "The painter mixes colours on a wooden board.",
    "Waves roll onto the sand and pull back again.",
    "The clock in the square chimes every hour.",
    "A cat sleeps in the sun on the front step.",
    "The farmer checks the fences before the storm arrives.",
    "Here we go, there and back again.",
    "The lighthouse turns its lamp across the dark water.",
    "Fresh tea is served in the garden at noon.",
    "The bridge over the stream is made of grey stone.",
)
_KEY_WORD = re.compile(r" [a-z]{3,}")
_KV_HEADER = "Pairs of a word and a number are hidden in the text below. Remember them.\n"
_KV_QUESTION = "\nWhich number was paired with{key}?\nPair:{key}"
_NAME_WORDS = (
    "BUFFER", "TIMEOUT", "RETRY", "LIMIT", "CACHE", "SOCKET", "HEADER", "CHUNK", "QUEUE", "STREAM",
    "MAX", "MIN", "DEFAULT", "INTERNAL", "RECORD", "FRAME", "BLOCK", "INDEX", "SCALE", "WINDOW",
)  # fmt: skip


class TokenizerLike(Protocol):
    bos_id: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    def id_to_token(self, token_id: int) -> str | None: ...

    @property
    def vocab_size(self) -> int: ...


@dataclass(frozen=True)
class LongContextSample:
    """One task instance. `prompt_ids` starts with BOS; the full sequence is prompt + answer +
    follow-ups (training rows only) + EOS."""

    task: str
    seed: int
    context_len: int
    prompt_ids: tuple[int, ...]
    answer: str
    answer_ids: tuple[int, ...]
    eos_id: int
    prompt: str
    meta: dict = field(default_factory=dict, compare=False)
    # (query ids, answer ids) a training row appends after the answer (module doc); () for evaluation
    followups: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = ()

    @property
    def n_tokens(self) -> int:
        extra = sum(len(q) + len(a) for q, a in self.followups)
        return len(self.prompt_ids) + len(self.answer_ids) + extra + 1


@dataclass(frozen=True)
class TaskOptions:
    n_pairs: int = 8  # kv_recall: pairs hidden in the filler
    n_hops: int = 3  # var_track: links per chain (chain has n_hops + 1 variables)
    n_chains: int = 2  # var_track: chains, one queried, the others distractors
    kv_queries: int = 1  # kv_recall training rows: keys asked per row (module doc), <= n_pairs
    code_depth: tuple[float, float] = (0.02, 0.30)  # code_needle: where the constant goes


def exact_match(prediction: str, answer: str) -> bool:
    """True iff the prediction, stripped of surrounding whitespace, equals the answer."""
    return prediction.strip() == answer.strip()


def accuracy(samples: Sequence[LongContextSample], predictions: Sequence[str]) -> float:
    """Share of exact matches; `predictions[i]` is the decoded generation for `samples[i]`."""
    if len(samples) != len(predictions):
        raise ValueError(f"{len(samples)} samples but {len(predictions)} predictions")
    if not samples:
        raise ValueError("accuracy of an empty sample list is undefined")
    return sum(exact_match(p, s.answer) for s, p in zip(samples, predictions)) / len(samples)


def training_example(sample: LongContextSample, full_loss: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(ids, loss_mask) for prompt + answer + follow-ups + EOS; the mask is True on the answer, the
    follow-ups' answers and EOS, or on every token after BOS with `full_loss` (next-token loss on the
    filler too: many supervised tokens per row instead of the handful of answer tokens).

    `loss_mask[j]` says whether token j is a training target (predicted from tokens < j).
    """
    pieces = [(sample.prompt_ids, False), (sample.answer_ids, True)]
    for query, answer in sample.followups:
        pieces += [(query, False), (answer, True)]
    pieces.append(((sample.eos_id,), True))
    ids = np.array([t for piece, _ in pieces for t in piece], dtype=np.int64)
    mask = np.concatenate([np.full(len(piece), target, dtype=bool) for piece, target in pieces])
    if full_loss:
        mask[1:] = True
    return ids, mask


def derive_seed(seed: int, index: int) -> int:
    """Seed of the index-th sample of a set drawn with `seed` (a hash, so sets do not overlap)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{index}".encode()).digest()[:6], "big")


class LongContextTasks:
    """Builds samples of every task for one tokenizer. `code_texts` feeds `code_needle` (defaults
    to the validation split of the stdlib corpus, loaded on first use)."""

    def __init__(
        self,
        tokenizer: TokenizerLike,
        code_texts: Sequence[str] | None = None,
        options: TaskOptions | None = None,
    ):
        self.tok = tokenizer
        self.options = options or TaskOptions()
        self._code_texts = list(code_texts) if code_texts is not None else None
        self._code_ids: dict[int, list[int]] = {}
        self._newline_ids: frozenset[int] | None = None
        self._key_pool: list[str] | None = None

    # ---- public -------------------------------------------------------------------------------
    def sample(self, task: str, context_len: int, seed: int, training: bool = False) -> LongContextSample:
        """One sample of `context_len` tokens in all (prompt, answer, follow-ups, EOS); `training`
        adds kv_recall's follow-up queries when `options.kv_queries` > 1 (module doc)."""
        queries = self.options.kv_queries if training else 1
        builders = {
            "passkey": self._passkey,
            "kv_recall": lambda rng, length, seed: self._kv_recall(rng, length, seed, queries),
            "var_track": self._var_track,
            "code_needle": self._code_needle,
        }
        if task not in builders:
            raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
        if not isinstance(context_len, int) or context_len < 1:
            raise ValueError(f"context_len must be a positive int, got {context_len!r}")
        rng = random.Random(f"{task}|{context_len}|{seed}")
        return builders[task](rng, context_len, seed)

    def samples(
        self, task: str, context_len: int, n: int, seed: int, training: bool = False
    ) -> list[LongContextSample]:
        return [self.sample(task, context_len, derive_seed(seed, i), training) for i in range(n)]

    # ---- tasks --------------------------------------------------------------------------------
    def _passkey(self, rng: random.Random, context_len: int, seed: int) -> LongContextSample:
        key = str(rng.randrange(10_000, 100_000))
        needle = f"The pass key is {key}. Remember it. {key} is the pass key.\n"
        return self._assemble(
            "passkey", seed, context_len, rng,
            header="There is a pass key hidden in the text below. Find it and remember it.\n",
            filler="prose", needles=[needle], depths=[rng.random()],
            question="\nWhat is the pass key?\nThe pass key is ", answer=key, meta={},
        )  # fmt: skip

    def _kv_recall(
        self, rng: random.Random, context_len: int, seed: int, queries: int = 1
    ) -> LongContextSample:
        n = self.options.n_pairs
        if not 1 <= queries <= n:
            raise ValueError(f"kv_recall asks 1 to n_pairs={n} keys per row, got kv_queries={queries}")
        pool = self._key_words()
        if len(pool) < n:
            raise ValueError(f"kv_recall needs {n} one-token key words; the tokenizer has {len(pool)}")
        keys = rng.sample(pool, n)
        values = [str(v) for v in rng.sample(range(10_000, 100_000), n)]
        needles = [f"Pair:{k}{v}\n" for k, v in zip(keys, values)]
        asked = rng.randrange(n)
        depths = sorted(rng.random() for _ in range(n))
        # follow-up keys drawn with replacement: asking each key once would let the last answers
        # be had by elimination (the values not yet given) instead of by looking the key up
        more = [rng.randrange(n) for _ in range(queries - 1)]
        return self._assemble(
            "kv_recall", seed, context_len, rng,
            header=_KV_HEADER, filler="prose", needles=needles,
            depths=depths, question=_KV_QUESTION.format(key=keys[asked]),
            answer=values[asked], followups=[(f"\nPair:{keys[i]}", values[i]) for i in more],
            meta={"asked_index": asked, "n_pairs": n, "key": keys[asked].strip()},
        )  # fmt: skip

    def _var_track(self, rng: random.Random, context_len: int, seed: int) -> LongContextSample:
        hops, n_chains = self.options.n_hops, self.options.n_chains
        names = _unique_names(rng, n_chains * (hops + 1), length=5)
        values = [str(v) for v in rng.sample(range(10_000, 100_000), n_chains)]
        chains = []
        for c in range(n_chains):
            chain_names = names[c * (hops + 1) : (c + 1) * (hops + 1)]
            lines = [f"VAR {chain_names[0]} = {values[c]}\n"]
            lines += [f"VAR {b} = VAR {a}\n" for a, b in zip(chain_names, chain_names[1:])]
            chains.append(lines)
        # Random interleaving that keeps each chain's statements in order.
        order = [c for c in range(n_chains) for _ in range(hops + 1)]
        rng.shuffle(order)
        cursor = [0] * n_chains
        needles = []
        for c in order:
            needles.append(chains[c][cursor[c]])
            cursor[c] += 1
        queried = names[hops]  # last variable of chain 0
        return self._assemble(
            "var_track", seed, context_len, rng,
            header="Variable assignments are hidden in the text below. Track them.\n",
            filler="prose", needles=needles, depths=sorted(rng.random() for _ in needles),
            question=f"\nWhat is the value of VAR {queried}?\nThe value of VAR {queried} is ",
            answer=values[0],
            meta={"n_hops": hops, "n_chains": n_chains},
        )  # fmt: skip

    def _code_needle(self, rng: random.Random, context_len: int, seed: int) -> LongContextSample:
        texts = self._code_corpus()
        while True:  # a name that occurs nowhere in the code texts
            words = rng.sample(_NAME_WORDS, 2)
            name = f"{words[0]}_{words[1]}_{''.join(rng.choices(string.ascii_uppercase, k=2))}"
            if not any(name in t for t in texts):
                break
        value = str(rng.randrange(10_000, 100_000))
        lo, hi = self.options.code_depth
        return self._assemble(
            "code_needle", seed, context_len, rng,
            header="# Read the Python source below and remember the constants it defines.\n",
            filler="code", needles=[f"{name} = {value}\n"], depths=[rng.uniform(lo, hi)],
            question=f"\n# Question: what is the value of {name}?\n# Answer: {name} = ", answer=value,
            meta={"name": name},
        )  # fmt: skip

    # ---- assembly -----------------------------------------------------------------------------
    def _assemble(
        self,
        task: str,
        seed: int,
        context_len: int,
        rng: random.Random,
        *,
        header: str,
        filler: str,
        needles: list[str],
        depths: list[float],
        question: str,
        answer: str,
        meta: dict,
        followups: Sequence[tuple[str, str]] = (),
    ) -> LongContextSample:
        tok = self.tok
        head = [tok.bos_id, *tok.encode(header)]
        needle_ids = [tok.encode(n) for n in needles]
        question_ids, answer_ids = tok.encode(question), tok.encode(answer)
        followup_ids = tuple((tuple(tok.encode(q)), tuple(tok.encode(a))) for q, a in followups)
        fixed = len(head) + sum(map(len, needle_ids)) + len(question_ids) + len(answer_ids) + 1
        fixed += sum(len(q) + len(a) for q, a in followup_ids)
        budget = context_len - fixed
        if budget < 0:
            raise ValueError(
                f"context_len {context_len} is too small for task {task!r}: "
                f"its fixed parts alone take {fixed} tokens"
            )
        fill = self._prose_ids(rng, budget) if filler == "prose" else self._code_filler_ids(rng, budget)
        fill = fill[:budget]
        starts = self._line_starts(fill)
        points = []
        for d in depths:  # move each depth to the next line start, else the last one
            want = min(budget, max(0, round(d * budget)))
            j = bisect.bisect_left(starts, want)
            points.append(starts[min(j, len(starts) - 1)])
        points.sort()
        prompt_ids = list(head)
        prev, spans = 0, []
        for p, nid in zip(points, needle_ids):
            prompt_ids += fill[prev:p]
            spans.append((len(prompt_ids), len(prompt_ids) + len(nid)))
            prompt_ids += nid
            prev = p
        prompt_ids += fill[prev:] + question_ids
        meta = {**meta, "depths": [p / budget if budget else 0.0 for p in points], "needle_spans": spans}
        return LongContextSample(
            task=task,
            seed=seed,
            context_len=context_len,
            prompt_ids=tuple(prompt_ids),
            answer=answer,
            answer_ids=tuple(answer_ids),
            eos_id=tok.eos_id,
            prompt=tok.decode(prompt_ids[1:]),
            meta=meta,
            followups=followup_ids,
        )

    def _line_starts(self, ids: list[int]) -> list[int]:
        """Positions j where a new line starts: 0 and every j after a token that ends in a newline."""
        nl = self._newline_token_ids()
        return [0] + [j + 1 for j, t in enumerate(ids) if t in nl]

    def _newline_token_ids(self) -> frozenset[int]:
        if self._newline_ids is None:
            # Byte-level vocabularies spell the newline byte as "Ċ" (GPT-2 byte table).
            tok = self.tok
            self._newline_ids = frozenset(
                i for i in range(tok.vocab_size) if (t := tok.id_to_token(i)) is not None and t.endswith("Ċ")
            )
        return self._newline_ids

    def _key_words(self) -> list[str]:
        """kv_recall keys: every vocabulary token that is a space and 3+ lowercase letters, minus the
        words of the filler and the task's own text (so a key never occurs outside its pair), in id
        order. A key is thus one token wherever it is written after a space or a colon."""
        if self._key_pool is None:
            text = " ".join([*_PROSE, _KV_HEADER, _KV_QUESTION.format(key="")]).lower()
            taken = set(re.findall(r"[a-z]+", text))
            tokens = (self.tok.decode([i]) for i in range(self.tok.vocab_size))
            self._key_pool = [w for w in tokens if _KEY_WORD.fullmatch(w) and w[1:] not in taken]
        return self._key_pool

    def _prose_ids(self, rng: random.Random, n_tokens: int) -> list[int]:
        ids: list[int] = []
        while len(ids) < n_tokens:
            lines = []
            for _ in range(64):  # short lines: every line start is a place a needle can go
                lines.append(" ".join(rng.choice(_PROSE) for _ in range(rng.randint(1, 3))) + "\n")
            ids += self.tok.encode("".join(lines))
        return ids

    def _code_corpus(self) -> list[str]:
        if self._code_texts is None:
            from dsv32.data.corpus import load_stdlib_corpus

            self._code_texts = list(load_stdlib_corpus().texts("val"))
        if not self._code_texts:
            raise ValueError("code_needle needs at least one code text")
        return self._code_texts

    def _code_filler_ids(self, rng: random.Random, n_tokens: int) -> list[int]:
        """Whole files in a seeded order (starting at a random file), encoded once and cached."""
        texts = self._code_corpus()
        order = list(range(len(texts)))
        rng.shuffle(order)
        ids: list[int] = []
        for k in range(len(order) * 64):  # cycle the files if the context outgrows the corpus
            i = order[k % len(order)]
            if i not in self._code_ids:
                self._code_ids[i] = self.tok.encode(texts[i].rstrip("\n") + "\n\n")
            ids += self._code_ids[i]
            if len(ids) >= n_tokens:
                return ids
        raise ValueError(f"code texts are too short to fill {n_tokens} tokens")


def _unique_names(rng: random.Random, n: int, length: int) -> list[str]:
    names: list[str] = []
    seen = set()
    while len(names) < n:
        name = "".join(rng.choices(string.ascii_uppercase, k=length))
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names
