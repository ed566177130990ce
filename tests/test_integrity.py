"""Issue #9: no reader ever serves bytes the writer did not write.

Each test damages a real dataset the way the world does (an index copied from another
shard, swapped shards, flipped bits in an index row, a record, a mask; a zeroed shard, a
symlink to /dev/zero, a FIFO, a directory; a member header declaring 8 GiB; manifests
that lie; a server whose bytes change between requests) and checks, for both datasets
with 0 and 2 DataLoader workers, ``verify``, ``info`` and ``reindex``: a named error,
or exactly the written samples. Operations that could block (FIFOs) run in a bounded
thread, so a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import threading
import time
import warnings
from pathlib import Path

import helpers
import numpy as np
import pytest
import torch
from servers import Fault, FaultProxy, RangeHTTPServer
from torch.utils.data import DataLoader

from ai8x_shards.cli import main as cli
from loaders import ShardDataset, StreamingShardDataset
from loaders.index import UnhashedDatasetWarning
from loaders.mapstyle import collate
from shardwriter import format as fmt
from shardwriter import pack
from shardwriter.errors import FormatError, IntegrityError
from shardwriter.options import Options
from shardwriter.sources import NpzSource
from shardwriter.verify import info, reindex, verify

N, PER_SHARD, SHAPE, CLASSES = 120, 20, (3, 8, 8), 5


def number(x: torch.Tensor) -> int:
    flat = x.reshape(-1)
    return int(flat[0]) * 256 + int(flat[1])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A class dataset (6 train shards) whose inputs carry their sample number, and its arrays."""
    root = tmp_path_factory.mktemp("integrity")
    src = root / "src"
    src.mkdir()
    x, y = helpers.tagged(N, 3, SHAPE)
    np.savez(src / "train.npz", x=x, y=y)
    np.savez(src / "test.npz", x=x[:10], y=y[:10])
    pack(NpzSource(src, classes=list(range(CLASSES))), root / "ds", max_count=PER_SHARD, shuffle=False, quiet=True)
    return root / "ds", x, y


@pytest.fixture
def ds(base, tmp_path):
    """A fresh copy of the dataset to damage."""
    shutil.copytree(base[0], tmp_path / "ds")
    return tmp_path / "ds"


def manifest(d: Path) -> fmt.Manifest:
    return fmt.parse_manifest((d / fmt.MANIFEST_NAME).read_bytes(), "m")


def rows(d: Path, shard: str) -> np.ndarray:
    return fmt.decode_index((d / fmt.index_name(shard)).read_bytes(), "i")


def flip(path: Path, at: int, bit: int = 0x01) -> None:
    blob = bytearray(path.read_bytes())
    blob[at] ^= bit
    path.write_bytes(bytes(blob))


def map_epoch(d: Path, workers: int, **kw) -> dict[int, int]:
    """number -> label of every sample the map-style dataset serves through a DataLoader."""
    dataset = ShardDataset(d, "train", output="uint8", **kw)
    out = {}
    for x, y in helpers.drain(DataLoader(dataset, batch_size=16, shuffle=True, num_workers=workers, collate_fn=collate)):
        for xi, yi in zip(x, y):
            out[number(xi)] = int(yi)
    return out


def stream_epoch(d: Path | str, workers: int, **kw) -> dict[int, int]:
    dataset = StreamingShardDataset(d, "train", output="uint8", batch_size=8, seed=1, **kw)
    out = {}
    for x, y in helpers.drain(DataLoader(dataset, batch_size=None, num_workers=workers)):
        for xi, yi in zip(x, y):
            out[number(xi)] = int(yi)
    return out


def expected(base) -> dict[int, int]:
    _, x, y = base
    return {i: int(y[i]) for i in range(N)}


def both_fail(d: Path, match: str, *, kind: type[BaseException] = FormatError) -> None:
    """Both datasets, with 0 and 2 workers, stop with ``kind`` whose message matches ``match``."""
    for epoch in (map_epoch, stream_epoch):
        for workers in (0, 2):
            with pytest.raises(kind, match=match) as err:
                epoch(d, workers)
            err.value.__traceback__ = None  # let DataLoader workers go at once (no reference cycle)


