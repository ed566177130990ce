"""On-the-fly augmentation for both datasets: on uint8, before normalization, image and mask together.

Both :class:`~loaders.ShardDataset` and :class:`~loaders.StreamingShardDataset` take
``augment=``. After a batch (or sample) has been read and its bytes checked, and before
it is normalized, the loader hands the augmentation the **unfolded** pixels: the packed
input ``(C*r*r, H/r, W/r)`` of a dataset folded with ratio ``r`` is the ``H x W x C``
image it came from, and a segmentation mask is its ``H x W`` uint8 mask. Afterwards the
loader folds the pixels back and normalizes them with :func:`loaders.transforms.normalize`,
so the output is bit-exact with the ai8x chain applied to the augmented pixels.

What ``augment=`` accepts (:func:`as_augmentation`):

- a **per-sample callable** ``fn(image, mask, rng)``: ``image`` a writable ``H x W x C``
  uint8 array (``L x C`` for 1-D data such as ``(C, L)`` inputs), ``mask`` the ``H x W``
  uint8 mask or ``None`` (class labels and regression targets are not passed and stay
  as they are), ``rng`` a :class:`numpy.random.Generator` of this sample's own. It returns
  the image, or ``(image, mask)`` (required when there is a mask), of the same shapes;
- the **built-ins** below, vectorized over the batch (:class:`RandomCrop`,
  :class:`HorizontalFlip`, :class:`RandomShift`, :class:`RandomAffine`,
  :class:`AdditiveNoise`), or your own :class:`Augmentation` subclass or a
  :class:`Batched` function of the whole batch;
- an **albumentations** pipeline (image and mask transformed together) or a
  **torchvision v2** transform, wrapped by :class:`Albumentations` / :class:`TorchVision`
  (neither package is a dependency; each is imported only by its adapter);
- a list of any of these (:class:`Compose`), or ``"module:name"`` naming one.

Randomness: every random number comes from the sample's key, ``(seed, epoch, sample
index)``, where the index is the sample's position in its split (never the worker, the
batch or the order it is read in), so the same ``(seed, epoch)`` gives the same pixels
for any ``num_workers``, batch size or shuffle, and another epoch other draws. The global
RNGs are never read (in distiller's ``--deterministic`` mode every DataLoader worker starts
from the same global state): built-ins draw from :class:`Random` (a counter-based hash,
vectorized, one independent stream per draw), callables get a :class:`numpy.random.Generator`
(Philox keyed by the sample), the adapters seed the library's own generators from it (and
torchvision's global torch RNG only inside ``torch.random.fork_rng``).

The epoch: the streaming dataset's pass (see its docstring). The map-style dataset has no
passes; train.py never calls ``set_epoch``, so by default the ``k``-th read of sample ``i``
(counted in shared memory across DataLoader workers, which train.py forks anew every
epoch) augments with epoch ``k``: a training loop that reads every sample once per epoch
gets epoch 0, 1, 2, ... as if it had called ``set_epoch``. ``ShardDataset.set_epoch(e)``
fixes the epoch instead (and wins from then on).
"""

from __future__ import annotations

import functools
import importlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import as_strided

from shardwriter.errors import SettingsError

__all__ = [
    "AdditiveNoise", "Albumentations", "Augmentation", "Augmenter", "Batched", "Compose", "HorizontalFlip", "PerSample",
    "Pixels", "Random", "RandomAffine", "RandomCrop", "RandomShift", "SampleEpochs", "Spec", "TorchVision",
    "as_augmentation", "load",
]

