"""Pure array and image operations shared by the writer and by inference.

fold/unfold (the ai8x channel order), Pillow resizing, HWC -> CHW, the lossless
conversion of ai8x-normalized floats back to uint8, and the stable split hash. No I/O:
every function takes arrays or images and returns new ones.
"""

from __future__ import annotations

import hashlib

import numpy as np
import xxhash
from PIL import Image


class OffGridError(ValueError):
    """Float input that is not exactly on the ai8x normalization grid."""


def fold(x: np.ndarray, r: int) -> np.ndarray:
    """Fold a CHW array with ratio ``r`` into (C*r*r, H/r, W/r), ai8x channel order.

    Output channel ``(i*r + j)*C + c`` holds ``x[c, i::r, j::r]``; r = 1 is the identity.
    """
    if r == 1:
        return x
    c, h, w = x.shape
    if h % r or w % r:
        raise ValueError(f"cannot fold {h}x{w} by {r}: both sides must divide by {r}")
    y = x.reshape(c, h // r, r, w // r, r).transpose(2, 4, 0, 1, 3)
    return np.ascontiguousarray(y.reshape(r * r * c, h // r, w // r))


def unfold(x: np.ndarray, r: int) -> np.ndarray:
    """Exact inverse of :func:`fold`: (C*r*r, h, w) -> (C, h*r, w*r)."""
    if r == 1:
        return x
    cr, h, w = x.shape
    if cr % (r * r):
        raise ValueError(f"cannot unfold {cr} channels by {r}: not a multiple of {r * r}")
    c = cr // (r * r)
    y = x.reshape(r, r, c, h, w).transpose(2, 3, 0, 4, 1)
    return np.ascontiguousarray(y.reshape(c, h * r, w * r))


def hwc_to_chw(x: np.ndarray) -> np.ndarray:
    """HxW (grey) or HxWxC array -> contiguous CxHxW."""
    if x.ndim == 2:
        return np.ascontiguousarray(x[None])
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Pillow's default ``Image.resize`` filter (as the reference loaders use); size is (W, H)."""
    if image.size == tuple(size):
        return image
    return image.resize(tuple(size))


def image_to_chw(image: Image.Image, mode: str, size: tuple[int, int] | None, fold_ratio: int = 1) -> np.ndarray:
    """Convert to ``mode``, resize (if ``size``), to uint8 CHW, fold: the model's layout."""
    if image.mode != mode:
        image = image.convert(mode)
    if size is not None:
        image = resize(image, size)
    return fold(hwc_to_chw(np.asarray(image, dtype=np.uint8)), fold_ratio)


def input_range_of(x: np.ndarray) -> str | None:
    """Which ai8x range float inputs ``x`` are in: ``"8bit"``, ``"unit"``, or None when they cannot tell.

    Values outside [-1, 127/128] only occur in the 8-bit range (``p - 128``); values that are
    not whole numbers only in the unit range (``(p - 128) / 128``). Inputs holding neither
    (only -1 and 0, say a flat grey image) fit both.
    """
    v = np.asarray(x)
    if not v.size:
        return None
    if float(v.max()) > 127 / 128 or float(v.min()) < -1:
        return "8bit"
    if bool((v != np.round(v)).any()):
        return "unit"
    return None


def float_to_uint8(x: np.ndarray, input_range: str = "auto") -> np.ndarray:
    """Losslessly turn ai8x-normalized floats back into the uint8 pixels they came from.

    ``input_range``: ``"unit"`` means values ``(p - 128) / 128`` (training range),
    ``"8bit"`` means ``p - 128`` (``act_mode_8bit``), ``"auto"`` picks 8bit when any
    value lies outside [-1, 127/128] and unit otherwise. Raises :class:`OffGridError`
    naming the first offending value and its position when a value is not on the grid.
    """
    v = np.asarray(x, dtype=np.float64)
    if input_range == "auto":
        input_range = "8bit" if v.size and (v.max() > 127 / 128 or v.min() < -1) else "unit"
    if input_range == "unit":
        v = v * 128
    elif input_range != "8bit":
        raise ValueError(f"input_range must be auto, unit or 8bit, not {input_range!r}")
    bad = (v != np.round(v)) | (v < -128) | (v > 127)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        raise OffGridError(
            f"value {float(np.asarray(x)[pos])!r} at {pos} is not on the ai8x {input_range} grid "
            "(expected pixel/256 normalized as round((x-0.5)*256), optionally /128)"
        )
    return (v + 128).astype(np.uint8)


def split_of(name: str, test_fraction: float, val_fraction: float = 0.0) -> str:
    """Stable split assignment by name: sha256, not Python's salted ``hash()``."""
    u = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def shuffle_order(names: list[str], seed: int) -> list[int]:
    """The write-time shuffle: positions of ``names`` sorted by XXH3-64 of each name with ``seed``.

    A pure function of the names and the seed (ties keep their order), the same on every
    machine and with every numpy, so parts packed on different machines agree.
    """
    h = xxhash.xxh3_64_intdigest
    keys = [h(n.encode("utf-8"), seed) for n in names]
    return sorted(range(len(names)), key=keys.__getitem__)
