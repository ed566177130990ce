"""On-the-fly augmentation through both datasets: pixel-exact, paired, fold-aware, reproducible."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from loaders import ShardDataset, StreamingShardDataset
from loaders.augment import (
    AdditiveNoise,
    Albumentations,
    HorizontalFlip,
    PerSample,
    Random,
    RandomAffine,
    RandomCrop,
    RandomShift,
    TorchVision,
    as_augmentation,
    sample_keys,
)
from loaders.mapstyle import collate
from loaders.transforms import fold, reference_normalize, unfold
from shardwriter import pack
from shardwriter.errors import SettingsError
from shardwriter.sources import NpzSource

N = 24
SEED = 5


def segmentation(root, r: int, n: int = N, side: int = 16):
    """Unfolded uint8 images (N, 3, side, side) whose mask is ``channel 0 >= 128``, packed folded by ``r``.

    Any geometric transform applied to image and mask together (nearest, zero fill)
    keeps ``mask == image[0] >> 7``; one applied to the image alone does not.
    """
    rng = np.random.default_rng(r)
    x = rng.integers(0, 256, (n, 3, side, side), dtype=np.uint8)
    y = (x[:, 0] >> 7).astype(np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "src.npz", x=x, y=y)
    pack(NpzSource(root / "src.npz", fold_ratio=r, test_fraction=0.0, layout="chw"), root / "ds", max_count=7, shuffle=False, quiet=True)
    return root / "ds", x, y


@pytest.fixture(scope="module", params=[1, 4], ids=["fold1", "fold4"])
def seg(request, tmp_path_factory):
    return (request.param, *segmentation(tmp_path_factory.mktemp(f"seg{request.param}"), request.param))


def unfolded(batch_x: torch.Tensor, r: int) -> np.ndarray:
    """Packed uint8 (N, C*r*r, h, w) -> unfolded CHW (N, C, h*r, w*r), with the writer's own unfold."""
    return np.stack([unfold(np.asarray(b), r) for b in batch_x.numpy()])


def reference_flip_crop(x: np.ndarray, y: np.ndarray, epoch: int, indices: np.ndarray, p: int):
    """HorizontalFlip(0.5) then RandomCrop(padding=p) on the unfolded arrays, plain numpy, the same draws."""
    rand = Random(sample_keys(SEED, epoch, indices))
    flip = rand.bernoulli(0.5)
    top, left = rand.integers(0, 2 * p), rand.integers(0, 2 * p)
    xs, ys = [], []
    for k, i in enumerate(indices.tolist()):
        img, mask = x[i], y[i]
        if flip[k]:
            img, mask = img[:, :, ::-1], mask[:, ::-1]
        h, w = mask.shape
        pi = np.pad(img, ((0, 0), (p, p), (p, p)))
        pm = np.pad(mask, ((p, p), (p, p)), constant_values=1)
        xs.append(pi[:, top[k] : top[k] + h, left[k] : left[k] + w])
        ys.append(pm[top[k] : top[k] + h, left[k] : left[k] + w])
    assert flip.any() and not flip.all() and (top != p).any()  # the draws do something
    return np.stack(xs), np.stack(ys)


def flip_crop(p: int = 3):
    return [HorizontalFlip(0.5), RandomCrop(p, mask_fill=1)]


# --------------------------------------------------------------------------- pixel-exact


