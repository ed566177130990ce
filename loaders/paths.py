"""Explicit shard paths (``StreamingShardDataset(shards=...)``): an index of tar files without a manifest.

Each shard's ``.idx`` beside it is used when present; otherwise the shard is scanned once
(read front to back) and the offsets found are kept. Every index is checked against its
shard's real size and against the record layout of the first record; sample keys cannot
be checked against split positions, which are unknown without a manifest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

import numpy as np
from braceexpand import braceexpand

from shardwriter import format as fmt
from shardwriter.errors import SettingsError, StorageError
from shardwriter.storage import open_regular

from .index import SplitIndex

__all__ = ["expand", "index_from_paths", "open_path"]


def expand(shards: str | list[str | os.PathLike[str]]) -> list[str]:
    """The shard paths a ``shards=`` argument names (brace patterns expanded)."""
    patterns = [shards] if isinstance(shards, str) else [os.fspath(p) for p in shards]
    paths = [p for pattern in patterns for p in braceexpand(pattern)]
    if not paths:
        raise SettingsError("shards names no files")
    return paths


def open_path(path: str, size: int) -> IO[bytes]:
    """A shard file opened for forward reading (a regular file of ``size`` bytes)."""
    return os.fdopen(open_regular(path, size, "shard"), "rb", buffering=1 << 20)


def index_from_paths(paths: list[str]) -> tuple[SplitIndex, fmt.Schema]:
    """A :class:`SplitIndex` of explicit shard files (no manifest): each ``.idx`` beside its shard, or a scan.

    Every index is checked against its shard's real size and the record layout of the
    first record; keys cannot be checked against split positions (unknown here).
    """
    found: list[tuple[str, int, np.ndarray, int]] = []
    wheres: list[str] = []
    for p in paths:
        fd = open_regular(p, None, "shard")
        try:
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        idx = p[: -len(".tar")] + ".idx" if p.endswith(".tar") else p + ".idx"
        if os.path.exists(idx):
            try:
                buf = Path(idx).read_bytes()
            except OSError as exc:
                raise StorageError(f"{idx}: cannot read ({exc.strerror or exc})") from None
            found.append((p, size, fmt.decode_index(buf, idx), fmt.index_version(buf, idx)))
            wheres.append(idx)
        else:
            with open_path(p, size) as f:
                found.append((p, size, fmt.build_index(f, p, size), 2))
            wheres.append(p)
    schema = _schema_of(found)
    shards: list[fmt.ShardEntry] = []
    parts, owner = [], []
    hashed = all(v >= 2 for *_, v in found)
    layout = fmt.record_layout(schema)
    for (p, size, rows, _), where in zip(found, wheres):
        fmt.check_rows(rows, where=where, count=len(rows), shard_bytes=size, layout=layout, schema=schema, hashed=hashed)
        owner.append(np.full(len(rows), len(shards), np.int32))
        parts.append(rows)
        shards.append(fmt.ShardEntry(p, size, "", count=len(rows), split="", number=len(shards), first=-1))
    rows = np.concatenate(parts) if parts else np.zeros(0, fmt.INDEX_DTYPE)
    ix = SplitIndex(shards, np.concatenate(owner) if owner else np.zeros(0, np.int32), rows["offset"].astype(np.int64),
                    rows["size"].astype(np.int64), rows["x_off"].astype(np.int64), rows["y_off"].astype(np.int64),
                    rows["label"].astype(np.int64), rows["x_hash"].astype(np.uint64), rows["y_hash"].astype(np.uint64), hashed)
    return ix, schema


def _schema_of(found: list[tuple[str, int, np.ndarray, int]]) -> fmt.Schema:
    """The schema the first record of the first non-empty shard shows (shapes and target kind)."""
    for p, _, rows, _ in found:
        if len(rows):
            fd = open_regular(p, None, "shard")
            try:
                payload = os.pread(fd, int(rows["size"][0]), int(rows["offset"][0]))
            finally:
                os.close(fd)
            rec = fmt.decode_record(payload, f"{p} sample 0")
            kind = rec.target_kind
            shape = None if kind == "class" else tuple(np.shape(rec.y))
            classes = range(fmt.schema.MAX_CLASSES if kind == "class" else 256 if kind == "mask" else 1)
            return fmt.Schema(tuple(rec.x.shape), fmt.Target(kind, shape), tuple(classes))
    return fmt.Schema((1,), fmt.Target("class"), (0,))
