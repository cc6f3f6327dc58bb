"""Token ids to text while streaming, token bytes for log-probabilities, and stop-string matching.

`IncrementalDetokenizer`: byte-level BPE splits multi-byte characters across tokens, so decoding
token by token would emit U+FFFD halves. It keeps a window of ids and releases the text that the
window decodes to beyond what was already released, holding it back while it ends in U+FFFD (an
incomplete UTF-8 sequence). Special tokens decode to their strings, which the chat parser needs.
The concatenation of everything released, plus `flush()`, equals `tokenizer.decode(all_ids)`.
Ids the tokenizer does not have (a model's embedding table is often larger than its vocabulary,
as DeepSeek-V3.2's is) stand for no text: they are skipped, never an error.

`StopMatcher`: stops a text stream where the first stop string is complete (the shortest prefix that
contains one), cutting at the earliest start among the stop strings inside that prefix; text is
released only once no stop string can start inside it, so a stop string is never partly sent to a
client. Defined on prefixes, the result does not depend on how the stream is chunked.
"""

from __future__ import annotations

from functools import lru_cache

from dsv32.tokenizer import Tokenizer

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Tokenizer, window: int = 8):
        self.tokenizer = tokenizer
        self.window = window
        self.ids: list[int] = []
        self._prefix = 0  # window start: ids before it are settled
        self._read = 0  # ids whose text was released

    def add(self, token_ids: list[int]) -> str:
        """Append tokens; return the newly decodable text (may be empty)."""
        vocab = self.tokenizer.vocab_size
        self.ids.extend(t for t in token_ids if 0 <= t < vocab)
        decode = self.tokenizer.decode
        before = decode(self.ids[self._prefix : self._read])
        after = decode(self.ids[self._prefix :])
        if after.endswith(_REPLACEMENT) or len(after) <= len(before) or not after.startswith(before):
            return ""
        new_text = after[len(before) :]
        self._read = len(self.ids)
        self._prefix = max(self._prefix, self._read - self.window)
        return new_text

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character is released as U+FFFD)."""
        before = self.tokenizer.decode(self.ids[self._prefix : self._read])
        after = self.tokenizer.decode(self.ids[self._prefix :])
        self._read = len(self.ids)
        return after[len(before) :] if after.startswith(before) else after


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of the GPT-2 byte-to-printable-character map that byte-level BPE vocabularies use."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def token_bytes(tokenizer: Tokenizer, token_id: int) -> bytes:
    """The raw bytes one token stands for (a special token: its UTF-8 string; an unknown id: none)."""
    if not 0 <= token_id < tokenizer.vocab_size:
        return b""
    piece = tokenizer.id_to_token(token_id)
    if piece is None:
        return b""
    if piece in tokenizer.special_tokens:
        return piece.encode("utf-8")
    table = _byte_decoder()
    if all(c in table for c in piece):
        return bytes(table[c] for c in piece)
    return tokenizer.decode([token_id]).encode("utf-8")


class StopMatcher:
    """Streaming search for the earliest stop string; see the module docstring."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Add text; return what can be released (everything before a found stop string)."""
        if self.stopped:
            return ""
        self._held += text
        if not self.stops:
            out, self._held = self._held, ""
            return out
        ends = [at + len(s) for s in self.stops if (at := self._held.find(s)) >= 0]
        if ends:
            complete = self._held[: min(ends)]  # the shortest prefix holding a whole stop string
            at = min(i for s in self.stops if (i := complete.find(s)) >= 0)
            self.stopped = True
            out, self._held = self._held[:at], ""
            return out
        # Hold back the longest tail that could still begin a stop string.
        keep = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self._held)), 0, -1):
                if s.startswith(self._held[-k:]):
                    keep = max(keep, k)
                    break
        out = self._held[: len(self._held) - keep]
        self._held = self._held[len(self._held) - keep :]
        return out

    def flush(self) -> str:
        out, self._held = ("" if self.stopped else self._held), ""
        return out