@pytest.mark.parametrize("act_mode_8bit", [False, True])
def test_flip_crop_of_image_and_mask_is_pixel_exact_with_the_unfolded_reference(seg, act_mode_8bit):
    r, ds_dir, x, y = seg
    idx = np.arange(N)
    want_x, want_y = reference_flip_crop(x, y, 2, idx, 3)
    raw = ShardDataset(ds_dir, "train", output="uint8", augment=flip_crop(), seed=SEED)
    raw.set_epoch(2)
    got_x, got_y = raw.__getitems__(idx.tolist()).tensors()
    assert np.array_equal(unfolded(got_x, r), want_x) and np.array_equal(got_y.numpy(), want_y)
    # Normalized after augmentation, bit-exact with the ai8x chain on the augmented pixels, in both modes.
    ds = ShardDataset(ds_dir, "train", act_mode_8bit=act_mode_8bit, augment=flip_crop(), seed=SEED)
    ds.set_epoch(2)
    fx, fy = collate(ds.__getitems__(idx.tolist()))
    packed = torch.from_numpy(np.stack([fold(a, r) for a in want_x]))
    assert fx.dtype == torch.float32 and torch.equal(fx, reference_normalize(packed, act_mode_8bit))
    assert fy.dtype == torch.int64 and torch.equal(fy, torch.from_numpy(want_y.astype(np.int64)))
    # The streaming dataset, batched and per sample, serves the same pixels for each sample.
    for kw in ({"batch_size": 5}, {}):
        st = StreamingShardDataset(ds_dir, seed=SEED, shuffle_buffer=4, act_mode_8bit=act_mode_8bit, augment=flip_crop(), **kw)
        st.set_epoch(2)
        xs, ys = zip(*st)
        sx = torch.cat(xs) if kw else torch.stack(xs)
        sy = torch.cat(ys) if kw else torch.stack(ys)
        order = positions(st, 2)
        sw_x, sw_y = reference_flip_crop(x, y, 2, order, 3)
        assert torch.equal(sx, reference_normalize(torch.from_numpy(np.stack([fold(a, r) for a in sw_x])), act_mode_8bit))
        assert torch.equal(sy, torch.from_numpy(sw_y.astype(np.int64)))


def positions(st: StreamingShardDataset, epoch: int) -> np.ndarray:
    """The split positions one rank reads in an epoch, in order (from the plan)."""
    from loaders import plan

    p = plan.worker_plan(st._counts, seed=st.seed, epoch=epoch, rank=0, world=1, worker=0, workers=1, shuffle=st.shuffle,
                         buffer=st.shuffle_buffer, drop_last=False, chunk=1, batch_size=None)
    return st._starts[p.shards] + p.withins


# --------------------------------------------------------------------------- reproducible


def test_same_seed_and_epoch_same_batches_for_any_worker_count_and_epochs_differ(seg):
    r, ds_dir, x, y = seg
    aug = [HorizontalFlip(), RandomShift(2), RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1)), AdditiveNoise(4.0, p=0.5)]

    def stream(epoch: int, workers: int, **kw) -> tuple[torch.Tensor, torch.Tensor]:
        st = StreamingShardDataset(ds_dir, seed=SEED, shuffle_buffer=6, output="uint8", augment=aug, **kw)
        st.set_epoch(epoch)
        got = list(DataLoader(st, batch_size=None, num_workers=workers))
        if "batch_size" in kw:
            return torch.cat([a for a, _ in got]), torch.cat([b for _, b in got])
        return torch.stack([a for a, _ in got]), torch.stack([b for _, b in got])

    a = stream(3, 0, batch_size=4)
    for other in (stream(3, 2, batch_size=4), stream(3, 2, batch_size=3), stream(3, 0)):
        assert torch.equal(a[0], other[0]) and torch.equal(a[1], other[1])
    b = stream(4, 0, batch_size=4)
    assert not torch.equal(a[0], b[0])
    # Image and mask moved together: the mask is still channel 0 >> 7 (zero fill on both).
    quiet = [HorizontalFlip(), RandomShift(2), RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1))]
    ds = ShardDataset(ds_dir, "train", output="uint8", augment=quiet, seed=SEED)
    xs, ys = ds.__getitems__(list(range(N))).tensors()
    assert torch.equal(ys, torch.from_numpy(unfolded(xs, r)[:, 0] >> 7).long())
    assert not np.array_equal(unfolded(xs, r), x)

    # Map-style: per index, the same with 0 or 2 workers, any order.
    def mapped(epoch: int, workers: int) -> torch.Tensor:
        ds = ShardDataset(ds_dir, "train", output="uint8", augment=aug, seed=SEED)
        ds.set_epoch(epoch)
        return by_index(ds, workers, 5, seed=workers)

    assert torch.equal(mapped(3, 0), mapped(3, 2)) and not torch.equal(mapped(3, 0), mapped(4, 0))


def by_index(ds: ShardDataset, workers: int, batch: int, seed: int) -> torch.Tensor:
    """Every sample's input, read through a DataLoader in a shuffled order, put back in index order."""
    perm = np.random.default_rng(seed).permutation(len(ds)).tolist()
    out = torch.empty((len(ds), *ds.input_shape), dtype=torch.uint8)
    loader = DataLoader(ds, batch_size=batch, sampler=perm, num_workers=workers, collate_fn=collate)
    for (bx, _), k in zip(loader, range(0, len(perm), batch)):
        out[perm[k : k + batch]] = bx
    return out


