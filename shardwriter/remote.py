"""Datasets at URLs: reading with retry and resume, uploading, verifying.

A dataset location is a local folder or a URL prefix that file names are appended to:

* ``s3://BUCKET/PREFIX`` (boto3: ``pip install 'ai8x-shards[s3]'``),
* ``gs://BUCKET/PREFIX`` or ``gcs://...`` (google-cloud-storage: ``[gcs]``),
* ``http://HOST/PREFIX`` and ``https://...`` (the standard library; read-only),
* ``pipe:COMMAND ... {name} ...`` — a command whose standard output is the file named
  ``{name}``. Refused unless ``AI8X_SHARDS_ALLOW_PIPE=1``; even then the command is
  split with :func:`shlex.split` and run without a shell.

Credentials and endpoints come from the clients' standard environment, never from a
manifest: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ... for S3;
``GOOGLE_APPLICATION_CREDENTIALS`` / ``STORAGE_EMULATOR_HOST`` for GCS
(``AI8X_SHARDS_GCS_ANONYMOUS=1`` for public buckets); ``HTTPS_PROXY`` / ``SSL_CERT_FILE``
for HTTP(S).

Reads are sequential GETs with read-ahead (a thread fills a bounded queue). A dropped
connection, a stall longer than the timeout, a 5xx / 429 answer or a body that ends
early is retried with exponential backoff and jitter, resuming at the byte reached with
``Range: bytes=N-``; the answer's ``Content-Range`` is checked, a server that answers
``200`` (the whole object) has its first N bytes skipped, and a changed ``ETag`` /
generation or object size is an error rather than a silent splice. After
``retries`` failed attempts in a row without a new byte, :class:`StorageError` names the
URL and the byte offset. Tunable per call (:class:`Options`) or by environment:

=============================  =======  ===============================================
``AI8X_SHARDS_RETRIES``        8        failed attempts in a row (no byte gained) allowed
``AI8X_SHARDS_TIMEOUT``        30       seconds: connect timeout and longest stall
``AI8X_SHARDS_BACKOFF``        0.5      seconds before the first retry; doubles each time
``AI8X_SHARDS_BACKOFF_MAX``    20       longest wait between retries, seconds
``AI8X_SHARDS_READAHEAD``      8 MiB    bytes read ahead by a thread; 0: no thread
=============================  =======  ===============================================

Uploads (:func:`upload_dataset`) put every shard and index as one object each (one
PUT is atomic in S3 and GCS) and the manifest last, so a reader never sees a manifest
whose files are not all there. This module does not import :mod:`loaders` (nor torch).
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import queue
import random
import re
import select
import shlex
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from . import __version__
from . import format as fmt

SCHEMES = ("s3", "gs", "gcs", "http", "https")
PIPE = "pipe:"
USER_AGENT = f"ai8x-shards/{__version__}"
_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
_MANGLED_RE = re.compile(r"^(s3|gs|gcs|https?):/(?!/)", re.IGNORECASE)  # Path("s3://b/x") -> "s3:/b/x"
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_GCS_CHUNK = 8 << 20
_GCS_MIN_CHUNK = 256 << 10
_S3_SINGLE_PUT = 5 << 30

T = TypeVar("T")


class StorageError(OSError):
    """A dataset file could not be read or written; the message names the location and file."""


class MissingError(StorageError):
    """The object does not exist (HTTP 404, S3 NoSuchKey, GCS NotFound)."""


class _Transient(Exception):
    """A fault worth retrying: 5xx, 429, reset, stall, a body cut short."""


# --------------------------------------------------------------------------- options


def _env_number(name: str, default: float, kind: type) -> Any:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(parse_bytes(text)) if kind is int else kind(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a valid {kind.__name__}") from None
    if value < 0:
        raise ValueError(f"{name}={text!r} must not be negative")
    return value


def parse_bytes(text: str) -> int:
    """``"1048576"``, ``"512K"``, ``"64M"``, ``"10G"``, ``"1T"`` (powers of 1024) -> bytes."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    if scale != 1:
        t = t[:-1]
    return int(float(t) * scale) if "." in t else int(t) * scale


