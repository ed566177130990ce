"""``shardwriter.pack`` takes dataset objects and iterables; the write-time shuffle; what a run reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from packtools import tree_bytes

from shardwriter import format as fmt
from shardwriter import pack
from shardwriter.sources import ImageFolderSource
from shardwriter.synth import synth_imagefolder
from shardwriter.verify import verify


def records(folder: Path, split: str = "train") -> list[fmt.Record]:
    m = fmt.parse_manifest((folder / "manifest.json").read_bytes(), "m")
    out = []
    for s in m.split(split).shards:
        with open(folder / s.file, "rb") as f:
            out += [fmt.decode_record(mem.payload) for mem in fmt.iter_tar_members(f, s.file, s.bytes)]
    return out


class Tensors(torch.utils.data.Dataset):
    """A map-style torch dataset of ai8x-normalized floats (the unit range) with a .classes attribute."""

    classes = ["a", "b", "c"]

    def __init__(self, n: int, seed: int = 0) -> None:
        g = np.random.default_rng(seed)
        self.pix = g.integers(0, 256, (n, 2, 6, 6), dtype=np.uint8)
        self.labels = g.integers(0, 3, n)

    def __len__(self) -> int:
        return len(self.pix)

    def __getitem__(self, i: int):
        return (torch.from_numpy(self.pix[i]).float() - 128) / 128, torch.tensor(self.labels[i])


def test_pack_takes_a_map_style_dataset_object(tmp_path: Path) -> None:
    train, test = Tensors(50, 1), Tensors(12, 2)
    result = pack((train, test), tmp_path / "out", max_count=20, quiet=True, name="tensors")
    (m,) = result
    assert result.status == "packed" and m.name == "tensors" and m.classes == ("a", "b", "c")
    assert {k: s.count for k, s in m.splits.items()} == {"train": 50, "test": 12}
    assert m.preprocessing["input_range"] == "unit" and m.source_kind == "dataset"
    for split, ds in (("train", train), ("test", test)):
        got = {r.source: r for r in records(tmp_path / "out", split)}
        for i in range(len(ds)):
            assert np.array_equal(got[f"{split}[{i}]"].x, ds.pix[i]) and got[f"{split}[{i}]"].y == ds.labels[i]
    assert verify(tmp_path / "out") == []
    again = pack((train, test), tmp_path / "out", max_count=20, quiet=True, name="tensors")
    assert again.status == "unchanged"  # every sample read again and found the same
    train.pix[7, 0, 0, 0] ^= 1  # one pixel of one sample changed in memory
    with pytest.raises(Exception, match="already holds a different dataset"):
        pack((train, test), tmp_path / "out", max_count=20, quiet=True, name="tensors")


def test_pack_takes_an_iterable_of_samples_and_a_dict_of_splits(tmp_path: Path) -> None:
    g = np.random.default_rng(3)
    xs = g.integers(0, 256, (30, 1, 4, 4), dtype=np.uint8)
    masks = g.integers(0, 2, (30, 4, 4)).astype(np.uint8)

    def samples():
        yield from zip(xs, masks)

    (m,) = pack(samples(), tmp_path / "gen", classes=["bg", "fg"], quiet=True)
    assert m.target.kind == "mask" and m.target.shape == (4, 4) and m.split("train").count == 30
    got = {r.source: r for r in records(tmp_path / "gen")}
    assert all(np.array_equal(got[f"train[{i}]"].y, masks[i]) for i in range(30))
    (d,) = pack({"train": list(zip(xs[:20], range(20))), "val": list(zip(xs[20:], range(10)))}, tmp_path / "dict",
                classes=20, quiet=True)
    assert set(d.splits) == {"train", "test", "val"} and d.split("val").count == 10 and d.split("test").count == 0


def test_the_write_time_shuffle_mixes_classes_and_is_recorded(tmp_path: Path) -> None:
    """Packed class by class, a 100-sample window of the shards holds ~1-2 of 10 classes; shuffled, nearly all."""
    g = np.random.default_rng(4)
    data = [(g.integers(0, 256, (1, 2, 2), dtype=np.uint8), c) for c in range(10) for _ in range(100)]  # class by class

    def classes_per_window(folder: Path) -> float:
        labels = [r.y for r in records(folder)]
        return float(np.mean([len(set(labels[i : i + 100])) for i in range(0, len(labels) - 99, 50)]))

    (plain,) = pack(data, tmp_path / "plain", classes=10, shuffle=False, quiet=True, max_count=100)
    (mixed,) = pack(data, tmp_path / "mixed", classes=10, quiet=True, max_count=100)
    assert plain.shuffle_seed is None and mixed.shuffle_seed == 0
    assert classes_per_window(tmp_path / "plain") < 2.5
    assert classes_per_window(tmp_path / "mixed") > 9
    assert json.loads((tmp_path / "mixed" / "manifest.json").read_text())["shuffle"] == {"seed": 0}
    (seed1,) = pack(data, tmp_path / "seed1", classes=10, seed=1, quiet=True, max_count=100)
    order0 = [r.source for r in records(tmp_path / "mixed")]
    order1 = [r.source for r in records(tmp_path / "seed1")]
    assert sorted(order0) == sorted(order1) and order0 != order1 and seed1.shuffle_seed == 1
    assert mixed.split("train").class_histogram == plain.split("train").class_histogram  # the same samples


def test_shuffled_order_is_the_same_on_every_run_and_machine(tmp_path: Path) -> None:
    raw = synth_imagefolder(tmp_path / "raw", per_class=10, size=8)
    pack(ImageFolderSource(raw, test_fraction=0.0), tmp_path / "a", quiet=True)
    pack(ImageFolderSource(raw, test_fraction=0.0), tmp_path / "b", quiet=True, workers=2)
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    import xxhash

    order = [r.source for r in records(tmp_path / "a")]
    assert order == sorted(order, key=lambda name: xxhash.xxh3_64_intdigest(name.encode(), 0))  # docs/FORMAT.md's rule
