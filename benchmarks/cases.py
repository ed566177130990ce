"""The two benchmark cases and their synthetic, deterministic source data.

``large``: AISegment_352-like samples: a uint8 (48, 88, 88) input (a 352x352 RGB
portrait-like picture, folded with r = 4 in ai8x channel order) and a uint8 (352, 352)
mask (1 = background, as the reference's ``alpha == 0``). ``small``: (1, 28, 28) uint8
inputs with an int label below 10, where per-sample overhead dominates.

Every input carries its sample number in its first three bytes (big-endian), so a reader's
batches tell which samples they hold: the benchmark checks that each epoch delivers every
sample exactly once, normalized, with its own target (:func:`sample_ids`,
:func:`target_signature`). The source arrays are ``.npy`` files that every approach's
writer reads (through a memmap) and converts to its own format.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shardwriter.preprocess import fold

#: Row of the mask whose sum is a sample's target signature (the middle row).
SIG_ROW = 176


@dataclass(frozen=True)
class Case:
    """One benchmark case: ``n`` samples of one shape."""

    name: str
    n: int
    x_shape: tuple[int, ...]
    y_kind: str  # "mask" or "class"
    y_shape: tuple[int, ...]  # () for class labels
    classes: int

    @property
    def x_bytes(self) -> int:
        return int(np.prod(self.x_shape))

    @property
    def y_bytes(self) -> int:
        return int(np.prod(self.y_shape)) if self.y_kind == "mask" else 8

    @property
    def sample_bytes(self) -> int:
        return self.x_bytes + self.y_bytes

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Case:
        return cls(d["name"], d["n"], tuple(d["x_shape"]), d["y_kind"], tuple(d["y_shape"]), d["classes"])


def large(n: int) -> Case:
    """AISegment_352 shape: uint8 (48, 88, 88) input, uint8 (352, 352) mask."""
    return Case("large", n, (48, 88, 88), "mask", (352, 352), 2)


def small(n: int) -> Case:
    """MNIST shape: uint8 (1, 28, 28) input, int label, 10 classes."""
    return Case("small", n, (1, 28, 28), "class", (), 10)


def _portraits(rng: np.random.Generator, k: int, side: int = 352) -> tuple[np.ndarray, np.ndarray]:
    """``k`` portrait-like RGB pictures (k, 3, side, side) and their background masks."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    xs = np.empty((k, 3, side, side), np.uint8)
    ms = np.empty((k, side, side), np.uint8)
    for j in range(k):
        cx, cy = rng.uniform(0.35, 0.65) * side, rng.uniform(0.25, 0.4) * side
        a, b = rng.uniform(0.09, 0.14) * side, rng.uniform(0.12, 0.17) * side
        head = ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1.0
        w = rng.uniform(0.25, 0.4) * side
        torso = (((xx - cx) / w) ** 2 + ((yy - side) / (side - cy - b * 0.8)) ** 2) <= 1.0
        person = head | torso
        top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = yy / (side - 1)
        fg = rng.integers(0, 256, 3)
        noise = rng.integers(-10, 11, (3, side, side))
        for c in range(3):
            bg = top[c] * (1 - t) + bottom[c] * t
            xs[j, c] = np.clip(np.where(person, fg[c], bg) + noise[c], 0, 255).astype(np.uint8)
        ms[j] = ~person
    return xs, ms


def _tag(x: np.ndarray, first: int) -> None:
    """Write sample numbers ``first, first+1, ...`` into the first three bytes of each input."""
    flat = x.reshape(len(x), -1)
    ids = np.arange(first, first + len(x))
    flat[:, 0], flat[:, 1], flat[:, 2] = ids >> 16, (ids >> 8) & 255, ids & 255


def sample_ids(x: Any) -> np.ndarray:
    """Sample numbers of a batch of normalized float inputs (``(p - 128) / 128``)."""
    head = np.asarray(x.reshape(len(x), -1)[:, :3], dtype=np.float64)
    p = np.rint(head * 128 + 128).astype(np.int64)
    return (p[:, 0] << 16) | (p[:, 1] << 8) | p[:, 2]


def target_signature(y: Any, kind: str) -> np.ndarray:
    """What identifies a target: the label, or the middle row's sum of a mask."""
    arr = np.asarray(y)
    if kind == "class":
        return arr.astype(np.int64).reshape(-1)
    return arr[:, SIG_ROW, :].astype(np.int64).sum(axis=1)


def generate(case: Case, folder: Path, seed: int = 0, chunk: int = 64) -> dict[str, str]:
    """Write ``x.npy``, ``y.npy`` and ``sig.npy`` (target signatures) for ``case`` under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    xpath, ypath, spath = folder / "x.npy", folder / "y.npy", folder / "sig.npy"
    x = np.lib.format.open_memmap(xpath, mode="w+", dtype=np.uint8, shape=(case.n, *case.x_shape))
    if case.y_kind == "mask":
        y = np.lib.format.open_memmap(ypath, mode="w+", dtype=np.uint8, shape=(case.n, *case.y_shape))
    else:
        y = np.zeros(case.n, np.int64)
    for lo in range(0, case.n, chunk):
        hi = min(case.n, lo + chunk)
        if case.name == "large":
            pics, masks = _portraits(rng, hi - lo, case.y_shape[0])
            r = case.y_shape[0] // case.x_shape[1]
            x[lo:hi] = np.stack([fold(p, r) for p in pics])
            y[lo:hi] = masks
        else:
            x[lo:hi] = rng.integers(0, 256, (hi - lo, *case.x_shape), dtype=np.uint8)
            y[lo:hi] = rng.integers(0, case.classes, hi - lo)
        _tag(x[lo:hi], lo)
    x.flush()
    if case.y_kind == "mask":
        y.flush()
        sig = np.concatenate([target_signature(y[lo : lo + chunk], "mask") for lo in range(0, case.n, chunk)])
    else:
        np.save(ypath, y)
        sig = y.copy()
    np.save(spath, sig)
    del x, y
    return {"x": str(xpath), "y": str(ypath), "sig": str(spath)}
