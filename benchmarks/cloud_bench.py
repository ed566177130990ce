"""Streaming from loopback servers vs local files: the same shards, one run, as a ratio.

Usage (from a repository checkout: the servers live in ``tests/servers.py``)::

    python -m benchmarks.cloud_bench            # ~64 MiB of shards
    python -m benchmarks.cloud_bench --mib 256 --out /tmp/cloud-bench

Every row reads every train shard of one dataset to the end through
:meth:`shardwriter.storage.Store.open_read` and walks its tar members (checking each header), like
a streaming epoch without decoding; the ratio is the row's throughput over the local
row's. Rows: local files; our stdlib HTTP server; the same through our fault proxy
without faults and with one connection reset in every shard (retry + Range resume);
nginx when installed (optional: ``apt-get install nginx-light``); ``rclone serve s3``
and ``gcp-storage-emulator`` when installed (the test extra installs both). Also the
map-style cold cache fill from HTTP (:meth:`~shardwriter.storage.Store.open_random` of every
shard: download, sha256 check, rename). Loopback numbers show the client's overhead, not a
network's: the emulators are themselves the slow part of their rows.

Each row also gives this process's CPU per GiB (all its threads). With nginx, two more rows
bound the HTTP client: the same reads with a read-ahead thread forced
(``AI8X_SHARDS_READAHEAD=16M``), and the bytes alone received with ``http.client`` on one
kept-alive connection into one reused buffer (no checks, no tar walk: the least CPU any
Python reader of that socket can spend), beside the bytes alone read from the local files and
the bytes alone through our stream (4 MiB reads, no tar walk, the whole-shard digest checked).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def _servers() -> Any:
    tests = REPO / "tests"
    if not (tests / "servers.py").exists():
        raise SystemExit("cloud_bench needs tests/servers.py: run it from a repository checkout")
    if str(tests) not in sys.path:
        sys.path.insert(0, str(tests))
    import servers

    return servers


def make_dataset(out: Path, mib: int, seed: int = 0) -> Path:
    """A classification dataset of about ``mib`` MiB (3x64x64 uint8 inputs), 16 MiB shards."""
    from shardwriter import pack
    from shardwriter.sources import NpzSource

    src = out / "src"
    src.mkdir(parents=True, exist_ok=True)
    n = max(64, (mib << 20) // (3 * 64 * 64 + 200))
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3, 64, 64), dtype=np.uint8)
    np.savez(src / "train.npz", x=x, y=rng.integers(0, 10, n))
    np.savez(src / "test.npz", x=x[:8], y=np.zeros(8, np.int64))
    ds = out / "www" / "ds"
    pack(NpzSource(src, classes=list(range(10))), ds, max_bytes=16 << 20, quiet=True)
    return ds


def stream_epoch(location: str, shards: list[str]) -> tuple[int, int]:
    """Bytes and samples read: every shard sequentially, every tar header checked."""
    from shardwriter import format as fmt
    from shardwriter.storage import open_store

    store = open_store(location)
    manifest = store.read_manifest()
    total = samples = 0
    for name in shards:
        entry = manifest.entry(name)
        xxh3 = getattr(entry, "xxh3", None)  # the whole-shard digest the streaming dataset checks
        with store.open_read(name, size=entry.bytes, sha256=entry.sha256, xxh3=xxh3) as f:
            for member in fmt.iter_tar_members(f, name, entry.bytes):
                samples += 1
                total += fmt.BLOCK + len(member.payload)
    return total, samples


def bytes_only_local(location: str, shards: list[str]) -> tuple[int, int]:
    """The shard bytes alone, ``readinto`` one reused buffer (no checks)."""
    buf, total = bytearray(4 << 20), 0
    for name in shards:
        with open(Path(location) / name, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    return total, 0


def stream_bytes(location: str, shards: list[str]) -> tuple[int, int]:
    """The shard bytes alone through our stream (``open_read``, 4 MiB reads, whole-shard digest checked)."""
    from shardwriter.storage import open_store

    store = open_store(location)
    manifest = store.read_manifest()
    total = 0
    for name in shards:
        entry = manifest.entry(name)
        with store.open_read(name, size=entry.bytes, sha256=entry.sha256, xxh3=getattr(entry, "xxh3", None)) as f:
            while data := f.read(4 << 20):
                total += len(data)
    return total, 0


def bytes_only_http(location: str, shards: list[str]) -> tuple[int, int]:
    """The shard bytes alone over one kept-alive ``http.client`` connection, received into one reused buffer."""
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(location)
    conn = http.client.HTTPConnection(url.hostname, url.port)
    view, total = memoryview(bytearray(4 << 20)), 0
    try:
        for name in shards:
            conn.request("GET", f"{url.path}/{name}")
            resp = conn.getresponse()
            left = int(resp.headers["Content-Length"])
            while left:
                n = resp.readinto(view[: min(left, len(view))])
                if not n:
                    raise RuntimeError(f"{location}/{name}: the response ended {left} bytes early")
                left -= n
                total += n
    finally:
        conn.close()
    return total, 0


def cache_fill(location: str, shards: list[str]) -> tuple[int, int]:
    from shardwriter.storage import open_store

    store = open_store(location)
    m = store.read_manifest()
    total = 0
    for name in shards:
        fd = store.open_random(m.entry(name))
        total += os.fstat(fd).st_size
        os.close(fd)
    return total, 0


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(mib: int = 64, workdir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Measure every available row once; returns ``{"source", "mib_s", "samples_s", "ratio", "note"}``."""
    servers = _servers()
    from shardwriter.errors import StorageError
    from shardwriter.storage import open_store, upload_dataset

    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="ai8x-cloud-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    try:
        ds = make_dataset(tmp, mib)
        shards = [s.file for s in open_store(ds).read_manifest().splits["train"].shards]

        def measure(source: str, location: str, fn: Callable[[str, list[str]], tuple[int, int]] = stream_epoch,
                    note: str = "") -> None:
            open_store(location).read_manifest()  # not timed: the manifest (and client set-up)
            t0, c0 = time.perf_counter(), time.process_time()
            nbytes, samples = fn(location, shards)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            rows.append({"source": source, "mib_s": nbytes / dt / (1 << 20), "samples_s": samples / dt if samples else None,
                         "seconds": dt, "cpu_s_gib": cpu / (nbytes / (1 << 30)), "note": note})

        settings = {"AI8X_SHARDS_CACHE": str(tmp / "cache"), "AI8X_SHARDS_BACKOFF": "0.01", "AI8X_SHARDS_BACKOFF_MAX": "0.1",
                    "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}
        with _env(settings), ExitStack() as stack:
            measure("local files", str(ds))
            measure("local files, bytes only", str(ds), bytes_only_local, note="readinto one buffer, no checks")
            http = stack.enter_context(servers.RangeHTTPServer(tmp / "www"))
            measure("http (ours, stdlib)", http.url + "/ds")
            proxy = stack.enter_context(servers.FaultProxy(http.port))
            measure("http via fault proxy, no faults", proxy.url + "/ds")
            proxy.set_plan([servers.Fault("reset", after=(4 << 20) + 12345)] * len(shards))
            measure("http via proxy, 1 reset per shard", proxy.url + "/ds", note="resumed with Range")
            proxy.set_plan([])
            if servers.nginx_available():
                try:
                    nginx = stack.enter_context(servers.Nginx(tmp / "www", tmp / "nginx"))
                    measure("http (nginx)", nginx.url + "/ds")
                    with _env({"AI8X_SHARDS_READAHEAD": "16M"}):
                        measure("http (nginx), read-ahead thread", nginx.url + "/ds", note="AI8X_SHARDS_READAHEAD=16M")
                    measure("http (nginx), our stream, bytes only", nginx.url + "/ds", stream_bytes,
                            note="open_read, 4 MiB reads, digest checked")
                    measure("http (nginx), bytes only", nginx.url + "/ds", bytes_only_http,
                            note="http.client, one connection, one buffer, no checks")
                except RuntimeError as exc:
                    rows.append({"source": "http (nginx)", "note": f"not run: {str(exc).splitlines()[0]}"})
            else:
                rows.append({"source": "http (nginx)", "note": "not run: nginx not installed (optional)"})
            try:
                root = tmp / "s3root"
                shutil.copytree(ds, root / "bench" / "ds")
                s3 = stack.enter_context(servers.RcloneS3(root, tmp / "rclone"))
                with _env(s3.env()):
                    measure("s3 (rclone serve s3)", "s3://bench/ds")
            except (RuntimeError, StorageError) as exc:
                rows.append({"source": "s3 (rclone serve s3)", "note": f"not run: {str(exc).splitlines()[0]}"})
            try:
                gcs = stack.enter_context(servers.GcsEmulator(tmp / "gcs"))
                with _env(gcs.env()):
                    upload_dataset(ds, f"gs://{gcs.bucket}/ds")
                    measure("gcs (gcp-storage-emulator)", f"gs://{gcs.bucket}/ds", note="the emulator is single-threaded Python")
            except (RuntimeError, StorageError) as exc:
                rows.append({"source": "gcs (gcp-storage-emulator)", "note": f"not run: {str(exc).splitlines()[0]}"})
            measure("map-style cache fill from http", http.url + "/ds", cache_fill, note="download + sha256 + rename")
    finally:
        if not workdir:
            shutil.rmtree(tmp, ignore_errors=True)
    base = rows[0]["mib_s"]
    for r in rows:
        r["ratio"] = r["mib_s"] / base if r.get("mib_s") else None
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'source':<36} {'MiB/s':>9} {'samples/s':>10} {'vs local':>9} {'CPU s/GiB':>10}  note", "-" * 96]
    for r in rows:
        if r.get("mib_s") is None:
            lines.append(f"{r['source']:<36} {'-':>9} {'-':>10} {'-':>9} {'-':>10}  {r.get('note', '')}")
            continue
        sps = f"{r['samples_s']:.0f}" if r.get("samples_s") else "-"
        lines.append(f"{r['source']:<36} {r['mib_s']:>9.1f} {sps:>10} {r['ratio']:>8.2f}x {r['cpu_s_gib']:>10.3f}  "
                     f"{r.get('note', '')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cloud_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=64, help="dataset size in MiB (default 64)")
    ap.add_argument("--out", help="work folder to keep (default: a temporary one, removed)")
    a = ap.parse_args(argv)
    rows = run(a.mib, a.out)
    print(f"streaming one epoch of the same {a.mib} MiB of shards, one run each (loopback)")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
