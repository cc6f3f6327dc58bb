"""Stdlib corpus: what is skipped, the deterministic split, fingerprints, stats, bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dsv32.data.corpus import SKIP_DIRS, load_stdlib_corpus, load_text_corpus, split_of, stdlib_root


def test_split_is_the_documented_path_hash():
    rel = "json/decoder.py"
    u = int(hashlib.sha256(rel.encode()).hexdigest()[:16], 16) / 2**64
    assert split_of(rel, u + 1e-9) == "val" and split_of(rel, u - 1e-9) == "train"
    assert split_of(rel, 0.0) == "train"


def test_stdlib_corpus_is_deterministic_and_skips_tests():
    a, b = load_stdlib_corpus(), load_stdlib_corpus()
    assert a.files == b.files
    assert a.root == stdlib_root()
    for f in a.files:
        assert f.relpath.endswith(".py")
        assert not set(Path(f.relpath).parts[:-1]) & SKIP_DIRS
        assert f.split == split_of(f.relpath, 0.05)
    stats = a.stats()
    n = stats["train"]["files"] + stats["val"]["files"]
    assert n == len(a.files) > 200
    assert 0.01 < stats["val"]["files"] / n < 0.15  # about val_fraction = 5%
    assert stats["train"]["bytes"] == sum(f.n_bytes for f in a.split_files("train"))


def test_val_set_grows_monotonically_with_fraction():
    small, big = load_stdlib_corpus(val_fraction=0.05), load_stdlib_corpus(val_fraction=0.2)
    val_small = {f.relpath for f in small.split_files("val")}
    val_big = {f.relpath for f in big.split_files("val")}
    assert val_small < val_big


def test_max_files_is_a_prefix():
    full, part = load_stdlib_corpus(), load_stdlib_corpus(max_files=10)
    assert part.files == full.files[:10]


def _write(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_skips_non_utf8_and_skip_dirs_and_reads_texts(tmp_path):
    _write(tmp_path, "a.py", b"x = 1\n")
    _write(tmp_path, "pkg/b.py", "y = 'é'\n".encode())
    _write(tmp_path, "pkg/latin1.py", "z = 'é'\n".encode("latin-1"))
    _write(tmp_path, "test/test_a.py", b"assert True\n")
    _write(tmp_path, "site-packages/c.py", b"c = 3\n")
    _write(tmp_path, "notes.txt", b"not python\n")
    corpus = load_text_corpus(tmp_path, val_fraction=0.0)
    assert [f.relpath for f in corpus.files] == ["a.py", "pkg/b.py"]
    assert list(corpus.texts("train")) == ["x = 1\n", "y = 'é'\n"]
    assert corpus.stats() == {"train": {"files": 2, "bytes": 6 + 9}, "val": {"files": 0, "bytes": 0}}


def test_fingerprint_tracks_content_of_its_split_only(tmp_path):
    _write(tmp_path, "a.py", b"x = 1\n")
    _write(tmp_path, "b.py", b"y = 2\n")
    before = load_text_corpus(tmp_path, val_fraction=0.0)
    _write(tmp_path, "b.py", b"y = 3\n")
    after = load_text_corpus(tmp_path, val_fraction=0.0)
    assert before.fingerprint("train") != after.fingerprint("train")
    assert before.fingerprint("val") == after.fingerprint("val")
    assert load_text_corpus(tmp_path, val_fraction=0.0).fingerprint("train") == after.fingerprint("train")


def test_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_text_corpus(tmp_path / "missing")
    with pytest.raises(ValueError, match="val_fraction"):
        load_text_corpus(tmp_path, val_fraction=1.5)
    with pytest.raises(ValueError, match="no UTF-8 files"):
        load_text_corpus(tmp_path)
    _write(tmp_path, "a.py", b"x = 1\n")
    with pytest.raises(ValueError, match="split must be one of"):
        load_text_corpus(tmp_path).split_files("dev")
