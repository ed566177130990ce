"""Batch: a batch of uint8 samples on its way to the model, normalized once, lazily.

Both datasets build their batches here. A :class:`Batch` holds the uint8 inputs and the
raw targets; :meth:`Batch.tensors` normalizes (bit-exact, one vectorized operation) and
widens masks to int64. Inside a DataLoader worker, :func:`collate` (and the streaming
dataset) hand the DataLoader an :class:`_InTransit` instead, which pickles as the uint8
parts, so a quarter of the float32 bytes (an eighth of int64 masks) crosses through
shared memory, and becomes the final tensors as it is unpickled in the main process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate, get_worker_info

from . import pool
from .transforms import normalize

__all__ = ["Batch", "collate", "for_transfer"]


def _finish(raw: torch.Tensor, targets: torch.Tensor, act_mode_8bit: bool | None, widen: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 inputs and raw targets -> what the model gets (``act_mode_8bit=None``: keep uint8)."""
    inputs = raw if act_mode_8bit is None else normalize(raw, act_mode_8bit)
    if widen:  # uint8 masks -> int64, in numpy, into a recycled buffer when large (see transforms.normalize_np)
        wide = pool.empty(tuple(targets.shape), np.int64)
        np.copyto(wide, targets.numpy())
        targets = torch.from_numpy(wide)
    return inputs, targets


class Batch(Sequence):
    """What ``__getitems__`` returns: a batch read into one uint8 array, finished lazily.

    It is a sequence of ``(x, y)`` pairs, so stock ``default_collate`` works (stacking
    them again). :func:`collate` returns ``(inputs, targets)`` directly instead; inside a
    DataLoader worker it sends the *uint8* batch to the main process (a quarter of the
    float32 bytes through shared memory, masks an eighth of int64) and the batch is
    normalized as it arrives there, bit-exact all the same.
    """

    def __init__(self, raw: torch.Tensor, targets: torch.Tensor, act_mode_8bit: bool | None, widen: bool) -> None:
        self._wire = (raw, targets, act_mode_8bit, widen)
        self._done: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def finished(cls, inputs: torch.Tensor, targets: torch.Tensor) -> Batch:
        """A batch whose tensors are already final (e.g. after a per-sample transform)."""
        batch = cls(inputs, targets, None, False)
        batch._done = (inputs, targets)
        batch._final = True
        return batch

    def raw(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The parts before they are finished: the uint8 inputs and the raw targets (uint8 masks)."""
        if getattr(self, "_final", False):
            raise ValueError("this batch was built finished: it has no raw parts")
        return self._wire[0], self._wire[1]

    def with_raw(self, raw: torch.Tensor, targets: torch.Tensor) -> Batch:
        """The same batch with other uint8 inputs and raw targets (e.g. augmented), finished the same way."""
        return Batch(raw, targets, self._wire[2], self._wire[3])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, targets)``, stacked and final."""
        if self._done is None:
            self._done = _finish(*self._wire)
        return self._done

    @property
    def inputs(self) -> torch.Tensor:
        return self.tensors()[0]

    @property
    def targets(self) -> torch.Tensor:
        return self.tensors()[1]

    def __len__(self) -> int:
        return len(self._wire[0])

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(len(self)))]
        inputs, targets = self.tensors()
        return inputs[k], targets[k]


class _InTransit:
    """A :class:`Batch` leaving a worker: pickles as its uint8 parts, unpickles as final tensors."""

    def __init__(self, batch: Batch) -> None:
        self.wire = batch._wire if batch._done is None else (*batch._done, None, False)

    def __reduce__(self) -> tuple[Any, ...]:
        return _finish, self.wire


def for_transfer(batch: Batch) -> Any:
    """``batch`` as a DataLoader should carry it: uint8 from a worker, final tensors otherwise."""
    if get_worker_info() is not None and batch._done is None:
        return _InTransit(batch)
    return batch.tensors()


def collate(batch: Any) -> Any:
    """A ``collate_fn`` for :class:`ShardDataset` (falls back to ``default_collate``).

    Returns ``(inputs, targets)`` without a second copy; in a DataLoader worker, the
    batch crosses to the main process as uint8 and is normalized there on arrival.
    """
    if isinstance(batch, Batch):
        return for_transfer(batch)
    return default_collate(batch)
