"""What every sample of a dataset looks like: input shape, target kind and shape, classes.

:class:`Schema` is shared by the writer (each sample it packs is checked against its
output's schema) and the readers (the manifest's schema says how many bytes each index
row must point at). The target-kind tables live here and nowhere else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FormatError

TARGET_KINDS = ("class", "mask", "regression")
#: dtype of the target as the record stores it (a class is an int in the record, int64 served).
TARGET_DTYPES = {"class": "int64", "mask": "uint8", "regression": "float32"}
#: bytes per target element inside a record (a class label lives in the index, not as bytes)
TARGET_ITEMSIZE = {"class": 0, "mask": 1, "regression": 4}
#: dtype readers serve the target as (masks are widened to int64 for CrossEntropyLoss)
SERVED_DTYPES = {"class": np.int64, "mask": np.int64, "regression": np.float32}
#: largest input or target, in bytes, a dataset may declare (bounds every allocation a manifest can ask for)
MAX_SAMPLE_BYTES = 1 << 31
MAX_CLASSES = 1 << 16


def check_shape(value: Any, what: str, *, allow_empty: bool = False) -> tuple[int, ...]:
    """A JSON shape: a list of positive ints (``[]`` only where allowed), product bounded."""
    if not isinstance(value, (list, tuple)) or not all(type(v) is int and v >= 1 for v in value):
        raise FormatError(f"{what}: shape {value!r} is not a list of positive integers")
    if not value and not allow_empty:
        raise FormatError(f"{what}: shape is empty")
    if len(value) > 8 or math.prod(value) > MAX_SAMPLE_BYTES:
        raise FormatError(f"{what}: shape {list(value)} is too large (at most 8 dimensions and 2^31 elements)")
    return tuple(value)


@dataclass(frozen=True)
class Target:
    """A dataset's target: ``kind`` and, for masks and regression, the ``shape`` of each target."""

    kind: str
    shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise FormatError(f"unknown target kind {self.kind!r}; expected one of {', '.join(TARGET_KINDS)}")
        if self.kind == "class":
            if self.shape not in (None, ()):
                raise FormatError(f"a class target has no shape, not {list(self.shape)}")
            object.__setattr__(self, "shape", None)
        if self.kind != "class":
            if self.shape is None:
                raise FormatError(f"a {self.kind} target needs a shape")
            object.__setattr__(self, "shape", check_shape(list(self.shape), f"{self.kind} target", allow_empty=self.kind == "regression"))

    @property
    def dtype(self) -> str:
        return TARGET_DTYPES[self.kind]

    @property
    def nbytes(self) -> int:
        """Bytes of one target inside a record (0 for a class: the label is in the index)."""
        return math.prod(self.shape or ()) * TARGET_ITEMSIZE[self.kind] if self.kind != "class" else 0

    @property
    def served_shape(self) -> tuple[int, ...]:
        return tuple(self.shape or ())


@dataclass(frozen=True)
class Schema:
    """Input shape (uint8, the model's layout), target and class names of a dataset."""

    input_shape: tuple[int, ...]
    target: Target
    classes: tuple[Any, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", check_shape(list(self.input_shape), "input"))
        if not isinstance(self.classes, tuple):
            object.__setattr__(self, "classes", tuple(self.classes))
        if not 1 <= len(self.classes) <= MAX_CLASSES:
            raise FormatError(f"{len(self.classes)} classes; a dataset has 1..{MAX_CLASSES}")
        if self.target.kind == "mask" and len(self.classes) > 256:
            raise FormatError(f"a uint8 mask holds at most 256 classes, not {len(self.classes)}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_nbytes(self) -> int:
        return math.prod(self.input_shape)

    def problem(self, x: np.ndarray, y: Any) -> str | None:
        """Why sample ``(x, y)`` does not fit this schema, or None. ``x`` uint8; ``y`` as the writer holds it."""
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
            return f"input dtype {getattr(x, 'dtype', type(x).__name__)}, expected uint8"
        if tuple(x.shape) != self.input_shape:
            return f"input shape {tuple(x.shape)}, expected {self.input_shape}"
        k = self.num_classes
        if self.target.kind == "class":
            if isinstance(y, (bool, np.bool_)) or not isinstance(y, (int, np.integer)):
                return f"class label {y!r} is not an integer"
            if not 0 <= int(y) < k:
                return f"label {int(y)} out of range: {k} classes"
            return None
        arr = np.asarray(y)
        if arr.dtype != np.dtype(self.target.dtype):
            return f"{self.target.kind} target dtype {arr.dtype}, expected {self.target.dtype}"
        if tuple(arr.shape) != self.target.shape:
            return f"target shape {tuple(arr.shape)}, expected {self.target.shape}"
        if self.target.kind == "mask" and arr.size and int(arr.max()) >= k:
            return f"mask value {int(arr.max())} out of range: {k} classes"
        if self.target.kind == "regression" and arr.size and not np.isfinite(arr).all():
            return "regression target holds NaN or infinity"
        return None
