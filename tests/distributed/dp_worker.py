"""Worker for the 2-process tests: `torchrun --nproc_per_node 2 dp_worker.py CONFIG_JSON RUN_DIR OUT_JSON`.

Trains the stage in CONFIG_JSON into RUN_DIR; rank 0 writes the per-step metrics to OUT_JSON.
With STOP_AFTER=N in the environment the run saves and stops after step N (a later run resumes).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from dsv32.train.config import TrainConfig
from dsv32.train.distributed import init_distributed, shutdown
from dsv32.train.runner import train_stage


def main() -> None:
    cfg = TrainConfig.from_json(sys.argv[1])
    init_from = sys.argv[4] if len(sys.argv) > 4 else None
    stop_after = int(os.environ["STOP_AFTER"]) if os.environ.get("STOP_AFTER") else None
    result = train_stage(cfg, sys.argv[2], init_from=init_from, stop_after=stop_after, progress=False)
    ctx = init_distributed()
    if ctx.is_main:
        Path(sys.argv[3]).write_text(json.dumps({"metrics": result.metrics, "final_eval": result.final_eval}))
    shutdown(ctx)


if __name__ == "__main__":
    main()
