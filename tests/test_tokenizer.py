"""Tokenizer: special tokens as single ids, exact round trips, save/load, the official file format."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsv32.chat.tokens import BOS, EOS, PAD, SPECIAL_TOKENS, USER
from dsv32.tokenizer import CJK_PATTERN, DIGITS_PATTERN, MAIN_PATTERN, Tokenizer, train_bpe

VOCAB = 1024


def _training_texts(n_files: int = 30) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return [p.read_text(encoding="utf-8") for p in sorted(root.glob("*.py"))[:n_files]]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return _training_texts()


@pytest.fixture(scope="module")
def tok(texts) -> Tokenizer:
    return train_bpe(texts, VOCAB)


def test_vocab_size_and_bos_eos_ids(tok):
    assert tok.vocab_size == VOCAB
    assert (tok.bos_id, tok.eos_id) == (0, 1)
    assert tok.token_to_id(BOS) == 0 and tok.token_to_id(EOS) == 1


def test_every_special_token_is_one_id_in_list_order(tok):
    for i, special in enumerate(SPECIAL_TOKENS):
        assert tok.encode(special) == [i]
        assert tok.decode([i]) == special
    assert tok.missing_special_tokens() == []
    assert tok.special_tokens == {t: i for i, t in enumerate(SPECIAL_TOKENS)}


def test_special_tokens_inside_text_are_recognised(tok):
    text = f"{BOS}def f(x):{USER}return x{EOS}"
    ids = tok.encode(text)
    assert ids[0] == 0 and ids[-1] == 1
    assert ids.count(tok.token_to_id(USER)) == 1
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == "def f(x):return x"


def test_encode_adds_nothing(tok):
    assert tok.encode("") == []
    assert 0 not in tok.encode("x = 1") and 1 not in tok.encode("x = 1")


def test_digits_split_in_groups_of_at_most_three(tok):
    pieces = [tok.decode([i]) for i in tok.encode("12345678901")]
    ends, pos = set(), 0
    for piece in pieces:
        pos += len(piece)
        ends.add(pos)
    assert "".join(pieces) == "12345678901"
    assert {3, 6, 9, 11} <= ends  # no token crosses a group of three digits


def test_split_digits_gives_one_digit_per_token(texts, tmp_path):
    numbers = "x = 12345 + 678\nport = 8080  # 2024-01-31 ٣٤٥\n"
    split = train_bpe(texts + [numbers * 50], VOCAB, split_digits=True)
    assert split.vocab_size == VOCAB  # the merges a digit group would take go to other text
    for text in ("12345678901", numbers, "v2.10.3"):
        ids = split.encode(text)
        assert split.decode(ids) == text
        assert all(sum(c.isdigit() for c in split.decode([i])) <= 1 for i in ids)  # no token holds two digits
    assert [split.decode([i]) for i in split.encode("12345")] == list("12345")
    # the default tokenizer trained on the same text does merge digits
    grouped = train_bpe(texts + [numbers * 50], VOCAB)
    assert len(grouped.encode("12345")) < 5
    # the single-digit split travels in tokenizer.json
    assert Tokenizer.load(split.save(tmp_path)).encode(numbers) == split.encode(numbers)


def test_merges_compress_code(tok, texts):
    sample = texts[0][:5000]
    n_tokens = len(tok.encode(sample))
    assert n_tokens < len(sample.encode("utf-8")) / 2  # a 1K BPE on code beats 2 bytes per token


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_round_trip_any_text(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_round_trip_unicode_and_whitespace(tok):
    for text in ["héllo wörld", "中文テキスト", "emoji 🙂\t\r\n  tabs", "a" * 3000, "\x00\x01 control"]:
        assert tok.decode(tok.encode(text)) == text


def test_training_is_deterministic(texts, tok):
    again = train_bpe(texts, VOCAB)
    assert again.fingerprint() == tok.fingerprint()
    other = train_bpe(texts, VOCAB - 100)
    assert other.fingerprint() != tok.fingerprint()


def test_save_load_round_trip(tok, tmp_path, texts):
    path = tok.save(tmp_path)
    assert path == tmp_path / "tokenizer.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json"]  # no temp files left
    loaded = Tokenizer.load(tmp_path)
    assert loaded.fingerprint() == tok.fingerprint()
    sample = texts[1][:3000]
    assert loaded.encode(sample) == tok.encode(sample)
    assert Tokenizer.load(path).vocab_size == VOCAB


def test_bad_inputs_raise_clear_errors(tmp_path, texts):
    with pytest.raises(FileNotFoundError, match="tokenizer file not found"):
        Tokenizer.load(tmp_path / "nope")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece"}}))
    with pytest.raises(ValueError, match="BPE model"):
        Tokenizer.load(tmp_path)
    with pytest.raises(ValueError, match="vocab_size must be"):
        train_bpe(texts[:1], 100)
    with pytest.raises(ValueError, match="must start with BOS"):
        train_bpe(texts[:1], 1000, special_tokens=[EOS, BOS])


def test_small_training_text_gives_smaller_vocab(caplog):
    tok = train_bpe(["abc abc abd"], 2000)
    assert tok.vocab_size < 2000
    assert "too small" in caplog.text


# ---- the official DeepSeek-V3.2 tokenizer.json layout, hand-made at a tiny size ----------------


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table, which byte-level BPE vocabularies are written in."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _added(tid: int, content: str, special: bool) -> dict:
    return {
        "id": tid,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": not special,
        "special": special,
    }


def _official_style_files(directory: Path) -> dict:
    """A tiny tokenizer.json + tokenizer_config.json shaped like the official DeepSeek-V3.2 release:
    BOS/EOS/PAD at ids 0-2 in the BPE vocab itself, byte symbols after them, merges as "a b"
    strings, chat tokens as added tokens above the BPE vocab, and a BOS-prepending post-processor."""
    byte_char = _bytes_to_unicode()
    vocab = {BOS: 0, EOS: 1, PAD: 2}
    for b in range(256):
        vocab[byte_char[b]] = 3 + b
    merges = ["Ġ t", "h e", "Ġt he", "i n"]
    for m in merges:
        vocab[m.replace(" ", "")] = len(vocab)
    n_model = len(vocab)  # 263
    chat = [(n_model, USER, True), (n_model + 1, "<｜Assistant｜>", True)]
    chat += [(n_model + 2, "<think>", False), (n_model + 3, "</think>", False)]
    split = [
        {"type": "Split", "pattern": {"Regex": p}, "behavior": "Isolated", "invert": False}
        for p in (DIGITS_PATTERN, CJK_PATTERN, MAIN_PATTERN)
    ]
    data = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_added(0, BOS, True), _added(1, EOS, True), _added(2, PAD, True)]
        + [_added(i, c, s) for i, c, s in chat],
        "normalizer": {"type": "Sequence", "normalizers": []},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": split
            + [{"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}],
        },
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": BOS, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {BOS: {"id": BOS, "ids": [0], "tokens": [BOS]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "vocab": vocab,
            "merges": merges,
        },
    }
    (directory / "tokenizer.json").write_text(
        json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8"
    )
    config = {
        "add_bos_token": False,
        "bos_token": {"__type": "AddedToken", "content": BOS, "normalized": True},
        "eos_token": {"__type": "AddedToken", "content": EOS, "normalized": True},
        "tokenizer_class": "LlamaTokenizerFast",
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return {"vocab": vocab, "byte_id": {b: 3 + b for b in range(256)}, "user_id": n_model}


def test_loads_official_format(tmp_path):
    made = _official_style_files(tmp_path)
    tok = Tokenizer.load(tmp_path)
    vocab, byte_id = made["vocab"], made["byte_id"]
    assert (tok.bos_id, tok.eos_id) == (0, 1)
    assert tok.vocab_size == made["user_id"] + 4
    # hand-computed: " the" -> Ġthe by two merges; "in" merges; other bytes stay single symbols
    expected = [
        byte_id[ord("x")],
        vocab["Ġthe"],
        byte_id[ord("!")],
        made["user_id"],
        vocab["in"],
        byte_id[ord("k")],
    ]
    text = f"x the!{USER}ink"
    assert tok.encode(text) == expected  # the BOS post-processor is not applied
    assert tok.decode(expected) == text
    assert tok.encode(BOS) == [0] and tok.encode(EOS) == [1]
    assert tok.encode("1234") == [byte_id[ord(c)] for c in "1234"]
    assert tok.decode(tok.encode("héllo 中文\n")) == "héllo 中文\n"
    missing = tok.missing_special_tokens()
    assert USER not in missing and "<｜DSML｜invoke" in missing


def test_official_format_bos_from_config_must_exist(tmp_path):
    _official_style_files(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": EOS}))
    with pytest.raises(ValueError, match="no BOS token '<s>'"):
        Tokenizer.load(tmp_path)


def test_official_format_with_id_gap_is_rejected(tmp_path):
    """HF tokenizers renumbers added tokens contiguously; a file whose ids disagree must not load silently."""
    _official_style_files(tmp_path)
    data = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    data["added_tokens"][3]["id"] += 5
    (tmp_path / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ValueError, match="added token .*User.* has id 268 in the file but 263"):
        Tokenizer.load(tmp_path)
