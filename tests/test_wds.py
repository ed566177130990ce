"""Our shards in a stock webdataset pipeline: loaders.wds decodes them bit for bit as our readers do."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from loaders import ShardDataset
from loaders.wds import decode_sample, decoder, record_handler, shard_urls
from shardwriter import format as fmt
from shardwriter import pack
from shardwriter.errors import FormatError
from shardwriter.sources import NpzSource


def _pack(root: Path, kind: str) -> Path:
    rng = np.random.default_rng({"class": 1, "mask": 2, "regression": 3}[kind])
    n = 90
    x = rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8)
    if kind == "class":
        y = rng.integers(0, 4, n).astype(np.int64)
    elif kind == "mask":
        y = rng.integers(0, 3, (n, 8, 8)).astype(np.int64)
    else:
        y = rng.normal(size=(n, 2)).astype(np.float32)
    np.savez(root / f"{kind}.npz", x=x, y=y)
    out = root / kind
    target = "regression" if kind == "regression" else "auto"
    pack(NpzSource(root / f"{kind}.npz", test_fraction=0.2, layout="chw", target=target), out, max_count=25, quiet=True)
    return out


@pytest.fixture(scope="module", params=["class", "mask", "regression"])
def dataset(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _pack(tmp_path_factory.mktemp(request.param), request.param)


def stock(location: Path, split: str, fn) -> list:
    return list(wds.WebDataset(shard_urls(location, split), shardshuffle=False).map(fn))


@pytest.mark.parametrize("mode", [{}, {"act_mode_8bit": True}, {"output": "uint8"}])
def test_a_stock_pipeline_yields_exactly_what_shard_dataset_serves(dataset: Path, mode: dict) -> None:
    for split in ("train", "test"):
        ours = ShardDataset(dataset, split, **mode)
        theirs = stock(dataset, split, decoder(**mode))
        assert len(theirs) == len(ours) > 0
        for i, (x, y) in enumerate(theirs):
            want_x, want_y = ours[i]
            assert x.dtype == want_x.dtype and y.dtype == want_y.dtype and y.shape == want_y.shape
            assert torch.equal(x, want_x) and torch.equal(y, want_y), f"{split}[{i}]"


def test_decode_sample_defaults_and_batching(dataset: Path) -> None:
    ours = ShardDataset(dataset, "train")
    pipeline = wds.WebDataset(shard_urls(dataset, "train"), shardshuffle=False).map(decode_sample).batched(16)
    xs, ys = next(iter(pipeline))
    assert xs.shape == (16, *ours.input_shape) and xs.dtype == torch.float32
    assert torch.equal(xs, torch.stack([ours[i][0] for i in range(16)]))
    assert torch.equal(ys, torch.stack([ours[i][1] for i in range(16)]))
    assert pickle.loads(pickle.dumps(decoder(act_mode_8bit=True)))  # DataLoader workers under spawn


def test_record_handler_decodes_the_msgpack_field_and_leaves_the_rest(dataset: Path) -> None:
    urls = shard_urls(dataset, "train")
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode(record_handler))
    assert len(samples) == len(ShardDataset(dataset, "train"))
    rec = samples[0]["msgpack"]
    assert isinstance(rec, fmt.Record) and rec.key == samples[0]["__key__"]
    x, _ = ShardDataset(dataset, "train", output="uint8")[0]
    assert np.array_equal(rec.x, x.numpy())
    assert [decode_sample(s, output="uint8")[0].sum() for s in samples[:3]] == [ShardDataset(dataset, "train", output="uint8")[i][0].sum() for i in range(3)]
    assert record_handler(".json", b"{}") is None


def test_shard_urls_are_the_manifests_in_order(dataset: Path) -> None:
    m = ShardDataset(dataset, "train").manifest
    assert shard_urls(dataset, "train") == [str(dataset / s.file) for s in m.split("train").shards]
    assert len(shard_urls(dataset, "train")) > 1


def test_a_damaged_record_or_a_foreign_tar_is_a_format_error(dataset: Path) -> None:
    sample = next(iter(wds.WebDataset(shard_urls(dataset, "train"), shardshuffle=False)))
    bad = dict(sample, msgpack=sample["msgpack"][:-5])
    with pytest.raises(FormatError, match="sample 000000000"):
        decode_sample(bad)
    with pytest.raises(FormatError, match="no 'msgpack' field"):
        decode_sample({"__key__": "a", "jpg": b"..."})
