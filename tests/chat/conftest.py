import json
from pathlib import Path

import pytest

# Copy of the official DeepSeek-V3.2 encoding example (shared/fixtures/dsv32-encoding).
FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def fixture_conversation():
    """The official example conversation with its tools attached to the first message."""
    data = json.loads((FIXTURE_DIR / "test_input.json").read_text(encoding="utf-8"))
    messages = data["messages"]
    messages[0] = dict(messages[0], tools=data["tools"])
    expected = (FIXTURE_DIR / "test_output.txt").read_text(encoding="utf-8")
    assert expected.endswith("\n")
    return messages, expected[:-1]
