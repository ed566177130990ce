"""The ``pipe:`` GET (opt-in): a command whose standard output is the file, never a shell."""

from __future__ import annotations

import os
import select
import subprocess
import tempfile

from .locations import _Target
from .options import Options, StorageError, _Transient


class _PipeResponse:
    def __init__(self, t: _Target, opts: Options) -> None:
        self._t, self._timeout = t, opts.timeout
        self.start, self.total, self.tag = 0, None, None
        self._err = tempfile.TemporaryFile()
        try:
            self._p = subprocess.Popen(list(t.argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._err, shell=False)
        except OSError as exc:
            self._err.close()
            raise StorageError(f"{t.url}: cannot run {t.argv[0]!r} ({exc.strerror or exc})") from None

    def read(self, n: int) -> bytes:
        assert self._p.stdout is not None
        fd = self._p.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], self._timeout)
        if not ready:
            raise _Transient(f"the command wrote nothing for {self._timeout:g} s")
        data = os.read(fd, n)
        if not data:
            try:
                rc = self._p.wait(timeout=self._timeout)
            except subprocess.TimeoutExpired:
                raise _Transient("the command closed its output but did not exit") from None
            if rc != 0:
                self._err.seek(0)
                tail = self._err.read()[-300:].decode("utf-8", "replace").strip()
                raise _Transient(f"the command exited with status {rc}" + (f": {tail}" if tail else ""))
        return data

    def close(self) -> None:
        if self._p.poll() is None:
            self._p.kill()
        self._p.wait()
        if self._p.stdout is not None:
            self._p.stdout.close()
        self._err.close()
