"""Byte-level BPE tokenizer with the DeepSeek-V3.2 special tokens, built on HF `tokenizers`.

Training (`train_bpe`): the pre-tokenizer has the structure of the official DeepSeek-V3 / V3.2
`tokenizer.json`: a sequence of three isolating regex splits (digit runs of at most three, CJK runs,
then the main word/punctuation/whitespace pattern) followed by a byte-level mapping without its own
regex. A BPE model is then learned over bytes, so every string round-trips exactly. The special
tokens of `dsv32.chat.tokens.SPECIAL_TOKENS` take ids 0.. in list order (BOS 0, EOS 1, as in the
official vocabulary) and are matched as single ids wherever they occur in the input text.
With `split_digits=True` the digit split isolates single digits (`SINGLE_DIGIT_PATTERN`), so no token
holds two digits and every number is spelled digit by digit. A small vocabulary otherwise holds a
patchy subset of the 2-3 digit groups (75 of the 1,000 three-digit ones at 8K), so a 5-digit number
is 2 or 3 tokens of a few hundred, depending on its digits; split, it is 5 of 10 tokens that every
number exercises (README: retrieval probes).

Loading (`Tokenizer.load`): a `tokenizer.json` written here, or the official DeepSeek-V3.2 one (a BPE
model whose specials live in `added_tokens`, ids 0/1 for BOS/EOS and the chat tokens near 128800).
BOS/EOS strings come from a `tokenizer_config.json` next to the file when present, else the
DeepSeek defaults. What is left out: the official post-processor (which prepends BOS) is ignored,
since `encode` never adds tokens on its own; callers add BOS/EOS explicitly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from dsv32.chat.tokens import BOS, EOS, SPECIAL_TOKENS
from dsv32.data.io import atomic_write_text

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"

# The three isolating splits of the official DeepSeek-V3 family pre-tokenizer, in order.
DIGITS_PATTERN = r"\p{N}{1,3}"
SINGLE_DIGIT_PATTERN = r"\p{N}"
CJK_PATTERN = "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"
MAIN_PATTERN = (
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+"
    "|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
    "| ?[\\p{P}\\p{S}]+[\r\n]*"
    "|\\s*[\r\n]+"
    "|\\s+(?!\\S)"
    "|\\s+"
)
N_BYTES = 256


def deepseek_pre_tokenizer(split_digits: bool = False) -> pre_tokenizers.PreTokenizer:
    """Digit / CJK / main-regex isolating splits, then byte-level mapping (no second regex);
    split_digits: digits isolated one by one instead of in runs of up to three."""
    digits = SINGLE_DIGIT_PATTERN if split_digits else DIGITS_PATTERN
    splits = [pre_tokenizers.Split(Regex(p), "isolated") for p in (digits, CJK_PATTERN, MAIN_PATTERN)]
    return pre_tokenizers.Sequence(
        [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )


def _special_string(value: object, key: str, path: Path) -> str | None:
    """`bos_token` in tokenizer_config.json is either a string or an AddedToken dict with `content`."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"{path}: {key} must be a string or an object with 'content', got {value!r}")


