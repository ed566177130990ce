"""A dataset's shards mapped side by side into one read-only address range: :class:`ShardMap`.

Why: a batch of small samples (MNIST-sized) from a map-style dataset is spread over many
shards; one ``preadv`` per sample is a system call per sample, and one numpy gather per
shard is a Python round per shard. With every shard mapped at a fixed place in one
reserved range, a whole batch is one vectorized gather (``region[offsets]`` through a
sliding-window view), whatever shards it touches.

How: at construction the range is reserved (``mmap`` of ``PROT_NONE`` anonymous memory:
address space only, no memory); a shard is mapped into its slot (``MAP_FIXED``, read-only,
shared) the first time a batch touches it, after the dataset has checked the file (a
regular file of the manifest's size, its first header right). The slots are page-aligned
and laid out from the manifest's sizes, so every sample's global byte offset is known
up front. Local shards' file descriptors are closed once mapped (no descriptor per
shard); a remote shard's cached copy stays open, holding the cache's shared lock, so
eviction never takes it away. A forked DataLoader worker inherits the mappings; a
pickled dataset (spawn) maps again in the new process.

Where ``mmap`` with ``MAP_FIXED`` is not available (not Linux or macOS), or reserving
fails, :func:`ShardMap.create` returns None and the dataset reads with ``preadv``.

Caveat (documented in the troubleshooting section): a shard *truncated while it is
mapped* makes the process that touches the lost pages die with SIGBUS (a DataLoader
reports a killed worker) instead of raising; a shard changed in place at the same size is
caught by the per-sample checks like any other damage.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

_PAGE = mmap.PAGESIZE
#: Cached (remote) shards whose descriptors stay open while mapped, at most; an older one's file may
#: then be evicted from the cache, which its mapping survives (POSIX keeps an unlinked file's pages).
MAX_KEPT_FDS = 64
_FLAGS = {
    "linux": {"MAP_SHARED": 0x01, "MAP_PRIVATE": 0x02, "MAP_FIXED": 0x10, "MAP_ANONYMOUS": 0x20, "MAP_NORESERVE": 0x4000},
    "darwin": {"MAP_SHARED": 0x01, "MAP_PRIVATE": 0x02, "MAP_FIXED": 0x10, "MAP_ANONYMOUS": 0x1000, "MAP_NORESERVE": 0x40},
}.get(sys.platform)
_PROT_NONE, _PROT_READ = 0, 1
_MAP_FAILED = ctypes.c_void_p(-1).value


def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.restype = ctypes.c_int
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc


class ShardMap:
    """One reserved address range holding every shard of a dataset at a fixed offset (see the module docstring)."""

    def __init__(self, libc: Any, base: int, sizes: np.ndarray, slots: np.ndarray, total: int) -> None:
        self._libc, self._base, self._total = libc, base, total
        self.sizes, self.slots = sizes, slots
        self.mapped = np.zeros(len(sizes), dtype=bool)
        self.complete = False  # every shard mapped: nothing left to check per batch
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.region = np.ctypeslib.as_array((ctypes.c_uint8 * total).from_address(base))

    @classmethod
    def create(cls, sizes: list[int]) -> ShardMap | None:
        """Reserve the range for shards of ``sizes`` bytes; None where this platform cannot."""
        if _FLAGS is None or not sizes:
            return None
        sizes_a = np.asarray(sizes, dtype=np.int64)
        room = -(-sizes_a // _PAGE) * _PAGE
        slots = np.concatenate([[0], np.cumsum(room)[:-1]]).astype(np.int64)
        total = int(room.sum())
        try:
            libc = _libc()
            f = _FLAGS
            base = libc.mmap(None, total, _PROT_NONE, f["MAP_PRIVATE"] | f["MAP_ANONYMOUS"] | f["MAP_NORESERVE"], -1, 0)
        except (OSError, AttributeError):
            return None
        if base in (None, _MAP_FAILED):
            return None
        return cls(libc, base, sizes_a, slots, total)

    def ensure(self, shards: np.ndarray, open_shard: Callable[[int], tuple[int, bool]]) -> None:
        """Map every shard in ``shards`` not mapped yet; ``open_shard(s)`` gives ``(checked fd, keep it open)``."""
        if self.complete:
            return
        missing = np.unique(shards[~self.mapped[shards]]) if len(shards) else shards
        for s in missing.tolist():
            with self._lock:
                if self.mapped[s]:
                    continue
                fd, keep = open_shard(s)
                try:
                    f = _FLAGS or {}
                    want = self._base + int(self.slots[s])
                    got = self._libc.mmap(want, int(self.sizes[s]), _PROT_READ, f["MAP_SHARED"] | f["MAP_FIXED"], fd, 0)
                    if got != want:
                        err = ctypes.get_errno()
                        raise OSError(err, f"mmap of shard {s} failed ({os.strerror(err)})")
                except BaseException:
                    os.close(fd)
                    raise
                if keep:  # a remote shard's cached copy: its descriptor holds the cache's lock while it is mapped
                    self._fds[s] = fd
                    while len(self._fds) > MAX_KEPT_FDS:  # bounded: past that, the mapping alone keeps the pages
                        os.close(self._fds.pop(next(iter(self._fds))))
                else:
                    os.close(fd)
                self.mapped[s] = True
                self.complete = bool(self.mapped.all())

    def close(self) -> None:
        """Unmap everything (only in the process that reserved the range; a forked copy leaves it)."""
        if os.getpid() != self._pid:
            return
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()
        if self._base:
            self.region = np.empty(0, np.uint8)
            self._libc.munmap(self._base, self._total)
            self._base = 0
