"""Token shards: exact stream contents, dtypes, manifest validation, atomic writes, cache reuse."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dsv32.data.corpus import load_text_corpus
from dsv32.data.shards import (
    MANIFEST,
    cache_key,
    cached_shards,
    corpus_shards,
    load_shards,
    token_dtype,
    write_shards,
)
from dsv32.tokenizer import train_bpe

SOURCE = {"kind": "test", "name": "docs"}


@pytest.fixture(scope="module")
def docs(code_texts) -> list[str]:
    return [t[:2000] for t in code_texts[:12]] + ["", "x = 1\n"]


def _reference_stream(tokenizer, docs) -> np.ndarray:
    return np.concatenate([[tokenizer.bos_id, *tokenizer.encode(d), tokenizer.eos_id] for d in docs])


def test_stream_matches_reference_across_many_shards(tmp_path, tokenizer, docs):
    shards = write_shards(tmp_path, docs, tokenizer, source=SOURCE, shard_tokens=257, batch_docs=5)
    ref = _reference_stream(tokenizer, docs)
    assert shards.n_tokens == len(ref) and shards.n_documents == len(docs)
    assert len(shards.arrays) == -(-len(ref) // 257)
    assert all(a.dtype == np.uint16 for a in shards.arrays)
    assert np.array_equal(shards.read(0, len(ref)), ref)
    for start, length in [(0, 1), (250, 20), (256, 1), (257, 257), (len(ref) - 3, 3), (5, 0)]:
        assert np.array_equal(shards.read(start, length), ref[start : start + length])
    with pytest.raises(IndexError):
        shards.read(len(ref) - 2, 3)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([MANIFEST] + [f"shard_{i:05d}.npy" for i in range(len(shards.arrays))])
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["tokenizer"]["fingerprint"] == tokenizer.fingerprint()
    assert manifest["source"] == SOURCE and manifest["n_tokens"] == len(ref)
    assert load_shards(tmp_path, tokenizer=tokenizer, source=SOURCE, verify=True).n_tokens == len(ref)


def test_token_dtype_boundary():
    assert token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32
    assert token_dtype(129280) == np.uint32


class _WideVocab:
    """The real tokenizer, reporting the official 129,280-id vocabulary so shards use uint32."""

    def __init__(self, tok):
        self._tok, self.bos_id, self.eos_id, self.vocab_size = tok, tok.bos_id, tok.eos_id, 129280

    def encode_batch(self, texts):
        return [[i + 70000 for i in ids] for ids in self._tok.encode_batch(texts)]

    def fingerprint(self):
        return "wide-" + self._tok.fingerprint()


def test_uint32_shards_keep_large_ids(tmp_path, tokenizer, docs):
    wide = _WideVocab(tokenizer)
    shards = write_shards(tmp_path, docs[:3], wide, source=SOURCE)
    assert shards.arrays[0].dtype == np.uint32
    stream = shards.read(0, shards.n_tokens)
    assert stream.max() >= 70000 and stream.max() == max(
        i + 70000 for d in docs[:3] for i in tokenizer.encode(d)
    )


def test_refuses_to_overwrite_and_rejects_empty(tmp_path, tokenizer, docs):
    write_shards(tmp_path / "a", docs[:2], tokenizer, source=SOURCE)
    with pytest.raises(FileExistsError, match="already holds"):
        write_shards(tmp_path / "a", docs[:2], tokenizer, source=SOURCE)
    with pytest.raises(ValueError, match="no documents"):
        write_shards(tmp_path / "b", [], tokenizer, source=SOURCE)


@pytest.fixture
def built(tmp_path, tokenizer, docs):
    write_shards(tmp_path, docs, tokenizer, source=SOURCE, shard_tokens=500)
    return tmp_path


def _edit_manifest(directory, **changes):
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest.update(changes)
    (directory / MANIFEST).write_text(json.dumps(manifest))


def test_missing_or_corrupt_manifest(built, tmp_path_factory):
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        load_shards(tmp_path_factory.mktemp("empty"))
    (built / MANIFEST).write_text('{"format": "dsv32-tok')
    with pytest.raises(ValueError, match="corrupt manifest"):
        load_shards(built)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": "other"}, "not a dsv32-token-shards manifest"),
        ({"version": 99}, "manifest version 99"),
        ({"dtype": "float32"}, "dtype must be uint16 or uint32"),
        ({"n_tokens": 5}, "manifest says 5"),
        ({"shards": "x"}, "'shards' must be list"),
    ],
)
def test_manifest_field_errors(built, changes, message):
    _edit_manifest(built, **changes)
    with pytest.raises(ValueError, match=message):
        load_shards(built)


def test_tokenizer_and_source_mismatch(built, docs):
    other = train_bpe(docs[:4], 600)
    with pytest.raises(ValueError, match="built with tokenizer"):
        load_shards(built, tokenizer=other)
    with pytest.raises(ValueError, match="built from source"):
        load_shards(built, source={"kind": "test", "name": "other"})


def test_damaged_shard_files(built):
    first = built / "shard_00000.npy"
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF  # same size, different content: only the checksum notices
    first.write_bytes(bytes(data))
    assert load_shards(built).n_tokens > 0
    with pytest.raises(ValueError, match="checksum differs"):
        load_shards(built, verify=True)
    first.write_bytes(bytes(data[:-10]))
    with pytest.raises(ValueError, match="shard_00000.npy"):
        load_shards(built)
    first.unlink()
    with pytest.raises(ValueError, match="is missing"):
        load_shards(built)


class _CountingDocs:
    def __init__(self, docs):
        self.docs, self.iterations = docs, 0

    def __iter__(self):
        self.iterations += 1
        return iter(self.docs)


def test_cache_reuse_and_rebuild(tmp_path, tokenizer, docs, caplog):
    counting = _CountingDocs(docs)
    first = cached_shards(tmp_path, counting, tokenizer, source=SOURCE, shard_tokens=400)
    again = cached_shards(tmp_path, counting, tokenizer, source=SOURCE, shard_tokens=400)
    assert counting.iterations == 1  # the second call reused the cache without reading documents
    assert again.directory == first.directory == tmp_path / cache_key(SOURCE, tokenizer, 400)
    assert np.array_equal(again.read(0, again.n_tokens), _reference_stream(tokenizer, docs))
    changed = cached_shards(tmp_path, counting, tokenizer, source={**SOURCE, "name": "v2"}, shard_tokens=400)
    assert counting.iterations == 2 and changed.directory != first.directory
    (first.directory / MANIFEST).write_text("garbage")
    rebuilt = cached_shards(tmp_path, counting, tokenizer, source=SOURCE, shard_tokens=400)
    assert counting.iterations == 3 and "rebuilding" in caplog.text
    assert rebuilt.n_tokens == first.n_tokens
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary build left


def test_corpus_shards_key_follows_corpus_content(tmp_path, tokenizer):
    root = tmp_path / "src"
    root.mkdir()
    (root / "a.py").write_text("x = 1\n")
    (root / "b.py").write_text("y = 2\n")
    cache = tmp_path / "cache"
    one = corpus_shards(cache, load_text_corpus(root, val_fraction=0.0), "train", tokenizer)
    same = corpus_shards(cache, load_text_corpus(root, val_fraction=0.0), "train", tokenizer)
    (root / "b.py").write_text("y = 3\n")
    new = corpus_shards(cache, load_text_corpus(root, val_fraction=0.0), "train", tokenizer)
    assert one.directory == same.directory != new.directory
    assert tokenizer.decode(new.read(0, new.n_tokens)).endswith("y = 3\n<｜end▁of▁sentence｜>")
