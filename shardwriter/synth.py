"""Synthetic raw data for the demo, tests and benchmarks (deterministic per seed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def synth_imagefolder(root: str | Path, per_class: int = 20, size: int = 32, seed: int = 0) -> Path:
    """Write ``root/<shape>/NNNN.png`` images of three classes (disc, square, bar)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for label, cls in enumerate(("disc", "square", "bar")):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            bg = tuple(int(v) for v in rng.integers(0, 120, 3))
            fg = tuple(int(v) for v in rng.integers(130, 256, 3))
            im = Image.new("RGB", (size, size), bg)
            d = ImageDraw.Draw(im)
            c = rng.integers(size // 4, 3 * size // 4, 2)
            r = int(rng.integers(size // 8, size // 4))
            box = [int(c[0] - r), int(c[1] - r), int(c[0] + r), int(c[1] + r)]
            if label == 0:
                d.ellipse(box, fill=fg)
            elif label == 1:
                d.rectangle(box, fill=fg)
            else:
                d.rectangle([0, box[1], size - 1, box[1] + max(2, r // 2)], fill=fg)
            noise = rng.integers(-12, 13, (size, size, 3))
            arr = np.clip(np.asarray(im, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / cls / f"{n:04d}.png")
    return root


def synth_arrays(n: int, shape: tuple[int, ...] = (1, 28, 28), classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 inputs of ``shape`` and int64 labels below ``classes``."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, classes, n).astype(np.int64)