def both_exact(d: Path, base) -> None:
    for epoch in (map_epoch, stream_epoch):
        for workers in (0, 2):
            assert epoch(d, workers) == expected(base), f"{epoch.__name__} with {workers} workers"


def bounded(fn, seconds: float = 60.0):
    """Run ``fn()`` in a daemon thread; its result, or the exception it raised. Fails if it blocks."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn} blocked for {seconds} s"
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("value")


def equal_size_pair(d: Path) -> tuple[str, str]:
    shards = [s for s in manifest(d).split("train").shards]
    by_size: dict[int, list[str]] = {}
    for s in shards:
        by_size.setdefault(s.bytes, []).append(s.file)
    pair = next(v for v in by_size.values() if len(v) >= 2)
    return pair[0], pair[1]


# --------------------------------------------------------------------------- wrong bytes, served silently before


def test_index_copied_from_another_shard(ds, base):
    shutil.copyfile(ds / "train-000001.idx", ds / "train-000000.idx")
    for make in (lambda: ShardDataset(ds, "train"), lambda: StreamingShardDataset(ds, "train")):
        with pytest.raises(IntegrityError, match=r"train-000000\.idx: sha256 does not match the manifest"):
            make()
    assert any("train-000000.idx: does not match the manifest" in p for p in verify(ds))
    assert reindex(ds) == ["train-000000.idx"]  # the shard is sound: its index is rebuilt
    both_exact(ds, base)


def test_two_shards_of_the_same_size_swapped(ds, base):
    a, b = equal_size_pair(ds)
    tmp = ds / "swap"
    os.rename(ds / a, tmp)
    os.rename(ds / b, ds / a)
    os.rename(tmp, ds / b)
    both_fail(ds, rf"({a}|{b}): the member at byte \d+ is '\d+\.msgpack' \(\d+ bytes\), its index says")
    problems = verify(ds)
    assert any(p.startswith(f"{a}: sha256 mismatch") for p in problems)
    assert any(f"{a} sample 0" in p and "samples swapped or from another shard" in p for p in problems)
    before = (ds / fmt.index_name(a)).read_bytes()
    with pytest.raises(FormatError, match=rf"not reindexed.*{a}: sha256 mismatch"):
        reindex(ds)
    assert (ds / fmt.index_name(a)).read_bytes() == before


@pytest.mark.parametrize("field", ["label", "x_off"])
def test_one_flipped_bit_in_an_index_row(ds, base, field):
    shard = "train-000002.tar"
    idx = ds / fmt.index_name(shard)
    row = 3
    at = fmt.INDEX_HEADER + row * fmt.INDEX_DTYPE.itemsize + fmt.INDEX_DTYPE.fields[field][1]
    flip(idx, at)
    for make in (lambda: ShardDataset(ds, "train"), lambda: StreamingShardDataset(ds, "train")):
        with pytest.raises(IntegrityError, match=r"train-000002\.idx: sha256 does not match the manifest"):
            make()
    # Without a manifest to check the index file against (explicit shard paths), the rows and hashes still catch it.
    paths = [str(ds / s.file) for s in manifest(ds).split("train").shards]
    if field == "x_off":
        with pytest.raises(FormatError, match=r"train-000002\.idx: row 3: input bytes are not where the record layout puts them"):
            StreamingShardDataset(shards=paths)
    else:
        with pytest.raises(IntegrityError, match=r"train-000002\.tar: sample 3 of the shard: its input bytes or label differ"):
            list(StreamingShardDataset(shards=paths, shuffle=False, output="uint8"))
    assert any("train-000002.idx" in p for p in verify(ds))
    assert reindex(ds) == ["train-000002.idx"]
    both_exact(ds, base)


def test_a_shard_overwritten_with_zeros_of_the_same_length(ds, base):
    shard = ds / "train-000003.tar"
    before = (ds / "train-000003.idx").read_bytes()
    shard.write_bytes(b"\0" * shard.stat().st_size)
    with pytest.raises(FormatError, match=r"train-000003\.tar at byte 0: tar header checksum mismatch"):
        map_epoch(ds, 0)
    with pytest.raises(FormatError, match=r"train-000003\.tar: end-of-archive marker at byte 0, where sample 0 .* or was zeroed"):
        stream_epoch(ds, 0)
    for workers in (2,):
        with pytest.raises(FormatError, match=r"train-000003\.tar"):
            map_epoch(ds, workers)
        with pytest.raises(FormatError, match=r"train-000003\.tar"):
            stream_epoch(ds, workers)
    assert any(p.startswith("train-000003.tar: sha256 mismatch") for p in verify(ds))
    with pytest.raises(FormatError, match=r"not reindexed"):
        reindex(ds)
    assert (ds / "train-000003.idx").read_bytes() == before  # never replaced by a 0-row index


def test_a_symlink_to_dev_zero_and_a_directory_as_shards(ds):
    (ds / "train-000001.tar").unlink()
    (ds / "train-000001.tar").symlink_to("/dev/zero")
    both_fail(ds, r"train-000001\.tar: is a character device, not a regular shard")
    problems = bounded(lambda: verify(ds))  # never reads the endless device
    assert any("train-000001.tar: missing or unreadable" in p and "character device" in p for p in problems)
    with pytest.raises(FormatError, match="character device"):
        bounded(lambda: reindex(ds))
    (ds / "train-000001.tar").unlink()
    (ds / "train-000001.tar").mkdir()
    both_fail(ds, r"train-000001\.tar: is a directory, not a regular shard")
    assert any("train-000001.tar" in p and "is a directory" in p for p in verify(ds))


def test_a_fifo_as_a_shard_blocks_nothing(ds):
    (ds / "train-000004.tar").unlink()
    os.mkfifo(ds / "train-000004.tar")
    for epoch in (map_epoch, stream_epoch):
        with pytest.raises(FormatError, match=r"train-000004\.tar: is a FIFO, not a regular shard"):
            bounded(lambda epoch=epoch: epoch(ds, 0))
    assert any("is a FIFO" in p for p in bounded(lambda: verify(ds)))
    with pytest.raises(FormatError, match="is a FIFO"):
        bounded(lambda: reindex(ds))
    assert cli(["verify", str(ds)]) == 1


def test_one_flipped_bit_in_a_sample_input(ds, base):
    shard = "train-000004.tar"
    r = rows(ds, shard)[7]
    flip(ds / shard, int(r["x_off"]) + 11)
    k = 4 * PER_SHARD + 7
    both_fail(ds, rf"{shard}: sample {k}\b.*its input bytes or label differ from what the writer wrote \(checksum mismatch\)",
              kind=IntegrityError)
    # the opt-out is explicit and does what it says: the damaged bytes are served
    unchecked = ShardDataset(ds, "train", output="uint8", options=Options(verify_samples=False))
    got, want = unchecked[k][0].numpy().reshape(-1), base[1][k].reshape(-1)
    assert np.flatnonzero(got != want).tolist() == [11]
    assert any(p.startswith(f"{shard}: sha256 mismatch") for p in verify(ds))


def test_a_flipped_bit_outside_the_sample_bytes_still_serves_exactly_the_written_samples(ds, base):
    """Record metadata (the source name) is damaged, the input and label are not: both readers are right, verify says."""
    shard = "train-000001.tar"
    r = rows(ds, shard)[2]
    flip(ds / shard, int(r["offset"]) + int(r["size"]) - 2)  # inside the trailing src string
    both_exact(ds, base)
    assert any(p.startswith(f"{shard}: sha256 mismatch") for p in verify(ds))


def test_one_flipped_bit_in_a_mask(tmp_path):
    rng = np.random.default_rng(2)
    x, _ = helpers.tagged(30, 4, SHAPE)
    masks = rng.integers(0, 3, (30, 8, 8)).astype(np.uint8)
    np.savez(tmp_path / "m.npz", x=x, y=masks)
    pack(NpzSource(tmp_path / "m.npz", test_fraction=0.0, layout="chw"), tmp_path / "m", max_count=10, shuffle=False, quiet=True)
    r = rows(tmp_path / "m", "train-000001.tar")[4]
    flip(tmp_path / "m" / "train-000001.tar", int(r["y_off"]) + 9)
    ms = ShardDataset(tmp_path / "m", "train")
    with pytest.raises(IntegrityError, match=r"train-000001\.tar: sample 14 .*its target bytes differ"):
        ms[14]
    assert torch.equal(ms[13][1], torch.from_numpy(masks[13].astype(np.int64)))
    with pytest.raises(IntegrityError, match=r"train-000001\.tar: sample 14: its target bytes differ"):
        list(StreamingShardDataset(tmp_path / "m", "train", shuffle=False))


# --------------------------------------------------------------------------- crashes and hangs before


def _fix_checksum(block: bytearray) -> None:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)


def test_a_member_header_declaring_eight_gibibytes(ds, base):
    shard = ds / "train-000002.tar"
    r = rows(ds, shard.name)[5]
    pos = int(r["offset"]) - fmt.BLOCK
    blob = bytearray(shard.read_bytes())
    header = bytearray(blob[pos : pos + fmt.BLOCK])
    header[124:136] = b"%011o\0" % (8**11 - 1)
    _fix_checksum(header)
    blob[pos : pos + fmt.BLOCK] = header
    shard.write_bytes(bytes(blob))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    problems = verify(ds)
    assert any(f"member '000000045.msgpack' at byte {pos} declares 8589934591 bytes" in p for p in problems), problems
    with pytest.raises(FormatError, match="declares 8589934591 bytes"):
        reindex(ds)
    with pytest.raises(FormatError, match=rf"train-000002\.tar: the member at byte {pos} is '000000045.msgpack' \(8589934591 bytes\)"):
        list(StreamingShardDataset(ds, "train", shuffle=False))
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 < 256 << 20  # nothing near 8 GiB allocated
    assert map_epoch(ds, 0) == expected(base)  # map-style reads the sample bytes, which are intact


def test_manifests_that_lie_about_counts(ds):
    m = json.loads((ds / fmt.MANIFEST_NAME).read_text())
    m["splits"]["train"]["count"] = 10**12
    (ds / fmt.MANIFEST_NAME).write_text(json.dumps(m))
    for make in (lambda: ShardDataset(ds, "train"), lambda: StreamingShardDataset(ds, "train")):
        with pytest.raises(FormatError, match=r"manifest\.json: field splits\.train\.count is 1000000000000; it must lie in"):
            make()
    # A consistent lie (counts, shard and index sizes all inflated together) meets the real files at once.
    m["splits"]["train"]["count"] = 10**8 + N - PER_SHARD
    s0 = m["splits"]["train"]["shards"][0]
    s0["count"] = 10**8
    s0["bytes"] = 10**8 * 1024 + 1024
    s0["index"]["bytes"] = fmt.index_size(10**8, 2)
    hist = m["splits"]["train"]["class_histogram"]
    hist[0] += 10**8 - PER_SHARD
    m["splits"]["train"]["class_weights"] = fmt.class_weights(hist)
    (ds / fmt.MANIFEST_NAME).write_text(json.dumps(m))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for make in (lambda: ShardDataset(ds, "train"), lambda: StreamingShardDataset(ds, "train")):
        with pytest.raises(FormatError, match=r"train-000000\.idx: \d+ bytes, the manifest says 7200000016"):
            make()
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 < 256 << 20
    assert cli(["info", str(ds)]) == 0  # info reads the manifest only; verify reads the files
    assert any("train-000000.tar" in p for p in verify(ds))


def test_schema_invalid_manifests_are_one_line_naming_file_and_field(ds, capsys):
    m = json.loads((ds / fmt.MANIFEST_NAME).read_text())
    for change, field in ((("format_version", True), "format_version"), (("format_version", 0), "format version 0"),
                          (("classes", "abc"), "classes"), (("target", []), "target"), (("splits", {"train": 3}), "splits.train")):
        bad = dict(m)
        bad[change[0]] = change[1]
        (ds / fmt.MANIFEST_NAME).write_text(json.dumps(bad))
        for command in ("info", "verify", "reindex"):
            code = cli([command, str(ds)])
            cap = capsys.readouterr()
            err = cap.err
            assert code == (1 if command == "verify" else 3), (command, change)
            text = err + cap.out
            lines = [ln for ln in (err.strip() or text.strip()).splitlines() if ln]
            assert "Traceback" not in text and field in text and "manifest.json" in text
            assert len(lines) == 1 or command == "verify"
        with pytest.raises(FormatError, match=f"manifest.json: .*{field}"):
            ShardDataset(ds, "train")


def test_reindex_refuses_a_shard_with_a_label_out_of_range_even_when_its_sha256_is_updated(ds):
    """A record re-encoded with label 50 (5 classes), and the manifest's sha256 edited to match: still refused."""
    shard = ds / "train-000001.tar"
    r = rows(ds, shard.name)[0]
    blob = bytearray(shard.read_bytes())
    payload = bytes(blob[int(r["offset"]) : int(r["offset"]) + int(r["size"])])
    rec = fmt.decode_record(payload)
    new = fmt.encode_record(rec.key, rec.x, "class", 50, rec.source).payload
    assert len(new) == len(payload)
    blob[int(r["offset"]) : int(r["offset"]) + int(r["size"])] = new
    shard.write_bytes(bytes(blob))
    m = json.loads((ds / fmt.MANIFEST_NAME).read_text())
    m["splits"]["train"]["shards"][1]["sha256"] = hashlib.sha256(bytes(blob)).hexdigest()
    (ds / fmt.MANIFEST_NAME).write_text(json.dumps(m))
    before = (ds / "train-000001.idx").read_bytes()
    assert any("label 50 out of range: 5 classes" in p for p in verify(ds))
    with pytest.raises(FormatError, match="label 50 out of range: 5 classes"):
        reindex(ds)
    assert cli(["reindex", str(ds)]) == 3
    assert (ds / "train-000001.idx").read_bytes() == before


