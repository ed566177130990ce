"""``ai8x-shards demo``: synthetic AISegment -> pack -> verify -> read back via train.py's loaders."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from PIL import Image

from shardwriter.pack import pack
from shardwriter.sources import AISegmentSource
from shardwriter.synth import synth_aisegment
from shardwriter.verify import info, verify


def run_demo(workdir: Path, workers: int = 2, images: int = 12) -> None:
    """Run the whole job on built-in sample data and print what happened."""
    from loaders.ai8x import datasets
    from loaders.transforms import prepare_image

    raw, out = workdir / "raw", workdir / "shards"
    shutil.rmtree(workdir, ignore_errors=True)
    synth_aisegment(raw, images=images, seed=0)
    print(f"1. wrote {images} synthetic AISegment portraits and mattes (600x800) to {raw}")
    t = time.perf_counter()
    pack(AISegmentSource(raw, test_fraction=0.25), out, workers=workers, max_count=16, quiet=True)
    print(f"2. packed 3 crops x {images} images into {out}/AISegment_80 and AISegment_352 in {time.perf_counter() - t:.1f} s ({workers} workers)")
    for variant in ("AISegment_80", "AISegment_352"):
        problems = verify(out / variant)
        print(f"3. verify {variant}: {'OK' if not problems else problems}")
        if problems:
            raise SystemExit(1)
    args = SimpleNamespace(act_mode_8bit=False, truncate_testset=False)
    entry = next(d for d in datasets if d["name"] == "AISegment_352_shards")
    train, test = entry["loader"]((str(out), args))
    x, y = train[0]
    image_rel, _, crop = train.source_name(0).partition("#crop")
    k = int(crop)
    crop_img = Image.open(raw / image_rel).crop((0, 100 * k, 600, 100 * k + 600))
    same = torch.equal(x, prepare_image(crop_img, 352)[0])
    print(f"4. train.py loader AISegment_352_shards: {len(train)} train / {len(test)} test samples;"
          f" train[0] = {image_rel} crop {k}: input {tuple(x.shape)} {x.dtype}, mask {tuple(y.shape)} {y.dtype};"
          f" equals prepare_image(crop): {same}")
    if not same:
        raise SystemExit(1)
    print()
    print(info(out / "AISegment_352"))
