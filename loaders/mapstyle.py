"""ShardDataset: the map-style dataset train.py gets (random access through the index).

Owns positioned reads and the per-sample checks. At construction it reads the manifest
and the split's index files (:class:`~loaders.index.SplitIndex`: a few dozen bytes per
sample, every row checked), never the shards. ``dataset[i]`` is one ``os.preadv`` of
sample i's input (and target) bytes from its shard, then (format 2, by default) a check
of those bytes against the sample's hash in the index: bytes the writer did not write
raise :class:`~shardwriter.errors.IntegrityError` naming the dataset, shard and sample.

Shards are opened lazily in whichever process reads them (a regular file of the
manifest's size, the first member's header checked: a shard swapped with another is
refused at open), at most :data:`MAX_OPEN_SHARDS` at a time; file descriptors are never
pickled, so the dataset works under fork and spawn and DataLoader workers share no file
offsets. ``__getitems__`` (used by torch 2.x DataLoaders) reads a whole batch into one
uint8 array in shard order and normalizes it in one vectorized operation (a
:class:`~loaders.batch.Batch`; hand DataLoaders :func:`~loaders.batch.collate`).
"""

from __future__ import annotations

import operator
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import xxhash
from numpy.lib.stride_tricks import as_strided
from torch.utils.data import Dataset

from shardwriter import format as fmt
from shardwriter.errors import FormatError, SettingsError
from shardwriter.options import Options
from shardwriter.storage import Store, cache_for, open_store

from .augment import Augmentation, Augmenter, SampleEpochs, Spec
from .batch import Batch, collate
from .index import SplitIndex, integrity_error, warn_unhashed
from .shardmap import ShardMap
from .transforms import resolve_act_mode

__all__ = ["Batch", "MAX_OPEN_SHARDS", "ShardDataset", "collate"]

#: Shards a dataset keeps open at once per process (least recently used closed first).
MAX_OPEN_SHARDS = 64
#: Records up to this size (input + target bytes) are read by one vectorized gather per batch from a
#: :class:`~loaders.shardmap.ShardMap`; larger ones by one ``preadv`` each (the system call is then noise).
GATHER_MAX_BYTES = 64 << 10
_xxh3 = xxhash.xxh3_64_intdigest


