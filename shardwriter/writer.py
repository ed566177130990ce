"""Writing shard files: :class:`ShardWriter` (the low-level API), and pieces of planned shards.

:class:`ShardWriter` appends samples to the shards of one split: rollover (by sample
count and by bytes), crash safety (a shard and its index are written under temporary
names, fsynced, then renamed; a shard's final name means it is complete), per-shard
sha256 and the index rows. The pack job (:mod:`shardwriter.pack`) does not use it: its
workers write planned shards, or pieces of them, at offsets known in advance, with the
functions at the end of this module (:func:`seal`, :func:`rebuild_shard`). Every
``OSError`` here becomes a :class:`~shardwriter.errors.StorageError` naming the path.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from . import format as fmt
from .errors import StorageError

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
    digest: Any = field(default_factory=lambda: ShardDigest())
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
            try:
                cur.file.close()
            except OSError:
                pass
            cur.tmp.unlink(missing_ok=True)

    def _start(self) -> _OpenShard:
        name = fmt.shard_name(self.split, self.next_shard)
        path = self.directory / name
        tmp = self.directory / f".{name}.tmp"
        try:
            f = open(tmp, "wb")
        except OSError as exc:
            raise _named(tmp, exc, "create") from None
        self._open = _OpenShard(self.next_shard, path, tmp, f)
        return self._open

    @staticmethod
    def _append(cur: _OpenShard, data: bytes) -> None:
        try:
            cur.file.write(data)
        except OSError as exc:
            raise _named(cur.tmp, exc, "write") from None
        cur.digest.update(data)
        cur.pos += len(data)

    def _finish(self) -> None:
        cur = self._open
        assert cur is not None
        self._append(cur, fmt.TAR_END)
        index_bytes = fmt.encode_index(np.array(cur.rows, dtype=fmt.INDEX_DTYPE))
        index_path = self.directory / fmt.index_name(cur.path.name)
        try:
            cur.file.flush()
            os.fsync(cur.file.fileno())
            cur.file.close()
        except OSError as exc:
            raise _named(cur.tmp, exc, "write") from None
        try:
            write_atomic(index_path, index_bytes)
        except OSError as exc:
            index_path.with_name(f".{index_path.name}.tmp").unlink(missing_ok=True)
            raise _named(index_path, exc, "write") from None
        replace_named(cur.tmp, cur.path)
        fsync_dir(self.directory)
        info = ShardInfo(
            file=cur.path.name,
            count=len(cur.rows),
            bytes=cur.pos,
            **cur.digest.result(),
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


# --------------------------------------------------------------------------- pieces of planned shards
#
# The pack job (shardwriter.pack) plans every shard's bytes before anything is loaded
# (shardwriter.plan). A worker writes one *piece* of a shard (a run of its items) at the
# piece's planned byte offset, straight into the shard's temporary file, and its index
# rows at their planned row slots; a shard written by one piece is finished on the spot
# (end-of-archive marker, index header, sha256), one written by several is *sealed*
# when its last piece is done. Skipped inputs leave a piece short: sealing then closes
# the gaps (rebuild_shard), and assembling renumbers the keys of the shards after them.


def temp_names(directory: Path, split: str, number: int) -> tuple[Path, Path]:
    """The temporary shard and index files of planned shard ``number`` of ``split``."""
    name = fmt.shard_name(split, number)
    return directory / f".{name}.tmp", directory / f".{fmt.index_name(name)}.tmp"


def _named(path: Path, exc: OSError, doing: str) -> StorageError:
    what = errno.errorcode.get(exc.errno or 0, "")
    hint = (" (the disk is full: free space, then run the same command again to resume)" if exc.errno == errno.ENOSPC else
            " (then run the same command again to resume)")
    return StorageError(f"{path}: cannot {doing}: {exc.strerror or exc}{f' [{what}]' if what else ''}{hint}")


def pwrite_all(fd: int, data: Any, offset: int, path: Path) -> None:
    """Write all of ``data`` at ``offset`` of ``fd``; an OSError names ``path``."""
    view = memoryview(data).cast("B")
    try:
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
    except OSError as exc:
        raise _named(path, exc, "write") from None


def _open_rw(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        raise _named(path, exc, "create") from None


def _sync(fd: int, path: Path) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        raise _named(path, exc, "flush") from None


def _truncate(fd: int, size: int, path: Path) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError as exc:
        raise _named(path, exc, "resize") from None


class ShardDigest:
    """The two digests a manifest records of a shard: sha256 (its identity: cache, upload, verify)
    and XXH3-128 (the same bytes, ~40x cheaper: what streaming readers check)."""

    def __init__(self) -> None:
        self.sha, self.xxh = hashlib.sha256(), xxhash.xxh3_128()

    def update(self, data: Any) -> None:
        self.sha.update(data)
        self.xxh.update(data)

    def result(self) -> dict[str, str]:
        return {"sha256": self.sha.hexdigest(), "xxh3": self.xxh.hexdigest()}


def file_digests(path: Path) -> dict[str, str]:
    """:class:`ShardDigest` of a file, read in large blocks."""
    h = ShardDigest()
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
    except OSError as exc:
        raise _named(path, exc, "read") from None
    return h.result()


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in large blocks."""
    return file_digests(path)["sha256"]


