"""Resuming reads and the reading API.

The backend table (``_GETTERS``), the resumer that re-issues ranged GETs after a fault
(``_Resumer``), the read-ahead thread (``_pump`` / ``_Source``), the file object
(:class:`RemoteStream`), and :func:`open_stream`, :func:`read_all`, :func:`download` and
:func:`read_manifest`.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import format as fmt
from .backends import _Meta
from .gcs_backend import _gcs_get
from .http_backend import _http_get
from .locations import _Target, _target, normalize, object_url
from .options import Options, StorageError, _delay, _Transient
from .pipe_backend import _PipeResponse
from .s3_backend import _s3_get

_GETTERS: dict[str, Callable[[_Target, int, Options, _Meta], Any]] = {
    "http": _http_get,
    "s3": _s3_get,
    "gs": _gcs_get,
    "pipe": lambda t, offset, opts, meta: _PipeResponse(t, opts),
}


class _Resumer:
    """``read(n)`` from a sequence of GETs, each resuming where the previous one broke."""

    def __init__(self, t: _Target, opts: Options, offset: int, meta: _Meta) -> None:
        self.t, self.opts, self.pos, self.meta = t, opts, offset, meta
        self.stop = threading.Event()
        self._resp: Any = None
        self._failures = 0

    def read(self, n: int) -> bytes:
        while True:
            if self.meta.size is not None and self.pos >= self.meta.size:
                self.close()
                return b""
            if self.stop.is_set():
                raise StorageError(f"{self.t.url}: stream closed")
            try:
                if self._resp is None:
                    self._resp = self._open()
                data = self._resp.read(n)
                if not data:
                    if self.meta.size is None:
                        self.close()
                        return b""
                    end = getattr(self._resp, "end", None)
                    if end is not None and self.pos >= end:  # a server that sends open ranges in parts
                        self.close()
                        continue
                    raise _Transient(f"the response ended at byte {self.pos} of {self.meta.size}")
            except _Transient as exc:
                self._fault(exc)
                continue
            self.pos += len(data)
            self._failures = 0
            if self.meta.size is not None and self.pos > self.meta.size:
                raise StorageError(f"{self.t.url}: more than the {self.meta.size} bytes {self.meta.size_from} gives")
            return data

    def _open(self) -> Any:
        resp = _GETTERS[self.t.kind](self.t, self.pos, self.opts, self.meta)
        try:
            m = self.meta
            if resp.total is not None:
                if m.size is None:
                    m.size, m.size_from = resp.total, "the first response"
                elif resp.total != m.size:
                    raise StorageError(
                        f"{self.t.url}: the object is {resp.total} bytes but {m.size_from} gives {m.size} "
                        "(replaced while being read, or the manifest is out of date)"
                    )
            if resp.tag is not None:
                if m.tag is None:
                    m.tag = resp.tag
                elif resp.tag != m.tag:
                    raise StorageError(f"{self.t.url}: the object changed while it was being read (ETag {m.tag} -> {resp.tag})")
            skip = self.pos - resp.start
            if skip < 0:
                raise _Transient(f"the server answered from byte {resp.start}, not {self.pos}")
            while skip > 0:  # the server ignored the Range (or started early): drop what we have
                got = len(resp.read(min(skip, 1 << 20)))
                if not got:
                    raise _Transient(f"the response ended at byte {self.pos - skip} while skipping to byte {self.pos}")
                skip -= got
            return resp
        except BaseException:
            resp.close()
            raise

    def _fault(self, exc: _Transient) -> None:
        self.close()
        self._failures += 1
        if self._failures > self.opts.retries:
            of = f" of {self.meta.size}" if self.meta.size is not None else ""
            raise StorageError(
                f"{self.t.url}: gave up at byte {self.pos}{of} after {self._failures} failed attempts in a row "
                f"(last: {exc}); retry budget AI8X_SHARDS_RETRIES={self.opts.retries}"
            ) from None
        if self.stop.wait(_delay(self.opts, self._failures)):
            raise StorageError(f"{self.t.url}: stream closed")

    def close(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _pump(resumer: _Resumer, q: queue.Queue[Any], chunk: int) -> None:
    """Read-ahead thread body; it holds no reference to the stream object (so that can be collected)."""
    stop = resumer.stop
    try:
        while not stop.is_set():
            data = resumer.read(chunk)
            _put(q, data, stop)
            if not data:
                return
    except BaseException as exc:  # handed to the reader, raised there
        _put(q, exc, stop)
    finally:
        resumer.close()


class _Source:
    """Chunks of a resumer, directly or through a read-ahead thread."""

    def __init__(self, resumer: _Resumer, opts: Options) -> None:
        self._r = resumer
        self._done = False
        self._pid = os.getpid()
        self._q: queue.Queue[Any] | None = None
        if opts.readahead > 0:
            self._q = queue.Queue(maxsize=max(1, opts.readahead // opts.chunk))
            threading.Thread(target=_pump, args=(resumer, self._q, opts.chunk), daemon=True, name="ai8x-shards-readahead").start()
        self._chunk = opts.chunk

    def next(self) -> bytes:
        if self._done:
            return b""
        if os.getpid() != self._pid:  # its thread and connection stayed in the parent
            raise StorageError(f"{self._r.t.url}: a stream opened before a fork cannot be read in the child; open it there")
        if self._q is None:
            data = self._r.read(self._chunk)
        else:
            data = self._q.get()
            if isinstance(data, BaseException):
                self._done = True
                raise data
        if not data:
            self._done = True
        return data

    def close(self) -> None:
        self._r.stop.set()
        if self._q is None:
            self._r.close()
        else:
            while True:
                try:
                    self._q.get_nowait()
                except queue.Empty:
                    break


class RemoteStream(io.RawIOBase):
    """A read-only binary file over a remote object; reads survive faults (see :mod:`shardwriter.remote`).

    ``read(n)`` returns ``n`` bytes unless the object ends first. ``seek`` is supported:
    within the buffered bytes or a short way forward it reads on; further, it starts a new
    ranged GET at the target.
    """

    def __init__(self, t: _Target, opts: Options, size: int | None = None) -> None:
        super().__init__()
        self.name = t.url
        self._t, self._opts = t, opts
        self._meta = _Meta(size, "the manifest" if size is not None else "")
        self._pos = 0
        self._buf, self._off = b"", 0
        self._src = _Source(_Resumer(t, opts, 0, self._meta), opts)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if n is None or n < 0:
            return self.readall()
        parts: list[bytes] = []
        need = n
        while need > 0:
            if self._off >= len(self._buf):
                self._buf, self._off = self._src.next(), 0
                if not self._buf:
                    break
            piece = self._buf[self._off : self._off + need] if self._off or need < len(self._buf) else self._buf
            self._off += len(piece)
            need -= len(piece)
            parts.append(piece)
        self._pos += n - need
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readall(self) -> bytes:
        parts = []
        while True:
            data = self.read(max(self._opts.chunk, 1 << 16))
            if not data:
                return b"".join(parts)
            parts.append(data)

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence == io.SEEK_END:
            if self._meta.size is None:
                raise io.UnsupportedOperation("seek from the end of an object of unknown size")
            offset += self._meta.size
        elif whence != io.SEEK_SET:
            raise ValueError(f"invalid whence {whence}")
        if offset < 0:
            raise ValueError(f"negative seek position {offset}")
        buf_start = self._pos - self._off
        if buf_start <= offset <= buf_start + len(self._buf):
            self._off, self._pos = offset - buf_start, offset
        elif 0 < offset - self._pos <= max(self._opts.readahead, self._opts.chunk):
            while self._pos < offset and self.read(min(offset - self._pos, 1 << 20)):
                pass
        else:
            self._src.close()
            self._buf, self._off, self._pos = b"", 0, offset
            self._src = _Source(_Resumer(self._t, self._opts, offset, self._meta), self._opts)
        return self._pos

    def close(self) -> None:
        if not self.closed:
            self._src.close()
            self._buf = b""
        super().close()


def open_stream(location: str, name: str, *, size: int | None = None, opts: Options | None = None) -> RemoteStream:
    """A :class:`RemoteStream` over file ``name`` of the dataset at URL ``location``.

    ``size`` (from the manifest) lets a body that ends early be told from the end.
    """
    opts = opts or Options.from_env()
    t = _target(normalize(location), name)
    return RemoteStream(t, opts, size)


def read_all(location: str, name: str, *, size: int | None = None, opts: Options | None = None) -> bytes:
    """The whole of (small) file ``name``, with the same retries as a stream."""
    opts = replace(opts or Options.from_env(), readahead=0)
    with open_stream(location, name, size=size, opts=opts) as f:
        return f.read()


def download(location: str, name: str, dest: str | os.PathLike[str], *, size: int | None = None,
             sha256: str | None = None, opts: Options | None = None) -> str:
    """Copy file ``name`` to ``dest`` (via a temporary name); returns its sha256.

    With ``sha256`` (and ``size``) given, a mismatch raises :class:`StorageError` and
    leaves nothing at ``dest``.
    """
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    h = hashlib.sha256()
    n = 0
    try:
        with open_stream(location, name, size=size, opts=opts) as src, open(tmp, "wb") as out:
            while True:
                data = src.read(1 << 20)
                if not data:
                    break
                h.update(data)
                out.write(data)
                n += len(data)
            out.flush()
            os.fsync(out.fileno())
        url = object_url(location, name)
        if size is not None and n != size:
            raise StorageError(f"{url}: got {n} bytes, the manifest says {size}")
        if sha256 is not None and h.hexdigest() != sha256:
            raise StorageError(f"{url}: sha256 {h.hexdigest()} does not match the manifest's {sha256} (corrupt or replaced)")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return h.hexdigest()


def read_manifest(location: str, opts: Options | None = None) -> dict[str, Any]:
    """Fetch and parse the manifest of the dataset at URL ``location``."""
    buf = read_all(location, fmt.MANIFEST_NAME, opts=opts)
    return fmt.parse_manifest(buf, object_url(location, fmt.MANIFEST_NAME))