# --------------------------------------------------------------------------- streaming over a server that lies


def _streaming_reader(url: str, box: dict) -> threading.Thread:
    def run() -> None:
        try:
            box["out"] = [(number(x), int(y)) for x, y in StreamingShardDataset(url, "train", shuffle=False, output="uint8")]
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("readahead", ["0", "16K"], ids=["received into the reader's buffer", "a read-ahead thread"])
@pytest.mark.parametrize("where", ["sample", "padding", "padding, sha256 only"])
def test_http_bytes_that_change_between_requests_without_etag(base, tmp_path, monkeypatch, where, readahead):
    """The server sends no ETag or Last-Modified; the shard changes (same size) while the reader retries."""
    for k in ("AI8X_SHARDS_BACKOFF", "AI8X_SHARDS_BACKOFF_MAX"):
        monkeypatch.setenv(k, "0.01")
    monkeypatch.setenv("AI8X_SHARDS_READAHEAD", readahead)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    (tmp_path / "www").mkdir()
    d = tmp_path / "www" / "ds"
    shutil.copytree(base[0], d)
    if where.endswith("sha256 only"):  # a manifest without the XXH3-128 digests: the sha256 is checked instead
        m = json.loads((d / fmt.MANIFEST_NAME).read_text())
        for s in m["splits"]["train"]["shards"]:
            s.pop("xxh3")
        (d / fmt.MANIFEST_NAME).write_text(json.dumps(m))
    r = rows(d, "train-000000.tar")
    with RangeHTTPServer(tmp_path / "www", validators=False) as http, FaultProxy(http.port) as proxy:
        proxy.match = lambda method, path: path.endswith("train-000000.tar")
        proxy.set_plan([Fault("reset", after=int(r["offset"][3])), Fault("hold")])
        box: dict = {}
        t = _streaming_reader(proxy.url + "/ds", box)
        deadline = time.monotonic() + 60
        while len(proxy.requests("GET", "train-000000.tar")) < 2 and t.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        at = int(r["x_off"][12]) + 3 if where == "sample" else int(r["offset"][12]) + int(r["size"][12])  # padding after a record
        flip(d / "train-000000.tar", at)
        proxy.release()
        t.join(60)
    assert not t.is_alive()
    err = box.get("error")
    assert isinstance(err, IntegrityError), box
    whole = "train-000000.tar: " + ("sha256" if where.endswith("sha256 only") else "XXH3-128")  # the whole-shard digest, checked before the shard's last bytes are handed over
    if where == "sample":  # the sample's own check, or the whole-shard digest if the last bytes arrive first
        assert "train-000000.tar: sample 12: its input bytes or label differ" in str(err) or whole in str(err)
    else:  # no sample's bytes changed: the whole-shard digest catches it
        assert whole in str(err) and "does not match the manifest" in str(err)


