"""A lock on an output folder, so two packs never write into one OUT at once.

:class:`OutLock` holds an exclusive, non-blocking ``flock`` on ``OUT/.ai8x-shards-lock``
(or ``.ai8x-shards-lock-K-of-N`` for part K of a ``--part K/N`` pack, so the parts of
one job may share a folder). The file names its holder (pid, host, start time), and a
second pack fails at once with a :class:`~shardwriter.errors.PackError` that names it.
The kernel drops the lock when its process ends, however it ends (``SIGKILL``
included), so a stale lock file never blocks a later run.

The parts of one job hold different locks, so what OUT holds is decided (resume, start,
refuse: :func:`shardwriter.pack`'s first step) under :func:`deciding`, a short blocking
``flock`` on the folder itself: a part starting beside another sees that one's journal,
never the files it writes in between listing the journals and looking at the rest.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import PackError, StorageError

LOCK_PREFIX = ".ai8x-shards-lock"


def lock_name(part: tuple[int, int] | None = None) -> str:
    """The lock file of a whole pack (``part`` None or 1/1) or of one part."""
    return LOCK_PREFIX if part is None or part == (1, 1) else f"{LOCK_PREFIX}-{part[0]}-of-{part[1]}"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
        return f"pid {info.get('pid', '?')} on {info.get('host', '?')}, since {since}: {info.get('command', '')}".rstrip(": ")
    except (OSError, ValueError, AttributeError):
        return "another process"


class OutLock:
    """``with OutLock(OUT, part):`` holds the lock (see the module docstring)."""

    def __init__(self, out: str | os.PathLike[str], part: tuple[int, int] | None = None, what: str = "") -> None:
        self.out = Path(out)
        self.path = self.out / lock_name(part)
        self.what = what
        self.fd: int | None = None

    def acquire(self) -> OutLock:
        for _ in range(20):  # the file may be replaced between open and flock by a finishing holder
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            except OSError as exc:
                raise StorageError(f"{self.path}: cannot create the lock file ({exc.strerror or exc})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise PackError(f"{self.out} is being written by another pack ({_holder(self.path)}); wait for it to "
                                "finish or stop it, or write elsewhere") from None
            except OSError as exc:
                os.close(fd)
                raise StorageError(f"{self.path}: cannot lock ({exc.strerror or exc})") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            info: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "command": self.what}
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(info).encode(), 0)
            except OSError as exc:
                os.close(fd)
                raise StorageError(f"{self.path}: cannot write the lock file ({exc.strerror or exc})") from None
            self.fd = fd
            return self
        raise PackError(f"{self.path}: the lock file keeps changing; is another pack starting and stopping in {self.out}?")

    def release(self, remove: bool = True) -> None:
        if self.fd is None:
            return
        if remove:
            try:
                self.path.unlink()
            except OSError:
                pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> OutLock:
        return self.acquire()

    def __exit__(self, *_: Any) -> None:
        self.release()


def held(out: str | os.PathLike[str], name: str) -> str | None:
    """The holder of lock file ``name`` in ``out`` when another process holds it, else None."""
    path = Path(out) / name
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(path)
    finally:
        os.close(fd)
    return None


@contextmanager
def deciding(out: str | os.PathLike[str]) -> Iterator[None]:
    """``with deciding(OUT):`` no other pack decides what OUT holds meanwhile (see the module docstring)."""
    try:
        fd = os.open(out, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise StorageError(f"{out}: cannot open the folder ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a filesystem that cannot lock a folder (NFS): the race only ever makes a start refuse, loudly
            pass
        yield
    finally:
        os.close(fd)  # drops the lock
