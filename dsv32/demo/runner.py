"""A resumable sequence of stages.

Each stage is a function of the run context returning JSON-able results. A finished stage leaves
`stages/<name>.json` (written atomically, last), so a rerun skips it and a crash mid-stage reruns
only that stage. Stages read earlier results from `ctx.results`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsv32.config import atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class Stage:
    name: str
    title: str  # one sentence: what the stage does
    run: Callable[[RunContext], dict[str, Any]]


@dataclass
class RunContext:
    out_dir: Path
    preset: str
    seed: int = 0
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def stage_dir(self, name: str) -> Path:
        path = self.out_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def run_stages(
    stages: list[Stage],
    ctx: RunContext,
    only: list[str] | None = None,
    force: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """Run the stages in order, skipping those already finished (unless `force`)."""
    known = {s.name for s in stages}
    unknown = sorted(set(only or []) - known)
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; expected names from {[s.name for s in stages]}")
    (ctx.out_dir / "stages").mkdir(parents=True, exist_ok=True)
    for order, stage in enumerate(stages, start=1):
        marker = ctx.out_dir / "stages" / f"{stage.name}.json"
        selected = only is None or stage.name in only
        if marker.exists() and not (force and selected):
            ctx.results[stage.name] = json.loads(marker.read_text())
            echo(f"[{order}/{len(stages)}] {stage.name}: done earlier, skipped")
            continue
        if not selected:
            continue
        echo(f"[{order}/{len(stages)}] {stage.name}: {stage.title}")
        start = time.perf_counter()
        result = dict(stage.run(ctx))
        result["seconds"] = round(time.perf_counter() - start, 2)
        result["order"] = order
        ctx.results[stage.name] = result
        atomic_write_text(marker, json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
        headline = result.get("headline", "done")
        echo(f"[{order}/{len(stages)}] {stage.name}: {headline} ({result['seconds']:.1f}s)")
    return ctx.results
