"""Atomic file writes (bytes, text, lines, JSON, JSONL): a temporary file in the target's directory,
fsync, then `os.replace`.

A reader therefore sees either the old file or the complete new one, never a partial write.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call `write(f)` on a temporary binary file next to `path`, then rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_lines(path: str | os.PathLike, lines: Iterable[str]) -> Path:
    """Stream `lines` (each with its own newline) as UTF-8 into `path`, atomically."""

    def write(f: BinaryIO) -> None:
        for line in lines:
            f.write(line.encode("utf-8"))

    return atomic_write(path, write)


def atomic_write_json(path: str | os.PathLike, value: Any, **dumps_options: Any) -> Path:
    """`value` as indented JSON (options passed to `json.dumps`) with a final newline, atomically."""
    return atomic_write_text(path, json.dumps(value, indent=2, **dumps_options) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, records: Iterable[Any], **dumps_options: Any) -> Path:
    """One JSON document per line (options passed to `json.dumps`), streamed, atomically."""
    return atomic_write_lines(path, (json.dumps(r, **dumps_options) + "\n" for r in records))
