"""What the remote backends share: :class:`RemoteStore` and its resuming :class:`RemoteStream`.

A backend implements one method, ``_get(name, offset, meta)``: start one GET of file
``name`` from byte ``offset`` and return a response with ``start`` (the object byte its
body begins at), ``total`` (object size or None), ``tag`` (ETag, Last-Modified or
generation, or None), ``end`` (one past the last byte of a partial answer, or None),
``read(n)``, optionally ``readinto(view)`` (one receive into ``view``), and ``close()``.
A fault worth retrying raises :class:`~.base.Transient`; a permanent one (a 4xx other
than 408/425/429, an unresolvable host, a certificate error, a ``pipe:`` command's
non-zero exit) raises :class:`StorageError` at once.

On top of that this module gives every backend the same reads: sequential GETs, retry
with exponential backoff and jitter, resume at the byte reached with ``Range: bytes=N-``
(a server that answers ``200`` has its first N bytes skipped), a changed tag or size being
an error rather than a silent splice, and after ``retries`` failed attempts in a row a
:class:`StorageError` naming the URL and byte offset. A stream read from its first byte to
its last checks the whole file's digest against the manifest before it hands over the last
bytes.

How bytes reach the reader (``RemoteStore.readahead``, ``Options.readahead``): received on
demand straight into the reader's buffer (a response's optional ``readinto(view)``: one
copy, from the socket), or through a read-ahead thread that fills recycled buffers
(:class:`_Spare`) which the reader copies out of. No view of a read-ahead buffer ever
leaves :class:`RemoteStream`.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import threading
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import xxhash

from .. import format as fmt
from ..errors import FormatError, IntegrityError, StorageError
from ..options import Options
from .base import Store, Transient, backoff_delay, check_sha256
from .locations import normalize

#: Buffer of the reader in front of a remote stream (reads larger than it bypass it).
BUFFER = 64 << 10


@dataclass
class Meta:
    """What the first answer said about the object, checked against every later answer."""

    size: int | None = None
    size_from: str = ""
    tag: str | None = None
    request: int = 8 << 20  # bytes per request, for backends whose requests are all-or-nothing (GCS)


class Empty:
    """The answer to a read at (or past) the end of an object."""

    def __init__(self, start: int, total: int | None = None) -> None:
        self.start, self.total, self.tag, self.end = start, total, None, None

    def read(self, n: int) -> bytes:
        return b""

    def close(self) -> None:
        pass


#: Without read-ahead, a read of at least this many bytes is received straight into the caller's buffer;
#: smaller ones go through the stream's own buffer (one receive of up to ``Options.chunk``, copied out):
#: a receive per 64 KiB buffered read cost 1.6x the CPU per byte of reading the same bytes through one.
DIRECT_BYTES = 256 << 10
#: Bytes a thread reads ahead where the transport does not (GCS's whole-range requests, a ``pipe:``'s 64 KiB pipe).
THREAD_READAHEAD = 16 << 20


class RemoteStore(Store):
    """A URL location; subclasses implement ``_get`` (and the write operations, where writable).

    ``readahead`` is the backend's read-ahead when ``Options.readahead`` is None (auto):
    0 over a TCP stream (HTTP, S3), whose receive buffer reads ahead by itself, so bytes
    are received straight into the reader's buffer with no thread and no extra copy
    (measured over loopback nginx: half the CPU per byte of a read-ahead thread handing
    over chunks); :data:`THREAD_READAHEAD` where a request must complete before its bytes
    can be used (GCS) or the transport buffers only 64 KiB (``pipe:``).
    """

    readahead = 0

    def __init__(self, location: str, opts: Options) -> None:
        super().__init__(normalize(location), opts)

    def url(self, name: str) -> str:
        return f"{self.location}/{fmt.check_file_name(name)}"

    def describe(self, name: str) -> str:
        return self.url(name)

    @abstractmethod
    def _get(self, name: str, offset: int, meta: Meta) -> Any:
        """Start one GET of ``name`` from byte ``offset`` (see the module docstring)."""

    def stream(self, name: str, *, size: int | None = None, sha256: str | None = None, xxh3: str | None = None,
               readahead: bool = True) -> RemoteStream:
        fmt.check_file_name(name)
        ahead = (self.readahead if self.opts.readahead is None else self.opts.readahead) if readahead else 0
        return RemoteStream(self, name, self.opts.replace(readahead=ahead), size, sha256, xxh3)

    def open_read(self, name: str, *, size: int | None = None, sha256: str | None = None, xxh3: str | None = None) -> IO[bytes]:
        # A C-level buffer in front: small reads (tar headers, small records) cost no Python call each;
        # reads larger than the buffer go straight into the caller's buffer (RemoteStream.readinto).
        return io.BufferedReader(self.stream(name, size=size, sha256=sha256, xxh3=xxh3), buffer_size=BUFFER)  # type: ignore[arg-type]

    def read_bytes(self, name: str, *, size: int | None = None, sha256: str | None = None, limit: int | None = None) -> bytes:
        with self.stream(name, size=size, readahead=False) as f:
            cap = size if size is not None else limit
            data = f.read(cap + 1) if cap is not None else f.read()
        if cap is not None and len(data) > cap:
            raise FormatError(f"{self.url(name)}: more than the {cap} bytes {'the manifest gives' if size is not None else 'such a file has'}")
        if size is not None and len(data) != size:
            raise FormatError(f"{self.url(name)}: {len(data)} bytes, the manifest says {size} (truncated or replaced)")
        check_sha256(data, sha256, self.url(name))
        return data

    def download(self, name: str, dest: str | os.PathLike[str], *, size: int | None = None, sha256: str | None = None) -> str:
        """Copy file ``name`` to ``dest`` via a temporary name; returns its sha256.

        With ``sha256`` (and ``size``) given, a mismatch raises and leaves nothing at ``dest``.
        """
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        h = hashlib.sha256()
        n = 0
        try:
            buf = memoryview(bytearray(1 << 20))
            with self.stream(name, size=size) as src, open(tmp, "wb") as out:
                while True:
                    got = src.readinto(buf)
                    if not got:
                        break
                    h.update(buf[:got])
                    out.write(buf[:got])
                    n += got
                out.flush()
                os.fsync(out.fileno())
            if size is not None and n != size:
                raise FormatError(f"{self.url(name)}: got {n} bytes, the manifest says {size}")
            if sha256 is not None and h.hexdigest() != sha256:
                raise IntegrityError(f"{self.url(name)}: sha256 {h.hexdigest()} does not match the manifest's {sha256} (corrupt or replaced)")
            os.replace(tmp, dest)
        except OSError as exc:
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"{dest}: cannot write the download of {self.url(name)} ({exc.strerror or exc})") from None
        finally:
            tmp.unlink(missing_ok=True)
        return h.hexdigest()

    def open_random(self, entry: fmt.FileEntry) -> int:
        from .cache import cache_for

        return cache_for(self.opts).open(self, entry)


# --------------------------------------------------------------------------- resuming reads


def _receive_into(resp: Any, view: memoryview) -> int:
    """One receive from ``resp`` into ``view``: its ``readinto`` where it has one, else ``read`` and a copy."""
    into = getattr(resp, "readinto", None)
    if into is not None:
        return int(into(view))
    data = resp.read(len(view))
    view[: len(data)] = data
    return len(data)


class _Resumer:
    """``readinto(view)`` from a sequence of GETs, each resuming where the previous one broke."""

    def __init__(self, store: RemoteStore, name: str, opts: Options, offset: int, meta: Meta) -> None:
        self.store, self.name, self.opts, self.pos, self.meta = store, name, opts, offset, meta
        self.url = store.url(name)
        self.stop = threading.Event()
        self._resp: Any = None
        self._failures = 0

    def readinto(self, view: memoryview) -> int:
        """One receive of up to ``len(view)`` bytes straight into ``view``, resuming across faults;
        0 at the end of the object."""
        while True:
            if self.meta.size is not None and self.pos >= self.meta.size:
                self.close()
                return 0
            if self.stop.is_set():
                raise StorageError(f"{self.url}: stream closed")
            try:
                if self._resp is None:
                    self._resp = self._open()
                n = _receive_into(self._resp, view)
                if not n:
                    if self.meta.size is None:
                        self.close()
                        return 0
                    end = getattr(self._resp, "end", None)
                    if end is not None and self.pos >= end:  # a server that sends open ranges in parts
                        self.close()
                        continue
                    raise Transient(f"the response ended at byte {self.pos} of {self.meta.size}")
            except Transient as exc:
                self._fault(exc)
                continue
            self.pos += n
            self._failures = 0
            if self.meta.size is not None and self.pos > self.meta.size:
                raise FormatError(f"{self.url}: more than the {self.meta.size} bytes {self.meta.size_from} gives")
            return n

    def _open(self) -> Any:
        resp = self.store._get(self.name, self.pos, self.meta)
        try:
            m = self.meta
            if resp.total is not None:
                if m.size is None:
                    m.size, m.size_from = resp.total, "the first response"
                elif resp.total != m.size:
                    raise FormatError(
                        f"{self.url}: the object is {resp.total} bytes but {m.size_from} gives {m.size} "
                        "(replaced while being read, or the manifest is out of date)"
                    )
            if resp.tag is not None:
                if m.tag is None:
                    m.tag = resp.tag
                elif resp.tag != m.tag:
                    raise StorageError(f"{self.url}: the object changed while it was being read ({m.tag} -> {resp.tag})")
            skip = self.pos - resp.start
            if skip < 0:
                raise Transient(f"the server answered from byte {resp.start}, not {self.pos}")
            while skip > 0:  # the server ignored the Range (or started early): drop what we have
                got = len(resp.read(min(skip, 1 << 20)))
                if not got:
                    raise Transient(f"the response ended at byte {self.pos - skip} while skipping to byte {self.pos}")
                skip -= got
            return resp
        except BaseException:
            resp.close()
            raise

    def _fault(self, exc: Transient) -> None:
        self.close()
        self._failures += 1
        if self._failures > self.opts.retries:
            of = f" of {self.meta.size}" if self.meta.size is not None else ""
            raise StorageError(
                f"{self.url}: gave up at byte {self.pos}{of} after {self._failures} failed attempts in a row "
                f"(last: {exc}); retry budget AI8X_SHARDS_RETRIES={self.opts.retries}"
            ) from None
        if self.stop.wait(backoff_delay(self.opts, self._failures)):
            raise StorageError(f"{self.url}: stream closed")

    def close(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put ``item`` unless the stream is closed first (then False: the caller still owns it)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    """The next item, or None once the stream is closed."""
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return None


class _Spare:
    """Stream buffers no stream holds, kept for the next stream (:data:`SPARE_BYTES` at most).

    A fresh 4 MiB buffer per receive, filled in the read-ahead thread and freed in the
    reader, was page-faulted anew each time: 108,000 faults for 947 MiB over loopback HTTP,
    ~1.5x the stream's CPU. Buffers are given back only by whoever holds them last (see
    :func:`_pump`), and no view of one ever leaves :class:`RemoteStream` (reads copy out).
    List appends and pops are atomic, so no lock is needed (and none can be held across a fork).
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._free: dict[int, list[bytearray]] = {}

    def take(self, size: int) -> bytearray:
        try:
            return self._free.get(size, []).pop()
        except IndexError:
            return bytearray(size)

    def give(self, buf: bytearray) -> None:
        kept = self._free.setdefault(len(buf), [])
        if (len(kept) + 1) * len(buf) <= self.cap:
            kept.append(buf)


