"""Incremental detokenisation, token bytes, stop strings and the Prometheus histogram."""

from hypothesis import given, settings
from hypothesis import strategies as st

from dsv32.serve.detokenize import IncrementalDetokenizer, StopMatcher, token_bytes
from dsv32.serve.metrics import Histogram

TEXTS = ["héllo wörld 世界 🙂 ok", "The weather in Paris<｜end▁of▁sentence｜>", "ünïcödé 😀😀 42"]


@given(text=st.sampled_from(TEXTS) | st.text(max_size=40), window=st.integers(1, 6), step=st.integers(1, 4))
@settings(max_examples=150, deadline=None)
def test_incremental_pieces_add_up_to_the_decoding(tokenizer, text, window, step):
    ids = tokenizer.encode(text)
    detok = IncrementalDetokenizer(tokenizer, window=window)
    pieces = [detok.add(ids[i : i + step]) for i in range(0, len(ids), step)]
    pieces.append(detok.flush())
    assert "".join(pieces) == tokenizer.decode(ids)
    if "\ufffd" not in text:
        assert not any("\ufffd" in p for p in pieces)  # never half a character


def test_token_bytes_concatenate_to_the_utf8_text(tokenizer):
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert b"".join(token_bytes(tokenizer, i) for i in ids) == text.encode("utf-8")


@given(
    text=st.text(alphabet="ab!?. xy", max_size=40),
    stops=st.lists(st.text(alphabet="ab!?.", min_size=1, max_size=3), max_size=3),
    cuts=st.lists(st.integers(0, 40), max_size=6),
)
@settings(max_examples=300, deadline=None)
def test_stop_matcher_equals_one_shot_truncation_for_any_chunking(text, stops, cuts):
    # Reference: the shortest prefix that contains a stop string, cut at the earliest stop inside it.
    ends = [e for e in range(len(text) + 1) if any(s in text[:e] for s in stops)]
    hits = [text[: ends[0]].find(s) for s in stops if s in text[: ends[0]]] if ends else []
    expected = text[: min(hits)] if hits else text
    matcher = StopMatcher(stops)
    bounds = [0, *sorted(min(c, len(text)) for c in cuts), len(text)]
    out = "".join(matcher.feed(text[a:b]) for a, b in zip(bounds, bounds[1:])) + matcher.flush()
    assert out == expected
    assert matcher.stopped == bool(hits)


def test_stop_matcher_stops_at_the_first_complete_stop():
    """A longer stop string that began earlier but completes later never gets the chance."""
    for chunks in (["?.?"], ["?.", "?"], ["?", ".", "?"]):
        matcher = StopMatcher([".", "?.?"])
        assert "".join(matcher.feed(c) for c in chunks) + matcher.flush() == "?"
    matcher = StopMatcher(["b", "abc"])
    assert matcher.feed("xab") + matcher.flush() == "xa"


def test_histogram_buckets_are_cumulative():
    hist = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        hist.observe(value)
    assert hist.lines("h") == [
        'h_bucket{le="0.1"} 2',
        'h_bucket{le="1.0"} 3',
        'h_bucket{le="+Inf"} 4',
        "h_sum 3.65",
        "h_count 4",
    ]


def test_ids_past_the_tokenizer_have_no_text(tokenizer):
    ids = tokenizer.encode("héllo")
    past = tokenizer.vocab_size + 3  # the model's embedding table may be larger than the vocabulary
    detok = IncrementalDetokenizer(tokenizer)
    text = "".join(detok.add([t, past]) for t in ids) + detok.flush()
    assert text == "héllo" and token_bytes(tokenizer, past) == b""
