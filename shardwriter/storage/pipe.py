"""``pipe:COMMAND ... {name} ...`` locations (opt-in, read-only): :class:`PipeStore`.

The command's standard output is the file named ``{name}``. Refused unless
:attr:`~shardwriter.options.Options.allow_pipe` (``AI8X_SHARDS_ALLOW_PIPE=1``); even then
the command is split with :func:`shlex.split` and run without a shell. A command that
exits non-zero fails at once (it is not retried); one that writes nothing for the
timeout is retried like a stalled connection (the command runs again and the bytes already
read are skipped).
"""

from __future__ import annotations

import os
import select
import subprocess
import tempfile
from typing import Any

from ..errors import SettingsError, StorageError
from ..options import Options
from .base import Transient
from .locations import PIPE, object_url, pipe_argv
from .remote import THREAD_READAHEAD, Meta, RemoteStore


class _Response:
    def __init__(self, url: str, argv: list[str], opts: Options) -> None:
        self._url, self._timeout = url, opts.timeout
        self.start, self.total, self.tag, self.end = 0, None, None, None
        self._err = tempfile.TemporaryFile()
        try:
            self._p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._err, shell=False)
        except OSError as exc:
            self._err.close()
            raise StorageError(f"{url}: cannot run {argv[0]!r} ({exc.strerror or exc})") from None

    def read(self, n: int) -> bytes:
        buf = bytearray(min(n, 1 << 16))  # a pipe holds 64 KiB: never allocate more per read
        got = self.readinto(memoryview(buf))
        return bytes(buf[:got])

    def readinto(self, view: memoryview) -> int:
        """One read of the command's output straight into ``view``; 0 once it has exited cleanly."""
        assert self._p.stdout is not None
        fd = self._p.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], self._timeout)
        if not ready:
            raise Transient(f"the command wrote nothing for {self._timeout:g} s")
        got = os.readv(fd, [view])
        if not got:
            try:
                rc = self._p.wait(timeout=self._timeout)
            except subprocess.TimeoutExpired:
                raise Transient("the command closed its output but did not exit") from None
            if rc != 0:
                self._err.seek(0)
                tail = self._err.read()[-300:].decode("utf-8", "replace").strip()
                raise StorageError(f"{self._url}: the command exited with status {rc}" + (f": {tail}" if tail else ""))
        return got

    def close(self) -> None:
        if self._p.poll() is None:
            self._p.kill()
        self._p.wait()
        if self._p.stdout is not None:
            self._p.stdout.close()
        self._err.close()


class PipeStore(RemoteStore):
    """A command per file (see the module docstring)."""

    kind = "pipe"
    readahead = THREAD_READAHEAD  # a pipe buffers 64 KiB: without a reader the command stops

    def __init__(self, location: str, opts: Options) -> None:
        if not location.startswith(PIPE):
            raise SettingsError(f"{location}: not a pipe: location")
        if not opts.allow_pipe:
            raise SettingsError(
                f"{location}: a pipe: location runs a command; refused unless you opt in with AI8X_SHARDS_ALLOW_PIPE=1 "
                "(the command then runs without a shell)"
            )
        pipe_argv(location, "manifest.json")  # refuses a command without {name} now
        super().__init__(location, opts)

    def url(self, name: str) -> str:
        return object_url(self.location, name)

    def _get(self, name: str, offset: int, meta: Meta) -> Any:
        return _Response(self.url(name), pipe_argv(self.location, name), self.opts)
