"""The interface every source implements, and the checks applied to what it yields.

A source plans its items per split in the main process (cheap, picklable descriptors
such as file names), and loads each item in a worker (decode, preprocess) into one or
more :class:`Sample` objects. One source may feed several outputs (variants), each
written as its own dataset folder.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import format as fmt
from ..errors import BadInput
from ..preprocess import OffGridError, float_to_uint8

__all__ = ["BadInput", "OutputSpec", "Sample", "Source", "input_as_uint8"]


def input_as_uint8(x: np.ndarray, input_range: str, name: str) -> np.ndarray:
    """uint8 inputs as they are; ai8x-normalized floats back to uint8, losslessly, or BadInput."""
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind != "f":
        raise BadInput(name, f"input dtype {x.dtype}; expected uint8 or ai8x-normalized floats")
    try:
        return float_to_uint8(x, input_range)
    except OffGridError as exc:
        raise BadInput(name, str(exc)) from None


@dataclass(frozen=True)
class Sample:
    """A preprocessed sample: uint8 input in the model's layout and its target."""

    x: np.ndarray
    y: Any
    name: str
    output: str = ""  # which OutputSpec it belongs to ("" for single-output sources)


@dataclass
class OutputSpec:
    """One dataset folder a source writes: its schema and descriptive metadata."""

    name: str
    input_shape: tuple[int, ...]
    target_kind: str
    classes: list[Any]
    variant: str = ""
    subdir: str = ""  # "" = the output folder itself
    target_shape: tuple[int, ...] | None = None  # masks / regression; None = any
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def check(self, s: Sample) -> None:
        """Raise :class:`BadInput` if ``s`` does not fit this output's schema."""
        if s.x.dtype != np.uint8:
            raise BadInput(s.name, f"input dtype {s.x.dtype}, expected uint8")
        if tuple(s.x.shape) != tuple(self.input_shape):
            raise BadInput(s.name, f"input shape {tuple(s.x.shape)}, expected {tuple(self.input_shape)}")
        k = len(self.classes)
        if self.target_kind == "class":
            if not 0 <= int(s.y) < k:
                raise BadInput(s.name, f"label {int(s.y)} out of range: {k} classes")
            return
        y = np.asarray(s.y)
        if self.target_shape is not None and tuple(y.shape) != tuple(self.target_shape):
            raise BadInput(s.name, f"target shape {tuple(y.shape)}, expected {tuple(self.target_shape)}")
        if self.target_kind == "mask" and y.size and int(y.max()) >= k:
            raise BadInput(s.name, f"mask value {int(y.max())} out of range: {k} classes")


class Source(ABC):
    """A kind of input the writer can pack (``npz``, ``imagefolder``, ``dataset``, ...)."""

    kind: str = ""

    @abstractmethod
    def outputs(self) -> list[OutputSpec]:
        """The dataset folders this source writes (usually one)."""

    @abstractmethod
    def plan(self) -> dict[str, list[Any]]:
        """Items per split, in write order. Runs in the main process."""

    @abstractmethod
    def load(self, item: Any) -> list[Sample]:
        """Decode and preprocess one item; raise :class:`BadInput` for bad input. Runs in workers."""

    @abstractmethod
    def fingerprint_parts(self) -> dict[str, Any]:
        """What identifies the input and options (names, sizes, parameters), JSON-able."""

    def fingerprint(self) -> str:
        """sha256 over :meth:`fingerprint_parts`: same input and options, same fingerprint."""
        blob = json.dumps({"kind": self.kind, "format": fmt.FORMAT_VERSION, **self.fingerprint_parts()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def load_checked(self, item: Any) -> list[Sample]:
        """:meth:`load`, then check each sample against its output's schema."""
        specs = {o.subdir: o for o in self.outputs()}
        samples = self.load(item)
        for s in samples:
            specs[s.output].check(s)
        return samples
