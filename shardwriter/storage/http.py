"""``http://`` and ``https://`` locations (read-only): :class:`HttpStore`, on the standard library.

urllib takes proxies, TLS settings and redirects from the standard environment
(``HTTPS_PROXY``, ``SSL_CERT_FILE``, ...). The object's tag is its ``ETag``, or its
``Last-Modified`` date when the server sends no ETag, so a file replaced between two
requests is an error rather than a splice. Permanent failures (4xx other than 408, 425
and 429, an unresolvable host, a certificate error) fail at once.
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import urllib.error
import urllib.request
from typing import Any

from ..errors import MissingError, StorageError
from .base import Transient
from .remote import Empty, Meta, RemoteStore

USER_AGENT = "ai8x-shards"
_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")
#: resolver answers that say the name does not exist (EAI_AGAIN, a resolver that did not answer, is retried)
_NO_SUCH_HOST = {getattr(socket, n) for n in ("EAI_NONAME", "EAI_NODATA", "EAI_FAIL", "EAI_SERVICE") if hasattr(socket, n)}


def content_range(value: str | None) -> tuple[int, int | None, int] | None:
    """``bytes A-B/TOTAL`` -> ``(A, TOTAL or None, B + 1)``."""
    m = _RANGE_RE.match(value or "")
    if not m:
        return None
    return int(m.group(1)), None if m.group(3) == "*" else int(m.group(3)), int(m.group(2)) + 1


def permanent_network_error(exc: BaseException) -> str | None:
    """Why a network failure cannot get better by retrying (unknown host, bad certificate), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, socket.gaierror) and exc.errno in _NO_SUCH_HOST:
            return f"unknown host ({exc.strerror or exc})"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return f"{exc} (set SSL_CERT_FILE for a private CA)"
        inner = getattr(exc, "kwargs", None)  # botocore keeps the socket error it wraps in kwargs["error"]
        exc = (getattr(exc, "reason", None) or (inner.get("error") if isinstance(inner, dict) else None)
               or exc.__cause__ or exc.__context__)  # type: ignore[assignment]
    return None


class _Response:
    def __init__(self, resp: Any, start: int, total: int | None, tag: str | None, end: int | None = None) -> None:
        self._resp, self.start, self.total, self.tag, self.end = resp, start, total, tag, end

    def read(self, n: int) -> bytes:
        try:
            return self._resp.read1(n)  # what has arrived: a reset then loses nothing already received
        except (OSError, http.client.HTTPException) as exc:
            raise Transient(f"{type(exc).__name__}: {exc}") from None

    def readinto(self, view: memoryview) -> int:
        """One receive straight into ``view``: from the socket's buffered reader, with the body length
        http.client tracks kept up to date (a chunked or unsized body goes through ``read1``)."""
        resp = self._resp
        fp, length = getattr(resp, "fp", None), getattr(resp, "length", None)
        if getattr(resp, "chunked", True) or length is None or not hasattr(fp, "readinto1"):
            data = self.read(len(view))
            view[: len(data)] = data
            return len(data)
        try:
            n = fp.readinto1(view[: min(len(view), length)]) if length else 0
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise Transient(f"{type(exc).__name__}: {exc}") from None
        resp.length = length - n
        return n

    def close(self) -> None:
        try:
            self._resp.close()
        except Exception:
            pass


class HttpStore(RemoteStore):
    """A dataset served over HTTP(S); Range requests are used where the server honours them."""

    kind = "http"
    _opened: urllib.request.OpenerDirector | None = None

    def _opener(self) -> urllib.request.OpenerDirector:
        """One opener per store (building one costs ~0.2 ms: as much as a GET of a small shard on loopback)."""
        if self._opened is None:
            self._opened = urllib.request.build_opener()
        return self._opened

    def _get(self, name: str, offset: int, meta: Meta) -> Any:
        url = self.url(name)
        req = urllib.request.Request(url, headers={"Range": f"bytes={offset}-", "Accept-Encoding": "identity", "User-Agent": USER_AGENT})
        try:
            resp = self._opener().open(req, timeout=self.opts.timeout)
        except urllib.error.HTTPError as exc:
            code, reason, headers = exc.code, exc.reason, exc.headers
            exc.close()
            if code >= 500 or code in (408, 425, 429):
                raise Transient(f"HTTP {code} {reason}") from None
            if code == 416:
                cr = re.match(r"^\s*bytes\s+\*/(\d+)", headers.get("Content-Range") or "")
                return Empty(offset, int(cr.group(1)) if cr else None)
            if code in (404, 410):
                raise MissingError(f"{url}: HTTP {code} {reason}") from None
            raise StorageError(f"{url}: HTTP {code} {reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            why = permanent_network_error(exc)
            if why:
                raise StorageError(f"{url}: {why}") from None
            reason = getattr(exc, "reason", exc)
            raise Transient(f"{type(reason).__name__}: {reason}") from None
        try:
            tag = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
            if resp.status == 206:
                cr = content_range(resp.headers.get("Content-Range"))
                if cr is None:
                    raise Transient(f"206 with an unusable Content-Range {resp.headers.get('Content-Range')!r}")
                return _Response(resp, *cr[:2], tag, cr[2])
            if resp.status == 200:
                length = resp.headers.get("Content-Length")
                cr = content_range(resp.headers.get("Content-Range"))  # some servers answer 200 to a Range, with the range
                if cr is not None:
                    return _Response(resp, *cr[:2], tag, cr[2])
                return _Response(resp, 0, int(length) if length and length.isdigit() else None, tag)
            raise StorageError(f"{url}: unexpected HTTP {resp.status} {resp.reason}")
        except BaseException:
            resp.close()
            raise
