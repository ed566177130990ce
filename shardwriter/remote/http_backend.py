"""The HTTP(S) GET: urllib (proxies, TLS and redirects from the standard environment)."""

from __future__ import annotations

import http.client
import re
import ssl
import urllib.error
import urllib.request
from typing import Any

from .backends import USER_AGENT, _content_range, _Empty, _Meta
from .locations import _Target
from .options import MissingError, Options, StorageError, _Transient


class _HttpResponse:
    def __init__(self, resp: Any, start: int, total: int | None, tag: str | None, end: int | None = None) -> None:
        self._resp, self.start, self.total, self.tag, self.end = resp, start, total, tag, end

    def read(self, n: int) -> bytes:
        try:
            return self._resp.read1(n)  # what has arrived: a reset then loses nothing already received
        except (OSError, http.client.HTTPException) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        try:
            self._resp.close()
        except Exception:
            pass


def _http_get(t: _Target, offset: int, opts: Options, meta: _Meta) -> Any:
    req = urllib.request.Request(t.url, headers={"Range": f"bytes={offset}-", "Accept-Encoding": "identity", "User-Agent": USER_AGENT})
    try:
        resp = urllib.request.build_opener().open(req, timeout=opts.timeout)
    except urllib.error.HTTPError as exc:
        code, reason, headers = exc.code, exc.reason, exc.headers
        exc.close()
        if code >= 500 or code in (408, 425, 429):
            raise _Transient(f"HTTP {code} {reason}") from None
        if code == 416:
            cr = re.match(r"^\s*bytes\s+\*/(\d+)", headers.get("Content-Range") or "")
            return _Empty(offset, int(cr.group(1)) if cr else None)
        if code in (404, 410):
            raise MissingError(f"{t.url}: HTTP {code} {reason}") from None
        raise StorageError(f"{t.url}: HTTP {code} {reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLCertVerificationError):  # retrying will not help
            raise StorageError(f"{t.url}: {reason} (set SSL_CERT_FILE for a private CA)") from None
        raise _Transient(f"{type(reason).__name__}: {reason}") from None
    try:
        tag = resp.headers.get("ETag")
        if resp.status == 206:
            cr = _content_range(resp.headers.get("Content-Range"))
            if cr is None:
                raise _Transient(f"206 with an unusable Content-Range {resp.headers.get('Content-Range')!r}")
            return _HttpResponse(resp, *cr[:2], tag, cr[2])
        if resp.status == 200:
            length = resp.headers.get("Content-Length")
            cr = _content_range(resp.headers.get("Content-Range"))  # some servers answer 200 to a Range, with the range
            if cr is not None:
                return _HttpResponse(resp, *cr[:2], tag, cr[2])
            return _HttpResponse(resp, 0, int(length) if length and length.isdigit() else None, tag)
        raise StorageError(f"{t.url}: unexpected HTTP {resp.status} {resp.reason}")
    except BaseException:
        resp.close()
        raise