#: Bytes of idle stream buffers a process keeps for its next streams.
SPARE_BYTES = 64 << 20
_SPARE = _Spare(SPARE_BYTES)


def _pump(resumer: _Resumer, full: queue.Queue[Any], free: queue.Queue[bytearray], waiting: threading.Event,
          buffers: int, size: int) -> None:
    """Read-ahead thread body: fill buffers from ``free`` (up to ``buffers`` of them) and queue them on ``full``.

    Each buffer is filled with receives straight into it until it is full, the object ends,
    or the reader is ``waiting`` (then it goes at once, however little it holds). Items are
    ``(buffer, bytes)``; ``(None, 0)`` ends the object; an exception is raised in the reader.
    It holds no reference to the stream object (so that can be collected).
    """
    stop = resumer.stop
    held: bytearray | None = None
    made = 0
    try:
        while not stop.is_set():
            if made < buffers and free.empty():
                held, made = _SPARE.take(size), made + 1
            else:
                held = _get(free, stop)
                if held is None:
                    return
            view, n, ended = memoryview(held), 0, False
            try:
                while n < size:
                    k = resumer.readinto(view[n:])
                    if not k:
                        ended = True
                        break
                    n += k
                    if waiting.is_set():
                        break
            except BaseException:
                if n:  # what arrived before the failure is the reader's
                    item, held = (held, n), None
                    if not _put(full, item, stop):
                        _SPARE.give(item[0])
                raise
            if n:
                item, held = (held, n), None
                if not _put(full, item, stop):
                    _SPARE.give(item[0])
                    return
            if ended:
                _put(full, (None, 0), stop)
                return
    except BaseException as exc:  # handed to the reader, raised there
        _put(full, exc, stop)
    finally:
        resumer.close()
        if held is not None:
            _SPARE.give(held)


