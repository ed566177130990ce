"""One options object for everything that reads or writes a dataset: :class:`Options`.

It covers every knob the package has (network retries, timeouts, backoff and read-ahead;
the local shard cache's folder and size cap; the ``pipe:`` opt-in; anonymous GCS; the
per-sample integrity checks). :meth:`Options.from_env` reads the ``AI8X_SHARDS_*``
environment variables once; nothing below the datasets and the command line reads the
environment again: the object is passed down to storage, so two datasets in one process
can use different settings. A setting that is not valid is a
:class:`~shardwriter.errors.SettingsError` when the object is made, before any work.

==============================  ===================  =================================================
variable                        default              meaning
==============================  ===================  =================================================
``AI8X_SHARDS_RETRIES``         8                    failed attempts in a row (no new byte) allowed
``AI8X_SHARDS_TIMEOUT``         30                   seconds: connect timeout and longest stall
``AI8X_SHARDS_BACKOFF``         0.5                  seconds before the first retry; doubles each time
``AI8X_SHARDS_BACKOFF_MAX``     20                   longest wait between retries, seconds
``AI8X_SHARDS_READAHEAD``       auto                 bytes read ahead by a thread; 0: no thread; auto:
                                                     none over HTTP and S3 (the TCP receive buffer reads
                                                     ahead; bytes go straight into the reader's buffer),
                                                     16M for GCS and ``pipe:``
``AI8X_SHARDS_CACHE``           ~/.cache/ai8x-shards local cache of remote shards
``AI8X_SHARDS_CACHE_BYTES``     64G                  cache size cap (K, M, G, T suffixes)
``AI8X_SHARDS_ALLOW_PIPE``      0                    1: allow ``pipe:`` locations (run without a shell)
``AI8X_SHARDS_GCS_ANONYMOUS``   0                    1: read public GCS buckets without credentials
``AI8X_SHARDS_VERIFY_SAMPLES``  1                    0: skip the per-sample checksum on every read
==============================  ===================  =================================================
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .errors import SettingsError

_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bytes(text: str) -> int:
    """``"1048576"``, ``"512K"``, ``"64M"``, ``"10G"``, ``"1.5T"`` (powers of 1024) -> bytes."""
    t = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    scale = _UNITS.get(t[-1:], 1)
    if scale != 1:
        t = t[:-1]
    try:
        value = float(t) * scale if "." in t else int(t) * scale
    except ValueError:
        raise SettingsError(f"{text!r} is not a size (bytes, or a number with K, M, G or T)") from None
    if not math.isfinite(value) or value < 0:
        raise SettingsError(f"{text!r} is not a size (bytes, or a number with K, M, G or T)")
    return int(value)


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/ai8x-shards``, else ``~/.cache/ai8x-shards``."""
    return str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ai8x-shards")


@dataclass(frozen=True)
class Options:
    """How datasets are read and written (see the module docstring for each field's variable)."""

    retries: int = 8
    timeout: float = 30.0
    backoff: float = 0.5
    backoff_max: float = 20.0
    readahead: int | None = None  # None: each backend's own (RemoteStore.readahead)
    chunk: int = 4 << 20
    cache_dir: str = ""  # "" -> default_cache_dir()
    cache_bytes: int = 64 << 30
    allow_pipe: bool = False
    gcs_anonymous: bool = False
    verify_samples: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("bool",) and not isinstance(v, bool):
                raise SettingsError(f"option {f.name} must be True or False, not {v!r}")
            if f.type in ("int", "float"):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                    raise SettingsError(f"option {f.name} must be a non-negative number, not {v!r}")
        if self.timeout <= 0:
            raise SettingsError(f"option timeout must be positive, not {self.timeout!r}")
        if self.readahead is not None and (isinstance(self.readahead, bool) or not isinstance(self.readahead, int)
                                           or self.readahead < 0):
            raise SettingsError(f"option readahead must be a non-negative number of bytes or None (auto), not {self.readahead!r}")
        if self.chunk < 1:
            raise SettingsError(f"option chunk must be at least 1 byte, not {self.chunk!r}")
        if not isinstance(self.cache_dir, str):
            object.__setattr__(self, "cache_dir", os.fspath(self.cache_dir))

    @property
    def cache_path(self) -> Path:
        """The shard cache folder."""
        return Path(self.cache_dir or default_cache_dir()).expanduser()

    def replace(self, **changes: Any) -> Options:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Options:
        """Options from the ``AI8X_SHARDS_*`` variables (``environ``: default ``os.environ``), then ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, field_name, kind in _ENV:
            text = env.get(name, "").strip()
            if not text:
                continue
            try:
                values[field_name] = kind(text)
            except SettingsError as exc:
                raise SettingsError(f"{name}={text!r}: {exc}") from None
            except ValueError:
                raise SettingsError(f"{name}={text!r} is not a valid {kind.__name__.strip('_')}") from None
        values.update(overrides)
        try:
            return cls(**values)
        except SettingsError as exc:
            raise SettingsError(f"{exc} (from the AI8X_SHARDS_* environment or the arguments)") from None


def _flag(text: str) -> bool:
    t = text.lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise SettingsError("expected 1 or 0")


def _readahead(text: str) -> int | None:
    return None if text.lower() == "auto" else parse_bytes(text)


_ENV = (
    ("AI8X_SHARDS_RETRIES", "retries", int),
    ("AI8X_SHARDS_TIMEOUT", "timeout", float),
    ("AI8X_SHARDS_BACKOFF", "backoff", float),
    ("AI8X_SHARDS_BACKOFF_MAX", "backoff_max", float),
    ("AI8X_SHARDS_READAHEAD", "readahead", _readahead),
    ("AI8X_SHARDS_CACHE", "cache_dir", str),
    ("AI8X_SHARDS_CACHE_BYTES", "cache_bytes", parse_bytes),
    ("AI8X_SHARDS_ALLOW_PIPE", "allow_pipe", _flag),
    ("AI8X_SHARDS_GCS_ANONYMOUS", "gcs_anonymous", _flag),
    ("AI8X_SHARDS_VERIFY_SAMPLES", "verify_samples", _flag),
)
