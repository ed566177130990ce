"""ShardWriter: appends encoded samples to the shards of one split of one dataset.

Owns rollover (by sample count and by bytes), crash safety (a shard and its index are
written under temporary names, fsynced, then renamed; a shard's final name means it is
complete), per-shard sha256 and the index rows. It knows nothing of sources, splits'
contents or the manifest: :mod:`shardwriter.pack` drives it and records what it reports.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from . import format as fmt

DEFAULT_MAX_COUNT = 10_000
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


@dataclass
class ShardInfo:
    """What the manifest records of one complete shard."""

    file: str
    count: int
    bytes: int
    sha256: str
    index: dict[str, Any]
    xxh3: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "count": self.count, "bytes": self.bytes, "sha256": self.sha256, "index": self.index,
                "xxh3": self.xxh3}


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it survives a crash (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary name, fsync and rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


@dataclass
class _OpenShard:
    number: int
    path: Path
    tmp: Path
    file: Any
    sha: Any = field(default_factory=hashlib.sha256)
    xxh: Any = field(default_factory=xxhash.xxh3_128)
    pos: int = 0
    rows: list[tuple[int, ...]] = field(default_factory=list)


class ShardWriter:
    """Write samples of one split into ``DIR/SPLIT-NNNNNN.tar`` shards with indexes.

    A new shard starts when the current one holds ``max_count`` samples, or when the
    next sample would take it past ``max_bytes`` (a single larger sample still gets a
    shard of its own). ``on_shard`` is called with each completed :class:`ShardInfo`
    after its files have their final names. Use as a context manager, or call
    :meth:`close`; an exception inside the ``with`` block leaves no partial shard
    under a final name.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        split: str,
        *,
        max_count: int = DEFAULT_MAX_COUNT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        first_shard: int = 0,
        first_sample: int = 0,
        on_shard: Callable[[ShardInfo], None] | None = None,
    ) -> None:
        if max_count < 1 or max_bytes < 1:
            raise ValueError("max_count and max_bytes must be positive")
        self.directory = Path(directory)
        self.split = split
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.next_shard = first_shard
        self.next_sample = first_sample
        self.on_shard = on_shard
        self.shards: list[ShardInfo] = []
        self._open: _OpenShard | None = None
        fmt.shard_name(split, 0)  # validates the split name
        self.directory.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, x: np.ndarray, target_kind: str, y: Any, source: str | None = None) -> str:
        """Append one sample; returns its key (its position in the split)."""
        key = fmt.sample_key(self.next_sample)
        rec = fmt.encode_record(key, x, target_kind, y, source)
        member = fmt.member_bytes(key + fmt.MEMBER_SUFFIX, rec.payload)
        cur = self._open
        if cur is not None and (
            len(cur.rows) >= self.max_count or cur.pos + len(member) + len(fmt.TAR_END) > self.max_bytes
        ):
            self._finish()
            cur = None
        if cur is None:
            cur = self._start()
        cur.rows.append(fmt.index_row(cur.pos + fmt.BLOCK, rec))
        self._append(cur, member)
        self.next_sample += 1
        return key

    def close(self) -> list[ShardInfo]:
        """Complete the open shard (if any); returns every shard this writer completed."""
        if self._open is not None:
            self._finish()
        return self.shards

    def abort(self) -> None:
        """Drop the open shard's temporary files."""
        cur, self._open = self._open, None
        if cur is not None:
            cur.file.close()
            cur.tmp.unlink(missing_ok=True)

    def _start(self) -> _OpenShard:
        name = fmt.shard_name(self.split, self.next_shard)
        path = self.directory / name
        tmp = self.directory / f".{name}.tmp"
        self._open = _OpenShard(self.next_shard, path, tmp, open(tmp, "wb"))
        return self._open

    @staticmethod
    def _append(cur: _OpenShard, data: bytes) -> None:
        cur.file.write(data)
        cur.sha.update(data)
        cur.xxh.update(data)
        cur.pos += len(data)

    def _finish(self) -> None:
        cur = self._open
        assert cur is not None
        self._append(cur, fmt.TAR_END)
        cur.file.flush()
        os.fsync(cur.file.fileno())
        cur.file.close()
        index_bytes = fmt.encode_index(np.array(cur.rows, dtype=fmt.INDEX_DTYPE))
        index_path = self.directory / fmt.index_name(cur.path.name)
        write_atomic(index_path, index_bytes)
        os.replace(cur.tmp, cur.path)
        fsync_dir(self.directory)
        info = ShardInfo(
            file=cur.path.name,
            count=len(cur.rows),
            bytes=cur.pos,
            sha256=cur.sha.hexdigest(),
            xxh3=cur.xxh.hexdigest(),
            index={
                "file": index_path.name,
                "bytes": len(index_bytes),
                "sha256": hashlib.sha256(index_bytes).hexdigest(),
            },
        )
        self._open = None
        self.next_shard += 1
        self.shards.append(info)
        if self.on_shard is not None:
            self.on_shard(info)
