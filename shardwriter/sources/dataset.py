"""``dataset`` source: any map-style dataset: an object, or ``module:function`` naming one.

``dataset`` is a map-style dataset (``len()`` and ``[i]`` giving ``(x, y)``), a
``(train, test[, val])`` tuple or a ``{split: dataset}`` dict of them, an iterable of
``(x, y)`` samples (read once, into memory), or a ``"module:NAME"`` string. ``NAME`` is
such an object, a zero-argument factory returning one, or an ai8x-training loader
``f((data_dir, args), load_train, load_test)`` (detected by its required argument),
called with ``args.act_mode_8bit = False``.

Inputs may be uint8 arrays or ai8x-normalized float tensors; the range of floats is
decided once, from the first samples (``input_range="auto"``), and refused when they
cannot tell. The target kind is read from the first sample (an integer: a class; an
integer array of two or more dimensions: a mask) unless ``target`` says it; float or
other targets need ``target``. Classes come from ``classes`` or the dataset's
``.classes``.

What the fingerprint guarantees: samples come from Python code, so no file list can
vouch for them. The fingerprint covers every sample's content (the per-sample XXH3
hashes of each input and target, and the names), so a re-run reads every sample again
and resumes or skips only when each one is what the shards hold (cost: one pass over the
dataset, nothing written).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import numpy as np
import xxhash

from .. import format as fmt
from ..errors import BadInput, PackError, SettingsError
from ..preprocess import OffGridError, float_to_uint8, input_range_of
from .base import Inputs, OutputSpec, Sample, Source, class_names, decide_range

_CACHE: dict[tuple[str, str], dict[str, Any]] = {}
TARGETS = ("auto", "class", "mask", "regression")
RANGES = ("auto", "unit", "8bit")
PROBE = 16


def _to_numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def _dataset_like(v: Any) -> bool:
    return (hasattr(v, "__len__") and hasattr(v, "__getitem__") and not isinstance(v, (tuple, list, str, bytes, dict, np.ndarray))
            and not hasattr(v, "detach")) or (isinstance(v, list) and (not v or isinstance(v[0], (tuple, list))))


def _split_tuple(result: Any) -> bool:
    """A (train, test[, val]) tuple or list of datasets (or a tuple of lists of samples), not a list of samples."""
    if not isinstance(result, (tuple, list)) or not 1 <= len(result) <= 3:
        return False
    parts = [v for v in result if v is not None]
    if parts and all(_dataset_like(v) and not isinstance(v, list) for v in parts):
        return True
    return isinstance(result, tuple) and bool(parts) and all(isinstance(v, list) and _dataset_like(v) for v in parts)


def as_splits(result: Any, what: str) -> dict[str, Any]:
    """``{split: dataset}`` from a dataset, a (train, test[, val]) tuple, a dict, or an iterable of samples."""
    if isinstance(result, dict):
        bad = [k for k in result if k not in fmt.SPLITS]
        if bad:
            raise SettingsError(f"{what}: split {bad[0]!r} is not one of {', '.join(fmt.SPLITS)}")
        splits = {k: v for k, v in result.items() if v is not None}
    elif _split_tuple(result):
        splits = {s: d for s, d in zip(("train", "test", "val"), result) if d is not None}
    else:
        splits = {"train": result}
    for split, ds in list(splits.items()):
        if not _dataset_like(ds):
            if isinstance(ds, Iterable) and not isinstance(ds, (str, bytes, np.ndarray)):
                splits[split] = list(ds)  # an iterable of samples: read once, into memory
            else:
                raise SettingsError(f"{what}: {type(ds).__name__} is not a dataset (len() and [i] giving (x, y)), "
                                    "a (train, test) tuple, a {split: dataset} dict or an iterable of (x, y)")
    return splits


def resolve(spec: str, data_dir: str = ".") -> dict[str, Any]:
    """Import ``module:NAME`` and return its datasets as ``{split: dataset}``."""
    key = (spec, data_dir)
    if key in _CACHE:
        return _CACHE[key]
    mod_name, sep, fn_name = spec.partition(":")
    if not sep or not mod_name or not fn_name:
        raise SettingsError(f"{spec!r}: expected module:function (a module importable from here, and a name in it)")
    try:
        mod = importlib.import_module(mod_name)
    except Exception as exc:  # the user's module may raise anything at import
        raise SettingsError(f"{spec}: cannot import module {mod_name} ({type(exc).__name__}: {exc}); run from the folder "
                            "that holds it, or add that folder to PYTHONPATH") from None
    if not hasattr(mod, fn_name):
        raise SettingsError(f"{spec}: module {mod_name} has no {fn_name!r}")
    fn = getattr(mod, fn_name)
    if not callable(fn):
        if not (_dataset_like(fn) or isinstance(fn, (dict, tuple))):
            raise SettingsError(f"{spec}: {fn_name} is a {type(fn).__name__}, not a function returning datasets nor a dataset")
        result = fn
    else:
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            params = []
        required = [p for p in params if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        try:
            if required:
                args = SimpleNamespace(act_mode_8bit=False, truncate_testset=False)
                result = fn((data_dir, args), True, True)
            else:
                result = fn()
        except Exception as exc:  # the user's function may raise anything
            raise PackError(f"{spec}: raised {type(exc).__name__}: {exc}") from None
    splits = as_splits(result, spec)
    _CACHE[key] = splits
    return splits


def _item(raw: Any, name: str) -> tuple[Any, Any]:
    try:
        return raw[0], raw[1]
    except (TypeError, IndexError, KeyError):
        raise BadInput(name, f"item is a {type(raw).__name__}, not an (input, target) pair") from None


class DatasetSource(Source):
    """Pack a map-style dataset's items (see the module docstring)."""

    kind = "dataset"
    content_checked = True

    def __init__(
        self,
        dataset: Any,
        *,
        name: str = "",
        data_dir: str = ".",
        classes: list[Any] | int | None = None,
        input_range: str = "auto",
        target: str = "auto",
    ) -> None:
        if input_range not in RANGES:
            raise SettingsError(f"--input-range {input_range!r}: choose one of {', '.join(RANGES[1:])}")
        if target not in TARGETS:
            raise SettingsError(f"--target {target!r}: choose one of {', '.join(TARGETS[1:])}")
        self.spec_str = dataset if isinstance(dataset, str) else ""
        self.data_dir = data_dir
        if self.spec_str:
            self._splits = resolve(self.spec_str, data_dir)
            self.name = name or self.spec_str.partition(":")[2]
        else:
            self._splits = as_splits(dataset, f"dataset {type(dataset).__name__}")
            self.name = name or getattr(dataset, "name", "") or type(dataset).__name__
        self.described = self.spec_str or f"{type(dataset).__name__} object"
        self.lengths = {}
        for split, ds in self._splits.items():
            try:
                self.lengths[split] = len(ds)
            except Exception as exc:
                raise PackError(f"{self.described}: len() of split {split} raised {type(exc).__name__}: {exc}") from None
        if not self.lengths.get("train"):
            raise PackError(f"{self.described}: the train split is empty (or missing); a dataset needs training samples")
        probe = [self._raw("train", i) for i in range(min(PROBE, self.lengths["train"]))]
        x0, y0 = probe[0]
        self.target = self._resolve_target(target, y0)
        self.input_range = self._resolve_range(input_range, [x for x, _ in probe])
        x0 = self._x(x0, "train[0]")
        y0 = self._y(y0, "train[0]")
        self.classes_given = classes is not None
        self.classes = self._resolve_classes(classes, y0)
        self.out = OutputSpec(
            name=self.name,
            input_shape=tuple(x0.shape),
            target_kind=self.target,
            classes=list(self.classes),
            target_shape=tuple(np.asarray(y0).shape) if self.target != "class" else None,
            preprocessing={"dataset": self.described, **({"input_range": self.input_range} if self.input_range else {})},
        )
        self.out.schema  # noqa: B018 - validates the schema now

    # ------------------------------------------------------------------ checks, up front

    def _raw(self, split: str, i: int) -> tuple[Any, Any]:
        name = f"{split}[{i}]"
        try:
            raw = self._splits[split][i]
        except Exception as exc:  # the user's dataset may raise anything
            raise BadInput(name, f"dataset raised {type(exc).__name__}: {exc}") from None
        return _item(raw, name)

    def _resolve_target(self, target: str, y: Any) -> str:
        arr = _to_numpy(y)
        integer = arr.dtype.kind in "biu"
        if target == "auto":
            if integer and arr.ndim == 0:
                return "class"
            if integer and arr.ndim >= 2:
                return "mask"
            hint = ("--target regression (numbers), or --target class for labels stored as floats" if not integer else
                    "--target class, --target mask or --target regression")
            raise SettingsError(f"{self.described}: train[0] has a {arr.dtype} target of shape {arr.shape}; which target is "
                                f"it? pass {hint}")
        return target

    def _resolve_range(self, input_range: str, xs: list[Any]) -> str:
        arrs = [_to_numpy(x) for x in xs]
        if arrs[0].dtype == np.uint8:
            if input_range != "auto":
                raise SettingsError(f"--input-range applies to float inputs; {self.described} gives uint8 inputs")
            return ""
        if arrs[0].dtype.kind != "f":
            raise PackError(f"{self.described}: train[0] has a {arrs[0].dtype} input; inputs are uint8 pixels or "
                            "ai8x-normalized floats (convert in the dataset)")
        found = [r for r in (input_range_of(a) for a in arrs if a.dtype.kind == "f") if r]
        decided = "8bit" if "8bit" in found else (found[0] if found else None)
        return decide_range(decided, input_range, f"{self.described} (its first {len(arrs)} inputs)")

    def _resolve_classes(self, classes: list[Any] | int | None, y0: Any) -> list[Any]:
        given = class_names(classes, self.target, tuple(np.asarray(y0).shape))
        if given is not None or self.target == "regression":
            return given  # type: ignore[return-value]
        found = getattr(self._splits["train"], "classes", None)
        if found is None:
            raise SettingsError(f"{self.described}: the dataset has no .classes attribute; pass --classes N or --classes a,b,c")
        return class_names(list(found), self.target, ()) or []

    def _x(self, x: Any, name: str) -> np.ndarray:
        arr = _to_numpy(x)
        if arr.dtype == np.uint8:
            return arr
        if arr.dtype.kind != "f":
            raise BadInput(name, f"input dtype {arr.dtype}; expected uint8 or ai8x-normalized floats")
        try:
            return float_to_uint8(arr, self.input_range or "unit")
        except OffGridError as exc:
            raise BadInput(name, str(exc)) from None

    def _y(self, y: Any, name: str) -> Any:
        arr = _to_numpy(y)
        if self.target == "class":
            if arr.size != 1 or arr.dtype.kind not in "biuf":
                raise BadInput(name, f"class target of shape {arr.shape} ({arr.dtype}); expected one integer")
            v = arr.reshape(()).item()
            if isinstance(v, float):
                if v != int(v):
                    raise BadInput(name, f"class label {v!r} is not a whole number")
                v = int(v)
            return int(v)
        if self.target == "regression":
            if arr.dtype.kind not in "biuf":
                raise BadInput(name, f"regression target dtype {arr.dtype}; expected numbers")
            return arr.astype(np.float32)
        if arr.dtype.kind not in "biu" or (arr.size and (arr.min() < 0 or arr.max() > 255)):
            raise BadInput(name, f"mask target must be integers in 0..255, got {arr.dtype}")
        return arr.astype(np.uint8)

    # ------------------------------------------------------------------ the Source interface

    def outputs(self) -> list[OutputSpec]:
        return [self.out]

    def plan(self) -> dict[str, list[Any]]:
        return {s: [(s, i) for i in range(n)] for s, n in self.lengths.items()}

    def sample_names(self, item: Any) -> list[str]:
        return [f"{item[0]}[{item[1]}]"]

    def load(self, item: Any) -> list[Sample]:
        split, i = item
        name = f"{split}[{i}]"
        x, y = self._raw(split, i)
        xs, yv = self._x(x, name), self._y(y, name)
        if self.target == "class" and not 0 <= yv < len(self.classes) and self.classes_given:
            raise SettingsError(f"--classes gives {len(self.classes)} classes, but sample {name} has label {yv}; "
                                "give every class")
        return [Sample(xs, yv, name)]

    def inputs(self, checksum: bool = False) -> Inputs:
        what = f"{self.described}\0{self.data_dir}\0" + "\0".join(f"{s}={n}" for s, n in sorted(self.lengths.items()))
        return Inputs(xxhash.xxh3_128_hexdigest(what.encode()),
                      f"every sample's content (XXH3 of each input and target) of {sum(self.lengths.values())} samples, "
                      "read again on a re-run", {"samples": sum(self.lengths.values())})

    def options(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target, "classes": [str(c) for c in self.classes],
                "input_range": self.input_range}

    def __getstate__(self) -> dict[str, Any]:  # spawned workers import module:function again
        state = dict(self.__dict__)
        if self.spec_str:
            state["_splits"] = None
        return state

    def prepare_worker(self) -> None:
        if self._splits is None:
            if "" not in sys.path:
                sys.path.insert(0, "")
            self._splits = resolve(self.spec_str, self.data_dir)
