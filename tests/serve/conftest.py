import pytest

from dsv32.tokenizer import train_bpe

CORPUS = [
    "The weather in Paris is sunny today, with 21 degrees. Let me think about the question first.",
    "Hello there! How are you? I am fine, thank you. The answer is 42.",
    "def add(a, b):\n    return a + b\n# tools, functions, parameters, results\n",
    '{"city": "Paris", "days": 2, "units": "metric"} get_weather search lookup',
] * 4


@pytest.fixture(scope="session")
def tokenizer():
    return train_bpe(CORPUS, vocab_size=320, min_frequency=1)
