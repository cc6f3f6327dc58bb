"""What every request handler needs: the backend, the tokenizer, the served name, settings and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from dsv32.serve.backend import Backend
from dsv32.serve.metrics import Metrics
from dsv32.tokenizer import Tokenizer

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass
class ServerState:
    backend: Backend
    tokenizer: Tokenizer
    model_name: str
    default_thinking: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    fingerprint: str | None = None
    metrics: Metrics = field(default_factory=Metrics)