def test_map_style_without_set_epoch_counts_reads_across_re_forked_workers(seg):
    _, ds_dir, _, _ = seg

    def fixed(epoch: int) -> torch.Tensor:
        ds = ShardDataset(ds_dir, "train", output="uint8", augment=flip_crop(), seed=SEED)
        ds.set_epoch(epoch)
        return ds.__getitems__(list(range(N))).tensors()[0]

    ds = ShardDataset(ds_dir, "train", output="uint8", augment=flip_crop(), seed=SEED)
    for epoch in range(3):  # train.py: a fresh worker pool every epoch, no set_epoch
        assert torch.equal(by_index(ds, 2, 6, seed=epoch), fixed(epoch))
    assert torch.equal(ds.__getitems__(list(range(N))).tensors()[0], fixed(3))  # the next read of each: epoch 3
    ds.set_epoch(1)  # wins, for every read
    assert torch.equal(by_index(ds, 0, 6, seed=9), fixed(1)) and torch.equal(ds[5][0], fixed(1)[5])
    # np/torch global RNG states play no part (distiller's deterministic mode resets them in every worker).
    np.random.seed(0)
    torch.manual_seed(0)
    a = fixed(7)
    np.random.seed(1)
    torch.manual_seed(1)
    assert torch.equal(a, fixed(7))


def test_held_out_indices_are_served_as_packed(seg):
    r, ds_dir, x, _ = seg
    ds = ShardDataset(ds_dir, "train", output="uint8", augment=flip_crop(), seed=SEED, valid_fraction=0.25)
    held = ds.valid_indices
    assert len(held) == N // 4
    xs, _ = ds.__getitems__(list(range(N))).tensors()
    got = unfolded(xs, r)
    assert np.array_equal(got[held], x[held])
    train = [i for i in range(N) if i not in held]
    assert not np.array_equal(got[train], x[train])


# --------------------------------------------------------------------------- callables and adapters


def test_per_sample_callable_gets_the_unfolded_image_its_mask_and_its_own_generator(seg):
    r, ds_dir, x, y = seg
    seen = []

    def roll(image, mask, rng):
        seen.append((image.shape, image.dtype, None if mask is None else mask.shape, type(rng).__name__))
        k = int(rng.integers(1, 4))
        return np.roll(image, k, axis=1), np.roll(mask, k, axis=1)

    ds = ShardDataset(ds_dir, "train", output="uint8", augment=roll, seed=SEED)
    assert isinstance(ds.augment, PerSample)
    xs, ys = ds.__getitems__(list(range(N))).tensors()
    assert seen[0] == ((16, 16, 3), np.uint8, (16, 16), "Generator") and len(seen) == N
    got = unfolded(xs, r)
    shifts = [next(k for k in (1, 2, 3) if np.array_equal(got[i], np.roll(x[i], k, axis=2))) for i in range(N)]
    assert len(set(shifts)) > 1
    assert torch.equal(ys, torch.from_numpy(np.stack([np.roll(y[i], s, axis=1) for i, s in enumerate(shifts)])).long())


def test_albumentations_pipeline_runs_through_both_datasets(seg):
    A = pytest.importorskip("albumentations", reason="albumentations is not installed")
    cv2 = pytest.importorskip("cv2")
    r, ds_dir, x, _ = seg
    pipe = A.Compose([
        A.HorizontalFlip(p=0.5),
        A.Affine(rotate=(-20, 20), translate_percent=(-0.1, 0.1), interpolation=cv2.INTER_NEAREST,
                 mask_interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=1.0),
    ])
    assert isinstance(as_augmentation(pipe), Albumentations)
    ds = ShardDataset(ds_dir, "train", output="uint8", augment=pipe, seed=SEED)
    xs, ys = ds.__getitems__(list(range(N))).tensors()
    got = unfolded(xs, r)
    assert not np.array_equal(got, x)
    assert torch.equal(ys, torch.from_numpy(got[:, 0] >> 7).long())  # the mask went through with the image
    ds.set_epoch(0)  # the first read above was epoch 0 too: the same pixels
    assert torch.equal(ds.__getitems__(list(range(N))).tensors()[0], xs)

    def stream(workers: int) -> torch.Tensor:
        st = StreamingShardDataset(ds_dir, seed=SEED, batch_size=4, output="uint8", augment=pipe)
        return torch.cat([a for a, _ in DataLoader(st, batch_size=None, num_workers=workers)])

    s0 = stream(0)
    assert torch.equal(s0, stream(2)) and s0.shape == (N, *ds.input_shape)


