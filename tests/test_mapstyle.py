"""ShardDataset: exact random access, batches, the train.py data path, workers, pickling."""

from __future__ import annotations

import math
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import get_data_loaders, tagged
from torch.utils.data import DataLoader

from loaders import ShardDataset
from loaders.mapstyle import collate
from loaders.transforms import reference_normalize
from shardwriter import FormatError, pack
from shardwriter import format as fmt
from shardwriter.sources import NpzSource

N_TRAIN, N_TEST = 203, 41


def sample_number(x: torch.Tensor) -> int:
    """Inverse of the tag, from a normalized float input."""
    p = (x.reshape(-1)[:2] * 128 + 128).round().to(torch.int64)
    return int(p[0]) * 256 + int(p[1])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("map")
    src = root / "src"
    src.mkdir()
    arrays = {"train": tagged(N_TRAIN, 1), "test": tagged(N_TEST, 2), "val": tagged(20, 3)}
    for split, (x, y) in arrays.items():
        np.savez(src / f"{split}.npz", x=x, y=y)
    pack(NpzSource(src, classes=list(range(5))), root / "ds", max_count=37, shuffle=False, quiet=True)
    return root / "ds", arrays


def test_every_index_serves_its_own_sample_bit_exact_in_both_modes(data):
    directory, arrays = data
    args = SimpleNamespace(act_mode_8bit=False)
    ds = ShardDataset(directory, "train", act_mode_8bit=args)
    x, y = arrays["train"]
    assert len(ds) == N_TRAIN and len(ds.shards) == math.ceil(N_TRAIN / 37)
    for i in range(N_TRAIN):
        xi, yi = ds[i]
        assert xi.dtype == torch.float32 and xi.shape == (3, 8, 8)
        assert torch.equal(xi, reference_normalize(torch.from_numpy(x[i])))
        assert yi.dtype == torch.int64 and yi.ndim == 0 and int(yi) == y[i]
    args.act_mode_8bit = True  # read at call time, like ai8x.normalize
    assert torch.equal(ds[5][0], reference_normalize(torch.from_numpy(x[5]), True))
    assert torch.equal(ds[-1][0], ds[N_TRAIN - 1][0])
    for bad in (N_TRAIN, -N_TRAIN - 1):
        with pytest.raises(IndexError):
            ds[bad]


def test_getitems_equals_getitem_in_request_order(data):
    directory, _ = data
    ds = ShardDataset(directory, "train")
    req = [200, 3, 77, 3, 150, 0, 38, 36]  # across shards, unsorted, with a repeat
    batch = ds.__getitems__(req)
    assert [sample_number(x) for x, _ in batch] == req
    inputs, targets = collate(batch)
    assert torch.equal(inputs, torch.stack([ds[i][0] for i in req]))
    assert torch.equal(targets, torch.stack([ds[i][1] for i in req]))
    dflt = torch.utils.data.default_collate(batch)
    assert torch.equal(dflt[0], inputs) and torch.equal(dflt[1], targets)


def test_uint8_output_truncate_and_valid_indices(data):
    directory, arrays = data
    raw = ShardDataset(directory, "test", output="uint8")
    assert raw[7][0].dtype == torch.uint8 and np.array_equal(raw[7][0].numpy(), arrays["test"][0][7])
    t = ShardDataset(directory, "test", truncate=True)
    assert len(t) == 1 and torch.equal(t[0][0], raw[0][0].float().sub(128).div(128))
    with pytest.raises(IndexError):
        t[1]
    a = ShardDataset(directory, "train", valid_fraction=0.2, seed=3)
    b = ShardDataset(directory, "train", valid_fraction=0.2, seed=3)
    assert a.valid_indices == b.valid_indices and len(a.valid_indices) == int(0.2 * N_TRAIN)
    assert not hasattr(ShardDataset(directory, "train"), "valid_indices")
    v = ShardDataset(directory, "train", use_val_split=True)
    assert len(v) == N_TRAIN + 20 and v.valid_indices == list(range(N_TRAIN, N_TRAIN + 20))
    assert np.array_equal(ShardDataset(directory, "train", use_val_split=True, output="uint8")[N_TRAIN][0].numpy(), arrays["val"][0][0])


def numbers_and_labels(loader, labels):
    seen = []
    for inputs, target in loader:
        assert inputs.dtype == torch.float32 and target.dtype == torch.int64 and inputs.shape[1:] == (3, 8, 8)
        for x, t in zip(inputs, target):
            n = sample_number(x)
            assert int(t) == labels[n]  # the input and its own target travel together
            seen.append(n)
    return seen


@pytest.mark.parametrize("workers", [0, 2])
def test_train_py_data_path_runs_and_serves_each_index_once(data, workers):
    directory, arrays = data
    args = SimpleNamespace(act_mode_8bit=False, truncate_testset=False)
    train_ds = ShardDataset(directory, "train", act_mode_8bit=args)
    test_ds = ShardDataset(directory, "test", act_mode_8bit=args)
    np.random.seed(0)
    tr, va, te = get_data_loaders(train_ds, test_ds, batch_size=16, workers=workers, collate_fn=collate)
    assert len(tr) == math.ceil(len(tr.sampler) / 16)
    seen_train = numbers_and_labels(tr, arrays["train"][1])
    seen_valid = numbers_and_labels(va, arrays["train"][1])
    assert sorted(seen_train + seen_valid) == list(range(N_TRAIN))
    assert sorted(numbers_and_labels(te, arrays["test"][1])) == list(range(N_TEST))


