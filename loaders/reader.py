"""The streaming shard reader: the records of given samples, read forward through their shards.

:func:`read_records` takes a list of samples (shard, position in the shard), in the order
a worker needs them, and reads each shard front to back, seeking (or, on a stream that
cannot seek, reading and dropping) over the samples it does not need. Samples of a shard
that come forward with gaps of at most :data:`COALESCE_BYTES` are one *run* (the members
in the gaps are read and checked too, not handed over), read in blocks of whole members
(up to :data:`BLOCK_BYTES`, at least one member: never more than the index, already
checked against the manifest and the shard's size, allows). Before a block's records are
handed over, every header in it is checked to be exactly the header the writer writes for
that sample (its own member name, its size, the checksum; one vectorized comparison per
block: :func:`shardwriter.format.canonical_mismatch`), so a shard swapped with another, cut
short, shifted or with a damaged header is an error naming the shard and byte offset. A
run that ends at a shard's last sample also checks the end-of-archive marker. Records are
handed over as views into the block (no copy).
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


#: Bytes read at once: the members of a run, up to this much (at least one member).
BLOCK_BYTES = 4 << 20
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


#: Samples of one shard closer than this (bytes from one member's end to the next one's header) are read as
#: one run, the members between them read and checked too: a DataLoader worker's share of a window-shuffled
#: epoch is every other few records, and a block per handful of small records cost more than reading the gaps.
COALESCE_BYTES = 64 << 10


def _runs(shard_ids: np.ndarray, withins: np.ndarray, cut: np.ndarray,
          offsets: Callable[[int], tuple[np.ndarray, np.ndarray]]) -> Iterator[tuple[int, np.ndarray]]:
    """``(shard, wanted positions)`` per run: forward through one shard, no gap over :data:`COALESCE_BYTES`."""
    n = len(shard_ids)
    for a, b in zip(np.concatenate([[0], cut]).tolist(), np.concatenate([cut, [n]]).tolist()):
        s, want = int(shard_ids[a]), withins[a:b].astype(np.int64)
        if len(want) > 1:
            off, size = offsets(s)
            gaps = (off[want[1:]] - fmt.BLOCK) - (off[want[:-1]] + size[want[:-1]])
            inner = (np.flatnonzero(gaps > COALESCE_BYTES) + 1).tolist()
            for c, d in zip([0, *inner], [*inner, len(want)]):
                yield s, want[c:d]
        else:
            yield s, want


def read_records(refs: Sequence[ShardRef], offsets: Callable[[int], tuple[np.ndarray, np.ndarray]],
                 shard_ids: np.ndarray, withins: np.ndarray) -> Iterator[memoryview]:
    """The record payload of each sample ``(shard_ids[k], withins[k])``, in that order (a read-only view).

    ``offsets(s)`` gives shard ``s``'s per-sample record offsets and sizes (its index).
    Samples must come forward through each shard; meeting a shard again after others
    (the epoch wrapped around) reopens it.
    """
    n = len(shard_ids)
    if n == 0:
        return
    cut = np.flatnonzero((np.diff(shard_ids) != 0) | (np.diff(withins) <= 0)) + 1
    f: IO[bytes] | None = None
    current, pos = -1, 0
    off = size = np.empty(0, np.int64)
    try:
        for s, want in _runs(shard_ids, withins, cut, offsets):
            first, stop = int(want[0]), int(want[-1]) + 1
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
            k = first
            while k < stop:  # whole members, in blocks of up to BLOCK_BYTES (at least one member)
                start = int(off[k]) - fmt.BLOCK
                ends = off[k:stop] + size[k:stop] + (-size[k:stop] % fmt.BLOCK)
                j = k + max(1, int(np.searchsorted(ends, start + BLOCK_BYTES, side="right")))
                end = int(ends[j - k - 1])
                data = fmt.read_exact(f, end - start)
                heads = off[k:j] - fmt.BLOCK - start
                if len(data) < end - start:
                    i = k + int(np.searchsorted(ends[: j - k], start + len(data), side="right"))
                    o = int(off[i])
                    if o - start > len(data):
                        _check_header(data[o - fmt.BLOCK - start :], ref, o - fmt.BLOCK, i, int(size[i]))
                    raise FormatError(f"{ref.name}: sample {i} at byte {o} needs {int(size[i])} bytes, the shard ends at "
                                      f"byte {start + len(data)} (truncated)")
                if ref.first is not None:
                    bad = fmt.canonical_mismatch(np.frombuffer(data, np.uint8), heads, ref.first + np.arange(k, j), size[k:j])
                    if bad >= 0:  # say what is wrong with it
                        h = int(heads[bad])
                        _check_header(data[h : h + fmt.BLOCK], ref, start + h, k + bad, int(size[k + bad]))
                        raise FormatError(f"{ref.name}: the header at byte {start + h} is not the one the writer writes for "
                                          f"sample {k + bad} (damaged; run ai8x-shards verify)")
                else:
                    for i, h in zip(range(k, j), heads.tolist()):
                        _check_header(data[h : h + fmt.BLOCK], ref, start + h, i, int(size[i]))
                view = memoryview(data)
                w0, w1 = np.searchsorted(want, (k, j))  # the wanted members of this block
                for h, z in zip((heads[want[w0:w1] - k] + fmt.BLOCK).tolist(), size[want[w0:w1]].tolist()):
                    yield view[h : h + z]  # views: the records are not copied again
                pos, k = end, j
            if stop == ref.count:
                end = fmt.read_exact(f, len(fmt.TAR_END))
                if end != fmt.TAR_END:
                    what = "holds more samples than its index lists" if len(end) == len(fmt.TAR_END) else "ends early (truncated)"
                    raise FormatError(f"{ref.name}: no end-of-archive marker at byte {pos}: the shard {what}")
                pos += len(fmt.TAR_END)
    finally:
        if f is not None:
            f.close()
