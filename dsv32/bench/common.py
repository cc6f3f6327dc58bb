"""Shared benchmark helpers: timing, matmul peaks, tables, plots and result files."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dsv32.data.io import atomic_write


def median_time(fn: Callable[[], object], reps: int, warmup: int = 1) -> float:
    """Median wall time of `fn()` over `reps` calls after `warmup` calls (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(dtype: torch.dtype, n: int = 1024, reps: int = 3) -> float:
    """Achieved GFLOP/s of an n x n x n matmul in `dtype` (the machine's practical peak)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dtype)
    b = torch.randn(n, n, generator=g).to(dtype)
    seconds = median_time(lambda: a @ b, reps)
    return 2 * n**3 / seconds / 1e9


def set_threads(threads: int | None) -> int:
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed buffers for reuse instead of returning them to the kernel.

    By default glibc serves buffers above its mmap threshold (128 KiB, rising to at most 32 MiB)
    with fresh mappings and trims the heap top on free, so every multi-MiB temporary of a kernel
    (an 8K-key score block, the indexer's [keys, heads] dot products) is page-faulted and zeroed
    again on each call: at 128K keys about as much system time as compute on this kind of VM. An
    inference engine keeps such workspaces allocated; with this set, both sides of a comparison
    time their arithmetic and memory traffic, not the kernel's page-fault handler. Process-wide
    and only for glibc (elsewhere nothing changes). True when applied."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    # 1 GiB: nothing a benchmark allocates goes to mmap; the heap top is never trimmed below it
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, 1 << 30))


def parse_lengths(text: str, name: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise ValueError(f"{name} must list positive integers, got {text!r}")
    return values


def format_table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure as PNG atomically."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