# --------------------------------------------------------------------------- format 1 datasets


def to_v1(d: Path) -> None:
    """Rewrite a format-2 dataset in the format-1 layout, by hand (56-byte rows, no hashes)."""
    m = json.loads((d / fmt.MANIFEST_NAME).read_text())
    for split in m["splits"].values():
        for s in split["shards"]:
            rows2 = fmt.decode_index((d / s["index"]["file"]).read_bytes(), "i")
            v1 = np.zeros(len(rows2), [(n, "<u8") for n in ("offset", "size", "x_off", "x_len", "y_off", "y_len")] + [("label", "<i8")])
            for name in v1.dtype.names:
                v1[name] = rows2[name]
            buf = b"A8XIDX\x00\x01" + np.uint64(len(v1)).astype("<u8").tobytes() + v1.tobytes()
            (d / s["index"]["file"]).write_bytes(buf)
            s["index"]["bytes"], s["index"]["sha256"] = len(buf), hashlib.sha256(buf).hexdigest()
    m["format_version"] = 1
    m.pop("sample_hash")
    (d / fmt.MANIFEST_NAME).write_text(json.dumps(m))


def test_a_format_1_dataset_is_read_with_one_warning_and_upgraded_by_reindex(ds, base):
    to_v1(ds)
    with pytest.warns(UnhashedDatasetWarning, match=r"format-1 dataset.*ai8x-shards reindex") as caught:
        ShardDataset(ds, "train")
        ShardDataset(ds, "train")
        StreamingShardDataset(ds, "train")
    assert len(caught) == 1  # one warning per dataset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnhashedDatasetWarning)
        both_exact(ds, base)
    assert verify(ds) == []
    assert "no per-sample checksums" in info(ds) and "reindex" in info(ds)
    written = reindex(ds)
    assert fmt.MANIFEST_NAME in written and "train-000000.idx" in written
    m = manifest(ds)
    assert m.version == 2 and m.hashed
    assert verify(ds) == []
    assert (ds / "train-000000.idx").read_bytes() == (base[0] / "train-000000.idx").read_bytes()  # exactly the writer's index
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnhashedDatasetWarning)
        both_exact(ds, base)


