"""The interface every source implements, and the checks applied to what it yields.

A source plans its items per split in the main process (cheap, picklable descriptors
such as file names) and names, at plan time, the samples each item will give
(:meth:`Source.sample_names`): the writer needs those names to plan every shard's bytes
before anything is loaded, so that worker processes can write shards themselves and the
output is the same for any number of them. Items are loaded in workers (decode,
preprocess), a batch at a time (:meth:`Source.load_batch`), into :class:`Columns`: one
array of inputs and one of targets per output. One source may feed several outputs
(variants), each written as its own dataset folder; an item gives every output one
sample per name.

Everything a source is told is checked when it is made: a setting that is wrong for the
data raises :class:`~shardwriter.errors.SettingsError` before any work, and a problem of
the data as a whole (int64 pixels, an unreadable .npz) raises
:class:`~shardwriter.errors.PackError`; only a problem of one item is a
:class:`~shardwriter.errors.BadInput`, which ``skip_bad`` may skip.
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from .. import format as fmt
from ..errors import BadInput, SettingsError
from ..preprocess import OffGridError, float_to_uint8

__all__ = ["BadInput", "Columns", "Inputs", "Loaded", "OutputSpec", "Sample", "Source", "check_fractions", "class_names",
           "decide_range", "input_as_uint8"]


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


def check_fractions(test_fraction: float, val_fraction: float) -> None:
    """Split fractions: each in [0, 1), and room left for a train split."""
    for flag, v in (("--test-fraction", test_fraction), ("--val-fraction", val_fraction)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v < 1:
            raise SettingsError(f"{flag} {v!r}: a fraction lies in [0, 1)")
    if test_fraction + val_fraction >= 1:
        raise SettingsError(f"--test-fraction {test_fraction} + --val-fraction {val_fraction} leave no train split; "
                            "their sum must be below 1")


def decide_range(found: str | None, given: str, what: str) -> str:
    """The input range: ``found`` (what the data says, :func:`~shardwriter.preprocess.input_range_of`) unless ``given``;
    a data that cannot tell, or that contradicts ``given``, is a SettingsError naming ``what`` and the flag to pass."""
    if given == "auto":
        if found is None:
            raise SettingsError(f"{what}: the float inputs fit both ai8x ranges (only -1 and 0); "
                                "pass --input-range unit ((p-128)/128) or --input-range 8bit (p-128)")
        return found
    if found is not None and found != given:
        why = "values outside [-1, 1)" if found == "8bit" else "values that are not whole numbers"
        raise SettingsError(f"--input-range {given}, but {what} holds {why}: it is in the {found} range; "
                            f"pass --input-range {found} (or auto)")
    return given


def class_names(classes: list[Any] | int | None, target: str, target_shape: tuple[int, ...]) -> list[Any] | None:
    """The ``classes`` option as a list (a count N: 0..N-1), None when not given; a regression target's names.

    A regression target takes no classes (SettingsError) and is named ``y`` (scalar) or ``y0..yK``.
    """
    if isinstance(classes, int) and not isinstance(classes, bool):
        if classes < 1:
            raise SettingsError(f"--classes {classes}: a dataset has at least one class")
        classes = list(range(classes))
    if target == "regression":
        if classes is not None:
            raise SettingsError("--classes applies to class and mask targets; this is a regression target")
        n = math.prod(target_shape)
        return [f"y{i}" for i in range(n)] if target_shape else ["y"]
    if classes is not None and not list(classes):
        raise SettingsError("--classes: give at least one class")
    return None if classes is None else list(classes)


@dataclass(frozen=True)
class Sample:
    """A preprocessed sample: uint8 input in the model's layout and its target."""

    x: np.ndarray
    y: Any
    name: str
    output: str = ""  # which OutputSpec it belongs to ("" for single-output sources)


@dataclass
class Columns:
    """Samples of one output, column-wise: what the writer encodes in one call."""

    x: np.ndarray  # (n, *input_shape) uint8
    y: np.ndarray  # class: (n,) int64 labels; mask: (n, *shape) uint8; regression: (n, *shape) float32
    names: list[str]


@dataclass
class Loaded:
    """A batch of items, loaded: per output the good samples in item order, and the bad items."""

    columns: dict[str, Columns]
    bad: list[tuple[int, str, str]] = field(default_factory=list)  # (position in the batch, name, reason)


@dataclass(frozen=True)
class Inputs:
    """What a source's fingerprint covers: a digest, that in words, and a short summary for messages."""

    digest: str
    covers: str
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class OutputSpec:
    """One dataset folder a source writes: its schema and descriptive metadata."""

    name: str
    input_shape: tuple[int, ...]
    target_kind: str
    classes: list[Any]
    variant: str = ""
    subdir: str = ""  # "" = the output folder itself
    target_shape: tuple[int, ...] | None = None  # masks / regression
    preprocessing: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def schema(self) -> fmt.Schema:
        shape = None if self.target_kind == "class" else tuple(self.target_shape or ())
        if self.target_kind != "class" and self.target_shape is None:
            raise SettingsError(f"output {self.name!r}: a {self.target_kind} target needs its shape (OutputSpec.target_shape)")
        try:
            return fmt.Schema(tuple(self.input_shape), fmt.Target(self.target_kind, shape), tuple(self.classes))
        except fmt.FormatError as exc:
            raise SettingsError(f"output {self.name!r}: {exc}") from None

    def check(self, s: Sample) -> None:
        """Raise :class:`BadInput` if ``s`` does not fit this output's schema."""
        y = s.y
        if self.target_kind == "class" and isinstance(y, np.ndarray) and y.ndim == 0:
            y = y.item()
        why = self.schema.problem(s.x, y if self.target_kind == "class" else np.asarray(y))
        if why:
            raise BadInput(s.name, why)


