"""A throwaway servable checkpoint: the `tiny` preset with random weights plus a small BPE tokenizer.

For tests, the server benchmark and smoke tests when no trained checkpoint is at hand. The model
is untrained, so its text is noise; everything around it (encoding, engine, parser, HTTP) is real.
"""

from __future__ import annotations

from pathlib import Path

from dsv32.checkpoint import save_checkpoint
from dsv32.config import preset
from dsv32.model.transformer import build_model
from dsv32.tokenizer import train_bpe

TEXT = [
    "The weather in Paris is sunny today, with 21 degrees. Let me think about the question first.",
    "Hello there! How are you? I am fine, thank you. The answer is 42, and the sum of 3 and 4 is 7.",
    "def add(a, b):\n    return a + b\n\nclass Tool:\n    name = 'search'\n",
    '{"city": "Paris", "days": 2, "units": "metric"} get_weather search lookup results',
]


def make_tiny_checkpoint(directory: str | Path, seed: int = 0, vocab_size: int = 400) -> Path:
    """Write a tiny random model and its tokenizer to `directory` (replaced if present).

    The model keeps the preset's 512-row vocabulary, larger than the tokenizer's, as the official
    model's is: ids without a token can be sampled, and the server must take them in stride.
    """
    tokenizer = train_bpe(TEXT * 8, vocab_size=vocab_size, min_frequency=1)
    config = preset("tiny")
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(
            f"tokenizer vocabulary {tokenizer.vocab_size} exceeds the tiny preset's {config.vocab_size}"
        )
    model = build_model(config, device="cpu", seed=seed)
    directory = save_checkpoint(model, config, directory)
    tokenizer.save(directory)
    return directory
