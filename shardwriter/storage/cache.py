"""Local cache of remote shards, for positioned reads (map-style) on s3://, gs://, http(s)://.

Layout under the cache folder (:attr:`~shardwriter.options.Options.cache_path`)::

    <sha256>.tar          a shard, named by its content hash (so changed data never meets stale bytes)
    <sha256>.ok           "size mtime_ns inode" of that file when its sha256 was last checked; its mtime = last use
    locks/<sha256>.lock   one lock per shard: download, reuse and eviction of it are serialized
    locks/evict.lock

:meth:`ShardCache.open` returns an *open file descriptor*, never a path: the shard is
downloaded into a temporary name, its size and sha256 checked against the manifest,
renamed, and opened, all under the shard's lock, so no other process can evict it
between the lookup and the open. A cached file is reused only when it is known good:
its size, mtime and inode equal what was recorded when its sha256 last matched; a file
changed since (even at the same size) is hashed again, and re-downloaded if it no
longer matches. The returned descriptor holds a shared ``flock``; eviction takes an
exclusive one without waiting, so it never removes a file a reader has open (the cap
is then exceeded by the shards in use, never by anything else).

Size cap and LRU: after each download, the least recently used shards (by their
``.ok`` file's mtime) are deleted until the cache fits
:attr:`~shardwriter.options.Options.cache_bytes`; the shard just fetched and every
shard open in any process are kept.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .. import format as fmt
from ..errors import FormatError, StorageError
from ..options import Options

if TYPE_CHECKING:
    from .remote import RemoteStore

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


@contextmanager
def _locked(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive flock on ``path`` (created if needed); yields False when busy and not ``blocking``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _stamp(st: os.stat_result) -> str:
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ino}"


def _touch(path: Path) -> None:
    now = time.time_ns()  # explicit ns: a plain utime gets the kernel's coarse clock
    try:
        os.utime(path, ns=(now, now))
    except OSError:
        pass


def _file_sha256(fd: int) -> str:
    h = hashlib.sha256()
    pos = 0
    while True:
        chunk = os.pread(fd, 1 << 22, pos)
        if not chunk:
            return h.hexdigest()
        h.update(chunk)
        pos += len(chunk)


class ShardCache:
    """Remote shards as local files (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], cap: int) -> None:
        self.root = Path(root)
        self.cap = cap

    def path_for(self, sha256: str) -> Path:
        return self.root / f"{sha256}.tar"

    def _lock(self, sha256: str) -> Path:
        return self.root / "locks" / f"{sha256}.lock"

    def open(self, store: RemoteStore, entry: fmt.FileEntry) -> int:
        """An fd of ``entry`` of ``store``'s dataset, downloaded first if needed (a shared flock held)."""
        sha = entry.sha256
        if not _SHA_RE.match(sha):
            raise FormatError(f"{store.url(entry.file)} in the manifest: sha256 {sha!r} is not 64 hex digits")
        final = self.path_for(sha)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with _locked(self._lock(sha)):
                fd = self._reuse(final, entry)
                if fd is None:
                    for stale in self.root.glob(f".{sha}.tar.*.tmp"):  # left by a killed download
                        stale.unlink(missing_ok=True)
                    store.download(entry.file, final, size=entry.bytes, sha256=sha)
                    fd = self._adopt(final)
        except OSError as exc:
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"{self.root}: shard cache unusable ({exc.strerror or exc}); set AI8X_SHARDS_CACHE to a writable folder") from None
        self.evict(keep=final)
        return fd

    def _reuse(self, final: Path, entry: fmt.FileEntry) -> int | None:
        """An fd of the cached copy when it is known good (or proves good when hashed again), else None."""
        try:
            fd = os.open(final, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
            ok = final.with_suffix(".ok")
            try:
                recorded = ok.read_text().strip()
            except OSError:
                recorded = ""
            if st.st_size == entry.bytes and (recorded == _stamp(st) or _file_sha256(fd) == entry.sha256):
                if recorded != _stamp(st):
                    ok.write_text(_stamp(st))
                fcntl.flock(fd, fcntl.LOCK_SH)
                _touch(ok)
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        final.unlink(missing_ok=True)  # changed since it was checked, and no longer matches: fetch again
        final.with_suffix(".ok").unlink(missing_ok=True)
        return None

    def _adopt(self, final: Path) -> int:
        """Record a just-downloaded (checked) file as known good and open it."""
        try:
            os.chmod(final, 0o444)
        except OSError:
            pass
        fd = os.open(final, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        final.with_suffix(".ok").write_text(_stamp(os.fstat(fd)))
        fcntl.flock(fd, fcntl.LOCK_SH)
        return fd

    def entries(self) -> list[tuple[int, int, Path]]:
        """``(last use ns, bytes, path)`` of every cached shard, least recently used first."""
        out = []
        for p in self.root.glob("*.tar"):
            try:
                size = p.stat().st_size
            except OSError:
                continue
            try:
                used = p.with_suffix(".ok").stat().st_mtime_ns
            except OSError:
                used = 0
            out.append((used, size, p))
        return sorted(out)

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Delete least recently used shards not in use until the cache fits the cap; returns them."""
        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        with _locked(self.root / "locks" / "evict.lock"):
            entries = self.entries()
            total = sum(size for _, size, _ in entries)
            for _, size, p in entries:
                if total <= self.cap:
                    break
                if p == keep:
                    continue
                if self._remove_if_unused(p):
                    total -= size
                    removed.append(p)
        return removed

    def _remove_if_unused(self, p: Path) -> bool:
        with _locked(self._lock(p.stem), blocking=False) as got:
            if not got:
                return False  # being downloaded or opened right now
            try:
                fd = os.open(p, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except FileNotFoundError:
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return False  # a reader has it open
                raise
            try:
                p.unlink(missing_ok=True)
                p.with_suffix(".ok").unlink(missing_ok=True)
            finally:
                os.close(fd)
            return True


_CACHES: dict[tuple[str, int], ShardCache] = {}
_CACHES_LOCK = threading.Lock()


def _after_fork() -> None:
    global _CACHES_LOCK
    _CACHES_LOCK = threading.Lock()  # another thread may have held it at the fork


os.register_at_fork(after_in_child=_after_fork)


def cache_for(opts: Options) -> ShardCache:
    """The cache ``opts`` names (one object per folder and cap)."""
    key = (str(opts.cache_path), opts.cache_bytes)
    with _CACHES_LOCK:
        c = _CACHES.get(key)
        if c is None:
            c = _CACHES[key] = ShardCache(opts.cache_path, opts.cache_bytes)
    return c
