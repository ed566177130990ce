"""``ai8x-shards preview``: a PNG grid of samples as the model sees them.

Inputs are unfolded back to images (fold ratio from the manifest); mask targets are
overlaid (every class above 0 tinted), class targets written under each tile.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .mapstyle import ShardDataset
from .transforms import unfold

PALETTE = np.array([(0, 0, 0), (255, 40, 40), (40, 200, 40), (40, 90, 255), (255, 200, 0), (200, 0, 255)], dtype=np.float32)


def tile(x: np.ndarray, fold_ratio: int, mask: np.ndarray | None = None) -> Image.Image:
    """One sample (uint8, model layout) as an RGB image, mask tinted over it."""
    img = unfold(x, fold_ratio) if x.ndim == 3 else x[None]
    if img.ndim == 2:
        img = img[None]
    if img.shape[0] not in (1, 3):
        img = img[:1]
    rgb = np.repeat(img, 3, axis=0) if img.shape[0] == 1 else img
    rgb = rgb.transpose(1, 2, 0).astype(np.float32)
    if mask is not None and mask.shape == rgb.shape[:2]:
        colour = PALETTE[np.minimum(mask, len(PALETTE) - 1)]
        alpha = (mask > 0)[..., None] * 0.45
        rgb = rgb * (1 - alpha) + colour * alpha
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def preview(location: str | os.PathLike[str], split: str = "test", n: int = 8, out: str | os.PathLike[str] = "preview.png") -> Path:
    """Write a grid of the first ``n`` samples of ``split`` to ``out``; returns its path."""
    ds = ShardDataset(location, split, output="uint8")
    r = ds.manifest.fold_ratio
    n = min(n, len(ds))
    if n == 0:
        raise ValueError(f"{location}: split {split} is empty")
    tiles, captions = [], []
    for i in range(n):
        x, y = ds[i]
        mask = y.numpy().astype(np.int64) if ds.target_kind == "mask" else None
        t = tile(x.numpy(), r, mask)
        if t.width < 160:
            t = t.resize((160, round(160 * t.height / t.width)), Image.NEAREST)
        tiles.append(t)
        captions.append(f"{split}[{i}]" + (f" class {ds.classes[int(y)]}" if ds.target_kind == "class" else ""))
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    w, h = max(t.width for t in tiles), max(t.height for t in tiles)
    grid = Image.new("RGB", (cols * (w + 8) + 8, rows * (h + 24) + 8), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for k, (t, cap) in enumerate(zip(tiles, captions)):
        x0, y0 = 8 + (k % cols) * (w + 8), 8 + (k // cols) * (h + 24)
        grid.paste(t, (x0, y0))
        draw.text((x0, y0 + t.height + 4), cap, fill=(0, 0, 0))
    out = Path(out)
    grid.save(out)
    return out
