"""Local cache of remote shards, for random access (map-style) on s3://, gs://, http(s)://.

A shard is downloaded once, on first use, to ``CACHE/<sha256>.tar``: into a temporary
name, its size and sha256 checked against the manifest, then renamed, so the cache
never holds a partial or corrupt shard under its final name. Files are named by their
content hash, so a dataset whose shards changed never meets stale bytes.

Concurrency: one ``fcntl.flock`` lock file per shard (``CACHE/locks/<sha256>.lock``);
processes and threads that want the same missing shard wait for the one downloading it
rather than download it again.

Size cap and LRU: every use sets a shard's mtime to now; after each download, the least
recently used shards are deleted until the cache fits ``AI8X_SHARDS_CACHE_BYTES``
(default 64 GiB; suffixes K, M, G, T). The shard just fetched is never evicted, so a
cap smaller than one shard still works (the cap is then exceeded by that shard).
Deleting a shard another process has open is safe on POSIX: its reads go on.

Environment: ``AI8X_SHARDS_CACHE`` (folder; default ``~/.cache/ai8x-shards``),
``AI8X_SHARDS_CACHE_BYTES`` (cap).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shardwriter import remote
from shardwriter.remote import StorageError

DEFAULT_CAP = 64 << 30


def cache_cap() -> int:
    """The size cap in bytes (``AI8X_SHARDS_CACHE_BYTES``, default 64 GiB)."""
    text = os.environ.get("AI8X_SHARDS_CACHE_BYTES", "").strip()
    if not text:
        return DEFAULT_CAP
    try:
        value = remote.parse_bytes(text)
    except ValueError:
        raise ValueError(f"AI8X_SHARDS_CACHE_BYTES={text!r} is not a size (bytes, or a number with K, M, G or T)") from None
    if value < 0:
        raise ValueError(f"AI8X_SHARDS_CACHE_BYTES={text!r} must not be negative")
    return value


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _touch(path: Path) -> None:
    now = time.time_ns()  # explicit ns: a plain utime gets the kernel's coarse clock
    try:
        os.utime(path, ns=(now, now))
    except OSError:
        pass


class ShardCache:
    """Remote shards as local files: :meth:`get` downloads on first use, then reuses."""

    def __init__(self, root: str | os.PathLike[str] | None = None, cap: int | None = None) -> None:
        self.root = Path(root) if root is not None else remote.cache_root()
        self.cap = cache_cap() if cap is None else cap

    def path_for(self, sha256: str) -> Path:
        return self.root / f"{sha256}.tar"

    def get(self, location: str, name: str, sha256: str, size: int) -> Path:
        """Local path of shard ``name`` of ``location``, downloading it if needed.

        Raises :class:`StorageError` when the download fails (after its retries) or its
        size or sha256 differ from the manifest's; nothing is cached then.
        """
        remote.check_sha256(sha256, f"{remote.object_url(location, name)} in the manifest")
        final = self.path_for(sha256)
        if self._usable(final, size):
            _touch(final)
            return final
        self.root.mkdir(parents=True, exist_ok=True)
        with _locked(self.root / "locks" / f"{sha256}.lock"):
            if self._usable(final, size):  # another process or thread fetched it while we waited
                _touch(final)
                return final
            for stale in self.root.glob(f".{sha256}.tar.*.tmp"):  # left by a killed download
                stale.unlink(missing_ok=True)
            remote.download(location, name, final, size=size, sha256=sha256)
            _touch(final)
        self.evict(keep=final)
        return final

    @staticmethod
    def _usable(path: Path, size: int) -> bool:
        try:
            return path.stat().st_size == size
        except OSError:
            return False

    def entries(self) -> list[tuple[int, int, Path]]:
        """``(last use ns, bytes, path)`` of every cached shard, least recently used first."""
        out = []
        for p in self.root.glob("*.tar"):
            try:
                st = p.stat()
            except OSError:
                continue
            out.append((st.st_mtime_ns, st.st_size, p))
        return sorted(out)

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Delete least recently used shards until the cache fits the cap; returns them."""
        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        with _locked(self.root / "locks" / "evict.lock"):
            entries = self.entries()
            total = sum(size for _, size, _ in entries)
            for _, size, p in entries:
                if total <= self.cap:
                    break
                if keep is not None and p == keep:
                    continue
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass
                total -= size
                removed.append(p)
        return removed


_CACHES: dict[tuple[str, int], ShardCache] = {}
_CACHES_LOCK = threading.Lock()


def _after_fork() -> None:
    global _CACHES_LOCK
    _CACHES_LOCK = threading.Lock()  # another thread may have held it at the fork


os.register_at_fork(after_in_child=_after_fork)


def default_cache() -> ShardCache:
    """The cache the environment names (one object per folder and cap)."""
    root, cap = remote.cache_root(), cache_cap()
    key = (str(root), cap)
    with _CACHES_LOCK:
        c = _CACHES.get(key)
        if c is None:
            c = _CACHES[key] = ShardCache(root, cap)
    return c


__all__ = ["DEFAULT_CAP", "ShardCache", "StorageError", "cache_cap", "default_cache"]
