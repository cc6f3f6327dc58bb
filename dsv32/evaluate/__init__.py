"""Evaluation: long-context exact match, validation loss and indexer recall, side by side."""
