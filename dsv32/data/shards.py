"""Tokenised corpora as memory-mapped `.npy` shards with a validated JSON manifest.

A shard directory holds `shard_00000.npy, ...` (1-D arrays of token ids, uint16 when the vocabulary
fits in 16 bits, else uint32) and `manifest.json`: source description, tokenizer fingerprint and
size, dtype, counts, and per-shard token counts and SHA-256. Each document is stored as
`BOS, ids..., EOS` and documents are concatenated into one stream, cut into shards of
`shard_tokens` tokens (a document may span two shards; the stream is what packing reads).

Writes are atomic: each shard and the manifest are renamed into place, the manifest last, so a
directory without a manifest is an interrupted build. `cached_shards` builds into a temporary
directory and renames it to a name derived from (source, tokenizer fingerprint, shard size), so a
second call with unchanged inputs reuses the cache and a changed corpus or tokenizer builds anew.
Loading checks format, version, dtype, file sizes and (optionally) checksums, and the tokenizer
and source when the caller names them; any mismatch is a `ValueError` that says what differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsv32.data.io import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "dsv32-token-shards"
VERSION = 1
DEFAULT_SHARD_TOKENS = 1 << 22


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits in 16 bits, else uint32."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def _tokenizer_info(tokenizer) -> dict:
    return {
        "fingerprint": tokenizer.fingerprint(),
        "vocab_size": tokenizer.vocab_size,
        "bos_id": tokenizer.bos_id,
        "eos_id": tokenizer.eos_id,
    }


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class ShardSet:
    """Read-only view of a shard directory: the token stream across all shards."""

    directory: Path
    manifest: dict
    arrays: list[np.ndarray]  # memory-mapped, one per shard

    def __post_init__(self) -> None:
        sizes = [len(a) for a in self.arrays]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    @property
    def n_tokens(self) -> int:
        return int(self.starts[-1])

    @property
    def n_documents(self) -> int:
        return int(self.manifest["n_documents"])

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) of the stream as int64, crossing shard boundaries."""
        if start < 0 or length < 0 or start + length > self.n_tokens:
            raise IndexError(f"range [{start}, {start + length}) outside the {self.n_tokens}-token stream")
        out = np.empty(length, dtype=np.int64)
        pos, filled = start, 0
        while filled < length:
            k = int(np.searchsorted(self.starts, pos, side="right")) - 1
            offset = pos - int(self.starts[k])
            take = min(length - filled, len(self.arrays[k]) - offset)
            out[filled : filled + take] = self.arrays[k][offset : offset + take]
            filled += take
            pos += take
        return out


def _encode_documents(tokenizer, documents: Iterable[str], batch_docs: int) -> Iterator[np.ndarray]:
    """Yield `BOS, ids..., EOS` per document, encoding `batch_docs` documents per call."""
    batch: list[str] = []

    def flush() -> Iterator[np.ndarray]:
        for ids in tokenizer.encode_batch(batch):
            yield np.array([tokenizer.bos_id, *ids, tokenizer.eos_id], dtype=np.int64)
        batch.clear()

    for doc in documents:
        if not isinstance(doc, str):
            raise TypeError(f"documents must be str, got {type(doc).__name__}")
        batch.append(doc)
        if len(batch) >= batch_docs:
            yield from flush()
    yield from flush()


def write_shards(
    directory: str | os.PathLike,
    documents: Iterable[str],
    tokenizer,
    *,
    source: dict,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    batch_docs: int = 64,
) -> ShardSet:
    """Tokenise `documents` into shards under `directory` (which must not hold a manifest yet)."""
    directory = Path(directory)
    if shard_tokens < 1:
        raise ValueError(f"shard_tokens must be >= 1, got {shard_tokens}")
    if (directory / MANIFEST).exists():
        raise FileExistsError(f"{directory} already holds {MANIFEST}; remove it or use another directory")
    directory.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(tokenizer.vocab_size)
    shards: list[dict] = []
    pending: list[np.ndarray] = []
    n_pending = n_docs = 0

    def emit(tokens: np.ndarray) -> None:
        name = f"shard_{len(shards):05d}.npy"
        path = atomic_write(directory / name, lambda f: np.save(f, tokens.astype(dtype), allow_pickle=False))
        shards.append({"file": name, "n_tokens": int(len(tokens)), "sha256": _file_sha256(path)})

    for ids in _encode_documents(tokenizer, documents, batch_docs):
        pending.append(ids)
        n_pending += len(ids)
        n_docs += 1
        while n_pending >= shard_tokens:
            stream = np.concatenate(pending)
            emit(stream[:shard_tokens])
            pending, n_pending = [stream[shard_tokens:]], len(stream) - shard_tokens
    if n_pending:
        emit(np.concatenate(pending))
    if not shards:
        raise ValueError("no documents to shard")
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "source": source,
        "tokenizer": _tokenizer_info(tokenizer),
        "dtype": dtype.name,
        "document_layout": "BOS ids EOS, concatenated",
        "shard_tokens": shard_tokens,
        "n_documents": n_docs,
        "n_tokens": sum(s["n_tokens"] for s in shards),
        "shards": shards,
    }
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    log.info(
        "wrote %d tokens of %d documents in %d shards to %s",
        manifest["n_tokens"],
        n_docs,
        len(shards),
        directory,
    )
    return load_shards(directory)


