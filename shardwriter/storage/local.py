"""Local folders: :class:`LocalStore`.

Every file is opened with ``O_NONBLOCK`` and checked with ``fstat`` before a byte is
read: it must be a regular file (a FIFO, a device such as ``/dev/zero`` behind a
symlink, or a directory is refused with its path named) and, when the manifest gives
one, of the manifest's size. So a reader never blocks on a FIFO, never reads an endless
device, and never reads past what the manifest allows.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
from pathlib import Path
from typing import IO

from .. import format as fmt
from ..errors import FormatError, MissingError, StorageError
from .base import Store, check_sha256

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFDIR: "a directory", stat.S_IFSOCK: "a socket"}


def open_regular(path: str | os.PathLike[str], size: int | None = None, what: str = "file") -> int:
    """An fd of regular file ``path`` (of ``size`` bytes when given); never blocks on a FIFO."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise MissingError(f"{path}: {what} missing") from None
    except OSError as exc:
        raise StorageError(f"{path}: cannot open {what} ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FormatError(f"{path}: is {_KINDS.get(stat.S_IFMT(st.st_mode), 'not a regular file')}, not a regular {what}; "
                              "replace it with the dataset's file")
        if size is not None and st.st_size != size:
            raise FormatError(f"{path}: {st.st_size} bytes, the manifest says {size} (truncated, grown or replaced; "
                              "re-copy it, or run ai8x-shards verify)")
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_fd(fd: int, n: int, what: str) -> bytes:
    """Exactly ``n`` bytes from the start of ``fd`` (fewer is an error naming ``what``)."""
    out = bytearray()
    while len(out) < n:
        chunk = os.pread(fd, min(n - len(out), 1 << 24), len(out))
        if not chunk:
            raise FormatError(f"{what}: ends at byte {len(out)}, expected {n} bytes (truncated)")
        out += chunk
    return bytes(out)


class LocalStore(Store):
    """A dataset folder on a local (or mounted) file system."""

    kind = "local"
    writable = True

    def __init__(self, location: str, opts) -> None:  # type: ignore[no-untyped-def]
        super().__init__(os.fspath(location), opts)
        self.root = Path(self.location)

    def path(self, name: str) -> Path:
        return self.root / fmt.check_file_name(name)

    def describe(self, name: str) -> str:
        return str(self.path(name))

    def read_bytes(self, name: str, *, size: int | None = None, sha256: str | None = None, limit: int | None = None) -> bytes:
        fd = open_regular(self.path(name), size, "dataset file" if name != fmt.MANIFEST_NAME else "manifest")
        try:
            n = size if size is not None else os.fstat(fd).st_size
            if size is None and limit is not None and n > limit:
                raise FormatError(f"{self.path(name)}: {n} bytes; a {name} is at most {limit} (not a dataset file)")
            data = read_fd(fd, n, str(self.path(name)))
        finally:
            os.close(fd)
        check_sha256(data, sha256, str(self.path(name)))
        return data

    def open_read(self, name: str, *, size: int | None = None, sha256: str | None = None, xxh3: str | None = None) -> IO[bytes]:
        fd = open_regular(self.path(name), size, "shard")
        return os.fdopen(fd, "rb", buffering=1 << 20)

    def open_random(self, entry: fmt.FileEntry) -> int:
        return open_regular(self.path(entry.file), entry.bytes, "shard")

    def stat(self, name: str) -> tuple[int, str | None] | None:
        try:
            return self.path(name).stat().st_size, None
        except FileNotFoundError:
            return None

    def upload(self, name: str, path: str | os.PathLike[str], sha256: str) -> bool:
        dest = self.path(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"{dest}: cannot write ({exc.strerror or exc})") from None
        return True

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)
