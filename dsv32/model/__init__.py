"""DeepSeek-V3.2 model modules (single-device PyTorch; no I/O, no globals)."""
