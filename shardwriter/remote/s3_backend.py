"""The S3 GET and S3 error classification: boto3 with botocore's own retries off (we
resume; it would restart at byte 0). The client itself is made in :mod:`.clients`."""

from __future__ import annotations

from typing import Any

from .backends import _content_range, _Empty, _Meta, _network_errors
from .clients import _s3_client
from .locations import _Target
from .options import MissingError, Options, StorageError, _Transient


def _s3_fail(t: _Target, exc: BaseException) -> Exception:
    import botocore.exceptions as bx

    if isinstance(exc, bx.ClientError):
        meta = exc.response.get("ResponseMetadata", {})
        err = exc.response.get("Error", {})
        status, code = int(meta.get("HTTPStatusCode") or 0), str(err.get("Code", ""))
        if status >= 500 or status in (408, 429) or code in ("SlowDown", "RequestTimeout", "Throttling", "InternalError"):
            return _Transient(f"S3 {code or status}: {err.get('Message', '')}".rstrip(": "))
        if code in ("NoSuchKey", "404", "NotFound"):
            return MissingError(f"{t.url}: no such object")
        if code == "PreconditionFailed":
            return StorageError(f"{t.url}: the object changed while it was being read (ETag differs)")
        return StorageError(f"{t.url}: S3 {code or status}: {err.get('Message', '')}".rstrip(": "))
    if isinstance(exc, (bx.HTTPClientError, bx.IncompleteReadError) + _network_errors()):
        return _Transient(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, bx.NoCredentialsError):
        return StorageError(f"{t.url}: no AWS credentials (set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE)")
    return StorageError(f"{t.url}: {type(exc).__name__}: {exc}")


class _S3Response:
    def __init__(self, t: _Target, body: Any, start: int, total: int | None, tag: str | None, end: int | None = None) -> None:
        self._t, self._body, self.start, self.total, self.tag, self.end = t, body, start, total, tag, end
        # urllib3's read1 returns what has arrived, so a reset loses nothing already received;
        # StreamingBody.read(n) waits for all n bytes. Sizes are checked by the resumer.
        raw = getattr(body, "_raw_stream", None)
        self._read = raw.read1 if hasattr(raw, "read1") else body.read

    def read(self, n: int) -> bytes:
        try:
            return self._read(n)
        except Exception as exc:
            raise _s3_fail(self._t, exc) from None

    def close(self) -> None:
        try:
            self._body.close()
        except Exception:
            pass


def _s3_get(t: _Target, offset: int, opts: Options, meta: _Meta) -> Any:
    client = _s3_client(opts)
    try:
        r = client.get_object(Bucket=t.bucket, Key=t.key, Range=f"bytes={offset}-")
    except Exception as exc:
        if (getattr(exc, "response", None) or {}).get("Error", {}).get("Code") == "InvalidRange":
            return _Empty(offset)  # asked from the end (or past it): no bytes; the resumer judges
        raise _s3_fail(t, exc) from None
    cr = _content_range(r.get("ContentRange"))
    if cr is not None:  # 206, or 200 with the range (rclone)
        return _S3Response(t, r["Body"], *cr[:2], r.get("ETag"), cr[2])
    return _S3Response(t, r["Body"], 0, r.get("ContentLength"), r.get("ETag"))