@dataclass(frozen=True)
class Options:
    """How remote reads behave; :meth:`from_env` reads the ``AI8X_SHARDS_*`` variables."""

    retries: int = 8
    timeout: float = 30.0
    backoff: float = 0.5
    backoff_max: float = 20.0
    readahead: int = 8 << 20
    chunk: int = 1 << 20

    @classmethod
    def from_env(cls, **overrides: Any) -> Options:
        d = cls()
        opts = cls(
            retries=_env_number("AI8X_SHARDS_RETRIES", d.retries, int),
            timeout=_env_number("AI8X_SHARDS_TIMEOUT", d.timeout, float),
            backoff=_env_number("AI8X_SHARDS_BACKOFF", d.backoff, float),
            backoff_max=_env_number("AI8X_SHARDS_BACKOFF_MAX", d.backoff_max, float),
            readahead=_env_number("AI8X_SHARDS_READAHEAD", d.readahead, int),
        )
        return replace(opts, **overrides)


def _delay(opts: Options, failures: int) -> float:
    return min(opts.backoff * 2 ** (failures - 1), opts.backoff_max) * random.uniform(0.5, 1.0)


# --------------------------------------------------------------------------- locations


def is_url(location: Any) -> bool:
    """True for ``scheme://...`` and ``pipe:...`` locations (and a URL mangled by ``Path``)."""
    if not isinstance(location, (str, os.PathLike)):
        return False
    s = os.fspath(location)
    if not isinstance(s, str):
        return False
    return s.startswith(PIPE) or bool(_URL_RE.match(s)) or (bool(_MANGLED_RE.match(s)) and not os.path.exists(s))


def normalize(location: str | os.PathLike[str]) -> str:
    """The canonical form of a URL location (no trailing slash); refuses what it cannot read."""
    s = os.fspath(location)
    if s.startswith(PIPE):
        return s
    if _MANGLED_RE.match(s) and not _URL_RE.match(s):
        s = s.replace(":/", "://", 1)  # a URL that went through pathlib.Path or os.path.join
    m = _URL_RE.match(s)
    if not m:
        raise StorageError(f"{s}: not a URL")
    scheme = m.group(1).lower()
    rest = s[m.end() :].rstrip("/")
    if scheme not in SCHEMES:
        raise StorageError(f"{s}: unsupported scheme {scheme}://; use s3://, gs://, http(s):// or a local folder")
    if not rest or rest.startswith("/"):
        raise StorageError(f"{s}: no {'bucket' if scheme in ('s3', 'gs', 'gcs') else 'host'} in the URL")
    if "?" in rest or "#" in rest:
        raise StorageError(f"{s}: a location is a prefix that file names are appended to; query strings are not supported")
    return f"{scheme}://{rest}"


def object_url(location: str | os.PathLike[str], name: str) -> str:
    """The URL of file ``name`` of the dataset at ``location`` (for messages)."""
    return _target(normalize(location), name, check_pipe=False).url


def sub_location(location: str, sub: str) -> str:
    """``location`` + ``/sub`` (an output's sub-folder, such as ``AISegment_80``)."""
    loc = normalize(location)
    return f"{loc}/{sub}" if sub else loc


@dataclass(frozen=True)
class _Target:
    kind: str  # "http", "s3", "gs", "pipe"
    url: str
    bucket: str = ""
    key: str = ""
    argv: tuple[str, ...] = ()


def _check_name(name: str) -> None:
    if name != fmt.MANIFEST_NAME:
        fmt.check_shard_file_name(name[:-4] + ".tar" if name.endswith(".idx") else name)


def _target(loc: str, name: str, check_pipe: bool = True) -> _Target:
    _check_name(name)
    if loc.startswith(PIPE):
        argv = _pipe_argv(loc, name, check_pipe)
        return _Target("pipe", PIPE + shlex.join(argv), argv=tuple(argv))
    url = f"{loc}/{name}"
    scheme, _, rest = url.partition("://")
    if scheme in ("http", "https"):
        return _Target("http", url)
    bucket, _, key = rest.partition("/")
    return _Target("s3" if scheme == "s3" else "gs", url, bucket, key)


