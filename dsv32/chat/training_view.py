"""A conversation as token ids plus a loss mask for supervised fine-tuning.

The conversation is rendered by `dsv32.chat.encoding.render_segments` (the exact prompt text), and
every assistant message's segment is marked as model-produced: its reasoning and `</think>` (when
rendered), content, DSML tool-call block and the closing `<｜end▁of▁sentence｜>`. Everything else
is context with mask 0: BOS, system and developer text, user turns including the generation prompt
`<｜Assistant｜><think>` (or `</think>`) that the prompt supplies, and tool results including their
closing `<think>`. Adjacent segments with the same mask are joined and each run is tokenized on
its own, so the mask is exact for any tokenizer; a boundary between runs always sits next to a
special token (runs of context end with `<think>`/`</think>`, assistant runs end with EOS) except
when an assistant message follows a system message or starts the conversation, so for tokenizers
that keep special tokens whole the ids equal those of tokenizing the whole text at once.

Reasoning dropping: with `drop_thinking=True` (the default, the inference-time format) assistant
messages before the last user message are rendered without their reasoning, so that reasoning is
neither in the ids nor trained on; those earlier answers are trained as written right after
`</think>`. To train on every turn's reasoning, either pass `drop_thinking=False` (the whole
transcript keeps reasoning; see the encoding docstring) or use `turn_views`, which makes one
example per user turn in the exact inference format with loss on that turn only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from dsv32.chat.encoding import render_segments
from dsv32.chat.errors import EncodingError
from dsv32.chat.tokens import BOS, EOS


class TextTokenizer(Protocol):
    def encode(self, text: str) -> Any:
        """Token ids of `text` (a list of ints, or an object with `.ids`); adds no tokens itself."""


@dataclass(frozen=True)
class TrainingView:
    """Token ids, a 0/1 loss mask of the same length, and the rendered text they encode."""

    token_ids: list[int]
    loss_mask: list[int]
    text: str

    @property
    def trained_tokens(self) -> int:
        return sum(self.loss_mask)


def _ids(tokenizer: TextTokenizer, text: str) -> list[int]:
    out = tokenizer.encode(text)
    out = list(getattr(out, "ids", out))
    if not all(isinstance(i, int) for i in out):
        raise TypeError(f"tokenizer.encode must return token ids (ints), got {out[:5]!r}")
    return out


def render_training_view(
    messages: Sequence[Any],
    tokenizer: TextTokenizer,
    thinking_mode: str = "thinking",
    drop_thinking: bool = True,
    *,
    train_from: int = 0,
) -> TrainingView:
    """Render `messages` to a `TrainingView` (see the module docstring).

    Only assistant messages at index >= `train_from` get loss (earlier ones are context).
    Raises EncodingError for a malformed conversation and ValueError for a tokenizer that does not
    keep BOS/EOS as single ids or adds tokens of its own.
    """
    bos_ids, eos_ids = _ids(tokenizer, BOS), _ids(tokenizer, EOS)
    if len(bos_ids) != 1 or len(eos_ids) != 1:
        raise ValueError(
            f"the tokenizer must encode BOS and EOS as one id each and add none of its own; "
            f"got {bos_ids} and {eos_ids}"
        )
    segments = render_segments(list(messages), thinking_mode, drop_thinking)
    runs: list[tuple[str, int]] = []
    for segment in segments:
        flag = int(segment.assistant_produced and segment.index >= train_from)
        if runs and runs[-1][1] == flag:
            runs[-1] = (runs[-1][0] + segment.text, flag)
        else:
            runs.append((segment.text, flag))
    token_ids: list[int] = []
    loss_mask: list[int] = []
    for text, flag in runs:
        ids = _ids(tokenizer, text)
        if flag and ids[-1:] != eos_ids:
            raise ValueError("the tokenizer split the end-of-sentence token of an assistant message")
        token_ids += ids
        loss_mask += [flag] * len(ids)
    return TrainingView(token_ids, loss_mask, "".join(s.text for s in segments))


def turn_views(
    messages: Sequence[Any],
    tokenizer: TextTokenizer,
    thinking_mode: str = "thinking",
) -> list[TrainingView]:
    """One view per user turn that the assistant answers: the conversation up to the end of that
    turn, rendered as at inference (earlier reasoning dropped), loss on that turn's assistant
    messages only. Together they train on every turn's reasoning exactly as the model sees it."""
    messages = list(messages)
    starts = [
        i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") in ("user", "developer")
    ]
    if not starts:
        raise EncodingError("messages: a conversation needs a user or developer message to make turn views")
    views = []
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(messages)
        turn = messages[:end]
        if any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages[start:end]):
            views.append(render_training_view(turn, tokenizer, thinking_mode, True, train_from=start))
    return views
