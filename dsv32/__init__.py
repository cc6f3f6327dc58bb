"""dsv32: the DeepSeek-V3.2 recipe at a scale anyone can run."""

__version__ = "0.1.0"