class Tokenizer:
    """Thin wrapper over an HF `tokenizers.Tokenizer` holding a byte-level BPE model.

    `encode` recognises every added/special token as one id and adds nothing else;
    `decode` is its exact inverse for any text (byte-level BPE is lossless).
    """

    def __init__(self, hf: HFTokenizer, bos_token: str = BOS, eos_token: str = EOS):
        self._hf = hf
        ids = {}
        for name, token in (("BOS", bos_token), ("EOS", eos_token)):
            tid = hf.token_to_id(token)
            if tid is None:
                raise ValueError(f"tokenizer has no {name} token {token!r}; expected it in the vocabulary")
            ids[name] = tid
        self.bos_token, self.eos_token = bos_token, eos_token
        self.bos_id, self.eos_id = ids["BOS"], ids["EOS"]
        self._vocab_size = max(hf.get_vocab(with_added_tokens=True).values()) + 1

    # ---- encoding -------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; special-token strings inside it become their single ids."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` over many texts at once (HF tokenizers parallelises this internally)."""
        return [e.ids for e in self._hf.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids out of range [0, {self.vocab_size}): {bad[:5]}")
        return self._hf.decode(ids, skip_special_tokens=skip_special_tokens)

    # ---- vocabulary -----------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Largest id + 1, added tokens included: the embedding rows a model needs (the official
        vocabulary leaves unused ids between its BPE tokens and its added tokens)."""
        return self._vocab_size

    def token_to_id(self, token: str) -> int | None:
        return self._hf.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._hf.id_to_token(int(token_id))

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special added tokens and their ids."""
        return {t.content: i for i, t in self._hf.get_added_tokens_decoder().items() if t.special}

    def missing_special_tokens(self, tokens: Sequence[str] = SPECIAL_TOKENS) -> list[str]:
        """Those of `tokens` that do not encode to exactly one id (empty for a dsv32-trained tokenizer)."""
        return [t for t in tokens if len(self.encode(t)) != 1 or self.token_to_id(t) is None]

    @property
    def hf(self) -> HFTokenizer:
        return self._hf

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON: identical tokenizers, identical fingerprints."""
        return hashlib.sha256(self._hf.to_str().encode("utf-8")).hexdigest()

    # ---- persistence ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write `tokenizer.json` atomically; `path` is a directory or a `.json` file path."""
        path = Path(path)
        if path.suffix != ".json":
            path = path / TOKENIZER_FILE
        atomic_write_text(path, self._hf.to_str(pretty=True))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Load a dsv32 or official DeepSeek-V3.2 `tokenizer.json` (file, or directory holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        model = data.get("model") if isinstance(data, dict) else None
        if not isinstance(model, dict) or model.get("type") != "BPE":
            kind = model.get("type") if isinstance(model, dict) else None
            raise ValueError(f"{path}: expected a tokenizer.json with a BPE model, got model type {kind!r}")
        try:
            hf = HFTokenizer.from_str(text)
        except Exception as err:  # the Rust parser raises a bare Exception subclass
            raise ValueError(f"{path}: HF tokenizers could not parse it ({err})") from None
        # HF tokenizers numbers added tokens by their order, not by the file's "id": check they agree.
        for entry in data.get("added_tokens") or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
                raise ValueError(f"{path}: each added_tokens entry needs a string 'content', got {entry!r}")
            got = hf.token_to_id(entry["content"])
            if got != entry["id"]:
                raise ValueError(
                    f"{path}: added token {entry['content']!r} has id {entry['id']} in the file but {got} "
                    "once loaded; added-token ids must be contiguous above the BPE vocabulary"
                )
        bos, eos = BOS, EOS
        config_path = path.parent / TOKENIZER_CONFIG_FILE
        if config_path.is_file():
            try:
                config = json.loads(config_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise ValueError(f"{config_path}: not valid JSON ({err})") from None
            bos = _special_string(config.get("bos_token"), "bos_token", config_path) or bos
            eos = _special_string(config.get("eos_token"), "eos_token", config_path) or eos
        tok = cls(hf, bos, eos)
        missing = tok.missing_special_tokens()
        if missing:
            log.info(
                "%s: %d dsv32 special tokens are not single tokens here: %s", path, len(missing), missing
            )
        return tok


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    *,
    special_tokens: Sequence[str] = SPECIAL_TOKENS,
    min_frequency: int = 2,
    split_digits: bool = False,
) -> Tokenizer:
    """Learn a byte-level BPE of `vocab_size` ids (specials and the 256 byte symbols included).

    Specials get ids 0..len(special_tokens)-1 in order, so BOS/EOS land on 0/1 with the default
    list. If the text is too small to support `vocab_size` merges the vocabulary comes out smaller
    (logged); callers size the model from `Tokenizer.vocab_size`. split_digits: one digit per
    token (see module docstring).
    """
    special_tokens = list(special_tokens)
    if special_tokens[:2] != [BOS, EOS]:
        raise ValueError(f"special_tokens must start with BOS {BOS!r} and EOS {EOS!r} (ids 0 and 1)")
    if len(set(special_tokens)) != len(special_tokens):
        raise ValueError("special_tokens contains duplicates")
    floor = len(special_tokens) + N_BYTES + 1
    if not isinstance(vocab_size, int) or vocab_size < floor:
        raise ValueError(
            f"vocab_size must be an int >= {floor} (specials + 256 bytes + 1 merge), got {vocab_size}"
        )
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = deepseek_pre_tokenizer(split_digits)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in special_tokens],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(texts, trainer)
    tok = Tokenizer(hf)
    got = [tok.token_to_id(t) for t in special_tokens]
    if got != list(range(len(special_tokens))):
        raise RuntimeError(f"special tokens received ids {got}, expected 0..{len(special_tokens) - 1}")
    if tok.vocab_size < vocab_size:
        log.warning(
            "BPE vocabulary is %d < requested %d: the training text is too small", tok.vocab_size, vocab_size
        )
    return tok
