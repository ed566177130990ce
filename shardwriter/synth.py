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


#: Group folders of the synthetic AISegment archive (timestamps, as in the public archive).
AISEGMENT_GROUPS = ("1803151818", "1803201916", "1803241125")


def _soft_ellipse(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, a: float, b: float, edge: float) -> np.ndarray:
    """1 inside the ellipse, 0 outside, a linear ramp about ``edge`` pixels wide at the rim."""
    q = np.sqrt(((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2)
    return np.clip((1.0 - q) * min(a, b) / edge + 0.5, 0.0, 1.0)


def synth_aisegment(root: str | Path, images: int = 30, seed: int = 0) -> Path:
    """Write a small raw AISegment archive under ``root`` (deterministic per seed).

    ``clip_img/<group>/clip_<sub>/<group>-<n>.jpg``: RGB 600x800 portraits (a noisy
    gradient background, a head and a torso in other colours); and
    ``matting/<group>/matting_<sub>/<group>-<n>.png``: RGBA mattes of the same size whose
    alpha is 0 on the background, 255 inside the person and partial on soft edges and on
    a semi-transparent "hair" fringe. Images spread over three groups and two
    sub-folders each.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    w, h = 600, 800
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for n in range(images):
        group = AISEGMENT_GROUPS[n % len(AISEGMENT_GROUPS)]
        sub = f"{(n // len(AISEGMENT_GROUPS)) % 2:08d}"
        stem = f"{group}-{n:08d}"
        # Background: a vertical and horizontal colour gradient plus noise.
        top, bottom = rng.integers(0, 256, 3).astype(np.float32), rng.integers(0, 256, 3).astype(np.float32)
        tilt = rng.integers(-40, 41, 3).astype(np.float32)
        t = (yy / (h - 1))[..., None]
        bg = top * (1 - t) + bottom * t + tilt * (xx / (w - 1))[..., None]
        # Person: head and torso ellipses, soft rims, and a partly transparent fringe.
        cx = float(rng.uniform(220, 380))
        head_y, head_a, head_b = float(rng.uniform(170, 330)), float(rng.uniform(70, 100)), float(rng.uniform(90, 125))
        torso_a, torso_b = float(rng.uniform(170, 240)), float(rng.uniform(230, 300))
        torso_y = head_y + head_b + torso_b * 0.8
        head = _soft_ellipse(xx, yy, cx, head_y, head_a, head_b, float(rng.uniform(3, 10)))
        torso = _soft_ellipse(xx, yy, cx + float(rng.uniform(-30, 30)), torso_y, torso_a, torso_b, float(rng.uniform(3, 10)))
        fringe = _soft_ellipse(xx, yy, cx, head_y - 10, head_a * 1.15, head_b * 1.12, 12.0) * 0.45
        alpha = np.maximum(np.maximum(head, torso), fringe)
        skin, shirt = rng.integers(120, 256, 3).astype(np.float32), rng.integers(0, 200, 3).astype(np.float32)
        fg = np.where((torso > head)[..., None], shirt, skin)
        a = alpha[..., None]
        clean = bg * (1 - a) + fg * a
        noise = rng.normal(0.0, 6.0, (h, w, 3)).astype(np.float32)
        rgb = np.clip(clean + noise, 0, 255).astype(np.uint8)
        alpha8 = np.round(alpha * 255).astype(np.uint8)
        matte_rgb = np.clip(clean, 0, 255).astype(np.uint8)  # the noiseless cut-out: small PNGs
        img_dir = root / "clip_img" / group / f"clip_{sub}"
        matte_dir = root / "matting" / group / f"matting_{sub}"
        img_dir.mkdir(parents=True, exist_ok=True)
        matte_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb, "RGB").save(img_dir / f"{stem}.jpg", quality=90)
        Image.fromarray(np.dstack([matte_rgb, alpha8]), "RGBA").save(matte_dir / f"{stem}.png", compress_level=1)
    return root