def _require(manifest: dict, key: str, kind: type, path: Path):
    value = manifest.get(key)
    if not isinstance(value, kind):
        raise ValueError(f"{path}: manifest field {key!r} must be {kind.__name__}, got {value!r}")
    return value


def load_shards(
    directory: str | os.PathLike,
    *,
    tokenizer=None,
    source: dict | None = None,
    verify: bool = False,
) -> ShardSet:
    """Open a shard directory memory-mapped, validating its manifest (see module doc).

    `tokenizer`/`source`, when given, must match what the shards were built with; `verify` also
    recomputes every shard's SHA-256 and checks all ids are below the vocabulary size.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"no {MANIFEST} in {directory}: not a shard directory, or an interrupted build"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: corrupt manifest, not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise ValueError(f"{path}: manifest version {manifest.get('version')!r}, this code reads {VERSION}")
    shards = _require(manifest, "shards", list, path)
    info = _require(manifest, "tokenizer", dict, path)
    n_total = _require(manifest, "n_tokens", int, path)
    _require(manifest, "n_documents", int, path)
    try:
        dtype = np.dtype(_require(manifest, "dtype", str, path))
    except TypeError:
        raise ValueError(f"{path}: unknown dtype {manifest['dtype']!r}") from None
    if dtype not in (np.dtype(np.uint16), np.dtype(np.uint32)):
        raise ValueError(f"{path}: dtype must be uint16 or uint32, got {dtype.name}")
    if tokenizer is not None and info.get("fingerprint") != tokenizer.fingerprint():
        raise ValueError(
            f"{directory}: shards were built with tokenizer {str(info.get('fingerprint'))[:12]}..., "
            f"not the given one {tokenizer.fingerprint()[:12]}...; rebuild them"
        )
    if source is not None and manifest.get("source") != source:
        raise ValueError(
            f"{directory}: shards were built from source {manifest.get('source')!r}, not {source!r}"
        )
    arrays = []
    for entry in shards:
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise ValueError(f"{path}: malformed shard entry {entry!r}")
        file = directory / entry["file"]
        if not file.is_file():
            raise ValueError(f"{directory}: shard {entry['file']} listed in the manifest is missing")
        try:
            array = np.load(file, mmap_mode="r", allow_pickle=False)
        except Exception as err:  # numpy raises ValueError/OSError/EOFError for damaged headers
            raise ValueError(f"{file}: unreadable shard ({err})") from None
        if array.dtype != dtype or array.ndim != 1 or len(array) != entry.get("n_tokens"):
            raise ValueError(
                f"{file}: expected {entry.get('n_tokens')} tokens of {dtype.name}, "
                f"found shape {array.shape} of {array.dtype.name}"
            )
        if verify:
            if _file_sha256(file) != entry.get("sha256"):
                raise ValueError(f"{file}: checksum differs from the manifest")
            if len(array) and int(array.max()) >= int(info.get("vocab_size", 0)):
                raise ValueError(
                    f"{file}: token id {int(array.max())} >= vocab_size {info.get('vocab_size')}"
                )
        arrays.append(array)
    if sum(len(a) for a in arrays) != n_total:
        raise ValueError(f"{path}: shards hold {sum(len(a) for a in arrays)} tokens, manifest says {n_total}")
    return ShardSet(directory, manifest, arrays)


def cache_key(source: dict, tokenizer, shard_tokens: int) -> str:
    """Directory name for a cache entry: a hash of everything the shards depend on."""
    blob = json.dumps(
        {
            "source": source,
            "tokenizer": tokenizer.fingerprint(),
            "shard_tokens": shard_tokens,
            "version": VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cached_shards(
    cache_root: str | os.PathLike,
    documents: Iterable[str],
    tokenizer,
    *,
    source: dict,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
) -> ShardSet:
    """Load shards for (source, tokenizer) from `cache_root`, building them first if absent or damaged.

    `source` must describe the documents completely (e.g. a corpus fingerprint): it is the cache key.
    `documents` is only iterated when a build is needed.
    """
    cache_root = Path(cache_root)
    final = cache_root / cache_key(source, tokenizer, shard_tokens)
    if final.exists():
        try:
            shards = load_shards(final, tokenizer=tokenizer, source=source)
            log.info("reusing cached shards %s (%d tokens)", final, shards.n_tokens)
            return shards
        except (ValueError, FileNotFoundError) as err:
            log.warning("cached shards at %s are unusable (%s); rebuilding", final, err)
            shutil.rmtree(final)
    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=cache_root))
    try:
        write_shards(tmp, documents, tokenizer, source=source, shard_tokens=shard_tokens)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same build first: use theirs
            if not (final / MANIFEST).is_file():
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_shards(final, tokenizer=tokenizer, source=source)


def corpus_shards(cache_root: str | os.PathLike, corpus, split: str, tokenizer, **kwargs) -> ShardSet:
    """`cached_shards` for one split of a `dsv32.data.corpus.Corpus`, keyed by its fingerprint."""
    source = {
        "kind": "text_corpus",
        "root": str(corpus.root),
        "split": split,
        "val_fraction": corpus.val_fraction,
        "fingerprint": corpus.fingerprint(split),
        "n_files": len(corpus.split_files(split)),
    }
    return cached_shards(cache_root, corpus.texts(split), tokenizer, source=source, **kwargs)
