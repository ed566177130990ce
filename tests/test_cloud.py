"""Datasets at URLs (issue #5): S3, GCS, HTTP(S), against real servers on 127.0.0.1.

Servers (tests/servers.py): our Range-honouring HTTP server, ``rclone serve s3``,
``gcp-storage-emulator``, and our fault proxy in front of each (503s, resets after N
bytes, stalls past the timeout, slow links, a server that ignores Range). Every server
is started here and stopped in fixture teardown. No wall-clock assertions: stalls are
bounded by the client timeout, and every wait has a generous deadline.
"""

from __future__ import annotations

import itertools
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import helpers
import numpy as np
import pytest
import torch
from servers import Fault, FaultProxy, GcsEmulator, RangeHTTPServer, RcloneS3
from torch.utils.data import DataLoader

from loaders import ShardDataset
from loaders.mapstyle import collate
from shardwriter import format as fmt
from shardwriter import pack, storage
from shardwriter.errors import FormatError, IntegrityError, MissingError, SettingsError, StorageError
from shardwriter.options import Options, parse_bytes
from shardwriter.sources import NpzSource
from shardwriter.storage import ShardCache, open_store
from shardwriter.verify import info, verify

N_TRAIN, N_TEST, SHAPE, PER_SHARD = 150, 30, (3, 16, 16), 40
BUCKET = "bkt"
ROOT = Path(__file__).resolve().parents[1]


