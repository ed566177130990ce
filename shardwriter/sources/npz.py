"""``npz`` source: arrays ``x`` (samples) and ``y`` (targets) in .npz files.

SRC is either one .npz file holding ``x`` and ``y`` (split by a stable hash of the sample
number, ``test_fraction`` / ``val_fraction``), or a folder holding ``train.npz``,
``test.npz`` and optionally ``val.npz`` (the splits are then given, and the fractions do
not apply). Nothing about the arrays is guessed:

* ``layout`` of ``x``: ``chw`` (N, C, H, W) or (N, C, L) for 1-D data, ``hwc`` (N, H, W, C),
  ``hw`` (N, H, W: one channel). ``auto`` takes a 4-D ``x`` as CHW only when its last axis is
  longer than 4 (channels-last image data has 1-4 channels); any other shape needs ``layout``.
* ``target``: ``class`` (integer labels (N,), or (N, 1)), ``mask`` (integers (N, H, W)),
  ``regression`` (numbers, stored as float32). ``auto`` takes integer (N,) as class and
  integer (N, H, W) as mask; float ``y`` and any other shape need ``target``.
* ``x`` is uint8, or ai8x-normalized floats whose range (``unit``: ``(p - 128) / 128``,
  ``8bit``: ``p - 128``) is decided once from all of ``x`` (``input_range="auto"``) and
  refused when the data cannot tell.

Settings that do not fit the arrays (a fold that does not divide H and W, ``classes``
fewer than the labels, a range the values contradict) raise SettingsError before any
work; per-sample problems (a negative label, a value off the ai8x grid, a mask value
above 255, a non-finite regression target) are bad inputs, named ``FILE[i]``.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from .. import format as fmt
from ..errors import PackError, SettingsError
from ..preprocess import input_range_of, split_of
from .base import Columns, Inputs, Loaded, OutputSpec, Sample, Source, check_fractions, class_names, decide_range

LAYOUTS = ("auto", "chw", "hwc", "hw")
TARGETS = ("auto", "class", "mask", "regression")
RANGES = ("auto", "unit", "8bit")


def _open(path: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):  # pragma: no cover - np.load of a zip is always an NpzFile
                raise ValueError("not an .npz archive")
            missing = [k for k in ("x", "y") if k not in z.files]
            if missing:
                raise PackError(f"{path}: no array {missing[0]!r} (it holds {', '.join(z.files) or 'nothing'}); "
                                "save the inputs as x and the targets as y: np.savez(FILE, x=..., y=...)")
            return z["x"], z["y"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise PackError(f"{path}: cannot read arrays x and y ({type(exc).__name__}: {exc})") from None


def _is_npz(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) in (b"PK\x03\x04", b"PK\x05\x06")
    except OSError:
        return False


def listed_any(reasons: list[str | None]) -> bool:
    return any(r is not None for r in reasons)


def fold_batch(x: np.ndarray, r: int) -> np.ndarray:
    """:func:`~shardwriter.preprocess.fold` over a batch (N, C, H, W), in one vectorized copy."""
    if r == 1:
        return x
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // r, r, w // r, r).transpose(0, 3, 5, 1, 2, 4)
    return np.ascontiguousarray(y.reshape(n, r * r * c, h // r, w // r))


class NpzSource(Source):
    """Pack ``x``/``y`` arrays from .npz files (see the module docstring)."""

    kind = "npz"

    def __init__(
        self,
        src: str | os.PathLike[str],
        *,
        name: str = "",
        layout: str = "auto",
        fold_ratio: int = 1,
        classes: list[Any] | int | None = None,
        input_range: str = "auto",
        target: str = "auto",
        test_fraction: float | None = None,
        val_fraction: float | None = None,
    ) -> None:
        self.src = Path(src)
        if layout not in LAYOUTS:
            raise SettingsError(f"--layout {layout!r}: choose one of {', '.join(LAYOUTS[1:])}")
        if target not in TARGETS:
            raise SettingsError(f"--target {target!r}: choose one of {', '.join(TARGETS[1:])}")
        if input_range not in RANGES:
            raise SettingsError(f"--input-range {input_range!r}: choose one of {', '.join(RANGES[1:])}")
        if isinstance(fold_ratio, bool) or not isinstance(fold_ratio, int) or fold_ratio < 1:
            raise SettingsError(f"--fold {fold_ratio!r}: the fold ratio is a whole number of at least 1")
        if self.src.is_dir():
            self.files = {s: str(self.src / f"{s}.npz") for s in fmt.SPLITS if (self.src / f"{s}.npz").is_file()}
            if "train" not in self.files:
                raise SettingsError(f"{self.src}: folder has no train.npz (expected train.npz, test.npz[, val.npz]), "
                                    "or give one .npz file")
            if test_fraction is not None or val_fraction is not None:
                raise SettingsError(f"{self.src}: the folder's train.npz/test.npz give the splits, so --test-fraction and "
                                    "--val-fraction do not apply; drop them, or give one .npz file to split")
            self.fractions: tuple[float, float] | None = None
        elif self.src.is_file():
            if not _is_npz(self.src):
                raise SettingsError(f"{self.src}: not an .npz file (the zip archive np.savez writes); save the arrays with "
                                    "np.savez(FILE, x=inputs, y=targets)")
            self.files = {"": str(self.src)}
            self.fractions = (0.1 if test_fraction is None else test_fraction, 0.0 if val_fraction is None else val_fraction)
            check_fractions(*self.fractions)
        else:
            raise SettingsError(f"{self.src}: no such file or folder")
        self.name = name or self.src.stem
        self._base = {k: Path(f).name for k, f in self.files.items()}
        self.fold_ratio = fold_ratio
        self._x: dict[str, np.ndarray] = {}
        self._y: dict[str, np.ndarray] = {}
        for key, f in self.files.items():
            self._x[key], self._y[key] = _open(f)
        self._check_arrays()
        self.layout = self._resolve_layout(layout)
        self.input_shape = self._input_shape()
        self.target = self._resolve_target(target)
        self.classes = self._resolve_classes(classes)
        self.input_range = self._resolve_range(input_range)
        self._bad = self._per_sample_problems()
        self.split_items = self._split()
        self.spec = OutputSpec(
            name=self.name,
            input_shape=self.input_shape,
            target_kind=self.target,
            classes=list(self.classes),
            target_shape=self._target_shape() if self.target != "class" else None,
            preprocessing={"layout": self.layout, "fold_ratio": fold_ratio,
                           **({"input_range": self.input_range} if self.input_range else {})},
        )
        self.spec.schema  # noqa: B018 - validates the schema now, before any work

    # ------------------------------------------------------------------ checks, up front

    def _where(self, key: str) -> str:
        return self.files[key]

    def _check_arrays(self) -> None:
        shapes = set()
        for key in self.files:
            x, y, where = self._x[key], self._y[key], self._where(key)
            if len(x) != len(y):
                raise PackError(f"{where}: x has {len(x)} samples but y has {len(y)}; they must pair up")
            if x.dtype != np.uint8 and x.dtype.kind != "f":
                raise PackError(f"{where}: x has dtype {x.dtype}; inputs are uint8 pixels (x.astype(np.uint8) if they lie "
                                "in 0..255) or ai8x-normalized floats")
            if y.dtype.kind not in "biuf":
                raise PackError(f"{where}: y has dtype {y.dtype}; targets are integers (classes, masks) or numbers (regression)")
            if x.ndim not in (3, 4):
                raise PackError(f"{where}: x has shape {x.shape}; expected (N, C, H, W), (N, H, W, C), (N, H, W) or (N, C, L)")
            shapes.add((x.shape[1:], x.dtype.kind, y.shape[1:]))
        if len(shapes) > 1:
            raise PackError(f"{self.src}: the .npz files hold samples of different shapes or kinds "
                            f"({'; '.join(f'x {s[0]}, y {s[2]}' for s in sorted(shapes))}); every split must match")
        if not len(self._x["train" if "train" in self.files else ""]):
            raise PackError(f"{self._where('train' if 'train' in self.files else '')}: x holds no samples")

    def _first(self) -> tuple[np.ndarray, np.ndarray, str]:
        key = next(iter(self.files))
        return self._x[key], self._y[key], self._where(key)

    def _resolve_layout(self, layout: str) -> str:
        x, _, where = self._first()
        shape = ", ".join(["N", *map(str, x.shape[1:])])
        if x.ndim == 4:
            if layout == "hw":
                raise SettingsError(f"{where}: x has shape ({shape}), four dimensions; --layout hw is for (N, H, W)")
            if layout == "auto":
                if x.shape[3] > 4:
                    return "chw"
                raise SettingsError(f"{where}: x has shape ({shape}): channels last or first? pass --layout hwc "
                                    f"(N, H, W, C: {x.shape[3]} channels) or --layout chw (N, C, H, W: {x.shape[1]} channels)")
            return layout
        if layout == "hwc":
            raise SettingsError(f"{where}: x has shape ({shape}), three dimensions; --layout hwc is for (N, H, W, C)")
        if layout == "auto":
            raise SettingsError(f"{where}: x has shape ({shape}): pass --layout hw (grey images, H x W) or "
                                "--layout chw (1-D data, C x L)")
        return layout

    def _input_shape(self) -> tuple[int, ...]:
        x, _, where = self._first()
        s = x.shape[1:]
        chw = (s[2], s[0], s[1]) if self.layout == "hwc" else (1, *s) if self.layout == "hw" else tuple(s)
        r = self.fold_ratio
        if len(chw) == 2:
            if r != 1:
                raise SettingsError(f"--fold {r}: x holds 1-D data (C, L) = {chw}; folding applies to images (C, H, W)")
            return tuple(chw)
        c, h, w = chw
        if h % r or w % r:
            raise SettingsError(f"--fold {r} does not divide the {h}x{w} images of {where}; choose a ratio that divides both sides")
        return (c * r * r, h // r, w // r)

    def _resolve_target(self, target: str) -> str:
        _, y, where = self._first()
        shape = ", ".join(["N", *map(str, y.shape[1:])])
        integer = y.dtype.kind in "biu"
        if target == "auto":
            if integer and y.ndim == 1:
                return "class"
            if integer and y.ndim == 3:
                return "mask"
            hint = ("--target regression (numbers), or --target class for labels stored as floats" if not integer else
                    "--target class for (N, 1) labels, --target mask or --target regression" if y.shape[1:] == (1,) else
                    "--target mask (a label per position) or --target regression")
            raise SettingsError(f"{where}: y is {y.dtype} of shape ({shape}); which target is it? pass {hint}")
        if target == "class":
            if not (y.ndim == 1 or y.shape[1:] == (1,)):
                raise SettingsError(f"{where}: --target class needs labels of shape (N,) or (N, 1), y is ({shape})")
            if not integer:
                flat = y.reshape(len(y))
                off = np.flatnonzero(~np.isfinite(flat) | (flat != np.round(flat)))
                if len(off):
                    raise SettingsError(f"{where}: --target class, but y[{int(off[0])}] is {float(flat[off[0]])!r}, not a whole number")
        if target == "mask" and (y.ndim < 2 or (not integer)):
            raise SettingsError(f"{where}: --target mask needs integer labels of shape (N, H, W), y is {y.dtype} ({shape})")
        return target

    def _labels(self, key: str) -> np.ndarray:
        y = self._y[key]
        return y.reshape(len(y)).astype(np.int64) if self.target == "class" else y

    def _resolve_classes(self, classes: list[Any] | int | None) -> list[Any]:
        given = class_names(classes, self.target, self._target_shape())
        if self.target == "regression":
            return given  # type: ignore[return-value]
        tops = [int(self._labels(k).max()) for k in self.files if self._y[k].size]
        top = max(tops) if tops else 0
        if given is None:
            return list(range(max(top, 0) + 1))
        classes = given
        if top >= len(classes):
            key = next(k for k in self.files if self._y[k].size and int(self._labels(k).max()) == top)
            i = int(np.flatnonzero(self._labels(key).reshape(len(self._y[key]), -1).max(axis=1) == top)[0])
            raise SettingsError(f"--classes gives {len(classes)} classes, but {self._name(key, i)} has label {top}; "
                                f"give all {top + 1} classes (or fix the labels)")
        return classes

    def _resolve_range(self, input_range: str) -> str:
        x, _, where = self._first()
        if x.dtype == np.uint8:
            if input_range != "auto":
                raise SettingsError(f"--input-range applies to float inputs; {where} holds uint8 pixels")
            return ""
        found = None
        for key in self.files:
            for start in range(0, len(self._x[key]), 4096):
                got = input_range_of(self._x[key][start : start + 4096])
                if got == "8bit":
                    found = got
                    break
                found = found or got
            if found == "8bit":
                break
        return decide_range(found, input_range, where)

    def _target_shape(self) -> tuple[int, ...]:
        _, y, _ = self._first()
        return tuple(y.shape[1:])

    def _per_sample_problems(self) -> dict[str, dict[int, str]]:
        """Bad samples, found vectorized: {file key: {index: reason}}."""
        out: dict[str, dict[int, str]] = {}
        for key in self.files:
            y = self._y[key]
            bad: dict[int, str] = {}
            if self.target == "class":
                lab = self._labels(key)
                for i in np.flatnonzero(lab < 0)[:100000].tolist():
                    bad[i] = f"label {int(lab[i])} is negative"
            elif self.target == "mask":
                flat = y.reshape(len(y), -1)
                if flat.size:
                    lo, hi = flat.min(axis=1), flat.max(axis=1)
                    for i in np.flatnonzero((lo < 0) | (hi > 255)).tolist():
                        bad[i] = f"mask values must lie in 0..255 (found {int(lo[i])}..{int(hi[i])})"
            else:
                flat = y.reshape(len(y), -1)
                for i in np.flatnonzero(~np.isfinite(flat.astype(np.float32)).all(axis=1)).tolist():
                    bad[i] = "regression target holds NaN or infinity (as float32)"
            if bad:
                out[key] = bad
        return out

    def _split(self) -> dict[str, list[tuple[str, int]]]:
        if "" not in self.files:
            return {s: [(s, i) for i in range(len(self._x[s]))] for s in self.files}
        plan: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
        t, v = self.fractions or (0.1, 0.0)
        for i in range(len(self._x[""])):
            plan.setdefault(split_of(str(i), t, v), []).append(("", i))
        if not plan["train"]:
            raise SettingsError(f"{self.src}: all {len(self._x[''])} samples fall in test/val with --test-fraction {t} "
                                f"--val-fraction {v}, so the train split would be empty; lower the fractions")
        return plan

    # ------------------------------------------------------------------ the Source interface

    def _name(self, key: str, i: int) -> str:
        return f"{self._base[key]}[{i}]"

    def outputs(self) -> list[OutputSpec]:
        return [self.spec]

    def plan(self) -> dict[str, list[Any]]:
        return {s: list(items) for s, items in self.split_items.items()}

    def sample_names(self, item: Any) -> list[str]:
        return [self._name(*item)]

    def sample_labels(self, item: Any) -> list[int] | None:
        if self.target != "class":
            return None
        key, i = item
        return [int(self._y[key].reshape(-1)[i])]

    def load(self, item: Any) -> list[Sample]:
        got = self.load_batch([item])
        if got.bad:
            from ..errors import BadInput

            raise BadInput(got.bad[0][1], got.bad[0][2])
        c = got.columns[""]
        y = int(c.y[0]) if self.target == "class" else c.y[0]
        return [Sample(c.x[0], y, c.names[0])]

    def load_batch(self, items: list[Any]) -> Loaded:
        key = items[0][0] if items else ""
        if any(k != key for k, _ in items):  # pragma: no cover - a split's items all come from one file
            raise PackError(f"{self.src}: a batch mixes .npz files")
        idx = np.fromiter((i for _, i in items), np.int64, len(items))
        x = self._x[key][idx]
        if self.layout == "hwc":
            x = x.transpose(0, 3, 1, 2)
        elif self.layout == "hw":
            x = x[:, None]
        bad = self._bad.get(key, {})
        reasons = [bad.get(int(i)) for i in idx]
        if x.dtype != np.uint8:
            v = x.astype(np.float64) * (128 if self.input_range == "unit" else 1)
            off = ((v != np.round(v)) | (v < -128) | (v > 127)).reshape(len(v), -1).any(axis=1)
            for p in np.flatnonzero(off).tolist():
                reasons[p] = reasons[p] or (f"a value is not on the ai8x {self.input_range} grid "
                                            "(expected pixel/256 normalized as round((x-0.5)*256), optionally /128)")
            x = (np.where(off.reshape(-1, *([1] * (v.ndim - 1))), 0, v) + 128).astype(np.uint8)
        if x.ndim == 4:
            x = fold_batch(np.ascontiguousarray(x), self.fold_ratio)
        y = self._y[key][idx]
        if self.target == "class":
            y = y.reshape(len(idx)).astype(np.int64)
        elif self.target == "mask":
            y = y.astype(np.uint8)
        else:
            y = y.astype(np.float32)
        good = [p for p, r in enumerate(reasons) if r is None]
        base = self._base[key]
        names = [f"{base}[{i}]" for i in (idx.tolist() if not listed_any(reasons) else idx[good].tolist())]
        listed = [(p, self._name(key, int(idx[p])), r) for p, r in enumerate(reasons) if r is not None]
        if listed:
            sel = np.array(good, np.int64)
            x, y = x[sel], y[sel]
        return Loaded({"": Columns(np.ascontiguousarray(x), np.ascontiguousarray(y), names)}, listed)

    def batch_items(self) -> int:
        per = int(np.prod(self.input_shape)) * (1 if self._first()[0].dtype == np.uint8 else 9)
        return max(64, min(8192, (16 << 20) // max(per, 1)))

    def inputs(self, checksum: bool = False) -> Inputs:
        lines, total = [], 0
        for key, f in sorted(self.files.items()):
            st = os.stat(f)
            total += st.st_size
            line = f"{key}\0{Path(f).name}\0{st.st_size}\0{st.st_mtime_ns}"
            if checksum:
                h = xxhash.xxh3_128()
                with open(f, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 22), b""):
                        h.update(block)
                line += "\0" + h.hexdigest()
            lines.append(line)
        covers = f"names, sizes and mtime_ns{' and contents (xxh3-128)' if checksum else ''} of {len(lines)} .npz file(s)"
        digest = xxhash.xxh3_128_hexdigest("\n".join(lines).encode())
        return Inputs(digest, covers, {"files": len(lines), "bytes": total})

    def options(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layout": self.layout,
            "fold": self.fold_ratio,
            "target": self.target,
            "classes": [str(c) for c in self.classes],
            "input_range": self.input_range,
            "fractions": list(self.fractions) if self.fractions else None,
        }

    def __getstate__(self) -> dict[str, Any]:  # a spawned worker re-reads the arrays instead of receiving them
        return {**self.__dict__, "_x": {}, "_y": {}}

    def prepare_worker(self) -> None:
        if not self._x:
            for key, f in self.files.items():
                self._x[key], self._y[key] = _open(f)