def test_distributed_sampler_ranks_cover_the_train_subset(data):
    directory, arrays = data
    train_ds = ShardDataset(directory, "train", use_val_split=True)
    test_ds = ShardDataset(directory, "test")
    seen = []
    for rank in range(2):
        tr, _, _ = get_data_loaders(train_ds, test_ds, batch_size=8, workers=2, rank=rank, world=2, collate_fn=collate)
        seen += numbers_and_labels(tr, arrays["train"][1])
    # DistributedSampler pads to a multiple of the world size by repeating samples.
    assert set(seen) == set(range(N_TRAIN)) and len(seen) == N_TRAIN + N_TRAIN % 2


def test_pickles_with_open_files_and_works_under_spawn(data):
    directory, _ = data
    ds = ShardDataset(directory, "train")
    first = ds[0][0]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._fds == {} and torch.equal(clone[0][0], first)
    loader = DataLoader(ds, batch_size=50, num_workers=2, multiprocessing_context="spawn", collate_fn=collate)
    assert sorted(sample_number(x) for xs, _ in loader for x in xs) == list(range(N_TRAIN))


def test_masks_and_regression_targets(tmp_path):
    rng = np.random.default_rng(9)
    x = rng.integers(0, 256, (12, 1, 6, 6), dtype=np.uint8)
    masks = rng.integers(0, 2, (12, 6, 6)).astype(np.uint8)
    np.savez(tmp_path / "m.npz", x=x, y=masks)
    pack(NpzSource(tmp_path / "m.npz", test_fraction=0.0, layout="chw"), tmp_path / "m", max_count=5, shuffle=False, quiet=True)
    ds = ShardDataset(tmp_path / "m", "train")
    for i in range(12):
        assert ds[i][1].dtype == torch.int64 and np.array_equal(ds[i][1].numpy(), masks[i])
    inputs, targets = collate(ds.__getitems__([11, 0, 6]))
    assert targets.shape == (3, 6, 6) and np.array_equal(targets.numpy(), masks[[11, 0, 6]])
    reg = rng.standard_normal((12, 3)).astype(np.float32)
    np.savez(tmp_path / "r.npz", x=x, y=reg)
    pack(NpzSource(tmp_path / "r.npz", test_fraction=0.0, layout="chw", target="regression"), tmp_path / "r", shuffle=False, quiet=True)
    rd = ShardDataset(tmp_path / "r", "train")
    assert rd[4][1].dtype == torch.float32 and np.array_equal(rd[4][1].numpy(), reg[4])


def test_truncated_shard_and_stale_index_are_named(data, tmp_path):
    import shutil

    directory, _ = data
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    shard = copy / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[:5000])
    ds = ShardDataset(copy, "train")
    assert ds[36][0] is not None  # shard 0 is intact
    with pytest.raises(FormatError, match=r"train-000001.tar: 5000 bytes, the manifest says \d+ \(truncated"):
        ds[70]  # refused when the shard is opened, before a sample is read from it
    idx = copy / "train-000002.idx"
    idx.write_bytes(fmt.encode_index(fmt.decode_index(idx.read_bytes(), "i")[:-1]))
    with pytest.raises(FormatError, match=r"train-000002.idx: \d+ bytes, the manifest says \d+"):
        ShardDataset(copy, "train")


def spy_collate(batch):
    """What collate hands the DataLoader inside a worker, plus the batch as it arrives."""
    out = collate(batch)
    return type(out).__name__, out


@pytest.mark.parametrize("act_mode_8bit", [False, True])
def test_worker_batches_travel_as_uint8_and_arrive_bit_exact(tmp_path, act_mode_8bit):
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, (40, 3, 8, 8), dtype=np.uint8)
    masks = rng.integers(0, 3, (40, 8, 8)).astype(np.uint8)
    np.savez(tmp_path / "m.npz", x=x, y=masks)
    pack(NpzSource(tmp_path / "m.npz", test_fraction=0.0, layout="chw"), tmp_path / "m", max_count=9, shuffle=False, quiet=True)
    ds = ShardDataset(tmp_path / "m", "train", act_mode_8bit=SimpleNamespace(act_mode_8bit=act_mode_8bit))
    got = list(DataLoader(ds, batch_size=8, num_workers=2, collate_fn=spy_collate))
    assert {name for name, _ in got} == {"_InTransit"}  # the worker sent uint8, not floats
    inputs = torch.cat([b[0] for _, b in got])
    targets = torch.cat([b[1] for _, b in got])
    assert inputs.dtype == torch.float32 and targets.dtype == torch.int64
    assert torch.equal(inputs, reference_normalize(torch.from_numpy(x), act_mode_8bit))
    assert torch.equal(targets, torch.from_numpy(masks.astype(np.int64)))
    in_process = [collate(ds.__getitems__(list(range(k, min(k + 8, 40))))) for k in range(0, 40, 8)]
    assert torch.equal(inputs, torch.cat([b[0] for b in in_process]))
