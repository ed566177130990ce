"""The streaming shard reader: the records of given samples, read forward through their shards.

:func:`read_records` takes a list of samples (shard, position in the shard), in the order
a worker needs them, and reads each shard front to back, seeking (or, on a stream that
cannot seek, reading and dropping) over the samples it does not need. Consecutive samples
of a shard are one *run*. Every member header is checked against the index row before a
payload byte is read (checksum, the sample's own member name, its size), so a shard
swapped with another, cut short or holding other samples than its index is an error
naming the shard and byte offset, and no header can make the reader allocate more than
the row (already checked against the manifest) allows. A run that ends at a shard's last
sample also checks the end-of-archive marker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO

import numpy as np

from shardwriter import format as fmt
from shardwriter.errors import FormatError


@dataclass(frozen=True)
class ShardRef:
    """What the reader knows of one shard: how to open it, and how errors name it."""

    name: str
    count: int
    first: int | None  # split position of its first sample; None when unknown (explicit paths)
    open: Callable[[], IO[bytes]]


def _advance(f: IO[bytes], pos: int, target: int, shard: str) -> None:
    """Move ``f`` from byte ``pos`` forward to byte ``target`` (seek, or read and drop)."""
    if target == pos:
        return
    if f.seekable():
        f.seek(target)
        return
    left = target - pos
    while left > 0:
        got = len(f.read(min(left, 1 << 20)))
        if got == 0:
            raise FormatError(f"{shard}: ends at byte {target - left}, before byte {target} (truncated)")
        left -= got


def _check_header(block: bytes, ref: ShardRef, pos: int, within: int, size: int) -> None:
    if len(block) < fmt.BLOCK:
        raise FormatError(f"{ref.name}: ends at byte {pos + len(block)}, inside the header of sample {within} of the "
                          f"{ref.count} its index lists (truncated)")
    if block == b"\0" * fmt.BLOCK:
        raise FormatError(f"{ref.name}: end-of-archive marker at byte {pos}, where sample {within} of the {ref.count} its "
                          "index lists should start (the shard holds fewer samples, or was zeroed)")
    if ref.first is not None:
        fmt.check_member_header(block, ref.name, pos, fmt.member_name(fmt.sample_key(ref.first + within)), size)
        return
    name, got, flag = fmt.parse_tar_header(block, f"{ref.name} at byte {pos}")
    fmt.member_key(name, f"{ref.name} at byte {pos}")
    if got != size or flag not in (b"0", b"\0"):
        raise FormatError(f"{ref.name}: member {name!r} at byte {pos} ({got} bytes) does not match index row {within} ({size} bytes)")


def read_records(refs: Sequence[ShardRef], offsets: Callable[[int], tuple[np.ndarray, np.ndarray]],
                 shard_ids: np.ndarray, withins: np.ndarray) -> Iterator[bytes]:
    """The record payload of each sample ``(shard_ids[k], withins[k])``, in that order.

    ``offsets(s)`` gives shard ``s``'s per-sample record offsets and sizes (its index).
    Samples must come forward through each shard; meeting a shard again after others
    (the epoch wrapped around) reopens it.
    """
    n = len(shard_ids)
    if n == 0:
        return
    cut = np.flatnonzero((np.diff(shard_ids) != 0) | (np.diff(withins) != 1)) + 1
    f: IO[bytes] | None = None
    current, pos = -1, 0
    off = size = np.empty(0, np.int64)
    try:
        for a, b in zip(np.concatenate([[0], cut]).tolist(), np.concatenate([cut, [n]]).tolist()):
            s, first, stop = int(shard_ids[a]), int(withins[a]), int(withins[b - 1]) + 1
            ref = refs[s]
            if s != current:
                off, size = offsets(s)
                current = s
                if f is not None:
                    f.close()
                    f = None
            header = int(off[first]) - fmt.BLOCK
            if f is None or header < pos:  # a new shard, or a shard met again after wrapping
                if f is not None:
                    f.close()
                f, pos = ref.open(), 0
            _advance(f, pos, header, ref.name)
            pos = header
            for k, (o, z) in enumerate(zip(off[first:stop].tolist(), size[first:stop].tolist()), first):
                _check_header(fmt.read_exact(f, fmt.BLOCK), ref, pos, k, z)
                padded = z + (-z % fmt.BLOCK)
                data = fmt.read_exact(f, padded)
                if len(data) < padded:
                    raise FormatError(f"{ref.name}: sample {k} at byte {o} needs {z} bytes, the shard ends at byte "
                                      f"{o + len(data)} (truncated)")
                pos = o + padded
                yield data if padded == z else data[:z]
            if stop == ref.count:
                end = fmt.read_exact(f, len(fmt.TAR_END))
                if end != fmt.TAR_END:
                    what = "holds more samples than its index lists" if len(end) == len(fmt.TAR_END) else "ends early (truncated)"
                    raise FormatError(f"{ref.name}: no end-of-archive marker at byte {pos}: the shard {what}")
                pos += len(fmt.TAR_END)
    finally:
        if f is not None:
            f.close()
