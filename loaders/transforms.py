"""Pure transforms, numpy and torch: ai8x normalize, fold/unfold, batch normalize.

The reference chain is ``ToTensor``-style scaling by 1/256, then ``ai8x.normalize``:
``round((x - 0.5) * 256)`` clamped to [-128, 127], divided by 128 unless
``act_mode_8bit``. For a uint8 pixel ``p`` that is exactly ``p - 128`` or
``(p - 128) / 128``; these functions compute it that way, vectorized, with no I/O.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from shardwriter.preprocess import fold, unfold

from . import pool

__all__ = ["fold", "unfold", "normalize", "normalize_np", "reference_normalize", "fold_torch", "unfold_torch", "prepare_image"]

T = TypeVar("T", np.ndarray, torch.Tensor)


def resolve_act_mode(value: Any) -> bool:
    """``act_mode_8bit`` given as a bool, or an object (train.py's ``args``) whose attribute is read now."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    return bool(getattr(value, "act_mode_8bit", False))


def normalize_np(x: np.ndarray, act_mode_8bit: bool = False) -> np.ndarray:
    """uint8 array -> float32 ``p - 128`` (8-bit mode) or ``(p - 128) / 128``."""
    if x.dtype != np.uint8:
        raise TypeError(f"normalize expects uint8, got {x.dtype}")
    # numpy rather than torch on the CPU: numpy asks for huge pages on large arrays, which
    # made a 48x88x88 batch convert several times faster here (benchmarks/RESULTS.md); large
    # outputs come from a pool of recycled buffers (no fresh pages to zero-fill: loaders.pool).
    out = pool.empty(x.shape, np.float32)
    np.subtract(x, np.float32(128.0), out=out, dtype=np.float32)
    if not act_mode_8bit:
        np.multiply(out, np.float32(1.0 / 128.0), out=out)  # a power of two: exact, as the reference's /128
    return out


def normalize(x: torch.Tensor | np.ndarray, act_mode_8bit: bool = False) -> torch.Tensor:
    """uint8 tensor/array (any shape, any device) -> float32 tensor on the same device."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(normalize_np(x, act_mode_8bit))
    if x.device.type == "cpu":
        return torch.from_numpy(normalize_np(x.numpy(), act_mode_8bit))
    if x.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8, got {x.dtype}")
    out = x.to(torch.float32).sub_(128.0)
    if not act_mode_8bit:
        out.mul_(1.0 / 128.0)
    return out


def reference_normalize(x: torch.Tensor, act_mode_8bit: bool = False) -> torch.Tensor:
    """The literal reference chain (``/256`` then ai8x.normalize), for tests and checks."""
    t = x.to(torch.float32) / 256.0
    t = t.sub(0.5).mul(256.0).round().clamp(min=-128, max=127)
    return t if act_mode_8bit else t.div(128.0)


def fold_torch(x: torch.Tensor, r: int) -> torch.Tensor:
    """:func:`fold` for a CHW or NCHW tensor (same channel order)."""
    if r == 1:
        return x
    *n, c, h, w = x.shape
    y = x.reshape(*n, c, h // r, r, w // r, r)
    k = len(n)
    y = y.permute(*range(k), k + 2, k + 4, k, k + 1, k + 3)
    return y.reshape(*n, r * r * c, h // r, w // r)


def unfold_torch(x: torch.Tensor, r: int) -> torch.Tensor:
    """:func:`unfold` for a CHW or NCHW tensor (e.g. a model output back to full size)."""
    if r == 1:
        return x
    *n, cr, h, w = x.shape
    c = cr // (r * r)
    k = len(n)
    y = x.reshape(*n, r, r, c, h, w).permute(*range(k), k + 2, k + 3, k, k + 4, k + 1)
    return y.reshape(*n, c, h * r, w * r)


AISEGMENT_VARIANTS = {80: (80, 1), 352: (352, 4)}


def prepare_image(
    image: Image.Image | np.ndarray | str,
    variant: int | str = 352,
    *,
    act_mode_8bit: bool = False,
    size: int | None = None,
    fold_ratio: int | None = None,
) -> torch.Tensor:
    """Turn any image into a model input batch of one: ``(1, C*r*r, S/r, S/r)`` float32.

    Any Pillow mode becomes RGB, is resized to S x S with Pillow's default filter, laid
    out CHW, folded and normalized, through the same code the writer uses, so training
    and inference cannot drift. ``variant`` is 80 or 352 (or ``"AISegment_352"``);
    ``size`` / ``fold_ratio`` override it for other models.
    """
    from shardwriter.preprocess import image_to_chw

    if isinstance(image, str):
        with Image.open(image) as im:
            image = im.copy()
    elif isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    key = int(str(variant).rsplit("_", 1)[-1])
    s, r = AISEGMENT_VARIANTS.get(key, (key, 1))
    s, r = size or s, fold_ratio or r
    x = image_to_chw(image, "RGB", (s, s), r)
    return normalize(x, act_mode_8bit).unsqueeze(0)
