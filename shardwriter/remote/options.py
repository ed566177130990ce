"""Read options and errors: :class:`Options` and its ``AI8X_SHARDS_*`` environment parsing
(:func:`parse_bytes`), the retry backoff delay, and the error types (:class:`StorageError`,
:class:`MissingError`, and the internal ``_Transient`` fault worth retrying)."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, replace
from typing import Any


class StorageError(OSError):
    """A dataset file could not be read or written; the message names the location and file."""


class MissingError(StorageError):
    """The object does not exist (HTTP 404, S3 NoSuchKey, GCS NotFound)."""


class _Transient(Exception):
    """A fault worth retrying: 5xx, 429, reset, stall, a body cut short."""


def _env_number(name: str, default: float, kind: type) -> Any:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(parse_bytes(text)) if kind is int else kind(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a valid {kind.__name__}") from None
    if value < 0:
        raise ValueError(f"{name}={text!r} must not be negative")
    return value


def parse_bytes(text: str) -> int:
    """``"1048576"``, ``"512K"``, ``"64M"``, ``"10G"``, ``"1T"`` (powers of 1024) -> bytes."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    if scale != 1:
        t = t[:-1]
    return int(float(t) * scale) if "." in t else int(t) * scale


@dataclass(frozen=True)
class Options:
    """How remote reads behave; :meth:`from_env` reads the ``AI8X_SHARDS_*`` variables."""

    retries: int = 8
    timeout: float = 30.0
    backoff: float = 0.5
    backoff_max: float = 20.0
    readahead: int = 8 << 20
    chunk: int = 1 << 20

    @classmethod
    def from_env(cls, **overrides: Any) -> Options:
        d = cls()
        opts = cls(
            retries=_env_number("AI8X_SHARDS_RETRIES", d.retries, int),
            timeout=_env_number("AI8X_SHARDS_TIMEOUT", d.timeout, float),
            backoff=_env_number("AI8X_SHARDS_BACKOFF", d.backoff, float),
            backoff_max=_env_number("AI8X_SHARDS_BACKOFF_MAX", d.backoff_max, float),
            readahead=_env_number("AI8X_SHARDS_READAHEAD", d.readahead, int),
        )
        return replace(opts, **overrides)


def _delay(opts: Options, failures: int) -> float:
    return min(opts.backoff * 2 ** (failures - 1), opts.backoff_max) * random.uniform(0.5, 1.0)
