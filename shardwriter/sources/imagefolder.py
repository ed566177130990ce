"""``imagefolder`` source: ``SRC/<class>/*.png|jpg``, or ``SRC/<split>/<class>/...``.

Class names are the sorted sub-folder names. When SRC's sub-folders are split names
(``train``, ``test``, ``val``) those splits are used; otherwise each image goes to a
split by a stable hash of its relative path. Images are converted to ``mode`` (RGB or
L), resized to ``size`` with Pillow's default filter (or must all share one size when
no size is given), laid out CHW and optionally folded.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from .. import format as fmt
from ..preprocess import image_to_chw, split_of
from .base import BadInput, OutputSpec, Sample, Source

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp"}


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)


class ImageFolderSource(Source):
    """Pack a folder of class sub-folders of images (see the module docstring)."""

    kind = "imagefolder"

    def __init__(
        self,
        src: str | Path,
        *,
        name: str = "",
        size: tuple[int, int] | None = None,
        mode: str = "RGB",
        fold_ratio: int = 1,
        test_fraction: float = 0.1,
        val_fraction: float = 0.0,
    ) -> None:
        self.src = Path(src)
        if not self.src.is_dir():
            raise BadInput(str(self.src), "not a folder")
        if mode not in ("RGB", "L"):
            raise ValueError(f"mode must be RGB or L, not {mode!r}")
        self.name = name or self.src.name
        self.size, self.mode, self.fold_ratio = size, mode, fold_ratio
        self.test_fraction, self.val_fraction = test_fraction, val_fraction
        subdirs = sorted(p.name for p in self.src.iterdir() if p.is_dir())
        self.presplit = bool(subdirs) and set(subdirs) <= set(fmt.SPLITS)
        roots = [self.src / s for s in subdirs] if self.presplit else [self.src]
        classes = sorted({p.name for r in roots for p in r.iterdir() if p.is_dir()})
        if not classes:
            raise BadInput(str(self.src), "no class sub-folders found (expected SRC/<class>/*.png|jpg)")
        self.classes = classes
        self.files: dict[str, list[tuple[str, int]]] = {}
        for root in roots:
            for label, cls in enumerate(classes):
                for p in _images(root / cls) if (root / cls).is_dir() else []:
                    rel = p.relative_to(self.src).as_posix()
                    split = root.name if self.presplit else split_of(rel, test_fraction, val_fraction)
                    self.files.setdefault(split, []).append((rel, label))
        if not self.files:
            raise BadInput(str(self.src), "no images found (.png, .jpg, .jpeg, .bmp)")
        first = next(iter(self.files.values()))[0][0]
        if size is None:
            with Image.open(self.src / first) as im:
                size = im.size
            self.fixed_size: tuple[int, int] | None = None
        else:
            self.fixed_size = size
        channels = 3 if mode == "RGB" else 1
        r = fold_ratio
        self.spec = OutputSpec(
            name=self.name,
            input_shape=(channels * r * r, size[1] // r, size[0] // r),
            target_kind="class",
            classes=classes,
            preprocessing={"mode": mode, "size": list(size), "resize": "PIL default", "fold_ratio": fold_ratio},
        )

    def outputs(self) -> list[OutputSpec]:
        return [self.spec]

    def plan(self) -> dict[str, list[Any]]:
        return {s: list(items) for s, items in self.files.items()}

    def load(self, item: Any) -> list[Sample]:
        rel, label = item
        path = self.src / rel
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    im.load()
                    x = image_to_chw(im, self.mode, self.fixed_size, self.fold_ratio)
        except (OSError, UnidentifiedImageError, SyntaxError, Image.DecompressionBombWarning) as exc:
            raise BadInput(rel, f"unreadable or corrupt image ({exc})") from None
        except ValueError as exc:
            raise BadInput(rel, str(exc)) from None
        return [Sample(x, label, rel)]

    def fingerprint_parts(self) -> dict[str, Any]:
        h = hashlib.sha256()
        for split in sorted(self.files):
            for rel, label in self.files[split]:
                h.update(f"{split}\0{rel}\0{label}\0{(self.src / rel).stat().st_size}\n".encode())
        return {
            "files": h.hexdigest(),
            "name": self.name,
            "size": list(self.fixed_size) if self.fixed_size else None,
            "mode": self.mode,
            "fold": self.fold_ratio,
            "fractions": [self.test_fraction, self.val_fraction],
        }
