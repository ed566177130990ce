"""The GCS GET and GCS error classification: google-cloud-storage, ranged downloads of a
fixed generation. The client itself is made in :mod:`.clients`."""

from __future__ import annotations

from typing import Any

from .backends import _GCS_CHUNK, _GCS_MIN_CHUNK, _Meta, _network_errors
from .clients import _gcs_bucket
from .locations import _Target
from .options import MissingError, Options, StorageError, _Transient


def _gcs_fail(t: _Target, exc: BaseException) -> Exception:
    from google.api_core import exceptions as gx

    if isinstance(exc, gx.NotFound):
        return MissingError(f"{t.url}: no such object")
    if isinstance(exc, gx.PreconditionFailed):
        return StorageError(f"{t.url}: the object changed while it was being read (generation differs)")
    if isinstance(exc, gx.GoogleAPICallError):
        code = int(exc.code or 0)
        if code >= 500 or code in (408, 429):
            return _Transient(f"GCS {code}: {exc.message}")
        return StorageError(f"{t.url}: GCS {code}: {exc.message}")
    if isinstance(exc, _network_errors()):
        return _Transient(f"{type(exc).__name__}: {exc}")
    return StorageError(f"{t.url}: {type(exc).__name__}: {exc}")


class _GcsResponse:
    """Ranged downloads of ``_GCS_CHUNK`` bytes each, pinned to one object generation."""

    def __init__(self, t: _Target, blob: Any, start: int, opts: Options, meta: _Meta) -> None:
        self._t, self._blob, self._opts, self._meta = t, blob, opts, meta
        self.start, self.total, self.tag = start, int(blob.size), str(blob.generation)
        self._pos, self._buf, self._off = start, b"", 0

    def read(self, n: int) -> bytes:
        if self._off >= len(self._buf):
            if self._pos >= self.total:
                return b""
            # Each request is all-or-nothing, so after a fault the requests get smaller (and
            # grow back after successes): a link that keeps dropping still makes progress.
            size = self._meta.request
            end = min(self._pos + size, self.total) - 1
            try:
                self._buf = self._blob.download_as_bytes(
                    start=self._pos, end=end, raw_download=True, checksum=None, retry=None,
                    timeout=self._opts.timeout, if_generation_match=self._blob.generation,
                )
            except Exception as exc:
                self._meta.request = max(_GCS_MIN_CHUNK, size // 4)
                raise _gcs_fail(self._t, exc) from None
            self._meta.request = min(_GCS_CHUNK, size * 2)
            self._off = 0
            if len(self._buf) > end + 1 - self._pos:
                raise _Transient(f"asked for bytes {self._pos}-{end}, got {len(self._buf)} bytes")
        out = self._buf[self._off : self._off + n]
        self._off += len(out)
        self._pos += len(out)
        return out

    def close(self) -> None:
        self._buf = b""


def _gcs_get(t: _Target, offset: int, opts: Options, meta: _Meta) -> Any:
    bucket = _gcs_bucket(t, opts)
    try:
        blob = bucket.get_blob(t.key, timeout=opts.timeout, retry=None)
    except Exception as exc:
        raise _gcs_fail(t, exc) from None
    if blob is None:
        raise MissingError(f"{t.url}: no such object")
    return _GcsResponse(t, blob, offset, opts, meta)
