"""``s3://BUCKET/PREFIX`` locations: :class:`S3Store` (boto3, its own retries off: we resume).

Reads are ranged GETs; writes are one atomic PUT per file (multipart above 5 GiB: the
object still appears only when complete) with the file's sha256 as object metadata, so
an upload of the same bytes is skipped.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import MissingError, StorageError
from .base import Transient
from .clients import network_errors, s3_client
from .http import content_range, permanent_network_error
from .locations import split_bucket
from .remote import Empty, Meta, RemoteStore

_SINGLE_PUT = 5 << 30


def classify(url: str, exc: BaseException) -> Exception:
    """A boto3 failure as Transient (retry), MissingError or StorageError (permanent)."""
    import botocore.exceptions as bx

    if isinstance(exc, bx.ClientError):
        meta = exc.response.get("ResponseMetadata", {})
        err = exc.response.get("Error", {})
        status, code = int(meta.get("HTTPStatusCode") or 0), str(err.get("Code", ""))
        if status >= 500 or status in (408, 425, 429) or code in ("SlowDown", "RequestTimeout", "Throttling", "InternalError"):
            return Transient(f"S3 {code or status}: {err.get('Message', '')}".rstrip(": "))
        if code in ("NoSuchKey", "404", "NotFound"):
            return MissingError(f"{url}: no such object")
        if code == "PreconditionFailed":
            return StorageError(f"{url}: the object changed while it was being read (ETag differs)")
        return StorageError(f"{url}: S3 {code or status}: {err.get('Message', '')}".rstrip(": "))
    if isinstance(exc, bx.NoCredentialsError):
        return StorageError(f"{url}: no AWS credentials (set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE)")
    why = permanent_network_error(exc)
    if why:
        return StorageError(f"{url}: {why}")
    if isinstance(exc, (bx.HTTPClientError, bx.IncompleteReadError, bx.EndpointConnectionError) + network_errors()):
        return Transient(f"{type(exc).__name__}: {exc}")
    return StorageError(f"{url}: {type(exc).__name__}: {exc}")


class _Response:
    def __init__(self, url: str, body: Any, start: int, total: int | None, tag: str | None, end: int | None = None) -> None:
        self._url, self._body, self.start, self.total, self.tag, self.end = url, body, start, total, tag, end
        # urllib3's read1 returns what has arrived, so a reset loses nothing already received;
        # StreamingBody.read(n) waits for all n bytes. Sizes are checked by the resumer.
        raw = getattr(body, "_raw_stream", None)
        self._read = raw.read1 if hasattr(raw, "read1") else body.read

    def read(self, n: int) -> bytes:
        try:
            return self._read(n)
        except Exception as exc:
            raise classify(self._url, exc) from None

    def close(self) -> None:
        try:
            self._body.close()
        except Exception:
            pass


class S3Store(RemoteStore):
    """A dataset in an S3 (or S3-compatible) bucket."""

    kind = "s3"
    writable = True

    def _key(self, name: str) -> tuple[str, str, str]:
        url = self.url(name)
        bucket, key = split_bucket(url)
        return url, bucket, key

    def _retry(self, what: str, fn: Any) -> Any:
        from .upload import retrying

        return retrying(what, fn, self.opts)

    def _get(self, name: str, offset: int, meta: Meta) -> Any:
        url, bucket, key = self._key(name)
        try:
            r = s3_client(self.opts).get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-")
        except Exception as exc:
            if (getattr(exc, "response", None) or {}).get("Error", {}).get("Code") == "InvalidRange":
                return Empty(offset)  # asked from the end (or past it): no bytes; the resumer judges
            raise classify(url, exc) from None
        cr = content_range(r.get("ContentRange"))
        if cr is not None:  # 206, or 200 with the range (rclone)
            return _Response(url, r["Body"], *cr[:2], r.get("ETag"), cr[2])
        return _Response(url, r["Body"], 0, r.get("ContentLength"), r.get("ETag"))

    def stat(self, name: str) -> tuple[int, str | None] | None:
        url, bucket, key = self._key(name)

        def head() -> tuple[int, str | None] | None:
            try:
                h = s3_client(self.opts).head_object(Bucket=bucket, Key=key)
            except Exception as exc:
                err = classify(url, exc)
                if isinstance(err, MissingError):  # HEAD answers a bare 404
                    return None
                raise err from None
            meta = {k.lower(): v for k, v in (h.get("Metadata") or {}).items()}
            return int(h["ContentLength"]), meta.get("sha256")

        return self._retry(url, head)

    def upload(self, name: str, path: str | os.PathLike[str], sha256: str) -> bool:
        url, bucket, key = self._key(name)
        size = os.path.getsize(path)
        if self.stat(name) == (size, sha256):
            return False

        def put() -> None:
            client = s3_client(self.opts)
            try:
                if size <= _SINGLE_PUT:
                    with open(path, "rb") as f:
                        client.put_object(Bucket=bucket, Key=key, Body=f, ContentLength=size, Metadata={"sha256": sha256})
                else:
                    client.upload_file(os.fspath(path), bucket, key, ExtraArgs={"Metadata": {"sha256": sha256}})
            except Exception as exc:
                raise classify(url, exc) from None

        self._retry(url, put)
        return True

    def delete(self, name: str) -> None:
        url, bucket, key = self._key(name)

        def delete() -> None:
            try:
                s3_client(self.opts).delete_object(Bucket=bucket, Key=key)
            except Exception as exc:
                err = classify(url, exc)
                if not isinstance(err, MissingError):
                    raise err from None

        self._retry(url, delete)
