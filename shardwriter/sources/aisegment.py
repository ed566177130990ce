"""``aisegment`` source: the AISegment portrait-matting archive, as ai8x-training prepares it.

SRC is the folder holding ``clip_img/`` and ``matting/`` (a folder holding ``AISegment/``
with them is accepted too). Every ``clip_img/**/*.jpg`` (600 wide x 800 tall, RGB) pairs
with the RGBA matte found the way the reference ``datasets/aisegment.py`` finds it: swap
the ``clip_img`` root for ``matting``, then replace ``clip_`` with ``matting_`` and
``.jpg`` with ``.png``::

    clip_img/1803151818/clip_00000000/1803151818-00000003.jpg
    matting/1803151818/matting_00000000/1803151818-00000003.png

Each image gives three square crops, boxes ``(0, 100k, 600, 100k + 600)`` for k = 0, 1, 2
(computed as the reference does, ``k * (800 - 600) / 2`` in floats, which Pillow rounds to
the same integer box), and each crop feeds every requested variant:

* ``AISegment_80``: the crop resized to 80x80 with Pillow's default filter (bicubic),
  uint8 CHW ``(3, 80, 80)``, not folded;
* ``AISegment_352``: resized to 352x352, folded with r = 4 into ``(48, 88, 88)``.

The target is the matte crop resized the same way, ``alpha == 0`` -> 1 (background),
else 0, uint8 ``(s, s)``, never folded. Only the matte's alpha band is resized: Pillow
resamples each band of an RGBA image independently (premultiplying RGB leaves alpha
untouched), so this gives the reference's alpha bit for bit at a third of the cost.

Both files of an image are decoded once per image, for all crops and variants. The split
is by image name (basename without extension) with :func:`split_of` (sha256; the
reference's salted ``hash()`` is not reproducible), so the three crops of an image always
share a split.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xxhash
from PIL import Image, UnidentifiedImageError

from ..errors import SettingsError
from ..preprocess import image_to_chw, split_of
from .base import BadInput, Inputs, OutputSpec, Sample, Source, check_fractions

IMAGE_ROOT = "clip_img"
MATTE_ROOT = "matting"
#: (width, height) of every AISegment image and matte.
IMAGE_SIZE = (600, 800)
CROP_SIZE = 600
NUM_CROPS = 3
#: Variant size -> fold ratio, as the ai8x-training AISegment_80 / AISegment_352 datasets.
VARIANTS = {80: 1, 352: 4}

_DECODE_ERRORS = (
    OSError,
    UnidentifiedImageError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


def matte_path(image_rel: str) -> str:
    """The matte of ``clip_img/...jpg`` (path relative to SRC), mapped as the reference does."""
    root, sep, rest = image_rel.partition("/")
    if root != IMAGE_ROOT or not sep:
        raise ValueError(f"{image_rel!r} is not under {IMAGE_ROOT}/")
    return f"{MATTE_ROOT}/" + rest.replace("clip_", "matting_").replace(".jpg", ".png")


def crop_box(k: int) -> tuple[float, float, float, float]:
    """Crop ``k`` (0 top, 1 middle, 2 bottom), computed as the reference (float ``top``)."""
    step_size = (IMAGE_SIZE[1] - CROP_SIZE) / (NUM_CROPS - 1)
    top_left_y = 0 + k * step_size
    return (0, top_left_y, CROP_SIZE, top_left_y + CROP_SIZE)


def _variant_list(variants: Any) -> list[int]:
    try:
        sizes = [int(v) for v in ([variants] if isinstance(variants, int) else variants)]
    except (TypeError, ValueError):
        raise SettingsError(f"--variants {variants!r}: expected sizes from {sorted(VARIANTS)}") from None
    if not sizes:
        raise SettingsError("--variants: give at least one of 80, 352")
    for s in sizes:
        if s not in VARIANTS:
            raise SettingsError(f"variant {s} is not an ai8x-training AISegment dataset; choose from {sorted(VARIANTS)}")
    return sorted(set(sizes))


class AISegmentSource(Source):
    """Pack the AISegment archive into ``AISegment_80/`` and ``AISegment_352/`` (see the module docstring)."""

    kind = "aisegment"

    def __init__(
        self,
        src: str | Path,
        *,
        variants: Any = (80, 352),
        test_fraction: float = 0.1,
        val_fraction: float = 0.0,
    ) -> None:
        src = Path(src)
        if not (src / IMAGE_ROOT).is_dir() and (src / "AISegment" / IMAGE_ROOT).is_dir():
            src = src / "AISegment"
        self.src = src
        if not src.is_dir():
            raise SettingsError(f"{src}: no such folder (SRC must hold {IMAGE_ROOT}/ and {MATTE_ROOT}/)")
        if not (src / IMAGE_ROOT).is_dir():
            raise SettingsError(f"{src}: no {IMAGE_ROOT}/ folder (SRC must hold {IMAGE_ROOT}/ and {MATTE_ROOT}/)")
        if not (src / MATTE_ROOT).is_dir():
            raise SettingsError(f"{src}: no {MATTE_ROOT}/ folder beside {IMAGE_ROOT}/ (SRC must hold both)")
        self.variants = _variant_list(variants)
        check_fractions(test_fraction, val_fraction)
        self.test_fraction, self.val_fraction = test_fraction, val_fraction
        images = sorted(p.relative_to(src).as_posix() for p in (src / IMAGE_ROOT).rglob("*.jpg") if p.is_file())
        if not images:
            raise SettingsError(f"{src}: no images found ({IMAGE_ROOT}/**/*.jpg)")
        self.files: dict[str, list[str]] = {"train": [], "test": []}
        for rel in images:
            self.files.setdefault(split_of(Path(rel).stem, test_fraction, val_fraction), []).append(rel)
        if not self.files["train"]:
            raise SettingsError(f"{src}: all {len(images)} images fall in test/val with --test-fraction {test_fraction} "
                                f"--val-fraction {val_fraction}, so the train split would be empty; lower the fractions")
        self.specs = [self._spec(s) for s in self.variants]
        for spec in self.specs:
            spec.schema  # noqa: B018 - validates the schema now

    def _spec(self, size: int) -> OutputSpec:
        r = VARIANTS[size]
        name = f"AISegment_{size}"
        return OutputSpec(
            name=name,
            input_shape=(3 * r * r, size // r, size // r),
            target_kind="mask",
            classes=[0, 1],
            variant=str(size),
            subdir=name,
            target_shape=(size, size),
            preprocessing={
                "source": "AISegment clip_img/**/*.jpg (RGB 600x800) with matting/**/*.png (RGBA)",
                "matte_path": "clip_img -> matting root, 'clip_' -> 'matting_', '.jpg' -> '.png'",
                "crops": [[int(v) for v in crop_box(k)] for k in range(NUM_CROPS)],
                "resize": [size, size],
                "resize_filter": "PIL Image.resize default (bicubic)",
                "fold_ratio": r,
                "layout": "uint8 CHW after fold (ai8x channel order)",
                "label": "resized matte alpha == 0 -> 1 (background), else 0; uint8 HxW, not folded",
                "split": "sha256 of the image basename without extension (all crops of an image together)",
                "fractions": {"test": self.test_fraction, "val": self.val_fraction},
            },
        )

    def outputs(self) -> list[OutputSpec]:
        return list(self.specs)

    def plan(self) -> dict[str, list[Any]]:
        return {s: list(items) for s, items in self.files.items()}

    def sample_names(self, item: Any) -> list[str]:
        return [f"{item}#crop{k}" for k in range(NUM_CROPS)]

    def item_name(self, item: Any) -> str:
        return str(item)

    def batch_items(self) -> int:
        return 8  # 24 crops in every variant: about 12 MiB for both

    def load(self, item: Any) -> list[Sample]:
        rel = str(item)
        mrel = matte_path(rel)
        mpath = self.src / mrel
        if not mpath.is_file():
            raise BadInput(rel, f"matte {mrel} is missing")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                img = Image.open(self.src / rel)
            except _DECODE_ERRORS as exc:
                raise BadInput(rel, f"unreadable or corrupt image ({exc})") from None
            with img:
                if img.size != IMAGE_SIZE:
                    raise BadInput(rel, f"image is {img.size[0]}x{img.size[1]}, expected {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}")
                if img.mode != "RGB":
                    raise BadInput(rel, f"image mode is {img.mode}, expected RGB")
                try:
                    matte = Image.open(mpath)
                except _DECODE_ERRORS as exc:
                    raise BadInput(rel, f"matte {mrel} is unreadable or corrupt ({exc})") from None
                with matte:
                    if matte.size != img.size:
                        raise BadInput(
                            rel, f"matte {mrel} is {matte.size[0]}x{matte.size[1]}, image is {img.size[0]}x{img.size[1]}"
                        )
                    if "A" not in matte.getbands():
                        raise BadInput(rel, f"matte {mrel} has no alpha channel (mode {matte.mode}); expected an RGBA PNG")
                    try:
                        img.load()
                    except _DECODE_ERRORS as exc:
                        raise BadInput(rel, f"unreadable or corrupt image ({exc})") from None
                    try:
                        matte.load()
                        alpha = matte.getchannel("A")
                    except _DECODE_ERRORS as exc:
                        raise BadInput(rel, f"matte {mrel} is unreadable or corrupt ({exc})") from None
                    return self._samples(rel, img, alpha)

    def _samples(self, rel: str, img: Image.Image, alpha: Image.Image) -> list[Sample]:
        out = []
        for k in range(NUM_CROPS):
            box = crop_box(k)
            img_crop, alpha_crop = img.crop(box), alpha.crop(box)
            for size, spec in zip(self.variants, self.specs):
                x = image_to_chw(img_crop, "RGB", (size, size), VARIANTS[size])
                y = (np.asarray(alpha_crop.resize((size, size))) == 0).astype(np.uint8)
                out.append(Sample(x, y, f"{rel}#crop{k}", spec.subdir))
        return out

    def inputs(self, checksum: bool = False) -> Inputs:
        lines, total = [], 0
        for split in sorted(self.files):
            for rel in self.files[split]:
                line = f"{split}\0{rel}"
                for path in (self.src / rel, self.src / matte_path(rel)):
                    try:
                        st = os.stat(path)
                    except OSError:
                        line += "\0-"
                        continue
                    total += st.st_size
                    line += f"\0{st.st_size}\0{st.st_mtime_ns}"
                    if checksum:
                        line += "\0" + xxhash.xxh3_128_hexdigest(path.read_bytes())
                lines.append(line)
        covers = (f"names, sizes and mtime_ns{' and contents (xxh3-128)' if checksum else ''} of {len(lines)} images "
                  "and their mattes")
        return Inputs(xxhash.xxh3_128_hexdigest("\n".join(lines).encode()), covers, {"files": 2 * len(lines), "bytes": total})

    def options(self) -> dict[str, Any]:
        return {"variants": self.variants, "fractions": [self.test_fraction, self.val_fraction]}
