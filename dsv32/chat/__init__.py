"""The DeepSeek-V3.2 chat format: special tokens, prompt encoding, completion parsing, training view."""
