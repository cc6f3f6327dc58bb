"""A checkpoint directory to a ready `ServerState`: tokenizer, model, engine backend, served name.

The directory is what `dsv32.checkpoint.save_checkpoint` writes (config.json, safetensors shards,
index) plus the tokenizer's `tokenizer.json` next to them. Checked on load: the directory exists,
the tokenizer is there, and it fits the model's vocabulary.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from dsv32.serve.state import ServerState
from dsv32.tokenizer import TOKENIZER_FILE, Tokenizer

log = logging.getLogger(__name__)


def load_tokenizer(directory: Path) -> Tokenizer:
    if not (directory / TOKENIZER_FILE).is_file():
        raise FileNotFoundError(
            f"checkpoint {directory} has no {TOKENIZER_FILE}; save the tokenizer there (Tokenizer.save(dir))"
        )
    return Tokenizer.load(directory)


def load_server_state(
    checkpoint_dir: str | Path,
    model_name: str | None = None,
    device: str = "cpu",
    dtype: Any = None,
    default_thinking: bool = False,
    engine_options: dict[str, Any] | None = None,
) -> ServerState:
    from dsv32.checkpoint import load_model
    from dsv32.config import ModelConfig

    directory = Path(checkpoint_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {directory}")
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory} is not a checkpoint: config.json is missing")
    tokenizer = load_tokenizer(directory)
    config = ModelConfig.from_json(directory / "config.json")
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(
            f"{directory}: the tokenizer has {tokenizer.vocab_size} ids, the model only {config.vocab_size}"
        )
    from dsv32.serve.engine_backend import EngineBackend

    model = load_model(directory, device=device, dtype=dtype)
    model.eval()
    backend = EngineBackend(model, tokenizer, device=device, **(engine_options or {}))
    digest = hashlib.sha256(
        (directory / "config.json").read_bytes() + tokenizer.fingerprint().encode()
    ).hexdigest()
    name = model_name or directory.resolve().name
    log.info("serving %s as %r (context %d tokens)", directory, name, backend.context_length)
    return ServerState(
        backend=backend,
        tokenizer=tokenizer,
        model_name=name,
        default_thinking=default_thinking,
        fingerprint=f"dsv32-{digest[:12]}",
    )
