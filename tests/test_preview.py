"""ai8x-shards preview: colours and legend from the manifest, samples drawn across the split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import make_npz
from PIL import Image

from ai8x_shards.cli import main as cli
from loaders import ShardDataset
from loaders.preview import ALPHA, MIN_TILE, colour, legend, legend_box, pick_indices, preview, shown_indices
from shardwriter import pack
from shardwriter.errors import SettingsError
from shardwriter.sources import AISegmentSource, NpzSource
from shardwriter.synth import synth_aisegment

GAP = 8  # the grid's margin: the first tile's top-left corner is at (GAP, GAP)


@pytest.fixture(scope="module")
def portraits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("preview")
    raw = synth_aisegment(root / "raw", images=4, seed=5)
    pack(AISegmentSource(raw, variants=(80,), test_fraction=0.0), root / "data", quiet=True)
    return root / "data" / "AISegment_80"


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    root = tmp_path_factory.mktemp("digits")
    npz = make_npz(root / "d.npz", n=200, shape=(1, 12, 12), classes=5, seed=2)
    pack(NpzSource(npz, test_fraction=0.0), root / "out", max_count=50, quiet=True)
    ds = ShardDataset(root / "out", "train", output="uint8")
    return root / "out", np.array([int(ds[i][1]) for i in range(len(ds))])


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def test_aisegment_legend_names_both_classes_and_tints_the_portrait(portraits: Path) -> None:
    m = ShardDataset(portraits, "train").manifest
    styles = legend(m)
    assert [(s.label, s.tint) for s in styles] == [("0 portrait", colour(0)), ("1 background", None)]


def test_the_portrait_is_tinted_and_the_background_left_as_it_is(portraits: Path, tmp_path: Path) -> None:
    ds = ShardDataset(portraits, "train", output="uint8")
    x, y = ds[1]
    image = x.numpy().transpose(1, 2, 0).astype(float)  # 80x80 RGB, fold 1
    mask = y.numpy()
    assert (mask == 0).any() and (mask == 1).any()
    path = preview(portraits, "train", out=tmp_path / "p.png", indices=[1])
    got = rgb(path)
    scale = MIN_TILE // 80
    tile = got[GAP : GAP + MIN_TILE : scale, GAP : GAP + MIN_TILE : scale]  # back to 80x80 (nearest upscale)
    portrait, background = mask == 0, mask == 1
    want = np.rint(image * (1 - ALPHA) + np.array(colour(0)) * ALPHA)
    assert np.array_equal(tile[background], image[background].astype(int)), "background pixels must be untouched"
    assert np.abs(tile[portrait] - want[portrait]).max() <= 1, "portrait pixels carry the portrait tint"
    # The legend: a red swatch for the portrait, an empty (white, outlined) one for the background.
    x0, y0, x1, y1 = legend_box(0, rows=1, tile_height=MIN_TILE)
    assert tuple(got[(y0 + y1) // 2, (x0 + x1) // 2]) == colour(0)
    x0, y0, x1, y1 = legend_box(1, rows=1, tile_height=MIN_TILE)
    assert tuple(got[(y0 + y1) // 2, (x0 + x1) // 2]) == (255, 255, 255) and tuple(got[y0, x0]) == (0, 0, 0)


def test_classes_chooses_what_a_mask_tints(portraits: Path, tmp_path: Path) -> None:
    ds = ShardDataset(portraits, "train", output="uint8")
    x, y = ds[0]
    image, mask = x.numpy().transpose(1, 2, 0).astype(int), y.numpy()
    got = rgb(preview(portraits, "train", out=tmp_path / "b.png", indices=[0], classes=["background"]))
    tile = got[GAP : GAP + MIN_TILE : 2, GAP : GAP + MIN_TILE : 2]
    assert np.array_equal(tile[mask == 0], image[mask == 0]), "the portrait is not tinted when only the background is"
    assert np.abs(tile[mask == 1] - np.rint(image[mask == 1] * (1 - ALPHA) + np.array(colour(1)) * ALPHA)).max() <= 1
    with pytest.raises(SettingsError, match="no class 'sky'"):
        preview(portraits, "train", out=tmp_path / "c.png", classes=["sky"])


def test_samples_are_drawn_across_the_split_with_a_seed(digits: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    out, _ = digits
    ds = ShardDataset(out, "train", output="uint8")
    first = pick_indices(ds, 8, seed=0)
    assert first == sorted(set(first)) and len(first) == 8
    assert first != list(range(8)) and first[-1] - first[0] > len(ds) // 2  # not the first shard's samples
    assert len({i // 50 for i in first}) >= 3  # from several of the four shards
    assert pick_indices(ds, 8, seed=0) == first and pick_indices(ds, 8, seed=1) != first
    path = preview(out, "train", 8, tmp_path / "g.png", seed=0)
    assert shown_indices(path) == first
    assert pick_indices(ds, 500) == list(range(len(ds)))  # asked for more than there are: all of them


def test_class_filter_and_explicit_indices(digits: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    out, labels = digits
    ds = ShardDataset(out, "train", output="uint8")
    threes = pick_indices(ds, 6, seed=3, classes=["3"])
    assert len(threes) == 6 and all(labels[i] == 3 for i in threes)
    assert pick_indices(ds, indices=[5, 7, -1]) == [5, 7, len(ds) - 1]
    with pytest.raises(SettingsError, match="no index 200"):
        pick_indices(ds, indices=[200])


def test_class_tiles_are_framed_in_their_class_colour(digits: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    out, labels = digits
    picked = [int(np.flatnonzero(labels == c)[0]) for c in range(5)]
    got = rgb(preview(out, "train", out=tmp_path / "f.png", indices=picked, columns=5))
    width = MIN_TILE + 2 * 4  # tile plus its frame
    for k, i in enumerate(picked):
        x0 = GAP + k * (width + GAP)
        assert tuple(got[GAP + 1, x0 + 1]) == colour(int(labels[i])), f"tile {k} (sample {i}, class {labels[i]})"


def test_cli_preview_prints_what_it_drew(digits: tuple[Path, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, labels = digits
    png = tmp_path / "cli.png"
    assert cli(["preview", str(out), "--split", "train", "-n", "4", "--seed", "7", "--classes", "1,2", "-o", str(png)]) == 0
    said = capsys.readouterr().out
    shown = shown_indices(png)
    assert said.startswith(f"wrote {png}: 4 train sample(s): ") and said.strip().endswith(", ".join(map(str, shown)))
    assert all(labels[i] in (1, 2) for i in shown)
    assert cli(["preview", str(out), "--split", "train", "--indices", "3,4", "-o", str(png)]) == 0
    assert shown_indices(png) == [3, 4]