def tagged(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return helpers.tagged(n, seed, SHAPE)


def number(x: torch.Tensor) -> int:
    flat = x.reshape(-1)
    return int(flat[0]) * 256 + int(flat[1])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A dataset at ``www/ds`` (4 train shards + 1 test shard) and its arrays."""
    root = tmp_path_factory.mktemp("cloud")
    src = root / "src"
    src.mkdir()
    arrays = {"train": tagged(N_TRAIN, 1), "test": tagged(N_TEST, 2)}
    for split, (x, y) in arrays.items():
        np.savez(src / f"{split}.npz", x=x, y=y)
    pack(NpzSource(src, classes=list(range(5))), root / "www" / "ds", max_count=PER_SHARD, shuffle=False, quiet=True)
    return root, root / "www" / "ds", arrays


def shard_names(directory: Path, split: str = "train") -> list[str]:
    return [s.file for s in fmt.parse_manifest((directory / fmt.MANIFEST_NAME).read_bytes(), "m").splits[split].shards]


def entry(location: str, name: str) -> fmt.FileEntry:
    e = open_store(location).read_manifest().entry(name)
    assert e is not None
    return e


def cached(location: str, name: str) -> Path:
    """Fetch shard ``name`` of ``location`` into the cache; its cached path (the fd is closed again)."""
    store = open_store(location)
    fd = store.open_random(entry(location, name))
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    finally:
        os.close(fd)


@pytest.fixture(autouse=True)
def env(monkeypatch, tmp_path):
    """Fast retries, a private cache, and nothing inherited that changes behaviour."""
    for name in list(os.environ):
        if name.startswith(("AI8X_SHARDS_", "AWS_", "STORAGE_EMULATOR_HOST", "GOOGLE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AI8X_SHARDS_BACKOFF", "0.01")
    monkeypatch.setenv("AI8X_SHARDS_BACKOFF_MAX", "0.05")
    monkeypatch.setenv("AI8X_SHARDS_TIMEOUT", "20")
    monkeypatch.setenv("AI8X_SHARDS_CACHE", str(tmp_path / "cache"))
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    return monkeypatch


@pytest.fixture(scope="module")
def http(data):
    root, _, _ = data
    with RangeHTTPServer(root / "www") as server:
        yield server


@pytest.fixture
def proxy(http):
    with FaultProxy(http.port) as p:
        yield p


@pytest.fixture(scope="module")
def s3(data, tmp_path_factory):
    _, ds, _ = data
    base = tmp_path_factory.mktemp("s3")
    shutil.copytree(ds, base / "root" / BUCKET / "ds")  # in place before rclone starts: visible at once
    with RcloneS3(base / "root", base / "work") as server:
        yield server


@pytest.fixture
def s3_env(s3, env):
    for k, v in s3.env().items():
        env.setenv(k, v)
    return s3


@pytest.fixture
def s3_proxy(s3, env):
    with FaultProxy(s3.port, match=lambda method, path: True) as p:
        for k, v in s3.env(p.url).items():
            env.setenv(k, v)
        yield p


@pytest.fixture(scope="module")
def gcs(data, tmp_path_factory):
    _, ds, _ = data
    with GcsEmulator(tmp_path_factory.mktemp("gcs")) as server, pytest.MonkeyPatch.context() as mp:
        for k, v in server.env().items():
            mp.setenv(k, v)
        storage.upload_dataset(ds, f"gs://{server.bucket}/ds")
        yield server


@pytest.fixture
def gcs_proxy(gcs, env):
    with FaultProxy(gcs.port, match=lambda method, path: True) as p:
        for k, v in gcs.env(p.url).items():
            env.setenv(k, v)
        yield p


def read_stream(location: str, name: str, opts: Options | None = None) -> bytes:
    with open_store(location, opts).open_read(name) as f:
        parts = []
        while True:  # small, uneven reads, like the tar reader's
            block = f.read(4099)
            if not block:
                return b"".join(parts)
            parts.append(block)


def assert_same_dataset(local: Path, location: str, split: str) -> None:
    a, b = ShardDataset(local, split), ShardDataset(location, split)
    assert len(a) == len(b) and b.shards == a.shards
    for i in range(len(a)):
        (xa, ya), (xb, yb) = a[i], b[i]
        assert torch.equal(xa, xb) and torch.equal(ya, yb), f"{location} {split}[{i}]"
    req = list(range(len(a)))[::-1]
    assert torch.equal(collate(a.__getitems__(req))[0], collate(b.__getitems__(req))[0])
    assert b.source_name(len(b) - 1) == a.source_name(len(a) - 1)


# --------------------------------------------------------------------------- locations


def test_locations_are_parsed_strictly():
    assert storage.is_url("s3://b/p") and storage.is_url("gs://b") and storage.is_url("https://h/x") and storage.is_url("pipe:cat {name}")
    assert not storage.is_url("data/mnist") and not storage.is_url(Path("/tmp"))
    assert storage.normalize(Path("s3://bucket/pre/fix/")) == "s3://bucket/pre/fix"  # Path() squashed the //
    assert storage.normalize("HTTP://h:1/a/") == "http://h:1/a" and storage.normalize("gcs://b/x") == "gs://b/x"
    for bad in ("ftp://h/x", "s3:///x", "https://h/x?sig=1", "gs://"):
        with pytest.raises(SettingsError):  # a setting mistake, refused before any request
            storage.normalize(bad)
    with pytest.raises(FormatError):
        storage.object_url("s3://b/p", "../etc/passwd")
    with pytest.raises(FormatError):
        open_store("http://h/p").describe("../../x.tar")
    assert storage.object_url("gs://b/p", "train-000001.idx") == "gs://b/p/train-000001.idx"
    assert type(open_store("s3://b/p")).__name__ == "S3Store" and type(open_store("/tmp")).__name__ == "LocalStore"
    assert parse_bytes("64M") == 64 << 20 and parse_bytes("1.5K") == 1536 and parse_bytes("10GiB") == 10 << 30
    with pytest.raises(SettingsError, match="AI8X_SHARDS_CACHE_BYTES"):
        Options.from_env({"AI8X_SHARDS_CACHE_BYTES": "lots"})
    with pytest.raises(SettingsError, match="retries"):
        Options(retries=-1)


# --------------------------------------------------------------------------- map-style


def test_map_style_over_http_equals_local(data, http):
    _, ds, _ = data
    for split in ("train", "test"):
        assert_same_dataset(ds, http.url + "/ds", split)


def test_map_style_over_s3_equals_local(data, s3_env):
    _, ds, _ = data
    for split in ("train", "test"):
        assert_same_dataset(ds, f"s3://{BUCKET}/ds", split)


def test_map_style_over_gcs_equals_local(data, gcs, env):
    _, ds, _ = data
    for k, v in gcs.env().items():
        env.setenv(k, v)
    assert_same_dataset(ds, f"gs://{gcs.bucket}/ds", "train")


def test_map_style_url_dataset_in_dataloader_workers(data, proxy):
    """train.py's path: the dataset is pickled to workers, each fetches shards through the cache.

    The workers are spawned: the servers run in threads of this process, and forking a
    multi-threaded process is what tests/conftest.py forbids.
    """
    _, _, arrays = data
    ds = ShardDataset(proxy.url + "/ds", "train", output="uint8")
    loader = DataLoader(ds, batch_size=16, shuffle=True, num_workers=2, collate_fn=collate, multiprocessing_context="spawn")
    seen = []
    for x, y in loader:
        for xi, yi in zip(x, y):
            seen.append(number(xi))
            assert int(yi) == arrays["train"][1][seen[-1]]
    assert sorted(seen) == list(range(N_TRAIN))
    assert len(proxy.requests("GET", ".tar")) == len(ds.shards)  # each shard fetched once in all


# --------------------------------------------------------------------------- streaming under faults

HTTP_FAULTS = {
    "503s": ([Fault("503")] * 3, {}),
    "resets": ([Fault("reset", after=7000), Fault("reset", after=1), Fault("reset", after=20000)], {}),
    "resets-no-readahead": ([Fault("reset", after=9000)] * 3, {"AI8X_SHARDS_READAHEAD": "0"}),
    "resets-readahead-thread": ([Fault("reset", after=9000), Fault("reset", after=1), Fault("reset", after=30000)],
                                {"AI8X_SHARDS_READAHEAD": "16K"}),
    "stall-past-timeout": ([Fault("stall", after=5000)], {"AI8X_SHARDS_TIMEOUT": "1"}),
    "server-ignores-range": ([Fault("reset", after=12000), Fault("strip_range")], {}),
    "slow-link": ([Fault("slow", rate=500_000)], {}),
    "mixed": ([Fault("503"), Fault("reset", after=3000), Fault("stall", after=4000), Fault("503"), Fault("reset", after=100)],
              {"AI8X_SHARDS_TIMEOUT": "1"}),
}
FAILING = ("503", "reset", "stall")


@pytest.mark.parametrize("case", list(HTTP_FAULTS))
def test_http_stream_survives_faults_byte_identical(data, proxy, env, case):
    _, ds, _ = data
    plan, settings = HTTP_FAULTS[case]
    for k, v in settings.items():
        env.setenv(k, v)
    name = shard_names(ds)[1]
    proxy.set_plan(plan)
    assert read_stream(proxy.url + "/ds", name) == (ds / name).read_bytes()
    gets = proxy.requests("GET", name)
    assert [g.fault for g in gets[: len(plan)]] == [f.kind for f in plan]  # every fault was met
    failing = sum(f.kind in FAILING for f in plan) + 1
    if "stall" in {f.kind for f in plan}:  # a short timeout may also cut a slow good answer
        assert len(gets) >= failing
    else:
        assert len(gets) == failing
    resumed = [int(g.range.split("=")[1].rstrip("-")) for g in gets[1:]]
    if case.startswith("resets"):
        assert resumed == sorted(resumed) and resumed[-1] > 0  # each retry starts where the last stopped
    if case == "server-ignores-range":
        assert resumed == [12000]  # asked from 12000; the server sent all and 12000 bytes were skipped


def test_s3_stream_survives_faults_byte_identical(data, s3_proxy, env):
    """rclone answers a Range with 200 + Content-Range: resuming must trust the Content-Range."""
    _, ds, _ = data
    env.setenv("AI8X_SHARDS_TIMEOUT", "2")
    name = shard_names(ds)[2]
    s3_proxy.set_plan([Fault("503"), Fault("reset", after=8000), Fault("reset", after=15000), Fault("stall", after=100), Fault("503")])
    assert read_stream(f"s3://{BUCKET}/ds", name) == (ds / name).read_bytes()
    ranges = [g.range for g in s3_proxy.requests("GET", name)]
    assert not s3_proxy.plan and len(ranges) >= 6 and ranges[0] == "bytes=0-" and ranges[-1] not in (None, "bytes=0-")


def test_gcs_stream_survives_faults_byte_identical(data, gcs, gcs_proxy, env):
    _, ds, _ = data
    env.setenv("AI8X_SHARDS_TIMEOUT", "2")
    name = shard_names(ds)[0]
    loc = f"gs://{gcs.bucket}/faults"
    open_store(loc).upload(name, ds / name, storage.upload.file_sha256(ds / name))  # through the proxy: the emulator's media links then point at it
    gcs_proxy.clear_log()
    # an object read is a metadata GET, then ranged media GETs: faults hit both kinds
    gcs_proxy.set_plan([Fault("503"), None, Fault("reset", after=6000), None, Fault("stall", after=10), None, Fault("503")])
    assert read_stream(loc, name) == (ds / name).read_bytes()
    assert not gcs_proxy.plan
    media = [r for r in gcs_proxy.requests("GET") if r.path.startswith("/download/")]
    assert len(media) >= 3 and media[-1].fault is None


def test_servers_that_ignore_or_cap_ranges_need_no_retries(data, env):
    """A 200 without Content-Range (Range ignored) or a 206 with part of an open range is not a fault."""
    root, ds, _ = data
    env.setenv("AI8X_SHARDS_RETRIES", "0")
    name = shard_names(ds)[1]
    for kw in ({"ignore_range": True}, {"range_cap": 16384}):
        with RangeHTTPServer(root / "www", **kw) as server:
            assert read_stream(server.url + "/ds", name) == (ds / name).read_bytes()
            gets = [r for r in server.log if r[1].endswith(name)]
            assert len(gets) == (1 if "ignore_range" in kw else -(-(ds / name).stat().st_size // 16384))


def test_always_failing_server_gives_clear_error_within_budget(data, proxy, env):
    _, ds, _ = data
    env.setenv("AI8X_SHARDS_RETRIES", "3")
    name = shard_names(ds)[0]
    url = f"{proxy.url}/ds/{name}"
    proxy.set_plan([], default=Fault("503"))
    with pytest.raises(StorageError) as err:
        read_stream(proxy.url + "/ds", name)
    assert url in str(err.value) and "at byte 0" in str(err.value) and "503" in str(err.value)
    assert len(proxy.requests("GET", name)) == 4  # 1 try + 3 retries, then the error
    proxy.clear_log()
    proxy.set_plan([Fault("reset", after=30000)], default=Fault("stall", after=0))  # dies at 30000, then hangs
    env.setenv("AI8X_SHARDS_TIMEOUT", "0.5")
    with pytest.raises(StorageError, match=rf"{url}: gave up at byte 30000 of \d+ after 4 failed attempts"):
        read_stream(proxy.url + "/ds", name)


def test_always_failing_s3_gives_clear_error(data, s3_proxy, env):
    _, ds, _ = data
    env.setenv("AI8X_SHARDS_RETRIES", "2")
    name = shard_names(ds)[0]
    s3_proxy.set_plan([], default=Fault("503"))
    with pytest.raises(StorageError, match=rf"s3://{BUCKET}/ds/{name}: gave up at byte 0"):
        read_stream(f"s3://{BUCKET}/ds", name)
    assert len(s3_proxy.requests("GET", name)) == 3


def test_missing_object_fails_at_once(data, http, s3_env):
    with pytest.raises(MissingError, match="HTTP 404"):
        open_store(http.url + "/nowhere").read_manifest()
    with pytest.raises(MissingError, match="no such object"):
        open_store(f"s3://{BUCKET}/nowhere").read_manifest()
    assert [r for r in http.log if "nowhere" in r[1]] and len([r for r in http.log if "nowhere" in r[1]]) == 1


def test_object_replaced_while_streaming_is_an_error_not_a_splice(data, http, env, tmp_path):
    root, ds, _ = data
    name = shard_names(ds)[3]
    work = root / "www" / "replaced"
    shutil.copytree(ds, work, dirs_exist_ok=True)
    env.setenv("AI8X_SHARDS_READAHEAD", "0")
    with FaultProxy(http.port, plan=[Fault("reset", after=20000)]) as p:
        f = open_store(p.url + "/replaced").stream(name)  # the raw stream: no buffer reads ahead of the test
        assert f.read(1000) == (ds / name).read_bytes()[:1000]
        blob = bytearray((work / name).read_bytes())
        blob[-2000] ^= 0xFF
        (work / name).write_bytes(bytes(blob))  # same size, new ETag
        os.utime(work / name, ns=(time.time_ns(), time.time_ns() + 10**9))
        with pytest.raises(StorageError, match="changed while it was being read"):
            f.read()
        f.close()


STREAM_MODES = {  # (AI8X_SHARDS_READAHEAD, chunk): how the bytes reach the reader
    "auto (HTTP: received into the reader's buffer)": (None, 4 << 20),
    "a thread, 4 buffers": ("16K", 4096),
    "a thread, 1 buffer": ("4K", 4096),
    "a thread, odd sizes": ("7000", 3001),
}


@pytest.mark.parametrize("mode", list(STREAM_MODES))
@pytest.mark.parametrize("buffered", [False, True], ids=["raw stream", "open_read"])
def test_remote_reads_are_exact_and_stay_so_after_later_reads(data, proxy, env, mode, buffered):
    """Seeded random reads, readintos and seeks, each checked against the file; then every earlier result
    again, after the buffers it was read from have been refilled (a view handed out would have changed)."""
    _, ds, _ = data
    readahead, chunk = STREAM_MODES[mode]
    if readahead is not None:
        env.setenv("AI8X_SHARDS_READAHEAD", readahead)
    name = shard_names(ds)[1]
    want = (ds / name).read_bytes()
    rng = np.random.default_rng(len(mode) + buffered)
    store = open_store(proxy.url + "/ds", Options.from_env(chunk=chunk))
    kept: list[tuple[int, bytes]] = []
    with (store.open_read(name) if buffered else store.stream(name)) as f:
        for _ in range(300):
            pos, op = f.tell(), rng.integers(5)
            if op <= 1:
                n = int(rng.integers(0, 3 * chunk if chunk < 1 << 20 else 20000))
                got = f.read(n)
                assert got == want[pos : pos + n], (pos, n)
                kept.append((pos, got))
            elif op == 2:
                b = bytearray(int(rng.integers(1, 20000)))
                k = f.readinto(b)
                assert bytes(b[:k]) == want[pos : pos + len(b)]
                kept.append((pos, bytes(b[:k])))
            elif op == 3:
                f.seek(int(rng.integers(0, len(want))))
            else:
                f.seek(int(rng.integers(-500, 500)), os.SEEK_CUR) if pos >= 500 else f.seek(pos + 100)
        pos = f.tell()
        assert f.read() == want[pos:]
    assert all(got == want[pos : pos + len(got)] for pos, got in kept)


@pytest.mark.parametrize("mode", ["received into the reader's buffer", "a read-ahead thread"])
def test_a_whole_stream_is_checked_against_its_digest_however_its_bytes_arrive(data, proxy, env, monkeypatch, mode):
    """Reads of mixed sizes (through the stream's own buffer, straight into the caller's, or from the
    thread's buffers) give the shard's bytes, and every byte went into the whole-shard digest: a wrong
    digest is an IntegrityError before the last bytes are handed over."""
    from shardwriter.storage import remote

    _, ds, _ = data
    if mode == "a read-ahead thread":
        env.setenv("AI8X_SHARDS_READAHEAD", "16K")
    else:
        monkeypatch.setattr(remote, "DIRECT_BYTES", 3000)  # small test shards: both paths in one read
    name = shard_names(ds)[2]
    want = (ds / name).read_bytes()
    digest = entry(proxy.url + "/ds", name).xxh3
    store = open_store(proxy.url + "/ds", Options.from_env(chunk=4096))

    def read_all(xxh3: str) -> bytes:
        out = bytearray()
        with store.stream(name, size=len(want), xxh3=xxh3) as f:
            for size in itertools.cycle((10, 5000, 700, 20000, 1)):
                b = bytearray(size)
                n = f.readinto(b)
                if not n:
                    return bytes(out)
                out += b[:n]

    assert read_all(digest) == want
    wrong = f"{int(digest, 16) ^ 1:032x}"
    with pytest.raises(IntegrityError, match=f"XXH3-128 {digest} does not match the manifest's {wrong}"):
        read_all(wrong)


def test_readahead_auto_is_per_backend(data, proxy, env, monkeypatch):
    """auto: no thread over HTTP (the socket buffers ahead; bytes go straight into the reader's buffer),
    a thread for ``pipe:`` (its 64 KiB pipe stops the command while nobody reads); a number forces it."""
    _, ds, _ = data
    assert Options.from_env({"AI8X_SHARDS_READAHEAD": "auto"}).readahead is None and Options().readahead is None
    assert Options.from_env({"AI8X_SHARDS_READAHEAD": "1M"}).readahead == 1 << 20
    with pytest.raises(SettingsError, match="readahead"):
        Options(readahead=-1)
    with pytest.raises(SettingsError, match="AI8X_SHARDS_READAHEAD"):
        Options.from_env({"AI8X_SHARDS_READAHEAD": "soon"})
    name = shard_names(ds)[0]
    env.setenv("AI8X_SHARDS_ALLOW_PIPE", "1")

    started: list[str] = []
    start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda self: (started.append(self.name), start(self))[1])

    def threads_while_reading(location: str) -> int:  # read-ahead threads started (one may end before we look)
        started.clear()
        with open_store(location).stream(name) as f:
            assert f.read(100) == (ds / name).read_bytes()[:100]
        return started.count("ai8x-shards-readahead")

    assert threads_while_reading(proxy.url + "/ds") == 0
    assert threads_while_reading(f"pipe:cat {ds}/{{name}}") == 1
    env.setenv("AI8X_SHARDS_READAHEAD", "1M")
    assert threads_while_reading(proxy.url + "/ds") == 1


def test_seek_and_tell_on_a_remote_stream(data, proxy, env):
    _, ds, _ = data
    env.setenv("AI8X_SHARDS_READAHEAD", "0")
    name = shard_names(ds)[1]
    want = (ds / name).read_bytes()
    with open_store(proxy.url + "/ds").stream(name) as f:
        assert f.seekable() and f.read(100) == want[:100] and f.tell() == 100
        f.seek(50)  # inside the buffer: no request
        assert f.read(10) == want[50:60]
        f.seek(len(want) - 1024)  # forward within a chunk: read on, no new request
        assert f.read() == want[-1024:]
        f.seek(-10, os.SEEK_END)
        assert f.read() == want[-10:]
    env.setenv("AI8X_SHARDS_READAHEAD", "4096")  # a far seek opens a new ranged GET
    proxy.clear_log()
    with open_store(proxy.url + "/ds", Options.from_env(chunk=4096)).stream(name) as f:  # the raw stream, unbuffered
        f.read(10)
        f.seek(40000)
        assert f.read(5000) == want[40000:45000] and f.tell() == 45000
        f.seek(3)
        assert f.read(7) == want[3:10]
    assert [r.range for r in proxy.requests("GET", name)] == ["bytes=0-", "bytes=40000-", "bytes=3-"]


# --------------------------------------------------------------------------- the cache


def test_cache_refuses_a_shard_whose_sha256_differs(data, http, env):
    root, ds, _ = data
    bad = root / "www" / "corrupt"
    shutil.copytree(ds, bad, dirs_exist_ok=True)
    name = shard_names(ds)[2]
    blob = bytearray((bad / name).read_bytes())
    blob[5000] ^= 0x01
    (bad / name).write_bytes(bytes(blob))
    url = http.url + "/corrupt"
    with pytest.raises(IntegrityError, match="sha256") as err:
        cached(url, name)
    assert f"{url}/{name}" in str(err.value)
    cache = Path(os.environ["AI8X_SHARDS_CACHE"])
    assert not list(cache.glob("*.tar")) and not list(cache.glob(".*.tmp"))  # nothing kept
    ds_remote = ShardDataset(url, "train")  # indexes are fine
    ds_remote[0]  # a good shard
    with pytest.raises(IntegrityError, match="sha256"):
        ds_remote[2 * PER_SHARD]


def test_an_index_that_differs_from_the_manifest_is_refused(data, http):
    root, ds, _ = data
    bad = root / "www" / "badidx"
    shutil.copytree(ds, bad, dirs_exist_ok=True)
    idx = fmt.index_name(shard_names(ds)[0])
    blob = bytearray((bad / idx).read_bytes())
    blob[-1] ^= 0x01
    (bad / idx).write_bytes(bytes(blob))
    with pytest.raises(IntegrityError, match=f"{idx}: sha256 does not match the manifest"):
        ShardDataset(http.url + "/badidx", "train")


def test_cache_evicts_least_recently_used_within_the_cap(data, proxy, env):
    _, ds, _ = data
    names = shard_names(ds)
    sizes = [(ds / n).stat().st_size for n in names]
    env.setenv("AI8X_SHARDS_CACHE_BYTES", str(sizes[0] + sizes[1] + sizes[2] // 2))  # room for two shards
    url = proxy.url + "/ds"
    p0 = cached(url, names[0])
    p1 = cached(url, names[1])
    assert cached(url, names[0]) == p0  # a hit: used again, no request
    assert len(proxy.requests("GET", ".tar")) == 2
    p2 = cached(url, names[2])
    assert p0.exists() and p2.exists() and not p1.exists()  # names[1] was the least recently used
    opts = Options.from_env()
    cache = ShardCache(opts.cache_path, opts.cache_bytes)
    assert sum(size for _, size, _ in cache.entries()) <= cache.cap
    assert p2.read_bytes() == (ds / names[2]).read_bytes()
    assert cached(url, names[1]).exists()  # fetched again on demand
    assert len(proxy.requests("GET", ".tar")) == 4 and not p0.exists()


def test_eviction_never_removes_a_shard_a_reader_has_open(data, proxy, env):
    """A cap smaller than one shard: every shard in use stays, the others go."""
    _, ds, _ = data
    names = shard_names(ds)
    env.setenv("AI8X_SHARDS_CACHE_BYTES", "1")
    url = proxy.url + "/ds"
    store = open_store(url)
    held = store.open_random(entry(url, names[0]))  # a reader holds shard 0 open
    try:
        p1 = cached(url, names[1])  # fetched, used, closed
        cached(url, names[2])
        assert not p1.exists()  # closed: evicted under the cap
        assert os.pread(held, 100, 0) == (ds / names[0]).read_bytes()[:100]
        assert Path(os.readlink(f"/proc/self/fd/{held}")).exists()  # still in the cache, never unlinked under the reader
    finally:
        os.close(held)


def test_a_cached_shard_changed_at_the_same_size_is_not_reused(data, http, env):
    _, ds, _ = data
    url = http.url + "/ds"
    name = shard_names(ds)[1]
    path = cached(url, name)
    n_before = len([r for r in http.log if r[1].endswith(name)])
    blob = bytearray(path.read_bytes())
    blob[3000] ^= 0x10
    os.chmod(path, 0o644)
    path.write_bytes(bytes(blob))  # same size, new mtime: no longer known good
    fd = open_store(url).open_random(entry(url, name))
    try:
        assert os.pread(fd, len(blob) + 1, 0) == (ds / name).read_bytes()  # hashed again, fetched again
    finally:
        os.close(fd)
    assert len([r for r in http.log if r[1].endswith(name)]) == n_before + 1
    # Corrupted with its stat restored (bit rot): the cache cannot tell, the per-sample check can.
    st = path.stat()
    blob = bytearray(path.read_bytes())
    row = fmt.decode_index((ds / fmt.index_name(name)).read_bytes(), "i")[3]
    blob[int(row["x_off"]) + 5] ^= 0x01
    os.chmod(path, 0o644)
    path.write_bytes(bytes(blob))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    dataset = ShardDataset(url, "train")
    k = shard_names(ds).index(name) * PER_SHARD + 3
    with pytest.raises(IntegrityError, match=rf"{name} \(cached copy {path}; delete it .*\): sample {k} \(.*checksum mismatch"):
        dataset[k]


def test_two_processes_with_workers_and_a_tiny_cache_read_every_sample(data, http, env, tmp_path):
    """Issue #9: a cap smaller than one shard, two processes x two workers: no file vanishes under a reader."""
    _, _, arrays = data
    env.setenv("AI8X_SHARDS_CACHE_BYTES", "1")
    code = textwrap.dedent("""
        import sys, torch
        from torch.utils.data import DataLoader
        from loaders import ShardDataset
        from loaders.mapstyle import collate
        ds = ShardDataset(sys.argv[1], "train", output="uint8")
        seen = []
        for epoch in range(2):
            for x, y in DataLoader(ds, batch_size=8, shuffle=True, num_workers=2, collate_fn=collate):
                seen += [int(v[0, 0, 0]) * 256 + int(v[0, 0, 1]) for v in x]
        print(sorted(seen) == sorted(list(range(len(ds))) * 2))
    """)
    child_env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", code, http.url + "/ds"], env=child_env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], [o[1][-3000:] for o in outs]
    assert [o[0].strip() for o in outs] == ["True", "True"]


def _flock_waiters(pids: set[int]) -> int:
    """How many of ``pids`` wait on a flock now (from /proc/locks); -1 if it cannot be read."""
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return -1
    found = 0
    for line in lines:
        fields = line.split()
        if "->" in fields and "FLOCK" in fields:
            k = fields.index("->")
            if len(fields) > k + 4 and fields[k + 4].isdigit() and int(fields[k + 4]) in pids:
                found += 1
    return found


def _wait_for(cond, what: str, deadline: float = 120.0) -> None:
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def test_two_processes_download_a_shard_once(data, proxy, env):
    """The first downloader is held by the proxy until the second is seen waiting on the lock."""
    _, ds, _ = data
    name = shard_names(ds)[3]
    env.setenv("AI8X_SHARDS_TIMEOUT", "120")  # the held download must not time out and retry
    proxy.match = lambda method, path: path.endswith(name)
    proxy.set_plan([Fault("hold")])
    code = ("import os, sys; from shardwriter.storage import open_store; s = open_store(sys.argv[1]); "
            "fd = s.open_random(s.read_manifest().entry(sys.argv[2])); print(os.readlink(f'/proc/self/fd/{fd}'))")
    child_env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", code, proxy.url + "/ds", name], env=child_env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        _wait_for(lambda: len(proxy.requests("GET", name)) == 1 or any(p.poll() is not None for p in procs), "the first download")
        pids = {p.pid for p in procs}
        if _flock_waiters(pids) >= 0:
            _wait_for(lambda: _flock_waiters(pids) == 1 or any(p.poll() is not None for p in procs), "the second process to wait")
        proxy.release()
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    paths = {o[0].strip() for o in outs}
    assert len(paths) == 1 and Path(paths.pop()).read_bytes() == (ds / name).read_bytes()
    assert len(proxy.requests("GET", name)) == 1


def test_threads_download_a_shard_once(data, proxy, env):
    _, ds, _ = data
    name = shard_names(ds)[0]
    proxy.match = lambda method, path: path.endswith(name)
    proxy.set_plan([Fault("hold")])
    url = proxy.url + "/ds"
    results: list[Path | BaseException] = []

    def fetch() -> None:
        try:
            results.append(cached(url, name))
        except BaseException as exc:  # reported below
            results.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        _wait_for(lambda: len(proxy.requests("GET", name)) == 1, "the first download")
        if _flock_waiters({os.getpid()}) >= 0:
            _wait_for(lambda: _flock_waiters({os.getpid()}) == 3, "three threads to wait")
    finally:
        proxy.release()
        for t in threads:
            t.join(120)
    assert len(results) == 4 and len({str(r) for r in results}) == 1 and isinstance(results[0], Path)
    assert len(proxy.requests("GET", name)) == 1


# --------------------------------------------------------------------------- upload, verify, pack to a bucket


def test_upload_then_verify_against_s3(data, s3_proxy, tmp_path):
    _, ds, _ = data
    url = f"s3://{BUCKET}/up"
    uploaded = storage.upload_dataset(ds, url)
    names = shard_names(ds) + shard_names(ds, "test")
    assert sorted(uploaded) == sorted([fmt.MANIFEST_NAME] + names + [fmt.index_name(n) for n in names])
    puts = [r.path for r in s3_proxy.requests("PUT")]
    assert puts[-1].endswith("/up/manifest.json") and len(puts) == len(uploaded)  # the manifest last
    assert verify(url) == []
    assert_same_dataset(ds, url, "test")
    assert storage.upload_dataset(ds, url) == []  # all there already: nothing sent again
    # an object altered in the bucket is found by verify, and a re-upload repairs just it
    name = shard_names(ds)[1]
    blob = bytearray((ds / name).read_bytes())
    blob[3000] ^= 0x01
    corrupt = tmp_path / name
    corrupt.write_bytes(bytes(blob))
    open_store(url).upload(name, corrupt, storage.upload.file_sha256(corrupt))
    problems = verify(url)
    assert any(p.startswith(f"{name}: sha256 mismatch") for p in problems), problems
    assert storage.upload_dataset(ds, url) == [name]
    assert verify(url) == []
    assert "train" in info(url)
    local = tmp_path / "local"
    shutil.copytree(ds, local)
    (local / name).write_bytes(bytes(blob))
    with pytest.raises(IntegrityError, match="sha256 differs from its manifest"):
        storage.upload_dataset(local, f"s3://{BUCKET}/up2")  # a corrupt local shard is never published


def test_pack_to_a_bucket_via_staging_and_overwrite_rules(data, s3_env, tmp_path):
    root, ds, _ = data
    env_cache = Path(os.environ["AI8X_SHARDS_CACHE"])
    url = f"s3://{BUCKET}/packed"
    with storage.staged_output(url) as out:
        assert env_cache in out.parents
        pack(NpzSource(root / "src", classes=list(range(5))), out, max_count=PER_SHARD, shuffle=False, quiet=True)
    assert not out.exists()  # uploaded, then removed
    assert verify(url) == []
    assert_same_dataset(ds, url, "train")
    other = tmp_path / "other"
    other.mkdir()
    np.savez(other / "train.npz", x=tagged(10, 9)[0], y=np.zeros(10, np.int64))
    with pytest.raises(StorageError, match="already holds a different dataset"):
        with storage.staged_output(url) as out:
            pack(NpzSource(other, classes=list(range(5))), out, shuffle=False, quiet=True)
    with storage.staged_output(url, overwrite=True) as out:
        pack(NpzSource(other, classes=list(range(5))), out, overwrite=True, shuffle=False, quiet=True)
    m = open_store(url).read_manifest()
    assert sum(s.count for s in m.splits.values()) == 10 and verify(url) == []
    with pytest.raises(MissingError, match="no such object"):  # the old dataset's extra shards are gone
        open_store(url).read_bytes(shard_names(ds)[3])
    # sub-folder datasets (pack aisegment writes one per variant) go to URL/SUB
    two = tmp_path / "two"
    for sub in ("A_80", "A_352"):
        shutil.copytree(ds, two / sub)
    storage.upload_dataset(two, f"s3://{BUCKET}/variants")
    assert verify(f"s3://{BUCKET}/variants/A_352") == []
    with pytest.raises(StorageError, match="read-only"):
        with storage.staged_output("https://example.invalid/ds"):
            pass


def test_gcs_upload_and_verify(data, gcs, env):
    _, ds, _ = data
    for k, v in gcs.env().items():
        env.setenv(k, v)
    assert verify(f"gs://{gcs.bucket}/ds") == []
    assert storage.upload_dataset(ds, f"gs://{gcs.bucket}/ds") == []


# --------------------------------------------------------------------------- pipe:


def test_pipe_is_refused_unless_opted_in_and_never_uses_a_shell(data, env, tmp_path):
    _, ds, _ = data
    loc = f"pipe:cat {ds}/{{name}}"
    with pytest.raises(SettingsError, match="AI8X_SHARDS_ALLOW_PIPE=1"):
        open_store(loc).read_manifest()
    env.setenv("AI8X_SHARDS_ALLOW_PIPE", "1")
    assert open_store(loc).read_manifest().splits["train"].count == N_TRAIN
    assert_same_dataset(ds, loc, "test")
    marker = tmp_path / "marker"
    with pytest.raises(StorageError, match="exited with status"):
        open_store(f"pipe:cat {ds}/{{name}}; touch {marker}").read_manifest()
    with pytest.raises(StorageError, match="exited with status"):
        open_store(f"pipe:cat {ds}/{{name}} $(touch {marker})").read_manifest()
    assert not marker.exists()  # no shell ever saw the ; or $( )
    with pytest.raises(SettingsError, match=r"needs \{name\}"):
        open_store("pipe:cat manifest.json")


def test_permanent_failures_are_not_retried(data, env, tmp_path):
    """A command that exits non-zero runs once; a 403 is asked once; an unknown host fails at once."""
    root, ds, _ = data
    env.setenv("AI8X_SHARDS_ALLOW_PIPE", "1")
    env.setenv("AI8X_SHARDS_RETRIES", "5")
    env.setenv("AI8X_SHARDS_BACKOFF", "5")  # a retry would be seen: it waits
    runs = tmp_path / "runs"
    script = "import sys; open(sys.argv[1], 'a').write('x'); sys.exit(3)"
    with pytest.raises(StorageError, match="exited with status 3"):
        open_store(f"pipe:{sys.executable} -c {shlex.quote(script)} {runs} {{name}}").read_manifest()
    assert runs.read_text() == "x"
    with RangeHTTPServer(root / "www", fail={"manifest.json": 403}) as server:
        with pytest.raises(StorageError, match="HTTP 403"):
            open_store(server.url + "/ds").read_manifest()
        assert len([r for r in server.log if r[1].endswith("manifest.json")]) == 1
    with pytest.raises(StorageError, match="unknown host") as err:
        open_store("http://no-such-host.invalid/ds").read_manifest()
    assert "gave up" not in str(err.value)


def test_http_locations_are_read_only(data):
    _, ds, _ = data
    with pytest.raises(StorageError, match="read-only"):
        storage.upload_dataset(ds, "http://127.0.0.1:9/ds")


# --------------------------------------------------------------------------- a streaming epoch


def test_streaming_epoch_over_http_through_faults_yields_each_sample_once(data, proxy, env):
    streaming = pytest.importorskip("loaders.streaming")
    _, ds, arrays = data
    env.setenv("AI8X_SHARDS_TIMEOUT", "1")
    proxy.set_plan([Fault("reset", after=5000), Fault("503"), Fault("stall", after=20000), Fault("strip_range"),
                    Fault("reset", after=100), Fault("503"), Fault("reset", after=30000)])
    dataset = streaming.StreamingShardDataset(proxy.url + "/ds", "train", shuffle=True, seed=3, output="uint8")
    seen = []
    for x, y in dataset:
        seen.append(number(x))
        assert int(y) == arrays["train"][1][seen[-1]]
    assert sorted(seen) == list(range(N_TRAIN))
    assert not proxy.plan  # every fault was met


def test_cli_packs_to_a_bucket_and_train_py_reads_it_by_url(s3_env, tmp_path, capsys):
    from types import SimpleNamespace

    from ai8x_shards.cli import main as cli
    from loaders.ai8x import datasets
    from shardwriter.synth import synth_aisegment

    raw = synth_aisegment(tmp_path / "raw", images=4, seed=1)
    url = f"s3://{BUCKET}/cli"
    assert cli(["pack", "aisegment", str(raw), url, "--variants", "80", "--quiet"]) == 0
    assert cli(["verify", f"{url}/AISegment_80"]) == 0
    assert cli(["info", f"{url}/AISegment_80"]) == 0
    assert "input     uint8 (3, 80, 80)" in capsys.readouterr().out
    local = tmp_path / "local"
    assert cli(["pack", "aisegment", str(raw), str(local), "--variants", "80", "--quiet"]) == 0
    entry = next(d for d in datasets if d["name"] == "AISegment_80_shards")
    args = SimpleNamespace(act_mode_8bit=True, truncate_testset=False)
    remote_train, remote_test = entry["loader"]((url, args))  # train.py --data s3://BUCKET/cli
    local_train, _ = entry["loader"]((str(local), args))
    assert len(remote_train) == len(local_train) and len(remote_test) >= 0
    for i in range(len(local_train)):
        assert torch.equal(remote_train[i][0], local_train[i][0]) and torch.equal(remote_train[i][1], local_train[i][1])
