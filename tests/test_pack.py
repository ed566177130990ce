"""The writer end to end: sources, determinism, rollover, crash/resume, stock readers, verify."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest
import webdataset as wds
from helpers import make_npz, tree_bytes
from PIL import Image

from ai8x_shards.cli import main as cli
from shardwriter import PackError, ShardWriter, pack
from shardwriter import format as fmt
from shardwriter.errors import SettingsError
from shardwriter.sources import DatasetSource, ImageFolderSource, NpzSource
from shardwriter.synth import synth_imagefolder
from shardwriter.verify import reindex, verify

TESTS = Path(__file__).parent


def read_split(directory: Path, split: str) -> list[fmt.Record]:
    """Every record of a split, in order, decoded with our tar reader."""
    m = json.loads((directory / "manifest.json").read_text())
    out = []
    for shard in m["splits"][split]["shards"]:
        with open(directory / shard["file"], "rb") as f:
            out += [fmt.decode_record(mem.payload) for mem in fmt.iter_tar_members(f, shard["file"], shard["bytes"])]
    return out


def by_index(records: list[fmt.Record]) -> list[fmt.Record]:
    """Records in source order: samples are written shuffled; ``src`` (``FILE[i]``, ``split[i]``) maps them back."""
    return sorted(records, key=lambda r: int(r.source.rsplit("[", 1)[1].rstrip("]")))


# ---------------------------------------------------------------- round trips


def test_npz_round_trip_class_targets_across_presplit_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_npz(src / "train.npz", n=120, seed=1)
    make_npz(src / "test.npz", n=30, seed=2)
    pack(NpzSource(src), tmp_path / "out", max_count=50, quiet=True)
    for split in ("train", "test"):
        with np.load(src / f"{split}.npz") as z:
            written = read_split(tmp_path / "out", split)
            assert [r.key for r in written] == [fmt.sample_key(i) for i in range(len(z["x"]))]
            recs = by_index(written)
            assert [r.source for r in recs] == [f"{split}.npz[{i}]" for i in range(len(z["x"]))]
            assert [r.source for r in written] != [r.source for r in recs]  # shuffled at write time
            assert np.array_equal(np.stack([r.x for r in recs]), z["x"])
            assert [r.y for r in recs] == z["y"].tolist()
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [s["count"] for s in m["splits"]["train"]["shards"]] == [50, 50, 20]
    assert m["splits"]["train"]["class_histogram"] == np.bincount(np.load(src / "train.npz")["y"], minlength=10).tolist()


def test_npz_round_trip_masks_regression_layouts_and_fold(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)  # HWC
    masks = rng.integers(0, 3, (40, 8, 8)).astype(np.int64)
    np.savez(tmp_path / "seg.npz", x=x, y=masks)
    pack(NpzSource(tmp_path / "seg.npz", layout="hwc", fold_ratio=2, test_fraction=0.0), tmp_path / "seg", quiet=True)
    recs = by_index(read_split(tmp_path / "seg", "train"))
    chw = x.transpose(0, 3, 1, 2)
    # fold with r = 2 in the ai8x order: channel (i*2 + j)*3 + c = x[c, i::2, j::2]
    want = np.concatenate([chw[:, :, i::2, j::2] for i in range(2) for j in range(2)], axis=1)
    assert np.array_equal(np.stack([r.x for r in recs]), want)
    assert np.array_equal(np.stack([r.y for r in recs]), masks.astype(np.uint8))
    m = json.loads((tmp_path / "seg" / "manifest.json").read_text())
    assert m["target"] == {"kind": "mask", "dtype": "uint8", "shape": [8, 8]} and m["classes"] == [0, 1, 2]
    assert sum(m["splits"]["train"]["class_histogram"]) == masks.size

    reg = rng.standard_normal((10, 2)).astype(np.float32)
    np.savez(tmp_path / "reg.npz", x=rng.integers(0, 256, (10, 1, 16), dtype=np.uint8), y=reg)
    pack(NpzSource(tmp_path / "reg.npz", layout="chw", target="regression", test_fraction=0.0), tmp_path / "reg", quiet=True)
    recs = by_index(read_split(tmp_path / "reg", "train"))
    assert np.array_equal(np.stack([r.y for r in recs]), reg)
    assert json.loads((tmp_path / "reg" / "manifest.json").read_text())["regression"] is True


def test_imagefolder_round_trip_equals_pillow(tmp_path):
    synth_imagefolder(tmp_path / "raw", per_class=6, size=20)
    pack(ImageFolderSource(tmp_path / "raw", size=(16, 16), test_fraction=0.3), tmp_path / "out", quiet=True)
    seen = 0
    for split in ("train", "test"):
        for rec in read_split(tmp_path / "out", split):
            img = Image.open(tmp_path / "raw" / rec.source).convert("RGB").resize((16, 16))
            assert np.array_equal(rec.x, np.asarray(img).transpose(2, 0, 1))
            assert rec.y == ["bar", "disc", "square"].index(rec.source.split("/")[0])
            seen += 1
    assert seen == 18


def test_dataset_source_recovers_uint8_from_both_ai8x_ranges(tmp_path, monkeypatch):
    import torch

    rng = np.random.default_rng(5)
    pix = rng.integers(0, 256, (12, 2, 4, 4), dtype=np.uint8)
    labels = rng.integers(0, 3, 12)

    class DS:
        classes = ["a", "b", "c"]

        def __init__(self, scale):
            self.scale = scale

        def __len__(self):
            return len(pix)

        def __getitem__(self, i):
            if self.scale is None:
                return pix[i], int(labels[i])
            return (torch.from_numpy(pix[i]).float() - 128) / self.scale, torch.tensor(labels[i])

    mod = type(sys)("fake_ds_mod")
    mod.unit = lambda: DS(128.0)
    mod.eight = lambda: DS(1.0)
    mod.raw = lambda: {"train": DS(None)}
    mod.offgrid = lambda: [DS(127.0)]
    monkeypatch.setitem(sys.modules, "fake_ds_mod", mod)
    for fn in ("unit", "eight", "raw"):
        pack(DatasetSource(f"fake_ds_mod:{fn}"), tmp_path / fn, quiet=True)
        recs = by_index(read_split(tmp_path / fn, "train"))
        assert np.array_equal(np.stack([r.x for r in recs]), pix), fn
        assert [r.y for r in recs] == labels.tolist()
    with pytest.raises(PackError, match=r"train\[\d+\].*not on the ai8x"):
        pack(DatasetSource("fake_ds_mod:offgrid"), tmp_path / "bad", quiet=True)


# ---------------------------------------------------------------- determinism and rollover


def test_byte_identical_across_runs_and_worker_counts(tmp_path):
    synth_imagefolder(tmp_path / "raw", per_class=12, size=24)
    runs = {}
    for name, workers in (("a", 1), ("b", 1), ("c", 2)):
        pack(ImageFolderSource(tmp_path / "raw", size=(16, 16)), tmp_path / name, workers=workers, max_count=7, quiet=True)
        runs[name] = tree_bytes(tmp_path / name)
    assert len([n for n in runs["a"] if n.endswith(".tar")]) >= 4
    assert runs["a"] == runs["b"] == runs["c"]


def test_rollover_by_bytes_keeps_each_shard_under_the_cap(tmp_path):
    make_npz(tmp_path / "d.npz", n=60, shape=(3, 16, 16))
    cap = 10 * (512 + 1024)  # room for a few 768-byte samples per shard
    pack(NpzSource(tmp_path / "d.npz", test_fraction=0.0), tmp_path / "out", max_bytes=cap, quiet=True)
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    shards = m["splits"]["train"]["shards"]
    assert len(shards) > 5
    assert all(s["bytes"] <= cap for s in shards)
    assert all(os.path.getsize(tmp_path / "out" / s["file"]) == s["bytes"] for s in shards)
    assert sum(s["count"] for s in shards) == 60


def test_writer_abort_leaves_no_shard_under_a_final_name(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, "train", max_count=3) as w:
            for _ in range(5):
                w.write(np.zeros((1, 2, 2), np.uint8), "class", 0)
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-000000.idx", "train-000000.tar"]


# ---------------------------------------------------------------- re-runs (kills: tests/test_pack_resume.py)


def test_rerun_of_a_complete_dataset_is_a_no_op_and_a_different_one_is_refused(tmp_path):
    make_npz(tmp_path / "a.npz", n=30, seed=1)
    make_npz(tmp_path / "b.npz", n=30, seed=2)
    pack(NpzSource(tmp_path / "a.npz"), tmp_path / "out", quiet=True)
    before = tree_bytes(tmp_path / "out")
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    pack(NpzSource(tmp_path / "a.npz"), tmp_path / "out", quiet=True)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == mtimes
    with pytest.raises(PackError, match="--overwrite"):
        pack(NpzSource(tmp_path / "b.npz"), tmp_path / "out", quiet=True)
    assert tree_bytes(tmp_path / "out") == before
    (tmp_path / "out" / "notes.txt").write_text("mine")
    pack(NpzSource(tmp_path / "b.npz"), tmp_path / "out", quiet=True, overwrite=True)
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"  # only our files are replaced
    assert tree_bytes(tmp_path / "out") != before


# ---------------------------------------------------------------- bad input


def test_bad_images_stop_with_the_file_named_or_are_counted_with_skip_bad(tmp_path):
    synth_imagefolder(tmp_path / "raw", per_class=4, size=16)
    (tmp_path / "raw" / "disc" / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(PackError, match=r"disc/0002\.png.*unreadable"):
        pack(ImageFolderSource(tmp_path / "raw", size=(16, 16)), tmp_path / "out", quiet=True)
    pack(ImageFolderSource(tmp_path / "raw", size=(16, 16)), tmp_path / "out", quiet=True, skip_bad=True, overwrite=True)
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["skipped"]["count"] == 1 and m["skipped"]["inputs"][0]["name"] == "disc/0002.png"
    assert sum(s["count"] for s in m["splits"].values()) == 11


def test_wrong_shape_and_label_out_of_range_are_named(tmp_path):
    synth_imagefolder(tmp_path / "raw", per_class=3, size=16)
    Image.new("RGB", (20, 16)).save(tmp_path / "raw" / "bar" / "0001.png")
    with pytest.raises(PackError, match=r"bar/0001\.png: input shape \(3, 16, 20\)"):
        pack(ImageFolderSource(tmp_path / "raw"), tmp_path / "o1", quiet=True)
    np.savez(tmp_path / "l.npz", x=np.zeros((5, 1, 4, 4), np.uint8), y=np.array([0, 1, 5, 1, 0]))
    with pytest.raises(SettingsError, match=r"--classes gives 3 classes, but l\.npz\[2\] has label 5"):  # a setting, up front
        NpzSource(tmp_path / "l.npz", layout="chw", classes=["a", "b", "c"], test_fraction=0.0)
    np.savez(tmp_path / "n.npz", x=np.zeros((5, 1, 4, 4), np.uint8), y=np.array([0, 1, -1, 1, 0]))
    with pytest.raises(PackError, match=r"bad input n\.npz\[2\]: label -1 is negative"):  # a bad input
        pack(NpzSource(tmp_path / "n.npz", layout="chw", test_fraction=0.0), tmp_path / "o3", quiet=True)


# ---------------------------------------------------------------- stock readers and verify


@pytest.fixture()
def packed(tmp_path):
    make_npz(tmp_path / "d.npz", n=90, seed=4)
    out = tmp_path / "out"
    pack(NpzSource(tmp_path / "d.npz", test_fraction=0.0), out, max_count=30, quiet=True)
    return out


def test_tar_tf_and_stock_webdataset_read_the_shards(packed):
    names = subprocess.run(["tar", "tf", str(packed / "train-000001.tar")], check=True, capture_output=True, text=True).stdout.split()
    assert names == [f"{i:09d}.msgpack" for i in range(30, 60)]
    urls = str(packed / "train-{000000..000002}.tar")
    got = [(s["__key__"], msgpack.unpackb(s["msgpack"])) for s in wds.WebDataset(urls, shardshuffle=False)]
    recs = read_split(packed, "train")
    assert [k for k, _ in got] == [r.key for r in recs]
    assert all(np.array_equal(np.frombuffer(d["x"], np.uint8).reshape(d["xs"]), r.x) for (_, d), r in zip(got, recs))


def test_verify_names_truncated_flipped_missing_and_miscounted_shards(packed, capsys):
    assert verify(packed) == [] and cli(["verify", str(packed)]) == 0
    data = (packed / "train-000000.tar").read_bytes()
    (packed / "train-000000.tar").write_bytes(data[: len(data) - 2000])
    flipped = bytearray((packed / "train-000001.tar").read_bytes())
    flipped[512 + 100] ^= 0x01  # a pixel inside the first record
    (packed / "train-000001.tar").write_bytes(bytes(flipped))
    problems = verify(packed)
    assert any(p.startswith("train-000000.tar") and "truncated" in p for p in problems), problems
    assert any(p.startswith("train-000001.tar: sha256 mismatch") for p in problems), problems
    assert not any("train-000002" in p for p in problems)
    assert cli(["verify", str(packed)]) == 1
    assert "BAD train-000001.tar: sha256 mismatch" in capsys.readouterr().out

    (packed / "train-000002.tar").unlink()
    assert any(p.startswith("train-000002.tar: missing") for p in verify(packed))


def test_verify_catches_a_wrong_count_and_reindex_rebuilds_lost_indexes(packed):
    good = (packed / "manifest.json").read_bytes()
    m = json.loads(good)
    m["splits"]["train"]["shards"][1]["count"] = 31
    m["splits"]["train"]["count"] = 91
    (packed / "manifest.json").write_text(json.dumps(m))
    # a count that disagrees with the index size the manifest records is refused before any shard is read
    assert any("manifest.json: field splits.train.shards[1].index.bytes" in p for p in verify(packed))
    (packed / "manifest.json").write_bytes(good)
    original = (packed / "train-000001.idx").read_bytes()
    (packed / "train-000001.idx").unlink()
    assert any("train-000001.idx: index missing" in p for p in verify(packed))
    assert reindex(packed) == ["train-000001.idx"]
    assert (packed / "train-000001.idx").read_bytes() == original
    assert verify(packed) == []


def test_cli_pack_info_verify(tmp_path, capsys):
    make_npz(tmp_path / "d.npz", n=50)
    assert cli(["pack", "npz", str(tmp_path / "d.npz"), str(tmp_path / "out"), "--name", "digits", "--max-count", "20", "--quiet"]) == 0
    assert cli(["info", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "dataset   digits" in out and "input     uint8 (1, 28, 28)" in out
    assert cli(["pack", "npz", str(tmp_path / "missing.npz"), str(tmp_path / "o2")]) in (2, 3)
    assert "missing.npz: no such file" in capsys.readouterr().err
