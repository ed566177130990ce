"""``gs://BUCKET/PREFIX`` locations: :class:`GcsStore` (google-cloud-storage, its retries off).

Reads are ranged downloads pinned to one object generation. Each GCS request is
all-or-nothing, so after a fault the requests get smaller (and grow back after
successes): a link that keeps dropping still makes progress. Writes are one upload per
file with the sha256 as object metadata.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import MissingError, StorageError
from ..options import Options
from .base import Transient
from .clients import gcs_bucket, network_errors
from .http import permanent_network_error
from .locations import split_bucket
from .remote import THREAD_READAHEAD, Meta, RemoteStore

_CHUNK = 8 << 20
_MIN_CHUNK = 256 << 10


def classify(url: str, exc: BaseException) -> Exception:
    """A GCS client failure as Transient (retry), MissingError or StorageError (permanent)."""
    from google.api_core import exceptions as gx

    if isinstance(exc, gx.NotFound):
        return MissingError(f"{url}: no such object")
    if isinstance(exc, gx.PreconditionFailed):
        return StorageError(f"{url}: the object changed while it was being read (generation differs)")
    if isinstance(exc, gx.GoogleAPICallError):
        code = int(exc.code or 0)
        if code >= 500 or code in (408, 425, 429):
            return Transient(f"GCS {code}: {exc.message}")
        return StorageError(f"{url}: GCS {code}: {exc.message}")
    why = permanent_network_error(exc)
    if why:
        return StorageError(f"{url}: {why}")
    if isinstance(exc, network_errors()):
        return Transient(f"{type(exc).__name__}: {exc}")
    return StorageError(f"{url}: {type(exc).__name__}: {exc}")


class _Response:
    """Ranged downloads of up to ``meta.request`` bytes each, pinned to one object generation."""

    def __init__(self, url: str, blob: Any, start: int, opts: Options, meta: Meta) -> None:
        self._url, self._blob, self._opts, self._meta = url, blob, opts, meta
        self.start, self.total, self.tag, self.end = start, int(blob.size), str(blob.generation), None
        self._pos, self._buf, self._off = start, b"", 0

    def _fill(self) -> bool:
        """Download the next range once the last one is used up; False at the end of the object."""
        if self._off < len(self._buf):
            return True
        if self._pos >= self.total:
            return False
        size = min(self._meta.request, _CHUNK)
        end = min(self._pos + size, self.total) - 1
        try:
            self._buf = self._blob.download_as_bytes(
                start=self._pos, end=end, raw_download=True, checksum=None, retry=None,
                timeout=self._opts.timeout, if_generation_match=self._blob.generation,
            )
        except Exception as exc:
            self._meta.request = max(_MIN_CHUNK, size // 4)
            raise classify(self._url, exc) from None
        self._meta.request = min(_CHUNK, size * 2)
        self._off = 0
        if len(self._buf) > end + 1 - self._pos:
            raise Transient(f"asked for bytes {self._pos}-{end}, got {len(self._buf)} bytes")
        return True

    def read(self, n: int) -> bytes:
        if not self._fill():
            return b""
        out = self._buf[self._off : self._off + n]
        self._off += len(out)
        self._pos += len(out)
        return out

    def readinto(self, view: memoryview) -> int:
        """Copy from the downloaded range straight into ``view`` (no intermediate slice)."""
        if not self._fill():
            return 0
        n = min(len(view), len(self._buf) - self._off)
        view[:n] = memoryview(self._buf)[self._off : self._off + n]
        self._off += n
        self._pos += n
        return n

    def close(self) -> None:
        self._buf = b""


class GcsStore(RemoteStore):
    """A dataset in a Google Cloud Storage bucket."""

    kind = "gs"
    writable = True
    readahead = THREAD_READAHEAD  # a ranged request completes before its bytes can be used

    def _bucket(self, name: str) -> tuple[str, Any, str]:
        url = self.url(name)
        bucket, key = split_bucket(url)
        return url, gcs_bucket(bucket, url, self.opts), key

    def _retry(self, what: str, fn: Any) -> Any:
        from .upload import retrying

        return retrying(what, fn, self.opts)

    def _get(self, name: str, offset: int, meta: Meta) -> Any:
        url, bucket, key = self._bucket(name)
        try:
            blob = bucket.get_blob(key, timeout=self.opts.timeout, retry=None)
        except Exception as exc:
            raise classify(url, exc) from None
        if blob is None:
            raise MissingError(f"{url}: no such object")
        return _Response(url, blob, offset, self.opts, meta)

    def stat(self, name: str) -> tuple[int, str | None] | None:
        url, bucket, key = self._bucket(name)

        def head() -> tuple[int, str | None] | None:
            try:
                blob = bucket.get_blob(key, timeout=self.opts.timeout, retry=None)
            except Exception as exc:
                raise classify(url, exc) from None
            return None if blob is None else (int(blob.size), (blob.metadata or {}).get("sha256"))

        return self._retry(url, head)

    def upload(self, name: str, path: str | os.PathLike[str], sha256: str) -> bool:
        url, bucket, key = self._bucket(name)
        if self.stat(name) == (os.path.getsize(path), sha256):
            return False

        def put() -> None:
            blob = bucket.blob(key)
            blob.metadata = {"sha256": sha256}
            try:
                blob.upload_from_filename(os.fspath(path), retry=None, timeout=self.opts.timeout)
            except Exception as exc:
                raise classify(url, exc) from None

        self._retry(url, put)
        return True

    def delete(self, name: str) -> None:
        url, bucket, key = self._bucket(name)

        def delete() -> None:
            try:
                bucket.blob(key).delete(retry=None, timeout=self.opts.timeout)
            except Exception as exc:
                err = classify(url, exc)
                if not isinstance(err, MissingError):
                    raise err from None

        self._retry(url, delete)
