"""``dataset`` source: any map-style dataset, given as ``module:function``.

The function is either a zero-argument factory returning a dataset, a
``(train, test)`` tuple or a ``{split: dataset}`` dict, or an ai8x-training loader
``f((data_dir, args), load_train, load_test)`` (detected by its required argument),
called with ``args.act_mode_8bit = False``. Items ``(x, y)`` may hold uint8 arrays or
ai8x-normalized float tensors in either range; floats are converted back to uint8
losslessly, and values off the ai8x grid are an error naming the sample.
"""

from __future__ import annotations

import importlib
import inspect
from types import SimpleNamespace
from typing import Any

import numpy as np

from .base import BadInput, OutputSpec, Sample, Source, input_as_uint8

_CACHE: dict[tuple[str, str], dict[str, Any]] = {}


def _to_numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def resolve(spec: str, data_dir: str = ".") -> dict[str, Any]:
    """Import ``module:function`` and return its datasets as ``{split: dataset}``."""
    key = (spec, data_dir)
    if key in _CACHE:
        return _CACHE[key]
    mod_name, sep, fn_name = spec.partition(":")
    if not sep or not mod_name or not fn_name:
        raise BadInput(spec, "expected module:function")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise BadInput(spec, f"cannot import ({exc})") from None
    required = [
        p for p in inspect.signature(fn).parameters.values()
        if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if required:
        args = SimpleNamespace(act_mode_8bit=False, truncate_testset=False)
        result = fn((data_dir, args), True, True)
    else:
        result = fn()
    if isinstance(result, dict):
        splits = dict(result)
    elif isinstance(result, (tuple, list)):
        splits = {s: d for s, d in zip(("train", "test", "val"), result) if d is not None}
    else:
        splits = {"train": result}
    _CACHE[key] = splits
    return splits


class DatasetSource(Source):
    """Pack a map-style dataset's items (see the module docstring)."""

    kind = "dataset"

    def __init__(
        self,
        spec: str,
        *,
        name: str = "",
        data_dir: str = ".",
        classes: list[Any] | None = None,
        input_range: str = "auto",
        target: str = "auto",
    ) -> None:
        self.spec_str, self.data_dir, self.input_range = spec, data_dir, input_range
        self.name = name or spec.partition(":")[2]
        splits = resolve(spec, data_dir)
        first_split = next(iter(splits))
        if len(splits[first_split]) == 0:
            raise BadInput(spec, f"split {first_split} is empty")
        x0, y0 = self._convert(splits[first_split][0], f"{first_split}[0]", kind=None)
        if target == "auto":
            target = "class" if isinstance(y0, int) else ("mask" if np.asarray(y0).dtype == np.uint8 else "regression")
        if classes is None:
            classes = getattr(splits[first_split], "classes", None)
        if classes is None:
            if target != "regression":
                raise BadInput(spec, "the dataset has no .classes attribute: give the class names (--classes)")
            classes = ["y"]
        self.out = OutputSpec(
            name=self.name,
            input_shape=tuple(x0.shape),
            target_kind=target,
            classes=list(classes),
            target_shape=tuple(np.asarray(y0).shape) if target != "class" else None,
            preprocessing={"dataset": spec, "input_range": input_range},
        )

    def _convert(self, item: Any, name: str, kind: str | None) -> tuple[np.ndarray, Any]:
        try:
            x, y = item[0], item[1]
        except (TypeError, IndexError):
            raise BadInput(name, "item is not an (input, target) pair") from None
        x = input_as_uint8(_to_numpy(x), self.input_range, name)
        y = _to_numpy(y)
        if (kind == "class" or kind is None) and y.ndim == 0 and y.dtype.kind in "iub":
            return x, int(y)
        if kind == "regression" or (kind is None and y.dtype.kind == "f"):
            return x, y.astype(np.float32)
        if y.dtype.kind not in "iub" or (y.size and (y.min() < 0 or y.max() > 255)):
            raise BadInput(name, f"mask target must be integers in 0..255, got {y.dtype}")
        return x, y.astype(np.uint8)

    def outputs(self) -> list[OutputSpec]:
        return [self.out]

    def plan(self) -> dict[str, list[Any]]:
        return {s: [(s, i) for i in range(len(d))] for s, d in resolve(self.spec_str, self.data_dir).items()}

    def load(self, item: Any) -> list[Sample]:
        split, i = item
        name = f"{split}[{i}]"
        try:
            raw = resolve(self.spec_str, self.data_dir)[split][i]
        except BadInput:
            raise
        except Exception as exc:  # the user's dataset may raise anything
            raise BadInput(name, f"dataset raised {type(exc).__name__}: {exc}") from None
        x, y = self._convert(raw, name, self.out.target_kind)
        return [Sample(x, y, name)]

    def fingerprint_parts(self) -> dict[str, Any]:
        splits = resolve(self.spec_str, self.data_dir)
        return {
            "dataset": self.spec_str,
            "data_dir": self.data_dir,
            "lengths": {s: len(d) for s, d in splits.items()},
            "name": self.name,
            "classes": [str(c) for c in self.out.classes],
            "input_range": self.input_range,
            "target": self.out.target_kind,
        }
