"""Inputs exactly as meant: every option checked up front for its source kind, nothing guessed.

A setting mistake is exit 2 before any work (nothing written, never counted as skipped
inputs); a problem of the data as a whole is exit 3 before any work; bad single inputs
stop the run or are skipped with --skip-bad. Every message is one line naming what is
wrong and what to pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from packtools import write_npz
from PIL import Image

from ai8x_shards.cli import main
from shardwriter import format as fmt
from shardwriter import pack
from shardwriter.errors import PackError, SettingsError
from shardwriter.sources import ImageFolderSource, NpzSource
from shardwriter.synth import synth_aisegment, synth_imagefolder
from shardwriter.verify import info


def _cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    got = capsys.readouterr()
    return code, got.out, got.err


def _nothing_written(out: Path) -> bool:
    return not out.exists() or not any(out.rglob("*"))


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    return synth_imagefolder(tmp_path / "raw", per_class=5, size=12)


# --------------------------------------------------------------------------- options of another kind


@pytest.mark.parametrize("kind, option", [
    ("npz", "--size 32"), ("npz", "--mode L"), ("npz", "--variants 80"), ("npz", "--data-dir ."),
    ("imagefolder", "--classes 3"), ("imagefolder", "--layout hwc"), ("imagefolder", "--input-range unit"),
    ("dataset", "--fold 2"), ("dataset", "--size 32"), ("dataset", "--test-fraction 0.2"), ("dataset", "--checksum"),
    ("aisegment", "--fold 2"), ("aisegment", "--classes 2"), ("aisegment", "--size 80"),
])
def test_an_option_of_another_kind_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, option: str) -> None:
    code, _, err = _cli(capsys, "pack", kind, tmp_path / "src", tmp_path / "out", *option.split())
    assert code == 2 and "unrecognized arguments" in err and option.split()[0] in err
    assert _nothing_written(tmp_path / "out")


def test_each_kind_lists_only_its_options_with_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "pack", "npz", "--help")
    assert code == 0
    assert "--layout" in out and "--target" in out and "--input-range" in out
    assert "--size" not in out and "--mode" not in out and "--variants" not in out and "--data-dir" not in out
    assert "(default: 10000)" in out and "(default: 0)" in out and "(default: 1)" in out
    code, out, _ = _cli(capsys, "pack", "imagefolder", "--help")
    assert "--size" in out and "--mode" in out and "(default: RGB)" in out and "--classes" not in out
    code, out, _ = _cli(capsys, "pack", "dataset", "--help")
    assert "--fold" not in out and "--test-fraction" not in out and "--checksum" not in out and "(default: .)" in out


# --------------------------------------------------------------------------- settings: exit 2, before any work


def test_the_issue_settings_that_were_reported_as_bad_inputs(tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, _, err = _cli(capsys, "pack", "imagefolder", folder, out, "--size", "64", "--fold", "3", "--skip-bad")
    assert code == 2 and "--fold 3 does not divide the image size 64x64" in err and "skipped" not in err
    code, _, err = _cli(capsys, "pack", "imagefolder", folder, out, "--size", "0", "--skip-bad")
    assert code == 2 and "--size 0x0: both sides must be at least 1 pixel" in err
    npz = write_npz(tmp_path / "ten.npz", 60, classes=10)
    code, _, err = _cli(capsys, "pack", "npz", npz, out, "--classes", "3", "--skip-bad")
    assert code == 2 and "--classes gives 3 classes, but ten.npz[" in err and "give all 10 classes" in err
    np.savez(tmp_path / "i64.npz", x=np.zeros((8, 1, 8, 8), np.int64), y=np.zeros(8, np.int64))
    code, _, err = _cli(capsys, "pack", "npz", tmp_path / "i64.npz", out, "--skip-bad")
    assert code == 3 and "x has dtype int64" in err and "x.astype(np.uint8)" in err
    assert _nothing_written(out)


@pytest.mark.parametrize("args, message", [
    (["--fold", "0"], "--fold 0: the fold ratio is a whole number of at least 1"),
    (["--max-count", "0"], "--max-count 0: give a whole number of at least 1"),
    (["--max-bytes", "0"], "--max-bytes 0"),
    (["--workers", "0"], "--workers 0: give a whole number of at least 1"),
    (["--test-fraction", "1.5"], "--test-fraction 1.5: a fraction lies in [0, 1)"),
    (["--test-fraction", "-0.1"], "--test-fraction -0.1: a fraction lies in [0, 1)"),
    (["--test-fraction", "0.6", "--val-fraction", "0.5"], "leave no train split"),
    (["--seed", "-1"], "--seed -1"),
    (["--part", "3/2"], "--part '3/2': expected K/N with 1 <= K <= N"),
    (["--part", "x"], "--part 'x': expected K/N"),
])
def test_setting_mistakes_exit_2_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    npz = write_npz(tmp_path / "d.npz", 40)
    code, _, err = _cli(capsys, "pack", "npz", npz, tmp_path / "out", *args)
    assert code == 2, err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert _nothing_written(tmp_path / "out")


def test_arguments_that_are_not_what_the_kind_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    np.savez(tmp_path / "odd.npz", x=np.zeros((6, 1, 27, 27), np.uint8), y=np.arange(6) % 2)
    code, _, err = _cli(capsys, "pack", "npz", tmp_path / "odd.npz", out, "--fold", "2")
    assert code == 2 and "--fold 2 does not divide the 27x27 images" in err
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 8, 8), np.uint8))
    code, _, err = _cli(capsys, "pack", "npz", tmp_path / "x.npy", out)
    assert code == 2 and "x.npy: not an .npz file" in err and "np.savez" in err
    code, _, err = _cli(capsys, "pack", "dataset", "pack_sources:not_callable", out)
    assert code == 2 and "not_callable is a list, not a function returning datasets nor a dataset" in err
    code, _, err = _cli(capsys, "pack", "dataset", "no_such_module_here:f", out)
    assert code == 2 and "cannot import module no_such_module_here" in err
    code, _, err = _cli(capsys, "pack", "dataset", "justaname", out)
    assert code == 2 and "expected module:function" in err
    code, _, err = _cli(capsys, "pack", "imagefolder", tmp_path / "nope", out)
    assert code == 2 and "nope: no such folder" in err
    assert _nothing_written(out)


def test_fractions_do_not_apply_to_presplit_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "split").mkdir()
    write_npz(tmp_path / "split" / "train.npz", 20)
    write_npz(tmp_path / "split" / "test.npz", 5)
    code, _, err = _cli(capsys, "pack", "npz", tmp_path / "split", tmp_path / "out", "--test-fraction", "0.2")
    assert code == 2 and "the splits" in err and "--test-fraction" in err and "do not apply" in err


# --------------------------------------------------------------------------- nothing guessed


def test_ambiguous_npz_layouts_and_targets_are_refused_with_the_flag_to_pass(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "nhwc.npz", x=rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), y=np.arange(10) % 3)
    with pytest.raises(SettingsError, match=r"channels last or first\? pass --layout hwc .*or --layout chw"):
        NpzSource(tmp_path / "nhwc.npz")
    assert NpzSource(tmp_path / "nhwc.npz", layout="hwc").outputs()[0].input_shape == (3, 32, 32)
    np.savez(tmp_path / "grey.npz", x=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), y=np.arange(10) % 3)
    with pytest.raises(SettingsError, match=r"pass --layout hw \(grey images, H x W\) or --layout chw \(1-D data"):
        NpzSource(tmp_path / "grey.npz")
    x = rng.integers(0, 256, (10, 1, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "n1.npz", x=x, y=(np.arange(10) % 3).reshape(10, 1))
    with pytest.raises(SettingsError, match=r"y is int64 of shape \(N, 1\).*--target class for \(N, 1\) labels"):
        NpzSource(tmp_path / "n1.npz")
    src = NpzSource(tmp_path / "n1.npz", target="class")
    assert src.outputs()[0].target_kind == "class" and src.outputs()[0].classes == [0, 1, 2]
    np.savez(tmp_path / "f.npz", x=x, y=np.linspace(0, 1, 10).astype(np.float32))
    with pytest.raises(SettingsError, match=r"y is float32 .*--target regression"):
        NpzSource(tmp_path / "f.npz")
    assert NpzSource(tmp_path / "f.npz", target="regression").outputs()[0].target_kind == "regression"
    np.savez(tmp_path / "fl.npz", x=x, y=np.array([0.0, 1.0, 2.5] + [1.0] * 7, np.float32))
    with pytest.raises(SettingsError, match=r"--target class, but y\[2\] is 2.5, not a whole number"):
        NpzSource(tmp_path / "fl.npz", target="class")


def test_the_input_range_is_decided_once_per_dataset(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pix = rng.integers(0, 256, (12, 1, 4, 4), dtype=np.uint8)
    pix[3] = 127  # a flat sample: -1.0 in the 8-bit range, which on its own also reads as the unit range
    np.savez(tmp_path / "eight.npz", x=(pix.astype(np.float32) - 128), y=np.arange(12) % 2)
    (m,) = pack(NpzSource(tmp_path / "eight.npz", test_fraction=0.0, layout="chw"), tmp_path / "o8", quiet=True)
    assert m.preprocessing["input_range"] == "8bit"
    recs = {}
    for s in m.split("train").shards:
        with open(tmp_path / "o8" / s.file, "rb") as f:
            for mem in fmt.iter_tar_members(f, s.file, s.bytes):
                r = fmt.decode_record(mem.payload)
                recs[r.source] = r.x
    assert (recs["eight.npz[3]"] == 127).all()  # per-sample "auto" stored it as 0
    assert all(np.array_equal(recs[f"eight.npz[{i}]"], pix[i]) for i in range(12))
    np.savez(tmp_path / "flat.npz", x=-np.ones((6, 1, 4, 4), np.float32), y=np.arange(6) % 2)
    with pytest.raises(SettingsError, match=r"fit both ai8x ranges.*--input-range unit .* or --input-range 8bit"):
        NpzSource(tmp_path / "flat.npz", layout="chw")
    assert NpzSource(tmp_path / "flat.npz", layout="chw", input_range="8bit").input_range == "8bit"
    with pytest.raises(SettingsError, match=r"--input-range unit, but .* values outside \[-1, 1\): it is in the 8bit range"):
        NpzSource(tmp_path / "eight.npz", layout="chw", input_range="unit")
    write_npz(tmp_path / "u8.npz", 10)
    with pytest.raises(SettingsError, match="--input-range applies to float inputs"):
        NpzSource(tmp_path / "u8.npz", input_range="unit")


# --------------------------------------------------------------------------- image folders, empty splits


def test_image_folders_pack_what_pillow_reads_and_report_the_rest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = synth_imagefolder(tmp_path / "raw", per_class=3, size=12)
    with Image.open(raw / "disc" / "0000.png") as im:
        im.save(raw / "disc" / "extra.gif")
        im.save(raw / "disc" / "extra.tif")
        im.save(raw / "square" / "extra.webp")
    (raw / "bar" / "notes.txt").write_text("not an image")
    (raw / "empty").mkdir()
    (raw / "square" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    code, out, err = _cli(capsys, "pack", "imagefolder", raw, tmp_path / "out", "--skip-bad", "--quiet", "--test-fraction", "0")
    assert code == 0, err
    assert "warning: 1 class folder(s) hold no image: empty" in out
    assert "warning: 1 file(s) are not images Pillow opens and were not packed: bar/notes.txt" in out
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["classes"] == ["bar", "disc", "empty", "square"]
    assert m["splits"]["train"]["count"] == 9 + 3  # .gif, .tif, .webp packed
    assert [r["name"] for r in m["skipped"]["inputs"]] == ["square/broken.jpg"]
    assert any("hold no image" in w for w in m["warnings"])
    shown = info(tmp_path / "out")
    assert "warning   split test is empty" in shown and "hold no image" in shown


def test_an_empty_split_is_a_warning_and_an_empty_train_split_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = synth_aisegment(tmp_path / "aiseg", images=6, seed=11)
    code, out, _ = _cli(capsys, "pack", "aisegment", raw, tmp_path / "out", "--variants", "80", "--quiet", "--test-fraction", "0.05")
    m = json.loads((tmp_path / "out" / "AISegment_80" / "manifest.json").read_text())
    assert code == 0 and m["splits"]["test"]["count"] == 0
    assert "warning: split test is empty" in out
    assert "warning   split test is empty" in info(tmp_path / "out" / "AISegment_80")
    code, _, err = _cli(capsys, "pack", "aisegment", raw, tmp_path / "o2", "--test-fraction", "0.9", "--val-fraction", "0.09")
    assert code == 2 and "the train split would be empty" in err


def test_a_label_beyond_given_classes_in_a_dataset_is_a_setting_error(tmp_path: Path) -> None:
    data = [(np.zeros((1, 2, 2), np.uint8), i % 4) for i in range(10)]
    with pytest.raises(SettingsError, match=r"--classes gives 3 classes, but sample train\[\d+\] has label 3"):
        pack(data, tmp_path / "o", classes=3, skip_bad=True, quiet=True)
    with pytest.raises(SettingsError, match=r"has no \.classes attribute; pass --classes"):
        pack(data, tmp_path / "o2", quiet=True)


# --------------------------------------------------------------------------- dry run


def test_dry_run_describes_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    npz = write_npz(tmp_path / "d.npz", 500)
    out = tmp_path / "out"
    code, text, _ = _cli(capsys, "pack", "npz", npz, out, "--max-count", "100", "--dry-run")
    assert code == 0 and _nothing_written(out)
    assert "dry run: nothing is written" in text and "input uint8 (1, 12, 12), target class, 7 classes" in text
    assert "train" in text and " shard(s), " in text and "KiB" in text and "shuffled, seed 0" in text
    assert "OUT       empty: would pack" in text
    assert _cli(capsys, "pack", "npz", npz, out, "--max-count", "100", "--quiet")[0] == 0
    code, text, _ = _cli(capsys, "pack", "npz", npz, out, "--max-count", "100", "--dry-run")
    assert "this dataset already: nothing to do" in text
    code, text, _ = _cli(capsys, "pack", "npz", npz, out, "--max-count", "50", "--dry-run")
    assert "max_count was 100, now 50" in text and "--overwrite" in text


def test_the_api_checks_settings_too(tmp_path: Path) -> None:
    src = NpzSource(write_npz(tmp_path / "d.npz", 20))
    with pytest.raises(SettingsError, match="--workers 0"):
        pack(src, tmp_path / "o", workers=0)
    with pytest.raises(SettingsError, match="--size"):
        ImageFolderSource(synth_imagefolder(tmp_path / "r", per_class=2, size=8), size=(0, 4))
    with pytest.raises(SettingsError, match="options of a dataset"):
        pack(src, tmp_path / "o", classes=3)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SettingsError, match="exists and is not a folder"):
        pack(src, tmp_path / "file")
    with pytest.raises(PackError, match="no array 'y'"):
        np.savez(tmp_path / "noy.npz", x=np.zeros((2, 1, 8, 8), np.uint8))
        NpzSource(tmp_path / "noy.npz")
