"""`dsv32 demo`: the whole DeepSeek-V3.2 recipe end to end, resumable, with a report."""
