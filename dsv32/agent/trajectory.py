"""JSONL trajectories: one JSON object per line, written atomically (temp file, then rename)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dsv32.data.io import atomic_write_jsonl


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write records to `path` atomically; parent directories are created."""
    return atomic_write_jsonl(path, records, ensure_ascii=False, default=str)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSONL file; a line that is not a JSON object is an error naming the line."""
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object, got {type(record).__name__}")
            records.append(record)
    return records
