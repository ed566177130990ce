"""``imagefolder`` source: ``SRC/<class>/...images``, or ``SRC/<split>/<class>/...``.

Class names are the sorted sub-folder names. When SRC's sub-folders are split names
(``train``, ``test``, ``val``) those splits are used (and the fractions do not apply);
otherwise each image goes to a split by a stable hash of its relative path. Every file
under a class folder whose extension is one Pillow opens (PNG, JPEG, BMP, GIF, TIFF,
WebP, PPM, ... whatever this Pillow reads) is an image and is packed: converted to
``mode`` (RGB or L; a multi-frame file gives its first frame), resized to ``size`` with
Pillow's default filter (or, without ``size``, all must share the first image's size),
laid out CHW and optionally folded. An image file Pillow cannot decode is a bad input
(named; skipped and recorded with ``skip_bad``). Other files are not packed: they are
counted and reported (:meth:`ImageFolderSource.warnings`), as are class folders that
hold no image.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import xxhash
from PIL import Image, UnidentifiedImageError

from .. import format as fmt
from ..errors import BadInput, PackError, SettingsError
from ..preprocess import image_to_chw, split_of
from .base import Inputs, OutputSpec, Sample, Source, check_fractions


def image_extensions() -> frozenset[str]:
    """File extensions this Pillow opens (not the ones it can only write, such as .pdf)."""
    Image.init()
    return frozenset(ext.lower() for ext, f in Image.registered_extensions().items() if f in Image.OPEN)


_DECODE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, Image.DecompressionBombError,
                  Image.DecompressionBombWarning, EOFError)


def _size(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    try:
        w, h = size
    except (TypeError, ValueError):
        raise SettingsError(f"--size {size!r}: expected WxH (or N for NxN)") from None
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in (w, h)):
        raise SettingsError(f"--size {w}x{h}: both sides must be at least 1 pixel")
    return (w, h)


class ImageFolderSource(Source):
    """Pack a folder of class sub-folders of images (see the module docstring)."""

    kind = "imagefolder"

    def __init__(
        self,
        src: str | os.PathLike[str],
        *,
        name: str = "",
        size: tuple[int, int] | int | None = None,
        mode: str = "RGB",
        fold_ratio: int = 1,
        test_fraction: float | None = None,
        val_fraction: float | None = None,
    ) -> None:
        self.src = Path(src)
        if not self.src.is_dir():
            raise SettingsError(f"{self.src}: {'not a folder' if self.src.exists() else 'no such folder'} "
                                "(expected SRC/<class>/<images>)")
        if mode not in ("RGB", "L"):
            raise SettingsError(f"--mode {mode!r}: choose RGB or L")
        if isinstance(fold_ratio, bool) or not isinstance(fold_ratio, int) or fold_ratio < 1:
            raise SettingsError(f"--fold {fold_ratio!r}: the fold ratio is a whole number of at least 1")
        self.name = name or self.src.name
        self.mode, self.fold_ratio = mode, fold_ratio
        size = _size(size)
        subdirs = sorted(p.name for p in self.src.iterdir() if p.is_dir())
        self.presplit = bool(subdirs) and set(subdirs) <= set(fmt.SPLITS)
        if self.presplit:
            if test_fraction is not None or val_fraction is not None:
                raise SettingsError(f"{self.src}: its {'/'.join(subdirs)}/ folders give the splits, so --test-fraction and "
                                    "--val-fraction do not apply; drop them")
            self.fractions: tuple[float, float] | None = None
        else:
            self.fractions = (0.1 if test_fraction is None else test_fraction, 0.0 if val_fraction is None else val_fraction)
            check_fractions(*self.fractions)
        roots = [self.src / s for s in subdirs] if self.presplit else [self.src]
        classes = sorted({p.name for r in roots for p in r.iterdir() if p.is_dir()})
        if not classes:
            raise SettingsError(f"{self.src}: no class sub-folders found (expected SRC/<class>/<images>"
                                f"{' or SRC/<split>/<class>/<images>' if not self.presplit else ''})")
        self.classes = classes
        exts = image_extensions()
        self.files: dict[str, list[tuple[str, int]]] = {}
        self.not_images: list[str] = []
        per_class = dict.fromkeys(classes, 0)
        for root in roots:
            for label, cls in enumerate(classes):
                folder = root / cls
                if not folder.is_dir():
                    continue
                for p in sorted(q for q in folder.rglob("*") if q.is_file()):
                    rel = p.relative_to(self.src).as_posix()
                    if p.suffix.lower() not in exts:
                        self.not_images.append(rel)
                        continue
                    split = root.name if self.presplit else split_of(rel, *self.fractions)  # type: ignore[misc]
                    self.files.setdefault(split, []).append((rel, label))
                    per_class[cls] += 1
        if not self.files:
            raise PackError(f"{self.src}: no images found under its class folders (files Pillow opens: "
                            f"{', '.join(sorted(e for e in exts if e in {'.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.webp'}))}, ...)")
        self.empty_classes = [c for c, n in per_class.items() if n == 0]
        for split in ("train", "test"):
            self.files.setdefault(split, [])
        if not self.files["train"]:
            n = sum(map(len, self.files.values()))
            why = (f"{self.src}/train/ holds no images" if self.presplit else
                   f"all {n} images fall in test/val with --test-fraction {self.fractions[0]} --val-fraction {self.fractions[1]}")  # type: ignore[index]
            raise SettingsError(f"{self.src}: {why}, so the train split would be empty")
        if size is None:
            self.fixed_size: tuple[int, int] | None = None
            size = self._first_size()
        else:
            self.fixed_size = size
        r = fold_ratio
        if size[0] % r or size[1] % r:
            raise SettingsError(f"--fold {r} does not divide the image size {size[0]}x{size[1]}"
                                f"{'' if self.fixed_size else ' (the first image' + chr(39) + 's; --size sets another)'}; "
                                "choose a ratio that divides both sides")
        self.size = size
        channels = 3 if mode == "RGB" else 1
        self.spec = OutputSpec(
            name=self.name,
            input_shape=(channels * r * r, size[1] // r, size[0] // r),
            target_kind="class",
            classes=classes,
            preprocessing={"mode": mode, "size": list(size), "resize": "PIL default", "fold_ratio": fold_ratio},
        )
        self.spec.schema  # noqa: B018 - validates the schema now

    def _first_size(self) -> tuple[int, int]:
        for rel in sorted(rel for items in self.files.values() for rel, _ in items):
            try:
                with Image.open(self.src / rel) as im:
                    return im.size
            except _DECODE_ERRORS:
                continue
        raise PackError(f"{self.src}: no image could be opened to learn the image size; pass --size WxH")

    def outputs(self) -> list[OutputSpec]:
        return [self.spec]

    def plan(self) -> dict[str, list[Any]]:
        return {s: list(items) for s, items in self.files.items()}

    def sample_names(self, item: Any) -> list[str]:
        return [item[0]]

    def sample_labels(self, item: Any) -> list[int] | None:
        return [item[1]]

    def load(self, item: Any) -> list[Sample]:
        rel, label = item
        path = self.src / rel
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    im.load()
                    x = image_to_chw(im, self.mode, self.fixed_size, self.fold_ratio)
        except _DECODE_ERRORS as exc:
            raise BadInput(rel, f"unreadable or corrupt image ({type(exc).__name__}: {exc})") from None
        except ValueError as exc:
            raise BadInput(rel, str(exc)) from None
        if self.fixed_size is None and tuple(x.shape) != tuple(self.spec.input_shape):
            raise BadInput(rel, f"input shape {tuple(x.shape)}, expected {tuple(self.spec.input_shape)} "
                                f"(the images differ in size; pass --size WxH to resize them all)")
        return [Sample(x, label, rel)]

    def inputs(self, checksum: bool = False) -> Inputs:
        lines, total = [], 0
        for split in sorted(self.files):
            for rel, label in self.files[split]:
                st = os.stat(self.src / rel)
                total += st.st_size
                line = f"{split}\0{rel}\0{label}\0{st.st_size}\0{st.st_mtime_ns}"
                if checksum:
                    line += "\0" + xxhash.xxh3_128_hexdigest((self.src / rel).read_bytes())
                lines.append(line)
        covers = f"names, sizes and mtime_ns{' and contents (xxh3-128)' if checksum else ''} of {len(lines)} images"
        return Inputs(xxhash.xxh3_128_hexdigest("\n".join(lines).encode()), covers, {"files": len(lines), "bytes": total})

    def options(self) -> dict[str, Any]:
        return {"name": self.name, "size": list(self.fixed_size) if self.fixed_size else None, "mode": self.mode,
                "fold": self.fold_ratio, "classes": list(self.classes),
                "fractions": list(self.fractions) if self.fractions else None}

    def warnings(self) -> list[str]:
        out = []
        if self.empty_classes:
            out.append(f"{len(self.empty_classes)} class folder(s) hold no image: {', '.join(self.empty_classes[:10])}"
                       f"{' ...' if len(self.empty_classes) > 10 else ''} (each is a class with 0 samples)")
        if self.not_images:
            out.append(f"{len(self.not_images)} file(s) are not images Pillow opens and were not packed: "
                       f"{', '.join(self.not_images[:5])}{' ...' if len(self.not_images) > 5 else ''}")
        return out
