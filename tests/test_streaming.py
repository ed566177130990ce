"""StreamingShardDataset on real shards, real DataLoader workers and real gloo ranks."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import msgpack
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp_mp
import webdataset as wds
from helpers import batches, flat, make_dataset, numbers
from torch.utils.data import DataLoader

from loaders.streaming import StreamingShardDataset, normalize_batch
from loaders.transforms import normalize, reference_normalize
from shardwriter import format as fmt

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- helpers


def shard_rows(ds_dir: Path, shard: str) -> np.ndarray:
    return fmt.decode_index((ds_dir / fmt.index_name(shard)).read_bytes(), shard)


@pytest.fixture(scope="module")
def even(tmp_path_factory) -> Path:
    """48 samples in shards of 5 (the last holds 3): divides by 2 ranks and batches of 4."""
    return make_dataset(tmp_path_factory.mktemp("even"), 48)


@pytest.fixture(scope="module")
def odd(tmp_path_factory) -> Path:
    """37 samples in shards of 5: divides by neither 2 ranks nor batches of 4."""
    return make_dataset(tmp_path_factory.mktemp("odd"), 37)


# --------------------------------------------------------------------------- ranks x workers


def _rank_main(rank: int, world: int, init: str, out: str, configs: list[dict]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        results = []
        for cfg in configs:
            ds = StreamingShardDataset(cfg["location"], seed=5, shuffle_buffer=6, batch_size=4, drop_last=cfg["drop_last"])
            ds.set_epoch(1)
            # spawn: workers get a pickled copy and no process group, so the rank must travel with it
            loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context=cfg["context"])
            results.append({"len": len(ds), "loader_len": len(loader), "batches": batches(loader)})
        Path(out, f"rank{rank}.json").write_text(json.dumps(results))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_ranks_two_workers_read_each_sample_once_with_equal_batch_counts(even, odd, tmp_path):
    configs = [
        {"location": str(even), "drop_last": False, "context": "spawn"},
        {"location": str(odd), "drop_last": False, "context": None},
        {"location": str(odd), "drop_last": True, "context": None},
    ]
    init = f"file://{tmp_path / 'rendezvous'}"
    tmp_mp.spawn(_rank_main, args=(2, init, str(tmp_path), configs), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))

    # 48 samples, 2 ranks, 2 workers each: every sample exactly once, 6 batches of 4 per rank.
    a, b = r0[0], r1[0]
    assert len(a["batches"]) == len(b["batches"]) == a["len"] == a["loader_len"] == 6
    assert sorted(flat(a["batches"]) + flat(b["batches"])) == list(range(48))
    # The ranks read different (contiguous) parts of the epoch, not a stride of one stream.
    assert set(flat(a["batches"])).isdisjoint(flat(b["batches"]))

    # 37 samples, pad policy: 19 per rank (one sample repeated), batches 4,4,4,4,3 on both.
    a, b = r0[1], r1[1]
    assert [len(x) for x in a["batches"]] == [len(x) for x in b["batches"]] == [4, 4, 4, 4, 3]
    assert a["len"] == b["len"] == 5
    both = flat(a["batches"]) + flat(b["batches"])
    assert set(both) == set(range(37)) and len(both) == 38

    # 37 samples, drop_last: 18 per rank, short batch dropped: 4 batches of 4 each, no repeats.
    a, b = r0[2], r1[2]
    assert [len(x) for x in a["batches"]] == [len(x) for x in b["batches"]] == [4, 4, 4, 4]
    assert a["len"] == b["len"] == 4
    both = flat(a["batches"]) + flat(b["batches"])
    assert len(set(both)) == len(both) == 32


# --------------------------------------------------------------------------- order


def test_order_repeats_for_seed_and_epoch_differs_between_epochs_and_ignores_worker_count(even):
    def epoch(epoch: int, seed: int = 1, workers: int = 0, context: str | None = None) -> list[int]:
        ds = StreamingShardDataset(even, seed=seed, shuffle_buffer=8, batch_size=4)
        ds.set_epoch(epoch)
        return flat(batches(DataLoader(ds, batch_size=None, num_workers=workers, multiprocessing_context=context)))

    e0, e1 = epoch(0), epoch(1)
    assert sorted(e0) == sorted(e1) == list(range(48))
    assert e0 == epoch(0) and e1 == epoch(1)  # same seed and epoch: same order
    assert e0 != e1 and e0 != epoch(0, seed=2)  # another epoch or seed: another order
    assert e0 != list(range(48))  # and it is shuffled at all
    # The rank sequence does not depend on the number of workers, and the dataset
    # pickles for spawned workers (no open files, nothing process-bound).
    assert epoch(1, workers=2, context="spawn") == e1
    unshuffled = StreamingShardDataset(even, shuffle=False)
    assert flat(batches(unshuffled)) == list(range(48))


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("batching", ["dataset", "loader"])
def test_resume_after_k_batches_yields_exactly_the_rest(even, workers, batching):
    def make() -> tuple[StreamingShardDataset, DataLoader]:
        if batching == "dataset":
            ds = StreamingShardDataset(even, seed=7, shuffle_buffer=10, batch_size=4)
            return ds, DataLoader(ds, batch_size=None, num_workers=workers)
        ds = StreamingShardDataset(even, seed=7, shuffle_buffer=10, loader_batch_size=4)
        return ds, DataLoader(ds, batch_size=4, num_workers=workers)

    ds, loader = make()
    ds.set_epoch(3)
    full = batches(loader)
    assert sorted(flat(full)) == list(range(48))

    ds, loader = make()
    ds.set_epoch(3)
    first, seen = [], 0
    for x, y in loader:
        first += batches([(x, y)])
        seen += len(y)
        if len(first) == 5:
            break
    state = ds.state_dict(seen)
    assert state["epoch"] == 3 and state["consumed"] == 20

    ds, loader = make()
    ds.load_state_dict(state)
    ds.set_epoch(3)  # the usual loop calls set_epoch again: the resume point survives
    second, seen = [], 0
    for x, y in loader:
        second += batches([(x, y)])
        seen += len(y)
        if len(second) == 3:
            break
    state = ds.state_dict(seen)  # counted from the start of the epoch
    assert state["consumed"] == 32

    ds, loader = make()
    ds.load_state_dict(json.loads(json.dumps(state)))
    rest = batches(loader)
    assert first + second + rest == full  # the same batches, in the same order
    done = flat(first + second + rest)
    assert len(done) == len(set(done)) == 48

    ds.set_epoch(4)  # another epoch forgets the resume point
    assert len(flat(batches(loader))) == 48


def test_resume_with_another_worker_count_and_refuses_another_world(even):
    ds = StreamingShardDataset(even, seed=1, batch_size=4, rank=1, world_size=2)
    ds.set_epoch(2)
    full = flat(batches(DataLoader(ds, batch_size=None, num_workers=2)))
    ds.load_state_dict({"epoch": 2, "consumed": 8})
    assert flat(batches(ds)) == full[8:]  # saved under 2 workers, resumed with none
    with pytest.raises(ValueError, match="world_size"):
        StreamingShardDataset(even, seed=1, rank=0, world_size=3).load_state_dict(ds.state_dict())
    with pytest.raises(ValueError, match="seed"):
        StreamingShardDataset(even, seed=2, rank=1, world_size=2).load_state_dict(ds.state_dict())


# --------------------------------------------------------------------------- corrupt input


def test_corrupt_header_raises_naming_shard_and_offset(tmp_path):
    ds_dir = make_dataset(tmp_path, 12)
    header = int(shard_rows(ds_dir, "train-000001.tar")["offset"][2]) - fmt.BLOCK
    path = ds_dir / "train-000001.tar"
    raw = bytearray(path.read_bytes())
    raw[header : header + 3] = b"zzz"  # a flipped member name: the checksum no longer matches
    path.write_bytes(bytes(raw))
    want = re.escape(f"{path} at byte {header}: tar header checksum mismatch")
    with pytest.raises(fmt.FormatError, match=want):
        list(StreamingShardDataset(ds_dir, shuffle=False))
    from_workers = iter(DataLoader(StreamingShardDataset(ds_dir, seed=3, batch_size=2), batch_size=None, num_workers=2))
    with pytest.raises(fmt.FormatError, match=want) as caught:  # also from a DataLoader worker
        list(from_workers)
    # torch's re-raise leaves the exception in a reference cycle with the iterator; a cycle
    # collected later shuts the workers down the slow way (5 s), so break it and stop them now.
    caught.value.__traceback__ = None
    del caught, from_workers


def test_truncated_shards_raise_naming_shard_and_offset(tmp_path):
    ds_dir = make_dataset(tmp_path, 12)
    rows = shard_rows(ds_dir, "train-000000.tar")
    path = ds_dir / "train-000000.tar"
    whole = path.read_bytes()
    cut = int(rows["offset"][3]) + 10  # inside the payload of sample 3
    path.write_bytes(whole[:cut])
    with pytest.raises(fmt.FormatError, match=re.escape(f"{path}: {cut} bytes, the manifest says {len(whole)} (truncated")):
        list(StreamingShardDataset(ds_dir, shuffle=False))  # refused at open: a regular file of the manifest's size
    # Without a manifest or index (explicit shard paths), the scan names the cut.
    (ds_dir / "train-000000.idx").unlink()
    with pytest.raises(fmt.FormatError, match=re.escape(f"{path}: member '000000003.msgpack' at byte {cut - 10 - fmt.BLOCK} declares")):
        StreamingShardDataset(shards=[str(path)], shuffle=False)
    # Cut exactly after the last sample: no end-of-archive marker (webdataset ends silently here).
    end = int(rows["offset"][-1] + rows["size"][-1])
    end += -end % fmt.BLOCK
    path.write_bytes(whole[:end])
    with pytest.raises(fmt.FormatError, match=re.escape(f"{path}: ends at byte {end} without the end-of-archive marker")):
        StreamingShardDataset(shards=[str(path)], shuffle=False)
    # With the index beside it, the index no longer fits the shard.
    (ds_dir / "train-000000.idx").write_bytes(fmt.encode_index(rows))
    with pytest.raises(fmt.FormatError, match=r"train-000000.idx: row 4: the last record does not end where"):
        StreamingShardDataset(shards=[str(path)], shuffle=False)


def test_shard_holding_another_count_than_manifest_and_index_raises(tmp_path):
    ds_dir = make_dataset(tmp_path, 12)
    manifest = json.loads((ds_dir / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0]["count"] = 4  # the index lists 5
    manifest["splits"]["train"]["count"] = 11
    (ds_dir / "manifest.json").write_bytes(fmt.dump_manifest(manifest))
    with pytest.raises(fmt.FormatError, match=r"manifest.json: field splits.train.shards\[0\].index.bytes is \d+; a format-2 index of 4 rows"):
        StreamingShardDataset(ds_dir, shuffle=False)
    # A shard with one member more than its index (and the manifest) lists.
    ds_dir = make_dataset(tmp_path / "extra", 12)
    path = ds_dir / "train-000002.tar"
    whole = path.read_bytes()
    body = whole[: -len(fmt.TAR_END)]
    extra = fmt.encode_record("000000099", np.zeros((1, 4, 4), np.uint8), "class", 1)
    path.write_bytes(body + fmt.member_bytes("000000099.msgpack", extra.payload) + fmt.TAR_END)
    with pytest.raises(fmt.FormatError, match=re.escape(f"{path}: {path.stat().st_size} bytes, the manifest says {len(whole)}")):
        list(StreamingShardDataset(ds_dir, shuffle=False))
    with pytest.raises(fmt.FormatError, match="train-000002.idx: row 1: the last record does not end where"):
        StreamingShardDataset(shards=[str(path)], shuffle=False)


# --------------------------------------------------------------------------- length


@pytest.mark.parametrize("batch_size", [None, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_len_matches_what_each_rank_yields(odd, batch_size, drop_last):
    seen = []
    for rank in range(3):
        ds = StreamingShardDataset(odd, seed=4, shuffle_buffer=5, batch_size=batch_size, drop_last=drop_last, rank=rank, world_size=3)
        ds.set_epoch(1)
        got = batches(ds)
        assert len(got) == len(ds)
        seen.append(flat(got))
    per_rank = 12 if drop_last else 13  # 37 samples over 3 ranks (12 is also whole batches of 4)
    assert [len(s) for s in seen] == [per_rank] * 3
    everything = flat(seen)
    if drop_last:
        assert len(set(everything)) == len(everything) == 36
    else:
        assert set(everything) == set(range(37)) and len(everything) == 39


def test_len_follows_explicit_rank_args_then_environment(even, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "5")
    assert len(StreamingShardDataset(even)) == 10  # ceil(48 / 5) from the environment
    assert len(StreamingShardDataset(even, rank=0, world_size=2, batch_size=5)) == 5  # explicit args win
    monkeypatch.delenv("RANK")
    assert len(StreamingShardDataset(even)) == 48


# --------------------------------------------------------------------------- memory


RSS_SCRIPT = textwrap.dedent(
    """
    import json, re, sys
    import psutil, torch
    torch.set_num_threads(1)
    from loaders.streaming import StreamingShardDataset

    def peak():  # this process's peak RSS; ru_maxrss would include the parent's from before exec
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

    batches = iter(StreamingShardDataset(sys.argv[1], seed=1, shuffle_buffer=64, batch_size=16))
    n = len(next(batches)[1])  # warm up: torch's first allocations are not the dataset's
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak to the current RSS
    before = psutil.Process().memory_info().rss
    n += sum(len(y) for _, y in batches)
    print(json.dumps({"n": n, "growth": peak() - before}))
    """
)


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc to measure peak RSS")
def test_peak_memory_stays_flat_when_the_dataset_grows_tenfold(tmp_path):
    def growth(n: int) -> int:
        ds_dir = make_dataset(tmp_path / str(n), n, shape=(4, 64, 64), max_count=100)  # 16 KiB per sample
        out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(ds_dir)], capture_output=True, text=True, check=True, cwd=ROOT)
        result = json.loads(out.stdout)
        assert result["n"] == n
        return result["growth"]

    small, large = growth(400), growth(4000)  # 6.4 MB and 64 MB of samples
    assert large < 2 * max(small, 0) + 16 * 2**20, (small, large)


# --------------------------------------------------------------------------- bytes


def test_samples_are_bit_identical_to_webdataset_decoding(tmp_path):
    ds_dir = make_dataset(tmp_path, 9, shape=(3, 6, 6), target="mask")
    args = SimpleNamespace(act_mode_8bit=False)
    ds = StreamingShardDataset(ds_dir, shuffle=False, act_mode_8bit=args)
    for act in (False, True):
        args.act_mode_8bit = act  # read when an iteration starts
        ours = list(ds)
        theirs = list(wds.WebDataset(str(ds_dir / "train-{000000..000001}.tar"), shardshuffle=False, empty_check=False))
        assert [s["__key__"] for s in theirs] == [fmt.sample_key(i) for i in range(9)]
        for (x, y), sample in zip(ours, theirs, strict=True):
            rec = msgpack.unpackb(sample["msgpack"], raw=False)
            raw = torch.from_numpy(np.frombuffer(rec["x"], np.uint8).reshape(rec["xs"]).copy())
            want = reference_normalize(raw, act)
            assert x.dtype == torch.float32 and x.shape == (3, 6, 6)
            assert torch.equal(x, want) and x.numpy().tobytes() == normalize(raw, act).numpy().tobytes()
            mask = np.frombuffer(rec["y"], np.uint8).reshape(rec["ys"])
            assert y.dtype == torch.int64 and np.array_equal(y.numpy(), mask)


def test_uint8_batches_normalize_on_the_device_like_float_batches(even):
    args = SimpleNamespace(act_mode_8bit=True)
    floats = list(StreamingShardDataset(even, seed=2, batch_size=8, act_mode_8bit=args))
    raws = list(StreamingShardDataset(even, seed=2, batch_size=8, output="uint8"))
    assert len(floats) == len(raws) == 6
    for (xf, yf), (xu, yu) in zip(floats, raws):
        assert xu.dtype == torch.uint8 and xu.shape == (8, 1, 4, 4) and torch.equal(yf, yu)
        assert torch.equal(normalize_batch(xu, args, device="cpu"), xf)
        assert torch.equal(normalize_batch(xu), (xu.float() - 128) / 128)
    single = next(iter(StreamingShardDataset(even, shuffle=False, output="uint8")))
    assert single[0].dtype == torch.uint8 and single[0].shape == (1, 4, 4) and single[1].ndim == 0


def test_regression_targets_and_empty_splits(tmp_path, even):
    ds_dir = make_dataset(tmp_path, 11, target="regression")
    for x, y in StreamingShardDataset(ds_dir, shuffle=False):
        n = numbers(x)[0]
        assert y.dtype == torch.float32 and y.tolist() == [n / 2, -n]
    for x, y in StreamingShardDataset(ds_dir, batch_size=4):
        assert y.dtype == torch.float32 and y.shape == (len(x), 2) and y[:, 0].mul(2).tolist() == numbers(x)
    empty = StreamingShardDataset(even, "test", batch_size=4)  # packed with test_fraction=0
    assert len(empty) == 0 and list(empty) == []


# --------------------------------------------------------------------------- explicit shard paths


def test_explicit_shard_paths_with_and_without_index_files(even, tmp_path):
    want = flat(batches(StreamingShardDataset(even, seed=9, batch_size=4)))
    pattern = str(even / "train-{000000..000009}.tar")
    assert flat(batches(StreamingShardDataset(shards=pattern, seed=9, batch_size=4))) == want
    bare = tmp_path / "bare"
    bare.mkdir()
    for p in sorted(even.glob("train-*.tar")):
        (bare / p.name).write_bytes(p.read_bytes())  # no .idx beside them: the constructor scans
    ds = StreamingShardDataset(shards=sorted(bare.glob("*.tar")), seed=9, batch_size=4)
    assert ds.num_samples == 48 and len(pickle.loads(pickle.dumps(ds))) == 12
    assert flat(batches(DataLoader(ds, batch_size=None, num_workers=2))) == want
    with pytest.raises(ValueError, match="either"):
        StreamingShardDataset(even, shards=pattern)
    assert os.path.exists(even / "train-000000.idx")


@pytest.mark.parametrize("act_mode_8bit", [False, True])
def test_worker_batches_travel_as_uint8_and_arrive_bit_exact(tmp_path, act_mode_8bit):
    ds_dir = make_dataset(tmp_path, 30, shape=(3, 6, 6), target="mask", max_count=4)
    src = np.load(tmp_path / "src.npz")

    def epoch(workers: int) -> tuple[torch.Tensor, torch.Tensor]:
        ds = StreamingShardDataset(ds_dir, seed=2, batch_size=4, act_mode_8bit=act_mode_8bit)
        got = list(DataLoader(ds, batch_size=None, num_workers=workers))
        return torch.cat([x for x, _ in got]), torch.cat([y for _, y in got])

    x0, y0 = epoch(0)
    x2, y2 = epoch(2)
    assert x2.dtype == torch.float32 and y2.dtype == torch.int64
    assert torch.equal(x2, x0) and torch.equal(y2, y0)  # same order, same bits, with or without workers
    order = numbers(x0) if not act_mode_8bit else [int(v) for v in ((x0[:, 0, 0, 0] + 128) + (x0[:, 0, 0, 1] + 128) * 256)]
    assert torch.equal(x0, reference_normalize(torch.from_numpy(src["x"][order]), act_mode_8bit))
    assert torch.equal(y0, torch.from_numpy(src["y"][order].astype(np.int64)))


# --------------------------------------------------------------------------- the reader's runs


def _counting_refs(ds: StreamingShardDataset, reads: list[int]) -> list:
    """The dataset's shard refs, with every read of the opened files counted."""
    from loaders.reader import ShardRef

    def counted(opener):
        def open_():
            f = opener()
            real = f.read

            def read(*a):
                reads.append(1)
                return real(*a)

            f.read = read
            return f
        return open_

    return [ShardRef(r.name, r.count, r.first, counted(r.open)) for r in ds._refs()]