def _pipe_argv(loc: str, name: str, check: bool) -> list[str]:
    if check and os.environ.get("AI8X_SHARDS_ALLOW_PIPE") != "1":
        raise StorageError(
            f"{loc}: a pipe: location runs a command; refused unless you opt in with AI8X_SHARDS_ALLOW_PIPE=1 "
            "(the command then runs without a shell)"
        )
    try:
        argv = shlex.split(loc[len(PIPE) :])
    except ValueError as exc:
        raise StorageError(f"{loc}: cannot split the command ({exc})") from None
    if not argv or not any("{name}" in a for a in argv):
        raise StorageError(f"{loc}: a pipe: location needs {{name}} where the file name goes, e.g. pipe:cat /data/{{name}}")
    return [a.replace("{name}", name) for a in argv]


def cache_root() -> Path:
    """``AI8X_SHARDS_CACHE``, else ``$XDG_CACHE_HOME/ai8x-shards`` (``~/.cache/ai8x-shards``)."""
    env = os.environ.get("AI8X_SHARDS_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ai8x-shards"


def _env_key(*prefixes: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(prefixes)))


# --------------------------------------------------------------------------- backends
# Each backend's get(target, offset, opts) starts one GET and returns a response with
# ``start`` (the object byte its body begins at), ``total`` (object size, or None),
# ``tag`` (ETag / generation, or None), ``read(n)`` and ``close()``. Faults worth a
# retry raise _Transient; anything else raises StorageError.


@dataclass
class _Meta:
    """What the first answer said about the object, checked against every later answer."""

    size: int | None = None
    size_from: str = ""
    tag: str | None = None
    request: int = _GCS_CHUNK  # bytes per GCS request (adapts to faults)


class _Empty:
    def __init__(self, start: int, total: int | None = None) -> None:
        self.start, self.total, self.tag = start, total, None

    def read(self, n: int) -> bytes:
        return b""

    def close(self) -> None:
        pass


# -- HTTP(S): urllib (proxies, TLS and redirects from the standard environment)


