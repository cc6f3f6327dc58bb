"""Typed errors of the chat format."""

from __future__ import annotations


class EncodingError(ValueError):
    """A conversation, tool list or tool call that cannot be encoded.

    Subclasses ValueError so that the `dsv32` command and the server report it as bad input.
    The message names the offending message (by index and role) and what was expected.
    """