def test_torchvision_adapter_seeds_a_forked_rng(monkeypatch, seg):
    r, ds_dir, x, _ = seg
    tv = types.ModuleType("torchvision")
    tv.tv_tensors = types.SimpleNamespace(Image=lambda t: t.clone(), Mask=lambda t: t.clone())
    monkeypatch.setitem(sys.modules, "torchvision", tv)

    class Flip:  # stands in for a torchvision.transforms.v2 transform: global torch RNG, CHW image + mask
        def __call__(self, img, mask=None):
            if torch.rand(()) < 0.5:
                img, mask = img.flip(-1), None if mask is None else mask.flip(-1)
            return img if mask is None else (img, mask)

    Flip.__module__ = "torchvision.transforms.v2._stand_in"
    assert isinstance(as_augmentation(Flip()), TorchVision)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    ds = ShardDataset(ds_dir, "train", output="uint8", augment=Flip(), seed=SEED)
    xs, ys = ds.__getitems__(list(range(N))).tensors()
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is untouched
    got = unfolded(xs, r)
    flipped = [np.array_equal(got[i], x[i][:, :, ::-1]) for i in range(N)]
    assert any(flipped) and not all(flipped)
    assert all(flipped[i] or np.array_equal(got[i], x[i]) for i in range(N))
    assert torch.equal(ys, torch.from_numpy(got[:, 0] >> 7).long())


def test_real_torchvision_v2_flip_if_installed(seg):
    try:
        import torchvision.transforms.v2 as v2
    except ImportError:
        pytest.skip("torchvision is not installed (it cannot load beside the CPU torch wheel here)")
    except RuntimeError as exc:  # a torchvision built for another torch: "operator torchvision::nms does not exist"
        pytest.skip(f"torchvision is installed but does not load beside this torch ({exc})")
    r, ds_dir, x, _ = seg
    ds = ShardDataset(ds_dir, "train", output="uint8", augment=v2.RandomHorizontalFlip(p=0.5), seed=SEED)
    xs, ys = ds.__getitems__(list(range(N))).tensors()
    got = unfolded(xs, r)
    assert all(np.array_equal(got[i], x[i]) or np.array_equal(got[i], x[i][:, :, ::-1]) for i in range(N))
    assert torch.equal(ys, torch.from_numpy(got[:, 0] >> 7).long())


# --------------------------------------------------------------------------- settings


def test_setting_mistakes_raise_at_construction_and_bad_outputs_name_the_callable(seg, tmp_path):
    _, ds_dir, _, _ = seg
    for bad, match in ((lambda: 42, "neither a callable"), (lambda: [HorizontalFlip(p=2)], "probability"),
                       (lambda: RandomShift(99), "do not fit"), (lambda: "nowhere_module:thing", "cannot import"),
                       (lambda: RandomCrop(-1), "integers >= 0")):
        with pytest.raises(SettingsError, match=match):
            ShardDataset(ds_dir, "train", augment=bad())
    with pytest.raises(SettingsError, match="RandomAffine acts on images"):
        rng = np.random.default_rng(0)
        np.savez(tmp_path / "kws.npz", x=rng.integers(0, 256, (6, 8, 32), dtype=np.uint8), y=np.arange(6) % 2)
        pack(NpzSource(tmp_path / "kws.npz", test_fraction=0.0, layout="chw"), tmp_path / "kws", shuffle=False, quiet=True)
        StreamingShardDataset(tmp_path / "kws", augment=RandomAffine(10))
    # 1-D data (C, L): shifted in time, noise; the callable sees (L, C).
    st = StreamingShardDataset(tmp_path / "kws", output="uint8", batch_size=6, shuffle=False,
                               augment=[RandomShift(3), AdditiveNoise(2.0), lambda s, m, rng: s[::-1].copy()])
    xs, _ = next(iter(st))
    assert xs.shape == (6, 8, 32) and xs.dtype == torch.uint8

    def wrong(image, mask, rng):
        return image[:4], mask

    ds = ShardDataset(ds_dir, "train", augment=wrong)
    with pytest.raises(SettingsError, match="wrong returned an image of uint8"):
        ds[0]
    ds = ShardDataset(ds_dir, "train", augment=lambda image, mask, rng: image)
    with pytest.raises(SettingsError, match=r"must return \(image, mask\)"):
        ds[0]