class ShardDataset(Dataset):
    """Sample ``i`` of one split of a shard dataset, as ``(input, target)`` tensors.

    Args:
        location: dataset folder holding ``manifest.json``, or its URL.
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
        augment: on-the-fly augmentation of the uint8 pixels before normalization, image
            and mask together: a per-sample callable ``fn(image, mask, rng)`` given the
            unfolded ``H x W x C`` image, the built-ins of :mod:`loaders.augment`, an
            albumentations pipeline, a torchvision v2 transform, or a list of them (see
            :mod:`loaders.augment`). Its randomness is keyed by ``(seed, epoch, index)``:
            the ``k``-th read of a sample uses epoch ``k`` unless :meth:`set_epoch` fixes
            one. Samples in ``valid_indices`` are served as packed, never augmented.
        transform: optional callable applied to each input tensor *after* normalization
            (one float32 tensor per sample; e.g. a model-specific tweak). It sees neither
            the mask nor the unfolded image: use ``augment`` for augmentation.
        options: :class:`~shardwriter.options.Options` (storage, cache, per-sample
            checks); default: read from the ``AI8X_SHARDS_*`` environment now.

    Returns from ``dataset[i]``: input float32 (or uint8) tensor of the manifest's
    ``input_shape``; target int64 0-d tensor (classes), int64 HxW (masks) or float32
    (regression). Raises ``IndexError`` outside ``[-len, len)``,
    :class:`~shardwriter.errors.FormatError` (its subclass ``IntegrityError`` for a
    checksum mismatch) for damaged data, :class:`~shardwriter.errors.StorageError` when
    a file cannot be read.
    """

    def __init__(
        self,
        location: str | os.PathLike[str] | Store,
        split: str = "train",
        *,
        act_mode_8bit: Any = False,
        output: str = "float",
        truncate: bool = False,
        valid_fraction: float | None = None,
        use_val_split: bool = False,
        seed: int = 0,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        augment: Any = None,
        options: Options | None = None,
    ) -> None:
        if output not in ("float", "uint8"):
            raise SettingsError(f"output must be 'float' or 'uint8', not {output!r}")
        if valid_fraction is not None and not 0 <= valid_fraction < 1:
            raise SettingsError(f"valid_fraction must lie in [0, 1), not {valid_fraction!r}")
        self.store = open_store(location, options)
        self.options = self.store.opts
        self.location = location if not isinstance(location, Store) else location.location
        self.split = split
        self.act_mode_8bit = act_mode_8bit
        self.output = output
        self.transform = transform
        self.manifest = m = self.store.read_manifest()
        where = str(self.location)
        m.split(split, where)
        self.input_shape = m.input_shape
        self.target_kind: str = m.target.kind
        self.classes = list(m.classes)
        self.target_shape = m.target.served_shape
        parts = [split] + (["val"] if use_val_split and "val" in m.splits and split != "val" else [])
        self.index = ix = SplitIndex.load(self.store, m, parts)
        self.shards: list[str] = [s.file for s in ix.shards]
        self._starts = np.searchsorted(ix.shard, np.arange(len(ix.shards), dtype=np.int32)).astype(np.int64)
        self._x_len = m.layout.x_len
        self._y_len = m.layout.y_len
        self._gap = m.layout.y_start - m.layout.x_start - m.layout.x_len if self._y_len else 0
        self._verify = ix.hashed and self.options.verify_samples
        if not ix.hashed:
            warn_unhashed(where)
        self._length = 1 if truncate and len(ix) else len(ix)
        n_main = m.split(split).count
        if len(parts) > 1:
            self.valid_indices = list(range(n_main, len(ix)))
        elif valid_fraction is not None:
            perm = np.random.default_rng(seed).permutation(self._length)
            self.valid_indices = sorted(perm[: int(valid_fraction * self._length)].tolist())
        self.augment: Augmentation | None = None
        self._augmenter: Augmenter | None = None
        if augment is not None:
            self._augmenter = Augmenter(augment, Spec(tuple(self.input_shape), m.fold_ratio, self.target_kind), seed)
            self.augment = self._augmenter.augmentation
            self._epochs = SampleEpochs(len(ix))
            self._augment_rows: np.ndarray | None = None
            held = getattr(self, "valid_indices", None)
            if held:
                self._augment_rows = np.ones(len(ix), dtype=bool)
                self._augment_rows[np.asarray(held, dtype=np.int64)] = False
        self._fds: OrderedDict[int, int] = OrderedDict()
        self._pos = np.arange(len(ix), dtype=np.int64)  # position lookup: bounds-checks and resolves negative indices
        self._small = self._x_len + self._gap + self._y_len <= GATHER_MAX_BYTES
        self._map: ShardMap | None = None
        self._map_tried = False

    # -- pickling: file descriptors stay in the process that opened them
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fds"] = OrderedDict()
        for name in ("_gx", "_gy", "_wx", "_wy"):
            state.pop(name, None)
        state["_map"], state["_map_tried"] = None, False
        return state

    def close(self) -> None:
        """Close the open shards and mappings (they reopen on the next read)."""
        fds, self._fds = getattr(self, "_fds", {}), OrderedDict()
        for fd in fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        m = getattr(self, "_map", None)
        if m is not None:
            for name in ("_wx", "_wy"):
                self.__dict__.pop(name, None)
            self._map, self._map_tried = None, False
            m.close()

    def __del__(self) -> None:
        self.close()

    def _open_checked(self, s: int) -> tuple[int, bool]:
        """A checked descriptor of shard ``s`` and whether to keep it open (a remote shard's cached copy)."""
        fd = self.store.open_random(self.index.shards[s])
        try:
            self._check_first_header(fd, s)
        except BaseException:
            os.close(fd)
            raise
        return fd, self.store.kind != "local"

    def _fd(self, s: int) -> int:
        fds = self._fds
        fd = fds.get(s)
        if fd is not None:
            fds.move_to_end(s)
            return fd
        fd = self._open_checked(s)[0]
        fds[s] = fd
        while len(fds) > MAX_OPEN_SHARDS:
            os.close(fds.popitem(last=False)[1])
        return fd

    def _check_first_header(self, fd: int, s: int) -> None:
        """The shard's first member must be the split's sample the index says (catches swapped shards)."""
        shard, row = self.index.shards[s], int(self._starts[s])
        pos = int(self.index.offset[row]) - fmt.BLOCK
        block = os.pread(fd, fmt.BLOCK, pos)
        fmt.check_member_header(block, self.store.describe(shard.file), pos, fmt.member_name(fmt.sample_key(shard.first)),
                                int(self.index.size[row]))

    def __len__(self) -> int:
        return self._length

    def _check(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self._length
        if not 0 <= i < self._length:
            raise IndexError(f"index {i} out of range for {self._length} samples")
        return i

    def _indices(self, indices: Sequence[int]) -> np.ndarray:
        """``indices`` as a checked int64 array of positions in ``[0, len)`` (negative ones counted from the end)."""
        idx = np.asarray(indices)
        if idx.dtype.kind not in "iu" or idx.ndim != 1:
            idx = np.fromiter((operator.index(i) for i in indices), dtype=np.int64, count=len(indices))
        n = self._length
        if n != len(self.index):  # truncated: the index arrays would accept more than the dataset serves
            bad = idx[(idx < -n) | (idx >= n)]
            if len(bad):
                raise IndexError(f"index {int(bad[0])} out of range for {n} samples")
        # Otherwise the first lookup checks the bounds (IndexError) and counts negative indices from the end;
        # the positions themselves are needed for messages, labels and hashes, so make them non-negative.
        idx = self._pos[idx]
        return idx

    def _sample_error(self, i: int, what: str) -> FormatError:
        shard, _ = self.index.position(i)
        name = shard.file
        if self.store.kind != "local":  # read from the local cache: say which copy is damaged
            name += f" (cached copy {cache_for(self.options).path_for(shard.sha256)}; delete it to fetch the shard again)"
        return integrity_error(str(self.location), name, f"{self.index.describe(i)} (dataset index {i})", what)

    def _what(self) -> str:
        return "its input bytes or label" if self.target_kind == "class" else "its input bytes"

    # -- the small-record path: one vectorized gather per batch from a ShardMap

    def _shardmap(self) -> ShardMap | None:
        if self._map is None and not self._map_tried:
            self._map_tried = True
            m = ShardMap.create([s.bytes for s in self.index.shards]) if self._small else None
            if m is not None:
                ix = self.index
                self._gx = m.slots[ix.shard] + ix.x_off
                self._wx = as_strided(m.region, (len(m.region) - self._x_len + 1, self._x_len), (1, 1), writeable=False)
                if self._y_len:
                    self._gy = m.slots[ix.shard] + ix.y_off
                    self._wy = as_strided(m.region, (len(m.region) - self._y_len + 1, self._y_len), (1, 1), writeable=False)
                self._map = m
        return self._map

    def _gather(self, idx: np.ndarray, m: ShardMap) -> tuple[np.ndarray, np.ndarray | None]:
        ix = self.index
        m.ensure(ix.shard[idx], self._open_checked)
        x = self._wx[self._gx[idx]]
        y = self._wy[self._gy[idx]] if self._y_len else None
        if self._verify:
            got, want = np.fromiter(map(_xxh3, x), np.uint64, len(idx)), ix.x_plain[idx]
            if got.tobytes() != want.tobytes():
                raise self._sample_error(int(idx[np.flatnonzero(got != want)[0]]), self._what())
            if y is not None:
                got, want = np.fromiter(map(_xxh3, y), np.uint64, len(idx)), ix.y_hash[idx]
                if got.tobytes() != want.tobytes():
                    raise self._sample_error(int(idx[np.flatnonzero(got != want)[0]]), "its target bytes")
        x = x.reshape(len(idx), *self.input_shape)
        if y is not None:
            y = y.view(np.uint8 if self.target_kind == "mask" else np.dtype("<f4")).reshape(len(idx), *self.target_shape)
        return x, y

    # -- the large-record path: one preadv per sample, straight into the batch arrays

    def _pread(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        ix = self.index
        n = len(idx)
        x = np.empty((n, *self.input_shape), np.uint8)
        y = None
        if self._y_len:
            y = np.empty((n, *self.target_shape), np.uint8 if self.target_kind == "mask" else np.dtype("<f4"))
        gap = bytearray(self._gap)
        want = self._x_len + (self._gap + self._y_len if y is not None else 0)
        order = np.lexsort((ix.x_off[idx], ix.shard[idx]))
        for k in order.tolist():
            i = int(idx[k])
            s = int(ix.shard[i])
            xk = x[k]
            bufs = [memoryview(xk).cast("B")]
            if y is not None:
                bufs += [gap, memoryview(y[k]).cast("B")]
            start = int(ix.x_off[i])
            got = os.preadv(self._fd(s), bufs, start)
            if got != want:
                raise FormatError(f"{self.store.describe(self.shards[s])}: sample {i} cut short at byte {start + got} (truncated shard)")
            if self._verify:
                if (_xxh3(xk) ^ fmt.label_mix(int(ix.label[i]))) != int(ix.x_hash[i]):
                    raise self._sample_error(i, self._what())
                if y is not None and _xxh3(y[k]) != int(ix.y_hash[i]):
                    raise self._sample_error(i, "its target bytes")
        return x, y

    def _read(self, indices: Sequence[int]) -> Batch:
        idx = self._indices(indices)
        m = self._shardmap() if self._small else None
        x, y = self._gather(idx, m) if m is not None else self._pread(idx)
        act = resolve_act_mode(self.act_mode_8bit) if self.output == "float" else None
        if self.target_kind == "mask":
            return Batch(torch.from_numpy(x), torch.from_numpy(y), act, widen=True)
        if self.target_kind == "class":
            return Batch(torch.from_numpy(x), torch.from_numpy(self.index.label[idx]), act, widen=False)
        assert y is not None
        return Batch(torch.from_numpy(x), torch.from_numpy(y.astype(np.float32, copy=False)), act, widen=False)

    def set_epoch(self, epoch: int | None) -> None:
        """Fix the epoch the augmentation draws for (every read of every sample), also in live workers.

        Without it (train.py never calls it), the ``k``-th read of a sample augments with
        epoch ``k``. ``None`` returns to that. Without ``augment`` there is nothing to draw.
        """
        if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0):
            raise SettingsError(f"epoch must be a non-negative integer or None, not {epoch!r}")
        if self._augmenter is not None:
            self._epochs.set_epoch(epoch)

    def _augmented(self, batch: Batch, indices: Sequence[int]) -> Batch:
        """``batch`` (read and checked, uint8) with its training samples augmented; not yet normalized."""
        assert self._augmenter is not None
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        idx = np.where(idx < 0, idx + self._length, idx)  # already range-checked by _read
        raw, targets = batch.raw()
        x, y = raw.numpy(), targets.numpy()
        masks = y if self.target_kind == "mask" else None
        rows = self._augment_rows[idx] if self._augment_rows is not None else None
        if rows is None or rows.all():
            x, masks = self._augmenter(x, masks, self._epochs.take(idx), idx)
        elif rows.any():
            sub_x, sub_m = self._augmenter(x[rows], masks[rows] if masks is not None else None, self._epochs.take(idx[rows]), idx[rows])
            x[rows] = sub_x
            if masks is not None:
                masks[rows] = sub_m
        return batch.with_raw(torch.from_numpy(x), torch.from_numpy(masks) if masks is not None else targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self._read([i])
        if self._augmenter is not None:
            batch = self._augmented(batch, [i])
        xs, ys = batch.tensors()
        x = xs[0]
        if self.transform is not None:
            x = self.transform(x)
        return x, ys[0]

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """Read a batch in one sorted pass; returns a :class:`Batch` (see :func:`collate`)."""
        batch = self._read(indices)
        if self._augmenter is not None:
            batch = self._augmented(batch, indices)
        if self.transform is not None:
            xs, ys = batch.tensors()
            return Batch.finished(torch.stack([self.transform(x) for x in xs]), ys)
        return batch

    def source_name(self, i: int) -> str | None:
        """The input name the writer recorded for sample ``i`` (a file, ``file#crop``, ...)."""
        i = self._check(i)
        s = int(self.index.shard[i])
        payload = os.pread(self._fd(s), int(self.index.size[i]), int(self.index.offset[i]))
        return fmt.decode_record(payload, f"{self.shards[s]} sample {i}").source