def _content_range(value: str | None) -> tuple[int, int | None, int] | None:
    """``bytes A-B/TOTAL`` -> ``(A, TOTAL or None, B + 1)``."""
    m = re.match(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", value or "")
    if not m:
        return None
    return int(m.group(1)), None if m.group(3) == "*" else int(m.group(3)), int(m.group(2)) + 1


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


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exception types of the network stacks the clients use (all worth a retry)."""
    types: list[type[BaseException]] = [OSError, http.client.HTTPException]
    for module, name in (("urllib3.exceptions", "HTTPError"), ("requests.exceptions", "RequestException"),
                         ("google.auth.exceptions", "TransportError"), ("google.resumable_media.common", "DataCorruption")):
        try:
            types.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(types)


# -- S3: boto3 with botocore's own retries off (we resume; it would restart at byte 0)

_CLIENTS: dict[tuple[Any, ...], Any] = {}  # keyed by pid too: a client is never used across fork
_CLIENTS_LOCK = threading.Lock()


def _after_fork() -> None:
    global _CLIENTS_LOCK
    _CLIENTS_LOCK = threading.Lock()  # another thread may have held it at the fork
    _CLIENTS.clear()


os.register_at_fork(after_in_child=_after_fork)


def _s3_client(opts: Options) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise StorageError("s3:// locations need boto3: pip install 'ai8x-shards[s3]'") from None
    key = ("s3", os.getpid(), opts.timeout, _env_key("AWS_"))
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            config = Config(
                connect_timeout=opts.timeout,
                read_timeout=opts.timeout,
                retries={"total_max_attempts": 1, "mode": "standard"},
                # S3-compatible servers often reject botocore's newer default checksum trailers.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                user_agent_extra=USER_AGENT,
                max_pool_connections=32,
            )
            try:
                client = boto3.session.Session().client("s3", config=config)
            except Exception as exc:
                raise StorageError(f"cannot set up the S3 client ({type(exc).__name__}: {exc})") from None
            _CLIENTS[key] = client
    return client


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


# -- GCS: google-cloud-storage, ranged downloads of a fixed generation


def _gcs_bucket(t: _Target, opts: Options) -> Any:
    try:
        from google.cloud import storage
    except ImportError:
        raise StorageError("gs:// locations need google-cloud-storage: pip install 'ai8x-shards[gcs]'") from None
    key = ("gs", os.getpid(), _env_key("GOOGLE_", "STORAGE_EMULATOR_HOST", "AI8X_SHARDS_GCS_ANONYMOUS", "CLOUDSDK_"))
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            try:
                if os.environ.get("AI8X_SHARDS_GCS_ANONYMOUS") == "1":
                    client = storage.Client.create_anonymous_client()
                else:
                    client = storage.Client()
            except Exception as exc:
                raise StorageError(
                    f"{t.url}: cannot set up the GCS client ({type(exc).__name__}: {exc}); set GOOGLE_APPLICATION_CREDENTIALS, "
                    "or AI8X_SHARDS_GCS_ANONYMOUS=1 for a public bucket"
                ) from None
            _CLIENTS[key] = client
    return client.bucket(t.bucket)


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


# -- pipe: (opt-in): a command, never a shell


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


_GETTERS: dict[str, Callable[[_Target, int, Options, _Meta], Any]] = {
    "http": _http_get,
    "s3": _s3_get,
    "gs": _gcs_get,
    "pipe": lambda t, offset, opts, meta: _PipeResponse(t, opts),
}


# --------------------------------------------------------------------------- resuming reads


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
    """A read-only binary file over a remote object; reads survive faults (see the module doc).

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


# --------------------------------------------------------------------------- reading API


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


# --------------------------------------------------------------------------- writing API


def _retrying(what: str, fn: Callable[[], T], opts: Options) -> T:
    failures = 0
    while True:
        try:
            return fn()
        except _Transient as exc:
            failures += 1
            if failures > opts.retries:
                raise StorageError(f"{what}: gave up after {failures} failed attempts (last: {exc}); "
                                   f"retry budget AI8X_SHARDS_RETRIES={opts.retries}") from None
            time.sleep(_delay(opts, failures))


def _writable(location: str) -> str:
    loc = normalize(location)
    if loc.startswith(PIPE) or loc.startswith(("http://", "https://")):
        raise StorageError(f"{loc}: read-only location; upload to s3://... or gs://..., or write to a local folder")
    return loc


def _remote_state(t: _Target, opts: Options) -> tuple[int, str | None] | None:
    """(size, recorded sha256) of an existing object, or None."""

    def head() -> tuple[int, str | None] | None:
        if t.kind == "s3":
            try:
                h = _s3_client(opts).head_object(Bucket=t.bucket, Key=t.key)
            except Exception as exc:
                err = _s3_fail(t, exc)
                if isinstance(err, MissingError):  # HEAD answers a bare 404
                    return None
                raise err from None
            meta = {k.lower(): v for k, v in (h.get("Metadata") or {}).items()}
            return int(h["ContentLength"]), meta.get("sha256")
        try:
            blob = _gcs_bucket(t, opts).get_blob(t.key, timeout=opts.timeout, retry=None)
        except Exception as exc:
            raise _gcs_fail(t, exc) from None
        if blob is None:
            return None
        return int(blob.size), (blob.metadata or {}).get("sha256")

    return _retrying(t.url, head, opts)


def upload_file(location: str, name: str, path: str | os.PathLike[str], *, sha256: str | None = None,
                opts: Options | None = None) -> bool:
    """Put local file ``path`` as ``name`` at ``location`` in one atomic request.

    Skips the upload (returns False) when an object of the same size and recorded
    sha256 is already there. The sha256 is stored as object metadata.
    """
    opts = opts or Options.from_env()
    t = _target(_writable(location), name)
    path = Path(path)
    size = path.stat().st_size
    if sha256 is None:
        sha256 = _file_sha256(path)
    state = _remote_state(t, opts)
    if state == (size, sha256):
        return False

    def put() -> None:
        if t.kind == "s3":
            client = _s3_client(opts)
            try:
                if size <= _S3_SINGLE_PUT:
                    with open(path, "rb") as f:
                        client.put_object(Bucket=t.bucket, Key=t.key, Body=f, ContentLength=size, Metadata={"sha256": sha256})
                else:  # multipart: the object still appears only when complete
                    client.upload_file(str(path), t.bucket, t.key, ExtraArgs={"Metadata": {"sha256": sha256}})
            except Exception as exc:
                raise _s3_fail(t, exc) from None
        else:
            blob = _gcs_bucket(t, opts).blob(t.key)
            blob.metadata = {"sha256": sha256}
            try:
                blob.upload_from_filename(str(path), retry=None, timeout=opts.timeout)
            except Exception as exc:
                raise _gcs_fail(t, exc) from None

    _retrying(t.url, put, opts)
    return True


def delete_file(location: str, name: str, opts: Options | None = None) -> None:
    """Remove file ``name`` at ``location`` (no error when it is not there)."""
    opts = opts or Options.from_env()
    t = _target(_writable(location), name)

    def delete() -> None:
        try:
            if t.kind == "s3":
                _s3_client(opts).delete_object(Bucket=t.bucket, Key=t.key)
            else:
                _gcs_bucket(t, opts).blob(t.key).delete(retry=None, timeout=opts.timeout)
        except Exception as exc:
            err = _s3_fail(t, exc) if t.kind == "s3" else _gcs_fail(t, exc)
            if not isinstance(err, MissingError):
                raise err from None

    _retrying(t.url, delete, opts)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dataset_dirs(local_dir: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """``(sub-folder, path)`` of each dataset in ``local_dir``: itself, or its sub-folders."""
    root = Path(local_dir)
    if (root / fmt.MANIFEST_NAME).is_file():
        return [("", root)]
    return sorted((p.name, p) for p in root.iterdir() if p.is_dir() and (p / fmt.MANIFEST_NAME).is_file()) if root.is_dir() else []


def _fingerprint(m: dict[str, Any]) -> Any:
    return (m.get("source") or {}).get("fingerprint")


def upload_dataset(local_dir: str | os.PathLike[str], location: str, *, overwrite: bool = False,
                   opts: Options | None = None, log: Callable[[str], None] | None = None) -> list[str]:
    """Upload the dataset(s) in ``local_dir`` to ``location``; returns the names uploaded.

    Per dataset: every shard and index (one atomic PUT each, skipped when the same bytes
    are already there), then the manifest. A dataset with another source fingerprint
    already at the location is refused unless ``overwrite``; with it, the files of the
    old manifest that the new one does not list are deleted after the new manifest is in.
    Sub-folder datasets (``pack aisegment`` writes one per variant) go to
    ``location/SUB``.
    """
    opts = opts or Options.from_env()
    dirs = dataset_dirs(local_dir)
    if not dirs:
        raise StorageError(f"{local_dir}: no {fmt.MANIFEST_NAME} (nor sub-folders holding one) to upload")
    dest_root = _writable(location)
    uploaded: list[str] = []
    for sub, d in dirs:
        dest = sub_location(dest_root, sub)
        m = fmt.parse_manifest((d / fmt.MANIFEST_NAME).read_bytes(), str(d / fmt.MANIFEST_NAME))
        try:
            old: dict[str, Any] | None = read_manifest(dest, opts)
        except MissingError:
            old = None
        except fmt.FormatError:
            old = {}
        if old is not None and _fingerprint(old) != _fingerprint(m) and not overwrite:
            raise StorageError(f"{dest} already holds a different dataset; pass --overwrite to replace it, or choose another location")
        names = []
        for info in m["splits"].values():
            for shard in info["shards"]:
                names += [(shard["file"], shard["sha256"]), (shard["index"]["file"], shard["index"]["sha256"])]
        for name, sha in names:
            if _file_sha256(d / name) != sha:  # never publish bytes under a hash they do not have
                raise StorageError(f"{d / name}: sha256 differs from its manifest; run ai8x-shards verify {d}")
            if upload_file(dest, name, d / name, sha256=sha, opts=opts):
                uploaded.append(f"{sub}/{name}" if sub else name)
                if log:
                    log(f"uploaded {object_url(dest, name)}")
        if upload_file(dest, fmt.MANIFEST_NAME, d / fmt.MANIFEST_NAME, opts=opts):
            uploaded.append(f"{sub}/{fmt.MANIFEST_NAME}" if sub else fmt.MANIFEST_NAME)
        if old:
            keep = {n for n, _ in names}
            for info in old.get("splits", {}).values():
                for shard in info.get("shards", []):
                    for name in (shard["file"], shard["index"]["file"]):
                        if name not in keep:
                            delete_file(dest, name, opts)
    return uploaded


@contextmanager
def staged_output(out: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Where to write a dataset bound for ``out``: ``out`` itself, or for a URL a staging folder.

    For a URL the folder is ``AI8X_SHARDS_CACHE/staging/<hash of the URL>``, uploaded with
    :func:`upload_dataset` when the block ends without an exception and then removed; after a
    failure it is kept, so the same command resumes the pack and uploads only what is missing.
    """
    if not is_url(out):
        yield Path(out)
        return
    url = _writable(out)
    stage = cache_root() / "staging" / hashlib.sha256(url.encode()).hexdigest()[:16]
    stage.mkdir(parents=True, exist_ok=True)
    yield stage
    upload_dataset(stage, url, overwrite=overwrite)
    shutil.rmtree(stage, ignore_errors=True)


# --------------------------------------------------------------------------- verify / info


def verify_location(location: str | os.PathLike[str], opts: Options | None = None) -> list[str]:
    """:func:`shardwriter.verify.verify` for a folder or a URL (problems; empty when sound).

    A URL's shards are downloaded one at a time into a temporary folder and checked
    like local ones (sizes, sha256, every record, every index).
    """
    from .verify import _verify_shard, verify

    if not is_url(location):
        return verify(location)
    try:
        url = normalize(location)
        m = read_manifest(url, opts)
    except (StorageError, fmt.FormatError) as exc:
        return [str(exc)]
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ai8x-shards-verify-") as tmp:
        d = Path(tmp)
        for info in m["splits"].values():
            for shard in info["shards"]:
                files = (shard["file"], shard["index"]["file"])
                for name in files:
                    try:
                        download(url, name, d / name, opts=opts)
                    except StorageError as exc:
                        if name == shard["file"]:
                            problems.append(f"{name}: missing or unreadable ({exc})")
                if (d / shard["file"]).exists():
                    problems += [p.replace(tmp, url) for p in _verify_shard(d, m, shard)]
                for name in files:
                    (d / name).unlink(missing_ok=True)
    return problems


def info_location(location: str | os.PathLike[str]) -> str:
    """:func:`shardwriter.verify.info` for a folder or a URL (reads only the manifest)."""
    from .verify import info

    if not is_url(location):
        return info(location)
    url = normalize(location)
    buf = read_all(url, fmt.MANIFEST_NAME)
    fmt.parse_manifest(buf, object_url(url, fmt.MANIFEST_NAME))
    with tempfile.TemporaryDirectory(prefix="ai8x-shards-info-") as tmp:
        (Path(tmp) / fmt.MANIFEST_NAME).write_bytes(buf)
        return info(tmp)


def check_sha256(value: Any, where: str) -> str:
    """A manifest's sha256 field, checked to be 64 lowercase hex digits (it names cache files)."""
    if not isinstance(value, str) or not _SHA_RE.match(value):
        raise fmt.FormatError(f"{where}: sha256 {value!r} is not 64 hex digits")
    return value