_TAG = 0x5EED_A46  # domain tag: augmentation draws never coincide with the plan's
_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer on uint64 arrays: a bijective, well-mixed hash."""
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def sample_keys(seed: int, epochs: np.ndarray | int, indices: np.ndarray) -> np.ndarray:
    """The uint64 key of each sample: a hash of ``(seed, epoch, index)``."""
    with np.errstate(over="ignore"):
        base = _mix(np.asarray([seed & 0xFFFFFFFFFFFFFFFF], _U64) * _GOLDEN ^ _U64(_TAG))
        e = np.broadcast_to(np.asarray(epochs, np.int64), np.shape(indices)).astype(_U64)
        k = _mix(base ^ (e + _U64(1)) * _GOLDEN)
        return _mix(k ^ (np.asarray(indices, np.int64).astype(_U64) + _U64(1)) * _U64(0xD1B54A32D192ED03))


class Random:
    """Random numbers for one batch, each sample's from its own key: vectorized and reproducible per sample.

    Every call is a new draw (a new stream for every sample), so an augmentation must
    make the same calls whatever the batch holds (draw for every sample, then use the
    draws of those it acts on), and then sample ``i`` gets the same numbers in any batch.
    """

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = np.asarray(keys, _U64)
        self._draws = 0

    def __len__(self) -> int:
        return len(self.keys)

    def bits(self) -> np.ndarray:
        """One uint64 per sample (a fresh draw)."""
        self._draws += 1
        with np.errstate(over="ignore"):
            return _mix(self.keys ^ _mix(np.asarray([self._draws], _U64) * _GOLDEN))

    def uniform(self, low: float = 0.0, high: float = 1.0) -> np.ndarray:
        """float64 in ``[low, high)``, one per sample."""
        return low + (self.bits() >> _U64(11)).astype(np.float64) * (2.0**-53) * (high - low)

    def integers(self, low: int, high: int) -> np.ndarray:
        """int64 in ``[low, high]`` (both ends included), one per sample."""
        span = high - low + 1
        return low + np.minimum((self.uniform() * span).astype(np.int64), span - 1)

    def bernoulli(self, p: float) -> np.ndarray:
        """True with probability ``p``, one per sample."""
        return self.uniform() < p

    def normal(self, index: np.ndarray) -> np.ndarray:
        """Standard normal float32 noise of shape ``(N, *index.shape)``; element ``e`` of sample
        ``n`` is keyed by ``index[e]`` (so a layout change that moves elements moves their noise)."""
        d = self.bits()
        with np.errstate(over="ignore"):
            h = _mix(d.reshape(-1, *([1] * index.ndim)) + index.astype(_U64) * _GOLDEN)
            g = _mix(h ^ _U64(0xA5A5A5A5A5A5A5A5))
        u1 = ((h >> _U64(11)).astype(np.float64) + 1.0) * (2.0**-53)  # (0, 1]
        u2 = (g >> _U64(11)).astype(np.float64) * (2.0**-53)
        return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)).astype(np.float32)

    def generators(self) -> list[np.random.Generator]:
        """A :class:`numpy.random.Generator` per sample (Philox keyed by the sample and this draw)."""
        self._draws += 1
        return [np.random.Generator(np.random.Philox(key=[int(k), self._draws])) for k in self.keys.tolist()]


# --------------------------------------------------------------------------- the batch being augmented


@dataclass(frozen=True)
class Spec:
    """What an augmentation is applied to: the packed input shape, the fold ratio, the target kind."""

    input_shape: tuple[int, ...]
    fold: int = 1
    target_kind: str = "class"

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The unfolded, channels-last shape the callables see: ``(H, W, C)``, or ``(L, C)`` for 1-D data."""
        if len(self.input_shape) == 2:
            c, n = self.input_shape
            return (n, c)
        c, h, w = self.input_shape
        r = self.fold
        return (h * r, w * r, c // (r * r))

    @property
    def masks(self) -> bool:
        return self.target_kind == "mask"


def _to_images(x: np.ndarray, r: int) -> np.ndarray:
    """Packed ``(N, C*r*r, h, w)`` (or ``(N, C, L)``) -> unfolded channels-last ``(N, h*r, w*r, C)`` (``(N, L, C)``), a new array."""
    if x.ndim == 3:
        return np.ascontiguousarray(x.transpose(0, 2, 1))
    n, cr, h, w = x.shape
    c = cr // (r * r)
    y = x.reshape(n, r, r, c, h, w).transpose(0, 4, 1, 5, 2, 3)
    return np.ascontiguousarray(y).reshape(n, h * r, w * r, c)


def _to_packed(images: np.ndarray, r: int) -> np.ndarray:
    """Inverse of :func:`_to_images` (ai8x fold order: channel ``(i*r + j)*C + c``)."""
    if images.ndim == 3:
        return np.ascontiguousarray(images.transpose(0, 2, 1))
    n, hh, ww, c = images.shape
    h, w = hh // r, ww // r
    y = images.reshape(n, h, r, w, r, c).transpose(0, 2, 4, 5, 1, 3)
    return np.ascontiguousarray(y).reshape(n, r * r * c, h, w)


@functools.lru_cache(maxsize=16)
def _unfolded_index(input_shape: tuple[int, ...], r: int) -> np.ndarray:
    """For each element of a packed sample, its position in the unfolded CHW sample."""
    if len(input_shape) == 2:
        return np.arange(int(np.prod(input_shape)), dtype=np.int64).reshape(input_shape)
    c, h, w = input_shape
    chw = np.arange(c * h * w, dtype=np.int64).reshape(1, c // (r * r), h * r, w * r)
    return _to_packed(chw.transpose(0, 2, 3, 1), r)[0]


class Pixels:
    """A batch on its way through an augmentation: the inputs (packed, or unfolded) and the masks.

    Built-ins work on :attr:`packed` (the dataset's layout; flips, shifts and noise need no
    unfolding); callables on :meth:`images` (unfolded, channels-last). The layout changes
    only when an augmentation asks for the other one.
    """

    def __init__(self, packed: np.ndarray, masks: np.ndarray | None, spec: Spec) -> None:
        self.spec = spec
        self._packed: np.ndarray | None = packed
        self._images: np.ndarray | None = None
        self.masks = masks

    def __len__(self) -> int:
        x = self._packed if self._packed is not None else self._images
        assert x is not None
        return len(x)

    @property
    def packed(self) -> np.ndarray:
        """uint8 ``(N, *input_shape)``, the dataset's layout (folded)."""
        if self._packed is None:
            assert self._images is not None
            self._packed, self._images = _to_packed(self._images, self.spec.fold), None
        return self._packed

    @packed.setter
    def packed(self, value: np.ndarray) -> None:
        self._packed, self._images = value, None

    def images(self) -> np.ndarray:
        """uint8 ``(N, H, W, C)`` (``(N, L, C)`` for 1-D data), unfolded; yours to change in place."""
        if self._images is None:
            assert self._packed is not None
            self._images, self._packed = _to_images(self._packed, self.spec.fold), None
        return self._images

    def set_images(self, images: np.ndarray) -> None:
        self._images, self._packed = images, None


class Augmentation:
    """Base of the vectorized augmentations: override :meth:`apply` (and :meth:`bind` to check settings)."""

    def bind(self, spec: Spec) -> None:
        """Check that this augmentation can act on ``spec``'s data; raise SettingsError if not (at construction)."""

    def apply(self, pixels: Pixels, rand: Random) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class Compose(Augmentation):
    """Apply augmentations in order (each gets its own draws)."""

    def __init__(self, augmentations: Sequence[Any]) -> None:
        self.augmentations = [as_augmentation(a) for a in augmentations]

    def bind(self, spec: Spec) -> None:
        for a in self.augmentations:
            a.bind(spec)

    def apply(self, pixels: Pixels, rand: Random) -> None:
        for a in self.augmentations:
            a.apply(pixels, rand)


# --------------------------------------------------------------------------- built-ins (fold-aware)


def _probability(p: float, what: str) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise SettingsError(f"{what}: p must be a probability in [0, 1], not {p!r}")
    return float(p)


def _fill(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise SettingsError(f"{what} must be an integer in [0, 255], not {value!r}")
    return value


def _translate(x: np.ndarray, r: int, ty: np.ndarray, tx: np.ndarray, fill: int) -> np.ndarray:
    """``out[y, x] = in[y - ty, x - tx]`` (``fill`` outside) on packed ``(N, C*r*r, h, w)``, per-sample shifts.

    In the folded layout a shift by ``t`` moves output phase ``j`` to input phase
    ``(j - t) mod r`` and folded column ``+ floor((j - t) / r)``: one gather from a
    padded copy, no unfolding.
    """
    n, k, h, w = x.shape
    c = k // (r * r)
    pad = int(max(np.abs(ty).max(initial=0), np.abs(tx).max(initial=0))) // r + 1
    padded = np.full((n, k, h + 2 * pad, w + 2 * pad), fill, np.uint8)
    padded[:, :, pad : pad + h, pad : pad + w] = x
    s0, s1, s2, s3 = padded.strides
    windows = as_strided(padded, (n, k, 2 * pad + 1, 2 * pad + 1, h, w), (s0, s1, s2, s3, s2, s3), writeable=False)
    phase = np.arange(r)
    qy, py = np.divmod(phase[None, :] - ty[:, None], r)
    qx, px = np.divmod(phase[None, :] - tx[:, None], r)
    src = ((py[:, :, None, None] * r + px[:, None, :, None]) * c + np.arange(c)).reshape(n, k)
    yo = np.broadcast_to(qy[:, :, None, None] + pad, (n, r, r, c)).reshape(n, k)
    xo = np.broadcast_to(qx[:, None, :, None] + pad, (n, r, r, c)).reshape(n, k)
    return windows[np.arange(n)[:, None], src, yo, xo]


def _flip_packed(x: np.ndarray, r: int, which: np.ndarray) -> None:
    """Mirror the samples ``which`` left-right, in place, on packed ``(N, C*r*r, h, w)`` (or ``(N, C, L)``)."""
    if x.ndim == 3:
        for n in np.flatnonzero(which).tolist():
            x[n] = x[n, :, ::-1]
        return
    k = x.shape[1]
    c = k // (r * r)
    blocks = np.arange(k).reshape(r, r, c)[:, ::-1, :].reshape(k)  # column phase j <- r - 1 - j
    for n in np.flatnonzero(which).tolist():  # one gather and one reversed copy per flipped sample
        x[n] = x[n, blocks][..., ::-1]


def _as_4d(x: np.ndarray) -> np.ndarray:
    """A (N, C, L) signal as (N, C, 1, L), so 1-D data shifts along L like an image along W."""
    return x[:, :, None, :] if x.ndim == 3 else x


class HorizontalFlip(Augmentation):
    """Mirror left-right with probability ``p`` (image and mask together; 1-D data: reversed in time)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = _probability(p, "HorizontalFlip")

    def apply(self, pixels: Pixels, rand: Random) -> None:
        which = rand.bernoulli(self.p)
        x = pixels.packed
        _flip_packed(x, pixels.spec.fold, which)
        if pixels.masks is not None:
            m = pixels.masks
            for n in np.flatnonzero(which).tolist():
                m[n] = m[n, :, ::-1]  # numpy copies an overlapping source first


class RandomShift(Augmentation):
    """Shift by a uniform integer in ``[-max_shift, max_shift]`` on each spatial axis (independent draws), ``fill`` where nothing is.

    ``max_shift`` is an int or ``(max_dy, max_dx)``; for 1-D data only the last value is
    used (a shift in time). ``fill`` fills the input, ``mask_fill`` the mask.
    """

    def __init__(self, max_shift: int | tuple[int, int], fill: int = 0, mask_fill: int = 0) -> None:
        dy, dx = (max_shift, max_shift) if not isinstance(max_shift, (tuple, list)) else tuple(max_shift)
        for v in (dy, dx):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise SettingsError(f"{type(self).__name__}: shifts must be integers >= 0, not {max_shift!r}")
        self.max_shift = (dy, dx)
        self.fill = _fill(fill, f"{type(self).__name__}: fill")
        self.mask_fill = _fill(mask_fill, f"{type(self).__name__}: mask_fill")

    def bind(self, spec: Spec) -> None:
        size = spec.image_shape[:-1]
        limits = self.max_shift[-len(size):]
        if any(m >= s for m, s in zip(limits, size)):
            raise SettingsError(f"{type(self).__name__}: shifts {self.max_shift} do not fit images of {size}")

    def shifts(self, rand: Random, one_d: bool) -> tuple[np.ndarray, np.ndarray]:
        dy, dx = self.max_shift
        ty = rand.integers(-dy, dy)
        tx = rand.integers(-dx, dx)
        return (np.zeros_like(ty) if one_d else ty), tx

    def apply(self, pixels: Pixels, rand: Random) -> None:
        x = pixels.packed
        ty, tx = self.shifts(rand, x.ndim == 3)
        if not (ty.any() or tx.any()):
            return
        out = _translate(_as_4d(x), pixels.spec.fold, ty, tx, self.fill)
        pixels.packed = out[:, :, 0, :] if x.ndim == 3 else out
        if pixels.masks is not None:
            pixels.masks = _translate(pixels.masks[:, None], 1, ty, tx, self.mask_fill)[:, 0]


class RandomCrop(RandomShift):
    """torchvision's ``RandomCrop(size, padding=padding)`` at the image's own size: pad by ``padding``
    (``fill``; ``mask_fill`` for the mask), then crop back at a uniform offset in ``[0, 2 * padding]``
    per axis, i.e. a shift by ``padding - offset``."""

    def __init__(self, padding: int, fill: int = 0, mask_fill: int = 0) -> None:
        super().__init__(padding, fill, mask_fill)
        self.padding = padding

    def shifts(self, rand: Random, one_d: bool) -> tuple[np.ndarray, np.ndarray]:
        p = self.padding
        top, left = rand.integers(0, 2 * p), rand.integers(0, 2 * p)
        return (np.zeros_like(top) if one_d else p - top), p - left

    def __repr__(self) -> str:
        return f"RandomCrop(padding={self.padding}, fill={self.fill}, mask_fill={self.mask_fill})"


class RandomAffine(Augmentation):
    """Rotate (``degrees``: uniform in ``[-degrees, degrees]``), scale (uniform in ``scale``) and
    translate (uniform fractions of the size in ``[-translate, translate]``) about the image
    centre, nearest-neighbour (torchvision's default interpolation for ``RandomAffine``), ``fill``
    outside. Image and mask get the same map. 2-D images only; costs a gather per pixel."""

    def __init__(self, degrees: float = 0.0, translate: tuple[float, float] = (0.0, 0.0), scale: tuple[float, float] = (1.0, 1.0),
                 fill: int = 0, mask_fill: int = 0) -> None:
        try:
            self.degrees = float(degrees)
            self.translate = (float(translate[0]), float(translate[1]))
            self.scale = (float(scale[0]), float(scale[1]))
        except (TypeError, ValueError, IndexError):
            raise SettingsError(f"RandomAffine: degrees a number, translate and scale pairs, not {degrees!r}, {translate!r}, {scale!r}") from None
        if self.degrees < 0 or not all(0 <= t < 1 for t in self.translate) or not 0 < self.scale[0] <= self.scale[1]:
            raise SettingsError(f"RandomAffine: need degrees >= 0, translate in [0, 1), 0 < scale[0] <= scale[1]; got "
                                f"{degrees!r}, {translate!r}, {scale!r}")
        self.fill = _fill(fill, "RandomAffine: fill")
        self.mask_fill = _fill(mask_fill, "RandomAffine: mask_fill")

    def bind(self, spec: Spec) -> None:
        if len(spec.input_shape) != 3:
            raise SettingsError(f"RandomAffine acts on images; this dataset's inputs are {spec.input_shape}")

    def source(self, rand: Random, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Per sample, the source row and column of every output pixel (``(N, h, w)`` int64; out of range: outside)."""
        angle = np.deg2rad(rand.uniform(-self.degrees, self.degrees))
        s = rand.uniform(self.scale[0], self.scale[1])
        ty = rand.uniform(-self.translate[0], self.translate[0]) * h
        tx = rand.uniform(-self.translate[1], self.translate[1]) * w
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        yy = np.arange(h, dtype=np.float64)[None, :, None] - cy - ty[:, None, None]
        xx = np.arange(w, dtype=np.float64)[None, None, :] - cx - tx[:, None, None]
        cos, sin = (np.cos(angle) / s)[:, None, None], (np.sin(angle) / s)[:, None, None]
        sy = np.floor(cos * yy - sin * xx + cy + 0.5).astype(np.int64)  # the inverse map, rounded to the nearest pixel
        sx = np.floor(sin * yy + cos * xx + cx + 0.5).astype(np.int64)
        return sy, sx

    def apply(self, pixels: Pixels, rand: Random) -> None:
        x = pixels.packed
        r = pixels.spec.fold
        n, k, h, w = x.shape
        c = k // (r * r)
        sy, sx = self.source(rand, h * r, w * r)  # unfolded coordinates
        inside = (sy >= 0) & (sy < h * r) & (sx >= 0) & (sx < w * r)
        sy, sx = np.where(inside, sy, 0), np.where(inside, sx, 0)
        # Gather straight from the folded layout: unfolded (y, x) is channel block (y % r, x % r) at (y // r, x // r).
        flat = x.reshape(n, r * r, c, h, w)
        got = flat[np.arange(n)[:, None, None], (sy % r) * r + sx % r, :, sy // r, sx // r]  # (N, H, W, C)
        got[~inside] = self.fill
        pixels.packed = _to_packed(got, r)
        if pixels.masks is not None:
            m = pixels.masks[np.arange(n)[:, None, None], sy, sx]
            m[~inside] = self.mask_fill
            pixels.masks = m


class AdditiveNoise(Augmentation):
    """Add Gaussian noise (``std`` in pixel units, rounded) to the input with probability ``p``, clipped to [0, 255].

    The noise of a pixel is keyed by its unfolded position, so folded and unfolded data
    get the same noise. Masks are left as they are.
    """

    def __init__(self, std: float, p: float = 1.0) -> None:
        if isinstance(std, bool) or not isinstance(std, (int, float)) or std < 0:
            raise SettingsError(f"AdditiveNoise: std must be a number >= 0, not {std!r}")
        self.std = float(std)
        self.p = _probability(p, "AdditiveNoise")

    def apply(self, pixels: Pixels, rand: Random) -> None:
        which = rand.bernoulli(self.p)
        x = pixels.packed
        index = _unfolded_index(tuple(x.shape[1:]), pixels.spec.fold)
        noise = rand.normal(index)  # drawn for every sample: the draws do not depend on the batch
        if not which.any() or self.std == 0:
            return
        noisy = np.rint(x[which].astype(np.float32) + noise[which] * np.float32(self.std))
        x[which] = np.clip(noisy, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- callables and adapters


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _checked(what: str, image: Any, mask: Any, spec: Spec, has_mask: bool) -> tuple[np.ndarray, np.ndarray | None]:
    shape = spec.image_shape
    image = np.asarray(image)
    if image.ndim == len(shape) - 1 and shape[-1] == 1:
        image = image[..., None]
    if image.dtype != np.uint8 or image.shape != shape:
        raise SettingsError(f"augmentation {what} returned an image of {image.dtype} {image.shape}; it must return uint8 {shape}, "
                            "the shape it was given")
    if not has_mask:
        return image, None
    mask = np.asarray(mask)
    if mask.shape != shape[:-1] or mask.dtype.kind not in "uib" or (mask.size and (mask.min() < 0 or mask.max() > 255)):
        raise SettingsError(f"augmentation {what} returned a mask of {mask.dtype} {mask.shape}; it must return uint8 {shape[:-1]}")
    return image, mask.astype(np.uint8, copy=False)


class PerSample(Augmentation):
    """``fn(image, mask, rng) -> image | (image, mask)``, called once per sample (see the module docstring)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        if not callable(fn):
            raise SettingsError(f"augment: {fn!r} is not callable")
        self.fn = fn

    def call(self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator) -> Any:
        return self.fn(image, mask, rng)

    def apply(self, pixels: Pixels, rand: Random) -> None:
        images = pixels.images()
        masks = pixels.masks
        has_mask = masks is not None
        what = _name(self.fn)
        for k, rng in enumerate(rand.generators()):
            got = self.call(images[k], masks[k] if has_mask else None, rng)
            if isinstance(got, tuple):
                image, mask = got if len(got) == 2 else (got, None)
            elif has_mask:
                raise SettingsError(f"augmentation {what} must return (image, mask) for a segmentation dataset")
            else:
                image, mask = got, None
            image, mask = _checked(what, image, mask, pixels.spec, has_mask)
            images[k] = image
            if has_mask:
                masks[k] = mask


class Batched(Augmentation):
    """``fn(images, masks, rand) -> (images, masks)`` on the whole batch: ``images`` uint8 ``(N, H, W, C)``,
    ``masks`` ``(N, H, W)`` or None, ``rand`` the batch's :class:`Random` (draw for every sample)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        if not callable(fn):
            raise SettingsError(f"augment: {fn!r} is not callable")
        self.fn = fn

    def apply(self, pixels: Pixels, rand: Random) -> None:
        images, masks = self.fn(pixels.images(), pixels.masks, rand)
        spec = pixels.spec
        images = np.asarray(images)
        want = (len(pixels), *spec.image_shape)
        if images.dtype != np.uint8 or images.shape != want:
            raise SettingsError(f"augmentation {_name(self.fn)} returned images of {images.dtype} {images.shape}; expected uint8 {want}")
        if pixels.masks is not None:
            masks = np.asarray(masks)
            if masks.shape != want[:-1]:
                raise SettingsError(f"augmentation {_name(self.fn)} returned masks of {masks.shape}; expected {want[:-1]}")
            pixels.masks = masks.astype(np.uint8, copy=False)
        pixels.set_images(np.ascontiguousarray(images))


class Albumentations(PerSample):
    """An albumentations pipeline (``A.Compose([...])`` or one transform): image and mask go through it together.

    Its random state is set from the sample's generator before each call
    (``set_random_state``, albumentations 2); with albumentations 1.x, which draws from
    the global ``random`` and ``numpy.random``, those are seeded for the call and restored after.
    """

    def __init__(self, pipeline: Any) -> None:
        super().__init__(pipeline)

    def call(self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator) -> Any:
        pipe = self.fn
        kw = {"image": image} if mask is None else {"image": image, "mask": mask}
        if hasattr(pipe, "set_random_state"):
            pipe.set_random_state(rng, random.Random(int(rng.integers(2**63))))
            out = pipe(**kw)
        else:
            py, npy = random.getstate(), np.random.get_state()
            try:
                random.seed(int(rng.integers(2**63)))
                np.random.seed(int(rng.integers(2**32)))
                out = pipe(**kw)
            finally:
                random.setstate(py)
                np.random.set_state(npy)
        return (out["image"], out.get("mask")) if mask is not None else out["image"]


class TorchVision(PerSample):
    """A torchvision v2 transform: called on ``tv_tensors.Image`` (CHW) and ``tv_tensors.Mask`` together.

    torchvision draws from the global torch RNG: each call runs inside
    ``torch.random.fork_rng`` seeded from the sample's generator, so the global state is
    left as it was and the draws are the sample's own.
    """

    def __init__(self, transform: Any) -> None:
        super().__init__(transform)

    def call(self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator) -> Any:
        from torchvision import tv_tensors

        seed = int(rng.integers(2**63))
        img = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if mask is None:
                out_img = self.fn(img)
            else:
                out_img, out_mask = self.fn(img, tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask))))
        out = np.asarray(torch.as_tensor(out_img).permute(1, 2, 0).numpy())
        return out if mask is None else (out, np.asarray(torch.as_tensor(out_mask).numpy()))


def load(spec: str) -> Any:
    """The object ``"package.module:name"`` names (``name`` may be dotted)."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise SettingsError(f"augment {spec!r}: expected module:name")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as exc:
        raise SettingsError(f"augment {spec!r}: cannot import {module} ({exc})") from None
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SettingsError(f"augment {spec!r}: {module} has no {name}") from None
    return obj


def as_augmentation(obj: Any) -> Augmentation:
    """What ``augment=`` was given, as an :class:`Augmentation` (see the module docstring)."""
    if isinstance(obj, Augmentation):
        return obj
    if isinstance(obj, str):
        return as_augmentation(load(obj))
    if isinstance(obj, (list, tuple)):
        return Compose(obj)
    module = type(obj).__module__ or ""
    if module.split(".")[0] == "albumentations":
        return Albumentations(obj)
    if module.startswith("torchvision.transforms"):
        return TorchVision(obj)
    if callable(obj):
        return PerSample(obj)
    raise SettingsError(f"augment: {obj!r} is neither a callable, an Augmentation, nor a list of them")


# --------------------------------------------------------------------------- what the datasets hold


class Augmenter:
    """An augmentation bound to a dataset: its spec and seed. Call it on uint8 batches."""

    def __init__(self, augment: Any, spec: Spec, seed: int) -> None:
        self.augmentation = as_augmentation(augment)
        if spec.fold < 1 or (len(spec.input_shape) == 3 and spec.input_shape[0] % (spec.fold * spec.fold)):
            raise SettingsError(f"augment: cannot unfold inputs of {spec.input_shape} by {spec.fold}")
        self.augmentation.bind(spec)
        self.spec, self.seed = spec, seed

    def __call__(self, inputs: np.ndarray, masks: np.ndarray | None, epochs: np.ndarray | int,
                 indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Augment uint8 ``inputs`` (``(N, *input_shape)``) and ``masks`` of samples ``indices`` in ``epochs``.

        The arrays may be changed in place; use the ones returned.
        """
        if len(inputs) == 0:
            return inputs, masks
        pixels = Pixels(inputs, masks if self.spec.masks else None, self.spec)
        self.augmentation.apply(pixels, Random(sample_keys(self.seed, epochs, indices)))
        return pixels.packed, (pixels.masks if self.spec.masks else masks)


class SampleEpochs:
    """The epoch each read of a map-style sample augments with (shared memory across DataLoader workers).

    By default the ``k``-th read of sample ``i`` in this dataset object (and its workers'
    copies) uses epoch ``k``; :meth:`set_epoch` fixes one epoch for every read instead.
    """

    def __init__(self, n: int) -> None:
        self._counts = torch.zeros(max(n, 1), dtype=torch.int32)
        self._fixed = torch.full((1,), -1, dtype=torch.int64)
        for t in (self._counts, self._fixed):
            try:
                t.share_memory_()
            except RuntimeError:  # no /dev/shm: still right in one process
                pass
        self._c, self._f = self._counts.numpy(), self._fixed.numpy()

    def __getstate__(self) -> dict[str, torch.Tensor]:
        return {"counts": self._counts, "fixed": self._fixed}

    def __setstate__(self, state: dict[str, torch.Tensor]) -> None:
        self._counts, self._fixed = state["counts"], state["fixed"]
        for t in (self._counts, self._fixed):
            if not t.is_shared():
                try:
                    t.share_memory_()
                except RuntimeError:
                    pass
        self._c, self._f = self._counts.numpy(), self._fixed.numpy()

    def set_epoch(self, epoch: int | None) -> None:
        self._f[0] = -1 if epoch is None else epoch

    @property
    def fixed(self) -> int | None:
        f = int(self._f[0])
        return None if f < 0 else f

    def take(self, indices: np.ndarray) -> np.ndarray | int:
        """The epochs of one read of each of ``indices`` (counting it)."""
        fixed = int(self._f[0])
        if fixed >= 0:
            return fixed
        c = self._c
        if len(np.unique(indices)) == len(indices):
            got = c[indices].astype(np.int64)
            c[indices] = got + 1
            return got
        out = np.empty(len(indices), np.int64)
        for k, i in enumerate(indices.tolist()):  # a sample twice in one batch: two reads
            out[k] = c[i]
            c[i] += 1
        return out