class Source(ABC):
    """A kind of input the writer can pack (``npz``, ``imagefolder``, ``dataset``, ...)."""

    kind: str = ""
    #: The fingerprint covers every sample's content, so a re-run reads every sample to
    #: compare (sources whose samples come from Python code rather than files).
    content_checked: bool = False

    @abstractmethod
    def outputs(self) -> list[OutputSpec]:
        """The dataset folders this source writes (usually one)."""

    @abstractmethod
    def plan(self) -> dict[str, list[Any]]:
        """Items per split, in source order (the writer shuffles them). Runs in the main process."""

    @abstractmethod
    def load(self, item: Any) -> list[Sample]:
        """Decode and preprocess one item; raise :class:`BadInput` for bad input. Runs in workers."""

    def sample_names(self, item: Any) -> list[str]:
        """Names of the samples ``item`` gives each output, in order; known before loading."""
        return [str(item)]

    def item_name(self, item: Any) -> str:
        """A name of ``item``, unique in its split (the write-time shuffle sorts by its hash)."""
        return self.sample_names(item)[0]

    def sample_labels(self, item: Any) -> list[int] | None:
        """Class labels of ``item``'s samples when known before loading (exact shard sizes with > 128 classes)."""
        return None

    def inputs(self, checksum: bool = False) -> Inputs:
        """What identifies the inputs (``checksum``: file contents, not just names, sizes and mtimes)."""
        blob = json.dumps(self.fingerprint_parts(), sort_keys=True, default=str)
        return Inputs(hashlib.sha256(blob.encode()).hexdigest(), "the source's fingerprint_parts()")

    def fingerprint_parts(self) -> dict[str, Any]:
        """Older interface: what identifies the input and options, JSON-able (prefer :meth:`inputs`)."""
        raise NotImplementedError(f"{type(self).__name__}: implement inputs() (or fingerprint_parts())")

    def options(self) -> dict[str, Any]:
        """The options that shape the data, JSON-able (recorded in the manifest; a change means a re-pack)."""
        return {}

    def warnings(self) -> list[str]:
        """What the user should know about the inputs (recorded in the manifest and printed)."""
        return []

    def fingerprint(self, checksum: bool = False) -> str:
        """sha256 over the kind, the format version, :meth:`options` and :meth:`inputs`."""
        blob = json.dumps({"kind": self.kind, "format": fmt.FORMAT_VERSION, "options": self.options(),
                           "inputs": self.inputs(checksum).digest}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def prepare_worker(self) -> None:
        """Called once in each worker process before it loads (open files, set thread counts)."""
        return None

    def load_checked(self, item: Any) -> list[Sample]:
        """:meth:`load`, then check each sample against its output's schema."""
        specs = {o.subdir: o for o in self.outputs()}
        samples = self.load(item)
        for s in samples:
            if s.output not in specs:
                raise BadInput(s.name, f"sample for output {s.output!r}, which the source does not declare")
            specs[s.output].check(s)
        return samples

    def load_batch(self, items: list[Any]) -> Loaded:
        """Load ``items`` into columns (checked); an item that fails is listed in ``bad``, whole."""
        specs = self.outputs()
        per: dict[str, list[Sample]] = {o.subdir: [] for o in specs}
        bad: list[tuple[int, str, str]] = []
        for pos, item in enumerate(items):
            try:
                samples = self.load_checked(item)
            except BadInput as exc:
                bad.append((pos, exc.name, exc.reason))
                continue
            for s in samples:
                per[s.output].append(s)
        return Loaded({o.subdir: _columns(o, per[o.subdir]) for o in specs}, bad)

    def batch_items(self) -> int:
        """How many items a worker loads at once (about 16 MiB of samples)."""
        per_item = sum(math.prod(o.input_shape) + (math.prod(o.target_shape or ()) * 4 if o.target_kind != "class" else 8)
                       for o in self.outputs())
        return max(1, min(4096, (16 << 20) // max(per_item, 1)))


def _columns(spec: OutputSpec, samples: list[Sample]) -> Columns:
    names = [s.name for s in samples]
    if not samples:
        x = np.zeros((0, *spec.input_shape), np.uint8)
        y = np.zeros((0,) if spec.target_kind == "class" else (0, *(spec.target_shape or ())),
                     np.int64 if spec.target_kind == "class" else fmt.TARGET_DTYPES[spec.target_kind])
        return Columns(x, y, names)
    x = np.stack([s.x for s in samples])
    if spec.target_kind == "class":
        y = np.fromiter((int(s.y) for s in samples), np.int64, len(samples))
    else:
        y = np.stack([np.asarray(s.y) for s in samples])
    return Columns(x, y, names)
