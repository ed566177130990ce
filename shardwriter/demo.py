"""``ai8x-shards demo``: synthetic images -> pack -> verify -> read back -> summary."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from .pack import pack
from .preprocess import image_to_chw
from .sources import ImageFolderSource
from .synth import synth_imagefolder
from .verify import info, verify


def run_demo(workdir: Path, workers: int = 2) -> None:
    """Run the whole job on built-in sample data and print what happened."""
    raw, out = workdir / "raw-images", workdir / "shapes"
    shutil.rmtree(workdir, ignore_errors=True)
    synth_imagefolder(raw, per_class=40, size=32, seed=0)
    print(f"1. wrote synthetic images to {raw}")
    source = ImageFolderSource(raw, name="shapes", size=(32, 32))
    pack(source, out, workers=workers, max_count=50, quiet=True)
    print(f"2. packed them into {out} with {workers} workers")
    problems = verify(out)
    print(f"3. verify: {'OK' if not problems else problems}")
    if problems:
        raise SystemExit(1)
    from loaders import ShardDataset

    ds = ShardDataset(out, "train")
    x, y = ds[0]
    name = ds.source_name(0)
    expected = image_to_chw(Image.open(raw / name), "RGB", (32, 32)).astype(np.float32)
    assert np.array_equal(x.numpy(), (expected - 128) / 128), "round trip mismatch"
    print(f"4. read back train[0] = {name}: tensor {tuple(x.shape)} {x.dtype}, label {int(y)}; equals the source image, normalized")
    print()
    print(info(out))