class _Source:
    """Chunks of a resumer: through a read-ahead thread (``opts.readahead > 0``), or received on demand.

    With the thread, :meth:`next` gives a view of a read-ahead buffer, valid until the next
    call of :meth:`next` or :meth:`close` (the buffer then goes back to be refilled).
    Without it, :meth:`readinto` receives straight into the given buffer.
    """

    def __init__(self, resumer: _Resumer, opts: Options) -> None:
        self._r = resumer
        self._done = False
        self._pid = os.getpid()
        self._current: bytearray | None = None
        self.direct = opts.readahead <= 0
        if not self.direct:
            buffers = max(1, opts.readahead // opts.chunk)
            self._full: queue.Queue[Any] = queue.Queue()
            self._free: queue.Queue[bytearray] = queue.Queue()
            self._waiting = threading.Event()
            threading.Thread(target=_pump, args=(resumer, self._full, self._free, self._waiting, buffers, opts.chunk),
                             daemon=True, name="ai8x-shards-readahead").start()

    def _check(self) -> None:
        if os.getpid() != self._pid:  # its thread and connection stayed in the parent
            raise StorageError(f"{self._r.url}: a stream opened before a fork cannot be read in the child; open it there")

    def next(self) -> bytes | memoryview:
        """The read-ahead thread's next chunk (empty at the end of the object)."""
        if self._done:
            return b""
        self._check()
        if self._current is not None:
            self._free.put(self._current)
            self._current = None
        try:
            item = self._full.get_nowait()
        except queue.Empty:
            self._waiting.set()
            item = self._full.get()
            self._waiting.clear()
        if isinstance(item, BaseException):
            self._done = True
            raise item
        buf, n = item
        if buf is None:
            self._done = True
            return b""
        self._current = buf
        return memoryview(buf)[:n]

    def readinto(self, view: memoryview) -> int:
        """Receive straight into ``view`` (only without the thread); 0 at the end of the object."""
        if self._done:
            return 0
        self._check()
        n = self._r.readinto(view)
        self._done = not n
        return n

    def close(self) -> None:
        self._r.stop.set()
        if self.direct:
            self._r.close()
            return
        if self._current is not None:
            _SPARE.give(self._current)
            self._current = None
        for q in (self._full, self._free):
            while True:
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, tuple) and item[0] is not None:
                    _SPARE.give(item[0])
                elif isinstance(item, bytearray):
                    _SPARE.give(item)


