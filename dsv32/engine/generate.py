"""Loading a checkpoint into an engine, and streaming text generation on top of it.

`load_engine(dir)` validates the directory (config.json, weights, tokenizer.json) and builds an
`Engine` with its tokenizer; `stream_text` submits one prompt and yields decoded text pieces as
tokens arrive (an incomplete UTF-8 character is held back until the next token completes it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from dsv32.engine.cache import CacheSpec
from dsv32.engine.sampling import SamplingParams
from dsv32.engine.scheduler import Completion, Engine
from dsv32.tokenizer import TOKENIZER_FILE, Tokenizer


def load_engine(
    checkpoint: str | Path,
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    max_batch: int = 8,
    max_seq_len: int | None = None,
    attention: str = "sparse",
    cache_spec: CacheSpec | None = None,
    page_size: int = 64,
) -> tuple[Engine, Tokenizer]:
    """(engine, tokenizer) for a checkpoint directory written by `save_checkpoint` + `Tokenizer.save`."""
    from dsv32.checkpoint import load_model

    directory = Path(checkpoint)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {directory}")
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory} has no config.json: not a checkpoint directory")
    if not (directory / TOKENIZER_FILE).is_file():
        raise FileNotFoundError(
            f"{directory} has no {TOKENIZER_FILE}; generation needs the tokenizer saved next to the weights"
        )
    tokenizer = Tokenizer.load(directory)
    model = load_model(directory, device=device, dtype=dtype)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(
            f"tokenizer has {tokenizer.vocab_size} ids, more than the model's "
            f"{model.config.vocab_size} embeddings"
        )
    engine = Engine(
        model, max_batch=max_batch, max_seq_len=max_seq_len, attention=attention, cache_spec=cache_spec,
        page_size=page_size, tokenizer=tokenizer,
    )  # fmt: skip
    return engine, tokenizer


def encode_prompt(tokenizer: Tokenizer, text: str, chat: bool = False, bos: bool = True) -> list[int]:
    """Token ids of a raw prompt (BOS first when `bos`), or of one user turn in the chat format."""
    if chat:
        from dsv32.chat.encoding import encode_messages

        return tokenizer.encode(encode_messages([{"role": "user", "content": text}], thinking_mode="chat"))
    return ([tokenizer.bos_id] if bos else []) + tokenizer.encode(text)


def stream_text(engine: Engine, prompt_ids: list[int], params: SamplingParams) -> Iterator[str | Completion]:
    """Yield text pieces as they are generated, then the final `Completion`."""
    handle = engine.submit(prompt_ids, params)
    for event in handle.stream():
        if event.text:
            yield event.text
    yield handle.completion()