def _epochs_with_damage_between(d: Path, damage, workers: int) -> None:
    """Two epochs of one DataLoader (persistent workers: shards stay mapped); ``damage()`` between."""
    dataset = ShardDataset(d, "train", output="uint8")
    loader = DataLoader(dataset, batch_size=16, shuffle=True, num_workers=workers, collate_fn=collate,
                        persistent_workers=workers > 0)
    before = set(threading.enumerate())
    try:
        first = {number(xi): int(yi) for x, y in loader for xi, yi in zip(x, y)}  # workers stay: no drain yet
        assert len(first) == N
        damage()
        for _ in loader:
            pass
    finally:
        if loader._iterator is not None:
            loader._iterator._shutdown_workers()
        for t in set(threading.enumerate()) - before:
            if t.name == "QueueFeederThread":
                t.join(timeout=10)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_mapped_shard_zeroed_in_place_under_a_running_loader_is_caught(ds, workers):
    """Truncated and grown back to its size (a copy tool rewriting it in place): the mapping reads zeros."""
    path = ds / "train-000002.tar"
    size = path.stat().st_size

    def rewrite():
        os.truncate(path, 0)
        os.truncate(path, size)

    with pytest.raises((IntegrityError, FormatError), match=r"train-000002\.tar"):
        _epochs_with_damage_between(ds, rewrite, workers)


def test_a_mapped_shard_truncated_under_a_running_loader_kills_the_worker_loudly(ds):
    """The documented caveat (README, Troubleshooting): SIGBUS in the worker, reported by DataLoader; never data.

    A worker that dies while the main process takes a finished batch's tensors from it (their file
    descriptors come over a socket from the worker) surfaces as multiprocessing's ``EOFError`` instead.
    """
    path = ds / "train-000002.tar"
    with pytest.raises((RuntimeError, EOFError)) as err:
        _epochs_with_damage_between(ds, lambda: os.truncate(path, path.stat().st_size // 2), 2)
    if err.type is RuntimeError:
        assert re.search(r"DataLoader worker .*(killed by signal: Bus error|exited unexpectedly)", str(err.value)), err.value
