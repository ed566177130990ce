"""AISegment end to end through an installed shim, as train.py would use it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import get_data_loaders
from PIL import Image

from ai8x_shards.cli import main as cli
from loaders.install import InstallError, install, installed_entries, uninstall
from loaders.preview import preview, shown_indices
from loaders.transforms import prepare_image, unfold, unfold_torch
from shardwriter import pack
from shardwriter.sources import AISegmentSource
from shardwriter.synth import synth_aisegment


def reference_sample(raw: Path, image_rel: str, k: int, size: int, act_mode_8bit: bool) -> tuple[torch.Tensor, np.ndarray]:
    """An independent implementation of the reference chain (datasets/aisegment.py + ai8x)."""
    img = Image.open(raw / image_rel)
    matte_rel = image_rel.replace("clip_img", "matting", 1).replace("clip_", "matting_").replace(".jpg", ".png")
    lbl = Image.open(raw / matte_rel)
    step = (800 - 600) / (3 - 1)
    box = (0, 0 + k * step, 600, 0 + k * step + 600)
    crop = np.asarray(img.crop(box).resize([size, size])).astype(np.uint8)
    label = (np.asarray(lbl.crop(box).resize([size, size]))[:, :, 3] == 0).astype(np.uint8)
    r = 4 if size == 352 else 1
    folded = None
    if r == 1:
        folded = crop
    else:
        for i in range(r):
            for j in range(r):
                part = crop[i::r, j::r, :]
                folded = part if folded is None else np.concatenate((folded, part), axis=2)
    x = torch.from_numpy((folded / 256).astype(np.float32)).permute(2, 0, 1)  # ToTensor on floats
    x = x.sub(0.5).mul(256.0).round().clamp(min=-128, max=127)
    return (x if act_mode_8bit else x.div(128.0)), label


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """Synthetic raw AISegment, packed, and an ai8x-training-like checkout with the shim."""
    root = tmp_path_factory.mktemp("ai8x")
    raw = synth_aisegment(root / "raw", images=8, seed=3)
    pack(AISegmentSource(raw, test_fraction=0.3), root / "data", max_count=7, shuffle=False, quiet=True)
    repo = root / "ai8x-training"
    (repo / "datasets").mkdir(parents=True)
    (repo / "train.py").write_text("# stand-in\n")
    (repo / "datasets" / "other.py").write_text("datasets = [{'name': 'MNIST', 'input': (1, 28, 28), 'output': tuple(range(10)), 'loader': None}]\n")
    assert cli(["install-ai8x", str(repo)]) == 0
    return raw, root / "data", repo


def discover(repo: Path) -> dict[str, dict]:
    """train.py's discovery: import every datasets/*.py as datasets.<name>, concatenate lists."""
    found = {}
    for path in sorted((repo / "datasets").glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"datasets.{path.stem}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for d in mod.datasets:
            found[d["name"]] = d
    return found


@pytest.mark.parametrize("act_mode_8bit", [False, True])
def test_installed_entries_serve_the_reference_tensors_bit_for_bit(checkout, act_mode_8bit):
    raw, data, repo = checkout
    entries = discover(repo)
    args = SimpleNamespace(act_mode_8bit=act_mode_8bit, truncate_testset=False)
    for name, size in (("AISegment_80_shards", 80), ("AISegment_352_shards", 352)):
        e = entries[name]
        train, test = e["loader"]((str(data), args), load_train=True, load_test=True)
        assert tuple(train[0][0].shape) == e["input"]
        crops = set()
        for ds in (train, test):
            for i in range(len(ds)):
                x, y = ds[i]
                image_rel, _, crop = ds.source_name(i).partition("#crop")
                want_x, want_y = reference_sample(raw, image_rel, int(crop), size, act_mode_8bit)
                assert torch.equal(x, want_x), (name, i)
                assert y.dtype == torch.int64 and np.array_equal(y.numpy(), want_y)
                crops.add((image_rel, crop))
        assert len(crops) == 8 * 3  # every crop of every image, once


@pytest.mark.parametrize("workers", [0, 2])
def test_train_py_data_path_runs_on_both_entries(checkout, workers):
    _, data, repo = checkout
    entries = discover(repo)
    args = SimpleNamespace(act_mode_8bit=False, truncate_testset=False)
    for name in ("AISegment_80_shards", "AISegment_352_shards"):
        e = entries[name]
        train, test = e["loader"]((str(data), args), load_train=True, load_test=True)
        np.random.seed(0)
        loaders = get_data_loaders(train, test, batch_size=4, workers=workers, validation_split=0.0, collate_fn=e["collate"])
        total = 0
        for loader in loaders:
            for inputs, target in loader:
                assert inputs.dtype == torch.float32 and tuple(inputs.shape[1:]) == e["input"]
                assert target.dtype == torch.int64 and target.shape[1:] == ((80, 80) if "80" in name else (352, 352))
                total += len(inputs)
        assert total == len(train) + len(test)


def test_loader_honours_load_train_and_truncate(checkout):
    _, data, repo = checkout
    e = discover(repo)["AISegment_80_shards"]
    train, test = e["loader"]((str(data), SimpleNamespace(act_mode_8bit=False, truncate_testset=True)), load_train=False)
    assert train is None and len(test) == 1
    stub = SimpleNamespace(act_mode_8bit=False, truncate_testset=False)
    assert torch.equal(test[0][0], e["loader"]((str(data), stub))[1][0][0])


def test_shim_imports_without_the_package_and_fails_clearly_on_use(checkout):
    _, data, repo = checkout
    code = f"""
import sys, importlib.util
for mod in ("loaders", "shardwriter"):
    sys.modules[mod] = None  # makes `import loaders` raise ImportError
spec = importlib.util.spec_from_file_location("datasets.ai8x_shards", {str(repo / "datasets" / "ai8x_shards.py")!r})
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
print(sorted(d["name"] for d in m.datasets))
try:
    m.datasets[0]["loader"](({str(data)!r}, None))
except RuntimeError as exc:
    print("ERR", exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert "['AISegment_352_shards', 'AISegment_80_shards']" in out
    assert "ERR this dataset needs the ai8x-shards package" in out
    assert "pip install -e " in out and "git+" in out and "pip install ai8x-shards " not in out  # not on PyPI


def test_install_is_idempotent_adds_entries_and_uninstalls_only_its_file(checkout, tmp_path):
    _, data, repo = checkout
    shim = repo / "datasets" / "ai8x_shards.py"
    before = shim.read_bytes()
    install(repo)
    assert shim.read_bytes() == before
    assert cli(["install-ai8x", str(repo), "--add", f"Portraits={data / 'AISegment_80'}"]) == 0
    e = discover(repo)["Portraits"]
    assert e["input"] == (3, 80, 80) and e["output"] == (0, 1) and len(e["weight"]) == 2
    train, _ = e["loader"](("/elsewhere", SimpleNamespace(act_mode_8bit=False, truncate_testset=False)))
    assert len(train) > 0  # an absolute DIR ignores --data
    assert {x["name"] for x in installed_entries(repo)} == {"AISegment_80_shards", "AISegment_352_shards", "Portraits"}
    install(repo)
    assert "Portraits" in discover(repo)  # kept on re-install
    assert cli(["install-ai8x", str(repo), "--uninstall"]) == 0
    assert not shim.exists()
    shim.write_text("datasets = []\n")
    with pytest.raises(InstallError, match="not written by ai8x-shards"):
        uninstall(repo)
    shim.unlink()
    install(repo)
    with pytest.raises(InstallError, match="not an ai8x-training checkout"):
        install(tmp_path)


def test_prepare_image_matches_the_packed_samples(checkout):
    raw, data, _ = checkout
    from loaders import ShardDataset

    ds = ShardDataset(data / "AISegment_352", "test", act_mode_8bit=True)
    image_rel, _, crop = ds.source_name(0).partition("#crop")
    k = int(crop)
    crop_img = Image.open(raw / image_rel).crop((0, 100 * k, 600, 100 * k + 600))
    assert torch.equal(prepare_image(crop_img, "AISegment_352", act_mode_8bit=True)[0], ds[0][0])
    ycbcr = crop_img.convert("YCbCr")  # any mode is converted to RGB first
    out = prepare_image(ycbcr, 80)
    assert out.shape == (1, 3, 80, 80) and out.dtype == torch.float32
    assert torch.equal(out, prepare_image(ycbcr.convert("RGB"), 80))


def test_preview_draws_unfolded_images_with_masks(checkout, tmp_path):
    _, data, _ = checkout
    from loaders import ShardDataset

    path = preview(data / "AISegment_352", "train", n=3, out=tmp_path / "p.png")
    with Image.open(path) as im:
        img = np.asarray(im.convert("RGB")).astype(int)
    assert img.shape[0] > 352 and img.shape[1] > 3 * 352  # three full-size tiles
    x, y = ShardDataset(data / "AISegment_352", "train", output="uint8")[shown_indices(path)[0]]
    full = unfold(x.numpy(), 4).transpose(1, 2, 0).astype(int)  # 352x352 RGB, as it was before folding
    tile = img[8 : 8 + 352, 8 : 8 + 352]
    background = y.numpy() == 1
    assert np.array_equal(tile[background], full[background])  # unfolded, and the background left as it is
    assert (np.abs(tile[~background] - full[~background]).sum(axis=-1) > 0).mean() > 0.9  # the portrait tinted
    assert cli(["preview", str(data / "AISegment_80"), "--split", "test", "-n", "2", "-o", str(tmp_path / "q.png")]) == 0
    with Image.open(tmp_path / "q.png") as im:
        assert im.size[0] > 160


def test_install_attaches_an_augmentation_that_imports_only_when_the_entry_is_used(checkout, monkeypatch):
    _, data, repo = checkout
    (repo / "portrait_aug.py").write_text(
        "from loaders.augment import HorizontalFlip\n"
        "train_augment = [HorizontalFlip(p=1.0)]\n"
    )
    assert cli(["install-ai8x", str(repo), "--add", f"PortraitsAug={data / 'AISegment_352'}", "--augment", "portrait_aug:train_augment",
                "--augment", "AISegment_80_shards=missing_module:augment"]) == 0
    entries = discover(repo)  # the shim imports although missing_module does not exist
    e = entries["PortraitsAug"]
    assert e["augment"] == "portrait_aug:train_augment" and e["fold_ratio"] == 4
    monkeypatch.syspath_prepend(str(repo))  # train.py runs from its checkout: its folder is on sys.path
    args = SimpleNamespace(act_mode_8bit=True, truncate_testset=False)
    train, test = e["loader"](("/elsewhere", args))
    plain = discover(repo)["AISegment_352_shards"]["loader"]((str(data), args))[0]
    assert train.augment is not None and test.augment is None
    x, y = train[0]
    px, py = plain[0]
    assert x.shape == px.shape == (48, 88, 88) and not torch.equal(x, px)
    assert torch.equal(unfold_torch(x, 4), unfold_torch(px, 4).flip(-1)) and torch.equal(y, py.flip(-1))  # mirrored, unfolded
    with pytest.raises(ValueError, match="cannot import missing_module"):
        entries["AISegment_80_shards"]["loader"]((str(data), args))
    assert cli(["install-ai8x", str(repo), "--augment", "AISegment_80_shards=none"]) == 0
    assert "augment" not in discover(repo)["AISegment_80_shards"]
    assert discover(repo)["PortraitsAug"]["augment"] == "portrait_aug:train_augment"  # kept on re-install
    assert cli(["install-ai8x", str(repo), "--augment", "Nope=portrait_aug:train_augment"]) == 2
    assert cli(["install-ai8x", str(repo), "--augment", "portrait_aug:train_augment"]) == 2  # no --add to apply to
    assert cli(["install-ai8x", str(repo), "--augment", "PortraitsAug=not a spec"]) == 2
