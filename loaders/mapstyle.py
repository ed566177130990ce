"""ShardDataset: the map-style dataset train.py gets (random access through the index).

Owns index loading and positioned reads. At construction it reads the manifest and the
split's index files (a few dozen bytes per sample), never the shards. ``dataset[i]`` is
one ``os.preadv`` of sample i's input (and target) bytes from its shard; shards are
opened lazily in whichever process reads them and file descriptors are never pickled, so
the dataset works under fork and spawn and DataLoader workers share no file offsets.
``__getitems__`` (used by torch 2.x DataLoaders) reads a whole batch into one uint8
array in shard order and normalizes it in one vectorized operation (a
:class:`~loaders.batch.Batch`; hand DataLoaders :func:`~loaders.batch.collate`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from shardwriter import format as fmt

from . import storage
from .batch import Batch, collate
from .transforms import resolve_act_mode

__all__ = ["Batch", "ShardDataset", "collate"]


class ShardDataset(Dataset):
    """Sample ``i`` of one split of a shard dataset, as ``(input, target)`` tensors.

    Args:
        location: dataset folder holding ``manifest.json``.
        split: ``"train"``, ``"test"`` or ``"val"``.
        act_mode_8bit: ``False`` -> inputs ``(p - 128) / 128``; ``True`` -> ``p - 128``.
            May be an object with an ``act_mode_8bit`` attribute (train.py's ``args``),
            read on every call, like the reference ``ai8x.normalize``.
        output: ``"float"`` (normalized float32) or ``"uint8"`` (raw pixels; normalize
            later, e.g. on the GPU, with :func:`loaders.transforms.normalize`).
        truncate: serve a dataset of length 1 holding item 0 (``--truncate-testset``).
        valid_fraction: set ``valid_indices`` to a deterministic (``seed``) random
            ``floor(fraction * len)`` subset; train.py then validates on those.
        use_val_split: append the writer's ``val`` split after this split and set
            ``valid_indices`` to its positions.
        transform: optional callable applied to each input tensor (augmentation).

    Returns from ``dataset[i]``: input float32 (or uint8) tensor of the manifest's
    ``input_shape``; target int64 0-d tensor (classes), int64 HxW (masks) or float32
    (regression). Raises ``IndexError`` outside ``[-len, len)``.
    """

    def __init__(
        self,
        location: str | os.PathLike[str],
        split: str = "train",
        *,
        act_mode_8bit: Any = False,
        output: str = "float",
        truncate: bool = False,
        valid_fraction: float | None = None,
        use_val_split: bool = False,
        seed: int = 0,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if output not in ("float", "uint8"):
            raise ValueError(f"output must be 'float' or 'uint8', not {output!r}")
        self.location = location
        self.split = split
        self.act_mode_8bit = act_mode_8bit
        self.output = output
        self.transform = transform
        self.manifest = m = storage.read_manifest(location)
        if split not in m["splits"]:
            raise KeyError(f"{location}: no split {split!r}; it has {sorted(m['splits'])}")
        self.input_shape = tuple(m["input_shape"])
        self.target_kind: str = m["target"]["kind"]
        self.classes = m["classes"]
        parts = [split] + (["val"] if use_val_split and "val" in m["splits"] and split != "val" else [])
        self.shards: list[str] = []
        rows, owner = [], []
        for part in parts:
            for shard in m["splits"][part]["shards"]:
                r = self._load_index(shard)
                owner.append(np.full(len(r), len(self.shards), dtype=np.int32))
                rows.append(r)
                self.shards.append(shard["file"])
        index = np.concatenate(rows) if rows else np.zeros(0, fmt.INDEX_DTYPE)
        self._shard = np.concatenate(owner) if owner else np.zeros(0, np.int32)
        self._x_off = index["x_off"].astype(np.int64)
        self._y_off = index["y_off"].astype(np.int64)
        self._label = index["label"].astype(np.int64)
        self._offset = index["offset"].astype(np.int64)  # whole records, for source_name()
        self._size = index["size"].astype(np.int64)
        self._x_len = int(np.prod(self.input_shape))
        if len(index) and (index["x_len"] != self._x_len).any():
            raise fmt.FormatError(f"{location}: index rows disagree with input shape {self.input_shape}")
        tshape = m["target"].get("shape")
        self.target_shape = tuple(tshape) if tshape is not None else ()
        item = {"mask": 1, "regression": 4}.get(self.target_kind, 0)
        self._y_len = int(np.prod(self.target_shape)) * item if item else 0
        if self._y_len and len(index) and (index["y_len"] != self._y_len).any():
            raise fmt.FormatError(f"{location}: index rows disagree with target shape {self.target_shape}")
        # Bytes of record metadata between the input and target bytes (fixed per dataset).
        self._gap = int(self._y_off[0] - self._x_off[0] - self._x_len) if self._y_len and len(index) else 0
        if self._y_len and len(index) and (self._y_off - self._x_off - self._x_len != self._gap).any():
            raise fmt.FormatError(f"{location}: records of split {split} do not share one layout")
        self._length = 1 if truncate and len(index) else len(index)
        n_main = int(m["splits"][split]["count"])
        if len(parts) > 1:
            self.valid_indices = list(range(n_main, len(index)))
        elif valid_fraction is not None:
            perm = np.random.default_rng(seed).permutation(self._length)
            self.valid_indices = sorted(perm[: int(valid_fraction * self._length)].tolist())
        self._fds: dict[int, int] = {}

    def _load_index(self, shard: dict[str, Any]) -> np.ndarray:
        name = shard["index"]["file"]
        buf = storage.read_bytes(self.location, name)
        rows = fmt.decode_index(buf, name)
        if len(rows) != shard["count"]:
            raise fmt.FormatError(f"{name}: {len(rows)} rows but the manifest says {shard['count']} samples; run ai8x-shards reindex")
        return rows

    # -- pickling: file descriptors stay in the process that opened them
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fds"] = {}
        return state

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass

    def _fd(self, shard: int) -> int:
        fd = self._fds.get(shard)
        if fd is None:
            path = storage.local_path(self.location, self.shards[shard])
            fd = self._fds[shard] = os.open(path, os.O_RDONLY)
        return fd

    def __len__(self) -> int:
        return self._length

    def _check(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self._length
        if not 0 <= i < self._length:
            raise IndexError(f"index {i} out of range for {self._length} samples")
        return i

    def _read_into(self, i: int, x: np.ndarray, y: np.ndarray | None, scratch: bytearray) -> None:
        bufs = [memoryview(x).cast("B")]
        want = self._x_len
        if y is not None:
            bufs += [scratch, memoryview(y).cast("B")]
            want += self._gap + self._y_len
        got = os.preadv(self._fd(int(self._shard[i])), bufs, int(self._x_off[i]))
        if got != want:
            raise fmt.FormatError(f"{self.shards[int(self._shard[i])]}: sample {i} cut short at byte {int(self._x_off[i]) + got} (truncated shard)")

    def _targets(self, idx: np.ndarray, y: np.ndarray | None) -> torch.Tensor:
        if self.target_kind == "class":
            return torch.from_numpy(self._label[idx])
        assert y is not None
        return torch.from_numpy(y.astype(np.float32, copy=False))

    def _read(self, indices: Sequence[int]) -> Batch:
        idx = np.fromiter((self._check(i) for i in indices), dtype=np.int64, count=len(indices))
        n = len(idx)
        x = np.empty((n, *self.input_shape), dtype=np.uint8)
        y = None
        if self._y_len:
            ydt = np.uint8 if self.target_kind == "mask" else np.dtype("<f4")
            y = np.empty((n, *self.target_shape), dtype=ydt)
        scratch = bytearray(self._gap)
        order = np.lexsort((self._x_off[idx], self._shard[idx]))
        for k in order.tolist():
            self._read_into(int(idx[k]), x[k], y[k] if y is not None else None, scratch)
        act = resolve_act_mode(self.act_mode_8bit) if self.output == "float" else None
        if self.target_kind == "mask":
            return Batch(torch.from_numpy(x), torch.from_numpy(y), act, widen=True)
        return Batch(torch.from_numpy(x), self._targets(idx, y), act, widen=False)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = self._read([i]).tensors()
        x = xs[0]
        if self.transform is not None:
            x = self.transform(x)
        return x, ys[0]

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """Read a batch in one sorted pass; returns a :class:`Batch` (see :func:`collate`)."""
        batch = self._read(indices)
        if self.transform is not None:
            xs, ys = batch.tensors()
            return Batch.finished(torch.stack([self.transform(x) for x in xs]), ys)
        return batch

    def source_name(self, i: int) -> str | None:
        """The input name the writer recorded for sample ``i`` (a file, ``file#crop``, ...)."""
        i = self._check(i)
        shard = int(self._shard[i])
        payload = os.pread(self._fd(shard), int(self._size[i]), int(self._offset[i]))
        return fmt.decode_record(payload, f"{self.shards[shard]} sample {i}").source
