"""``npz`` source: arrays ``x`` (samples) and ``y`` (targets) in .npz files.

SRC is either one .npz file holding ``x`` and ``y`` (split by a stable hash of the
sample number, ``test_fraction`` / ``val_fraction``), or a folder holding
``train.npz``, ``test.npz`` and optionally ``val.npz``. ``x`` is uint8 (or
ai8x-normalized floats) with layout ``chw`` (N, C, H, W) / (N, C, L), ``hwc``
(N, H, W, C) or ``hw`` (N, H, W, one channel). ``y`` decides the target kind:
integer (N,) = class, integer (N, H, W) = mask, float = regression.
"""

from __future__ import annotations

import hashlib
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .. import format as fmt
from ..preprocess import fold, split_of
from .base import BadInput, OutputSpec, Sample, Source, input_as_uint8


@lru_cache(maxsize=4)
def _arrays(path: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["x"], z["y"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise BadInput(path, f"cannot read arrays x and y ({exc})") from None


class NpzSource(Source):
    """Pack ``x``/``y`` arrays from .npz files (see the module docstring)."""

    kind = "npz"

    def __init__(
        self,
        src: str | Path,
        *,
        name: str = "",
        layout: str = "chw",
        fold_ratio: int = 1,
        classes: list[Any] | None = None,
        input_range: str = "auto",
        test_fraction: float = 0.1,
        val_fraction: float = 0.0,
    ) -> None:
        self.src = Path(src)
        if layout not in ("chw", "hwc", "hw"):
            raise ValueError(f"layout must be chw, hwc or hw, not {layout!r}")
        self.layout, self.fold_ratio, self.input_range = layout, fold_ratio, input_range
        self.test_fraction, self.val_fraction = test_fraction, val_fraction
        if self.src.is_dir():
            self.files = {s: str(self.src / f"{s}.npz") for s in fmt.SPLITS if (self.src / f"{s}.npz").exists()}
            if "train" not in self.files:
                raise BadInput(str(self.src), "folder has no train.npz (expected train.npz, test.npz[, val.npz])")
        elif self.src.is_file():
            self.files = {"": str(self.src)}
        else:
            raise BadInput(str(self.src), "no such file or folder")
        self.name = name or self.src.stem
        xs, ys = zip(*(_arrays(f) for f in self.files.values()))
        for f, x, y in zip(self.files.values(), xs, ys):
            if len(x) != len(y):
                raise BadInput(f, f"x has {len(x)} samples but y has {len(y)}")
        y0 = ys[0]
        if y0.dtype.kind in "iub":
            kind = "class" if y0.ndim == 1 else "mask"
        elif y0.dtype.kind == "f":
            kind = "regression"
        else:
            raise BadInput(self.files[next(iter(self.files))], f"y has dtype {y0.dtype}; expected integers or floats")
        if classes is None:
            if kind == "regression":
                classes = [f"y{i}" for i in range(int(np.prod(y0.shape[1:], dtype=np.int64)))] if y0.ndim > 1 else ["y"]
            else:
                top = max(int(y.max()) for y in ys if y.size)
                classes = list(range(top + 1))
        sample_x = self._layout(xs[0][0]) if len(xs[0]) else np.zeros((1, 1, 1), np.uint8)
        self.spec = OutputSpec(
            name=self.name,
            input_shape=tuple(fold(sample_x, fold_ratio).shape) if sample_x.ndim == 3 else tuple(sample_x.shape),
            target_kind=kind,
            classes=list(classes),
            target_shape=tuple(y0.shape[1:]) if kind != "class" else None,
            preprocessing={"layout": layout, "fold_ratio": fold_ratio},
        )

    def _layout(self, x: np.ndarray) -> np.ndarray:
        if self.layout == "hwc":
            return np.ascontiguousarray(x.transpose(2, 0, 1))
        if self.layout == "hw":
            return x[None]
        return x

    def outputs(self) -> list[OutputSpec]:
        return [self.spec]

    def plan(self) -> dict[str, list[Any]]:
        if "" not in self.files:
            return {s: [(s, i) for i in range(len(_arrays(f)[0]))] for s, f in self.files.items()}
        plan: dict[str, list[Any]] = {"train": [], "test": []}
        for i in range(len(_arrays(self.files[""])[0])):
            plan.setdefault(split_of(str(i), self.test_fraction, self.val_fraction), []).append(("", i))
        return plan

    def load(self, item: Any) -> list[Sample]:
        file_key, i = item
        x, y = _arrays(self.files[file_key])
        name = f"{Path(self.files[file_key]).name}[{i}]"
        xi = input_as_uint8(self._layout(x[i]), self.input_range, name)
        if xi.ndim == 3:
            try:
                xi = fold(xi, self.fold_ratio)
            except ValueError as exc:
                raise BadInput(name, str(exc)) from None
        yi = y[i]
        if self.spec.target_kind == "class":
            yv: Any = int(yi)
        elif self.spec.target_kind == "mask":
            if yi.size and (int(yi.min()) < 0 or int(yi.max()) > 255):
                raise BadInput(name, "mask values must lie in 0..255")
            yv = yi.astype(np.uint8)
        else:
            yv = np.asarray(yi, dtype=np.float32)
        return [Sample(xi, yv, name)]

    def fingerprint_parts(self) -> dict[str, Any]:
        digests = {}
        for key, f in self.files.items():
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            digests[key or "all"] = h.hexdigest()
        return {
            "files": digests,
            "name": self.name,
            "layout": self.layout,
            "fold": self.fold_ratio,
            "classes": [str(c) for c in self.spec.classes],
            "input_range": self.input_range,
            "fractions": [self.test_fraction, self.val_fraction],
        }
