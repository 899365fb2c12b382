"""The serving domain's one error of its own: model files that cannot be served."""

from __future__ import annotations


class ModelError(ValueError):
    """model.json or weights.bin is not a model the lab saved (or is damaged): the message says what,
    for the person who owns it (it never contains the files' content beyond names and shapes)."""
