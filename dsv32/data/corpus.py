"""The offline text corpus: Python standard-library source of the running interpreter.

Every `*.py` file under `sysconfig.get_paths()["stdlib"]` is one document, except test suites
(`test`, `tests`, `idle_test` directories), installed packages (`site-packages`, `dist-packages`),
caches, and files that are not valid UTF-8. The train/val split is decided per file by a hash of
its path relative to the stdlib root: a file is in `val` when the first 8 bytes of
SHA-256(relative path), read as an integer over 2^64, fall below `val_fraction`. Hashing the path
(not the content) keeps a file on the same side across interpreter patch releases, so validation
text never leaks into training when the corpus is rebuilt. Sizes differ between Python versions;
`Corpus.stats()` reports them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})


def stdlib_root() -> Path:
    """Directory of the running interpreter's pure-Python standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def split_of(relpath: str, val_fraction: float) -> str:
    """'val' or 'train' for a path relative to the corpus root (deterministic, see module doc)."""
    digest = hashlib.sha256(relpath.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return "val" if u < val_fraction else "train"


@dataclass(frozen=True)
class CorpusFile:
    relpath: str  # POSIX-style, relative to the corpus root
    split: str
    n_bytes: int
    sha256: str  # of the file's bytes


@dataclass(frozen=True)
class Corpus:
    """A list of text files under `root`, each assigned to a split. Texts are read on demand."""

    root: Path
    files: tuple[CorpusFile, ...]
    val_fraction: float

    def split_files(self, split: str) -> list[CorpusFile]:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return [f for f in self.files if f.split == split]

    def texts(self, split: str) -> Iterator[str]:
        """The documents of `split` in sorted-path order."""
        for f in self.split_files(split):
            yield (self.root / f.relpath).read_text(encoding="utf-8")

    def fingerprint(self, split: str) -> str:
        """SHA-256 over the paths and content hashes of `split`: changes iff its text changes."""
        h = hashlib.sha256()
        for f in self.split_files(split):
            h.update(f"{f.relpath}\0{f.sha256}\n".encode())
        return h.hexdigest()

    def stats(self) -> dict[str, dict[str, int]]:
        """Files and bytes per split."""
        out = {}
        for split in SPLITS:
            files = self.split_files(split)
            out[split] = {"files": len(files), "bytes": sum(f.n_bytes for f in files)}
        return out


def load_text_corpus(
    root: str | os.PathLike,
    *,
    val_fraction: float = 0.05,
    suffixes: tuple[str, ...] = (".py",),
    max_files: int | None = None,
) -> Corpus:
    """Index the UTF-8 text files under `root` (sorted by relative path; first `max_files` kept).

    `max_files` takes a prefix of the sorted list, so small corpora for tests are subsets of big ones.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"corpus root is not a directory: {root}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if max_files is not None and max_files < 1:
        raise ValueError(f"max_files must be >= 1 or None, got {max_files}")
    candidates = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in filenames:
            if name.endswith(suffixes):
                path = Path(dirpath) / name
                candidates.append(path.relative_to(root).as_posix())
    candidates.sort()
    files, n_skipped = [], 0
    for rel in candidates:
        if max_files is not None and len(files) >= max_files:
            break
        data = (root / rel).read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            n_skipped += 1
            continue
        digest = hashlib.sha256(data).hexdigest()
        files.append(CorpusFile(rel, split_of(rel, val_fraction), len(data), digest))
    if not files:
        raise ValueError(f"no UTF-8 files with suffixes {suffixes} under {root}")
    if n_skipped:
        log.info("skipped %d files under %s that are not valid UTF-8", n_skipped, root)
    return Corpus(root=root, files=tuple(files), val_fraction=val_fraction)


def load_stdlib_corpus(*, val_fraction: float = 0.05, max_files: int | None = None) -> Corpus:
    """The running interpreter's standard-library `.py` files (see module doc for what is skipped)."""
    return load_text_corpus(stdlib_root(), val_fraction=val_fraction, max_files=max_files)