def replace_named(src: Path, dst: Path) -> None:
    try:
        os.replace(src, dst)
    except OSError as exc:
        raise _named(src, exc, f"rename to {dst.name}") from None


@dataclass(frozen=True)
class Segment:
    """A piece's bytes and rows inside a temporary shard: where it starts, what it holds."""

    offset: int
    nbytes: int
    row: int
    rows: int


def seal(shard: Path, index: Path, segments: list[Segment], first_key: int) -> dict[str, Any]:
    """Finish a shard written in pieces: marker, index header, sha256; gaps closed by a rebuild."""
    pos = row = 0
    contiguous = True
    for s in segments:
        contiguous &= s.offset == pos and s.row == row
        pos, row = s.offset + s.nbytes, s.row + s.rows
    if not contiguous:
        return rebuild_shard(shard, index, segments, first_key, shard, index)
    fd, ifd = _open_rw(shard), _open_rw(index)
    try:
        pwrite_all(fd, fmt.TAR_END, pos, shard)
        _truncate(fd, pos + len(fmt.TAR_END), shard)
        head = fmt.INDEX_MAGIC[2] + np.uint64(row).astype("<u8").tobytes()
        pwrite_all(ifd, head, 0, index)
        _truncate(ifd, fmt.index_size(row, 2), index)
        _sync(fd, shard)
        _sync(ifd, index)
    finally:
        os.close(fd)
        os.close(ifd)
    return {"count": row, "bytes": pos + len(fmt.TAR_END), **file_digests(shard),
            "index_bytes": fmt.index_size(row, 2), "index_sha256": file_sha256(index)}


def rebuild_shard(src: Path, src_index: Path, segments: list[Segment], first_key: int, dst: Path,
                  dst_index: Path) -> dict[str, Any]:
    """Copy the members ``segments`` point at into a compact shard ``dst`` whose keys start at ``first_key``.

    Members are moved (closing gaps left by skipped inputs) and renamed to their new keys;
    their bytes otherwise stay as they are, and so do their per-sample hashes. Written
    under temporary names and renamed (index first), so ``src`` may be ``dst``.
    """
    tmp = dst.parent / f".{dst.name.lstrip('.')}.rebuild.tmp"
    tmp_index = dst_index.parent / f".{dst_index.name.lstrip('.')}.rebuild.tmp"
    itemsize = fmt.INDEX_DTYPE.itemsize
    out_rows: list[tuple[int, ...]] = []
    sha = ShardDigest()
    pos = 0
    try:
        sfd = os.open(src, os.O_RDONLY)
        ifd = os.open(src_index, os.O_RDONLY)
    except OSError as exc:
        raise _named(src, exc, "open") from None
    try:
        with open(tmp, "wb") as f:
            for seg in segments:
                step = max(1, (16 << 20) // max(seg.nbytes // max(seg.rows, 1), 1))
                for a in range(0, seg.rows, step):
                    n = min(step, seg.rows - a)
                    raw = os.pread(ifd, n * itemsize, fmt.INDEX_HEADER + (seg.row + a) * itemsize)
                    rows = np.frombuffer(raw, fmt.INDEX_DTYPE, n)
                    lo = int(rows["offset"][0]) - fmt.BLOCK
                    last = rows[-1]
                    hi = int(last["offset"]) + fmt.padded(int(last["size"]))
                    data = os.pread(sfd, hi - lo, lo)
                    for r in rows.tolist():
                        off, size = r[0], r[1]
                        key = fmt.sample_key(first_key + len(out_rows))
                        payload = fmt.with_key(data[off - lo : off - lo + size], key)
                        member = fmt.tar_header(key + fmt.MEMBER_SUFFIX, size) + payload + fmt.tar_padding(size)
                        f.write(member)
                        sha.update(member)
                        shift = pos + fmt.BLOCK - off
                        out_rows.append((off + shift, size, r[2] + shift, r[3], r[4] + shift if r[5] else 0, *r[5:]))
                        pos += len(member)
            f.write(fmt.TAR_END)
            sha.update(fmt.TAR_END)
            f.flush()
            os.fsync(f.fileno())
        index_bytes = fmt.encode_index(np.array(out_rows, dtype=fmt.INDEX_DTYPE))
        with open(tmp_index, "wb") as f:
            f.write(index_bytes)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        tmp_index.unlink(missing_ok=True)
        raise _named(tmp, exc, "write") from None
    finally:
        os.close(sfd)
        os.close(ifd)
    replace_named(tmp_index, dst_index)
    replace_named(tmp, dst)
    fsync_dir(dst.parent)
    return {"count": len(out_rows), "bytes": pos + len(fmt.TAR_END), **sha.result(),
            "index_bytes": len(index_bytes), "index_sha256": hashlib.sha256(index_bytes).hexdigest()}