class RemoteStream(io.RawIOBase):
    """A read-only binary file over a remote object; reads survive faults (see the module docstring).

    ``read(n)`` returns ``n`` bytes unless the object ends first. ``seek`` is supported:
    within the buffered bytes or a short way forward it reads on; further, it starts a
    new ranged GET at the target. With a digest given (``xxh3``, the manifest's XXH3-128,
    preferred: ~40x cheaper; else ``sha256``), a stream that delivers every byte from the
    first to the last checks it before handing over the last bytes, and raises
    :class:`IntegrityError` on a mismatch.
    """

    def __init__(self, store: RemoteStore, name: str, opts: Options, size: int | None = None, sha256: str | None = None,
                 xxh3: str | None = None) -> None:
        super().__init__()
        self.name = store.url(name)
        self._store, self._file, self._opts = store, name, opts
        self._meta = Meta(size, "the manifest" if size is not None else "")
        self._pos = 0
        self._buf, self._off = b"", 0
        self._buf_start = 0  # object offset of _buf's first byte
        self._own: bytearray | None = None  # without read-ahead: the buffer small reads are received into
        self._digest, self._digest_name = (xxh3, "XXH3-128") if xxh3 is not None else (sha256, "sha256")
        self._hash: Any = None
        if xxh3 is not None:
            self._hash = xxhash.xxh3_128()
        elif sha256 is not None:
            self._hash = hashlib.sha256()
        self._hashed = 0  # bytes [0, _hashed) went into _hash
        self._src = _Source(_Resumer(store, name, opts, 0, self._meta), opts)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def _account(self, start: int, data: Any) -> None:
        """Bytes ``data`` (object offset ``start``) arrived: add them to the whole-object digest."""
        if self._hash is None:
            return
        if start != self._hashed:
            self._hash = None  # a gap: the whole-file check is off; per-sample checks still apply
            return
        self._hash.update(data)
        self._hashed += len(data)
        size = self._meta.size
        if len(data) and size is not None and self._hashed == size and self._hash.hexdigest() != self._digest:
            raise IntegrityError(
                f"{self.name}: {self._digest_name} {self._hash.hexdigest()} does not match the manifest's {self._digest} "
                "(the object was altered; re-upload it, or run ai8x-shards verify)"
            )

    def read(self, n: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if n is None or n < 0:
            return self.readall()
        buf = self._buf
        if self._off + n <= len(buf):  # inside the current chunk: one copy (or none, for all of a bytes chunk)
            a, self._off = self._off, self._off + n
            self._pos += n
            if isinstance(buf, bytes):
                return buf if a == 0 and n == len(buf) else buf[a : self._off]
            return bytes(buf[a : self._off])  # never a view: a read-ahead buffer is refilled later
        parts: list[Any] = []
        need = n
        while need > 0:
            if self._off >= len(self._buf) and not self._next_chunk():
                break
            take = min(need, len(self._buf) - self._off)
            part = memoryview(self._buf)[self._off : self._off + take]
            parts.append(part if isinstance(self._buf, bytes) else bytes(part))  # copied before its buffer is refilled
            self._off += take
            need -= take
        self._pos += n - need
        return b"".join(parts)

    def _skip(self, n: int) -> None:
        """Read on over ``n`` bytes (they still go into the whole-object digest), or to the end of the object."""
        while n > 0:
            if self._off >= len(self._buf) and not self._next_chunk():
                return
            take = min(n, len(self._buf) - self._off)
            self._off += take
            self._pos += take
            n -= take

    def _next_chunk(self) -> bool:
        """Make the next chunk the current one (the thread's, or one receive into the stream's own
        buffer); False at the end of the object."""
        self._buf_start += len(self._buf)  # object offset of the chunk that comes next
        self._buf, self._off = b"", 0  # the old chunk's buffer may be refilled from here on
        if self._src.direct:
            if self._own is None:
                self._own = _SPARE.take(self._opts.chunk)
            data: bytes | memoryview = memoryview(self._own)[: self._src.readinto(memoryview(self._own))]
        else:
            data = self._src.next()
        self._account(self._buf_start, data)
        self._buf = data
        return bool(len(data))

    def readall(self) -> bytes:
        parts = []
        while True:
            data = self.read(max(self._opts.chunk, 1 << 16))
            if not data:
                return b"".join(parts)
            parts.append(data)

    def readinto(self, b: Any) -> int:
        """Fill ``b``, short only at the end of the object: copied from the chunks as they come, or
        (without read-ahead, for the part of ``b`` of at least :data:`DIRECT_BYTES`) received straight into ``b``."""
        if self.closed:
            raise ValueError("I/O operation on closed file")
        view = memoryview(b).cast("B")
        n, got = len(view), 0
        while got < n:
            if self._off >= len(self._buf):
                if self._src.direct and n - got >= DIRECT_BYTES:
                    start = self._buf_start + len(self._buf)
                    k = self._src.readinto(view[got:])
                    self._buf_start, self._buf, self._off = start + k, b"", 0
                    self._account(start, view[got : got + k])
                    if not k:
                        break
                    got += k
                    continue
                if not self._next_chunk():
                    break
            take = min(n - got, len(self._buf) - self._off)
            view[got : got + take] = memoryview(self._buf)[self._off : self._off + take]
            self._off += take
            got += take
        self._pos += got
        return got

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
        buf_start = self._buf_start
        if buf_start <= offset <= buf_start + len(self._buf):
            self._off, self._pos = offset - buf_start, offset
        elif 0 < offset - self._pos <= max(self._opts.readahead, self._opts.chunk):
            self._skip(offset - self._pos)
        else:
            self._src.close()
            self._buf, self._off, self._pos, self._buf_start = b"", 0, offset, offset
            self._src = _Source(_Resumer(self._store, self._file, self._opts, offset, self._meta), self._opts)
        return self._pos

    def close(self) -> None:
        if not self.closed:
            self._buf = b""
            self._src.close()
            if self._own is not None:
                _SPARE.give(self._own)
                self._own = None
        super().close()