@pytest.mark.parametrize("coalesce", [True, False])
def test_a_workers_interleaved_share_is_read_in_few_blocks_and_is_exactly_its_samples(tmp_path: Path, monkeypatch,
                                                                                     coalesce: bool) -> None:
    """A DataLoader worker's share of a window-shuffled epoch is a few records here, a few there: read as runs
    with the gaps between them (one block per shard instead of one per handful), every header checked, only the
    wanted records handed over; a damaged header in a gap is still an error."""
    from loaders import reader

    if not coalesce:
        monkeypatch.setattr(reader, "COALESCE_BYTES", 0)
    d = make_dataset(tmp_path / "d", 120, max_count=40)
    ds = StreamingShardDataset(d, "train")
    counts = ds._counts
    shard_ids = np.concatenate([np.full(int(c), s) for s, c in enumerate(counts)])
    withins = np.concatenate([np.arange(int(c)) for c in counts])
    pick = (np.arange(len(withins)) // 2) % 2 == 0  # two of every four, as a 2-worker share looks
    reads: list[int] = []
    got = [fmt.decode_record(bytes(v)) for v in
           reader.read_records(_counting_refs(ds, reads), ds._offsets, shard_ids[pick], withins[pick])]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    want = (starts[shard_ids[pick]] + withins[pick]).tolist()
    assert [int(r.key) for r in got] == [int(fmt.sample_key(i)) for i in want]
    blocks = sum(reads)
    if coalesce:
        assert blocks <= 2 * len(counts), blocks  # a block and the end-of-archive marker per shard
    else:
        assert blocks >= pick.sum() // 2, blocks  # a block per run of two
    # a header the share does not need, damaged: the run reads it and says so
    shard = next(iter(sorted(d.glob("*.tar"))))
    rows = shard_rows(d, shard.name)
    skipped = int(rows["offset"][2]) - fmt.BLOCK  # sample 2 of the first shard is not in the share
    data = bytearray(shard.read_bytes())
    data[skipped + 10] ^= 0x20  # inside the member name
    shard.write_bytes(bytes(data))
    ds = StreamingShardDataset(d, "train")
    run = reader.read_records(ds._refs(), ds._offsets, shard_ids[pick], withins[pick])
    if coalesce:
        with pytest.raises(fmt.FormatError, match=f"{shard.name}.*{skipped}"):
            list(run)
    else:
        assert len(list(run)) == pick.sum()  # never read: nothing to check
