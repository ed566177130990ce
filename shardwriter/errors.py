"""Error types of the writer (format errors live in :mod:`shardwriter.format`)."""

from __future__ import annotations


class PackError(RuntimeError):
    """Packing stopped: bad input (without ``skip_bad``) or an output folder in the way."""


class BadInput(PackError):
    """One input item cannot be packed; ``name`` identifies it (a file, an index)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason
