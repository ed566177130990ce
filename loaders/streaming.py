"""The streaming reader: an ``IterableDataset`` over the shards of one split.

This module owns the *epoch plan* (which rank and which DataLoader worker reads which
sample, in which order), the window shuffle, reading the shards forward with their
checks, batching with one vectorized normalize per batch, and the resumable state.
It does not own the bytes (:mod:`shardwriter.format` parses headers, records and
indexes), opening files (:mod:`loaders.storage`) or the normalize arithmetic
(:mod:`loaders.transforms`).

The epoch plan, in full (``N`` samples, ``R`` ranks, epoch ``e``):

1. **Shard order.** With ``shuffle=True`` the shards are permuted by ``(seed, e)``
   (``shuffle=False``: manifest order, and no window shuffle in step 3); the *global
   sequence* is every sample of every shard, shard after shard in that order, each
   shard in file order.
2. **Ranks.** Each rank takes a contiguous range of ``P`` positions of the global
   sequence: rank ``r`` gets positions ``r*P .. r*P + P - 1``. With ``drop_last=False``
   ``P = ceil(N / R)`` and positions past the end wrap around to the start, so up to
   ``R - 1`` samples are seen twice that epoch (like ``DistributedSampler``); with
   ``drop_last=True`` ``P = floor(N / R)`` and the last ``N mod R`` positions are left
   out that epoch. Every rank yields exactly ``P`` samples either way.
3. **Window shuffle.** With ``shuffle=True`` a rank's ``P`` samples are reordered by a
   window shuffle seeded by ``(seed, e, r)``: sample ``j`` gets the key
   ``j + u * shuffle_buffer`` (``u`` uniform in [0, 1)) and the rank yields samples
   in key order. No sample moves more than ``shuffle_buffer`` places, and a reader
   holds at most ``shuffle_buffer`` raw payloads (bytes, never floats) at a time.
   This is the *rank sequence*: a function of ``(seed, e, r, R)`` and the shard counts
   only, never of the number of workers.
4. **Workers.** The rank sequence is cut into chunks of ``batch_size`` samples (or
   ``loader_batch_size``, or 1) and DataLoader worker ``w`` of ``W`` produces chunks
   ``w, w + W, w + 2W, ...``. A stock ``DataLoader`` (``in_order=True``, the default)
   takes one item from each worker in turn, so batches arrive in rank-sequence order
   whatever ``num_workers`` is. Each worker reads only the samples of its own chunks,
   forward through each shard, seeking over the rest with the shard's index. After
   :meth:`StreamingShardDataset.load_state_dict` the chunks are cut from the resume
   point instead of the start of the rank sequence.

Each worker computes its plan with numpy when an iteration starts (a few tens of bytes
per sample of its rank, briefly); the samples themselves are never all in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.distributed as dist
from braceexpand import braceexpand
from torch.utils.data import IterableDataset, get_worker_info

from shardwriter import format as fmt

from . import storage
from .batch import Batch, for_transfer
from .transforms import normalize, normalize_np, resolve_act_mode

__all__ = ["StreamingShardDataset", "normalize_batch"]

OUTPUTS = ("float", "uint8")
_U8, _F32 = np.dtype(np.uint8), np.dtype("<f4")
_Where = tuple[str, str, int]  # (shard, member name, header byte): formatted only when needed


def _where(at: _Where) -> str:
    return f"{at[0]} member {at[1]!r} at byte {at[2]}"
_SHARD_ORDER, _WINDOW = 1, 2  # domain tags that keep the two random streams apart


@dataclass(frozen=True)
class _Shard:
    """One shard as the plan sees it; picklable, no open files."""

    name: str  # what errors call it: the shard's path
    count: int
    location: str | None  # dataset folder (manifest mode) or None (explicit paths)
    file: str  # file name inside ``location``, or the shard's path
    index: str  # index file name inside ``location``, or the index's path
    rows: np.ndarray | None = None  # rows found by a scan when there is no index file


def normalize_batch(
    batch_inputs: torch.Tensor,
    act_mode_8bit: Any = False,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Normalize a uint8 batch (from ``output="uint8"``) on ``device``, bit-exact with ai8x.

    Moves ``batch_inputs`` to ``device`` first (when given), so only uint8 bytes cross
    to the accelerator, then returns float32 ``p - 128`` (8-bit mode) or
    ``(p - 128) / 128``. ``act_mode_8bit`` is a bool or an object with an
    ``act_mode_8bit`` attribute, read now.
    """
    if device is not None:
        batch_inputs = batch_inputs.to(device, non_blocking=True)
    return normalize(batch_inputs, resolve_act_mode(act_mode_8bit))


class StreamingShardDataset(IterableDataset):
    r"""Stream one split of an ai8x-shards dataset, sharded over ranks and workers.

    Yields ``(x, y)``: ``x`` is a float32 tensor of the dataset's input shape,
    normalized like ``ai8x.normalize`` (``(p - 128) / 128``, or ``p - 128`` when
    ``act_mode_8bit``), or the raw uint8 tensor with ``output="uint8"`` (normalize it
    on the device with :func:`normalize_batch`); ``y`` is an int64 scalar (class),
    an int64 ``H x W`` tensor (mask) or a float32 tensor (regression) — the same as
    the map-style :class:`~loaders.ShardDataset`. With ``batch_size`` set it yields
    stacked batches ``(x[B, ...], y[B, ...])`` normalized in one vectorized step; use
    it with ``DataLoader(dataset, batch_size=None)``.

    The epoch plan (shard order, rank ranges, window shuffle, worker chunks) is
    described in the module docstring. Call :meth:`set_epoch` before every epoch, as
    with ``DistributedSampler``: the order depends only on ``(seed, epoch)`` and the
    rank, so an epoch that is not set repeats the previous epoch's order.

    Remainder policy: every rank yields exactly ``len(dataset)`` items per epoch.
    ``drop_last=False`` (default): each rank gets ``ceil(N / world_size)`` samples, the
    shortfall filled by repeating the first samples of the epoch's global sequence
    (at most ``world_size - 1`` repeats per epoch), and the last batch of a rank may
    be short. ``drop_last=True``: each rank gets ``floor(N / world_size)`` samples (at
    most ``world_size - 1`` samples are left out of that epoch; which ones changes
    with the shard order) and a short last batch is dropped.

    Resume contract: ``dataset.state_dict(consumed)`` records the epoch and the number
    of samples this rank has delivered in it, where ``consumed`` is the number of
    samples your loop received since the pass began (count ``len(y)`` per batch).
    ``dataset.load_state_dict(state)`` on a new dataset (same data, ``seed``,
    ``shuffle``, ``shuffle_buffer``, ``drop_last`` and world size) makes the next pass
    over that epoch yield exactly the rank's remaining samples, in the order the
    uninterrupted epoch would have delivered them, with any ``num_workers``. This
    holds when items reach your loop in rank-sequence order: with ``num_workers=0``;
    with dataset batching (``batch_size=B``, ``DataLoader(batch_size=None)``); with
    per-sample items and ``DataLoader(batch_size=None)``; or with
    ``DataLoader(batch_size=B)`` when ``loader_batch_size=B`` is passed here. It needs
    the DataLoader's default ``in_order=True``. :meth:`set_epoch` with another epoch
    forgets the resume point; ``persistent_workers=True`` is not supported (workers
    would keep the epoch and resume point they started with).

    Args:
        location: dataset folder holding ``manifest.json`` (read with
            :func:`loaders.storage.read_manifest`). Leave ``None`` and give ``shards``
            to read tar files without a manifest.
        split: which split of the manifest to read (``train``, ``test``, ``val``).
            Ignored with ``shards``.
        shuffle: permute shards per epoch and window-shuffle each rank's samples.
            ``False`` reads every shard in file order.
        seed: non-negative integer; with the epoch and the rank it fixes every order.
        shuffle_buffer: window of the per-rank shuffle, in samples; also the most raw
            payloads a reader holds at once. ``0`` or ``1``: no window shuffle.
        act_mode_8bit: bool, or an object with an ``act_mode_8bit`` attribute (such as
            train.py's ``args``) read each time an iteration starts.
        output: ``"float"`` (normalized float32) or ``"uint8"`` (raw inputs).
        batch_size: yield stacked batches of this many samples instead of samples.
        drop_last: remainder policy (above): truncate instead of padding across ranks,
            and drop a short final batch.
        rank, world_size: this process's rank and the number of ranks. When not given,
            ``torch.distributed`` is used if initialized, else the ``RANK`` and
            ``WORLD_SIZE`` environment variables, else a single rank. Resolved in the
            main process when ``len()`` is called or the DataLoader starts its workers.
        shards: instead of ``location``: a list of local tar paths, or one string that
            brace-expands to them (``"data/train-{000000..000009}.tar"``). A shard's
            sample count comes from the ``.idx`` file beside it when present; otherwise
            the constructor scans the shard once (reading all of it) and keeps the
            offsets it found.
        loader_batch_size: with per-sample items and ``DataLoader(batch_size=B,
            num_workers>1)``, pass ``B`` so that each worker produces whole DataLoader
            batches in rank-sequence order (see the resume contract).

    Raises:
        shardwriter.format.FormatError: while iterating, on a corrupt or truncated
            shard (naming the shard and the byte offset), or a shard whose samples do
            not match its index or the manifest's count.
        loaders.storage.StorageError: a manifest, shard or index cannot be read.

    Example::

        ds = StreamingShardDataset("data/mnist", shuffle=True, batch_size=256)
        loader = DataLoader(ds, batch_size=None, num_workers=2)
        for epoch in range(start_epoch, epochs):
            ds.set_epoch(epoch)
            seen = 0
            for x, y in loader:
                ...
                seen += len(y)
                checkpoint["data"] = ds.state_dict(seen)
    """

    def __init__(
        self,
        location: str | os.PathLike[str] | None = None,
        split: str = "train",
        *,
        shuffle: bool = True,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        act_mode_8bit: Any = False,
        output: str = "float",
        batch_size: int | None = None,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        shards: str | list[str | os.PathLike[str]] | None = None,
        loader_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        if (location is None) == (shards is None):
            raise ValueError("give either a dataset folder (location) or shards, not both")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, not {output!r}")
        for what, value in (("batch_size", batch_size), ("loader_batch_size", loader_batch_size)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{what} must be a positive integer or None, not {value!r}")
        if batch_size is not None and loader_batch_size is not None:
            raise ValueError("batch_size (the dataset batches) and loader_batch_size (the DataLoader batches) exclude each other")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, not {shuffle_buffer}")
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither")
        if world_size is not None and rank is not None and not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")

        self.split = split
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.shuffle_buffer = int(shuffle_buffer)
        self.act_mode_8bit = act_mode_8bit
        self.output = output
        self.batch_size = batch_size
        self.loader_batch_size = loader_batch_size
        self.drop_last = bool(drop_last)
        self._rank, self._world = rank, world_size
        self._epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, samples already delivered)

        self.manifest: dict[str, Any] | None = None
        self.input_shape: tuple[int, ...] | None = None
        self.target_kind: str | None = None
        self._target_shape: tuple[int, ...] | None = None  # known from the manifest or the first record
        if location is not None:
            self._shards = self._from_manifest(location, split)
        else:
            assert shards is not None
            self._shards = self._from_paths(shards)
        self._counts = np.array([s.count for s in self._shards], dtype=np.int64)

    # ------------------------------------------------------------------ construction

    def _from_manifest(self, location: str | os.PathLike[str], split: str) -> list[_Shard]:
        m = storage.read_manifest(location)
        if split not in m["splits"]:
            raise ValueError(f"{location}: no split {split!r}; the manifest has {sorted(m['splits'])}")
        self.manifest = m
        self.input_shape = tuple(m["input_shape"])
        self.target_kind = m["target"]["kind"]
        tshape = m["target"].get("shape")
        if self.target_kind == "class" or tshape is not None:
            self._target_shape = tuple(tshape or ())
        loc = os.fspath(location)
        return [
            _Shard(storage.describe(loc, s["file"]), int(s["count"]), loc, s["file"], s["index"]["file"])
            for s in m["splits"][split]["shards"]
        ]

    @staticmethod
    def _from_paths(shards: str | list[str | os.PathLike[str]]) -> list[_Shard]:
        patterns = [shards] if isinstance(shards, str) else [os.fspath(p) for p in shards]
        paths = [p for pattern in patterns for p in braceexpand(pattern)]
        if not paths:
            raise ValueError("shards names no files")
        out = []
        for p in paths:
            idx = p[: -len(".tar")] + ".idx" if p.endswith(".tar") else p + ".idx"
            if os.path.exists(idx):
                try:
                    buf = Path(idx).read_bytes()
                except OSError as exc:
                    raise storage.StorageError(f"{idx}: cannot read ({exc.strerror or exc})") from None
                out.append(_Shard(p, len(fmt.decode_index(buf, idx)), None, p, idx))
            else:
                rows = _scan(p)
                out.append(_Shard(p, len(rows), None, p, idx, rows))
        return out

    # ------------------------------------------------------------------ epoch and ranks

    @property
    def num_samples(self) -> int:
        """Samples in the split (all ranks together, before the remainder policy)."""
        return int(self._counts.sum())

    @property
    def epoch(self) -> int:
        """The epoch the next iteration plays (see :meth:`set_epoch`)."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch the next iteration plays; call it before every epoch.

        A resume point loaded by :meth:`load_state_dict` is kept only if ``epoch`` is
        the epoch it was saved in.
        """
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, not {epoch!r}")
        if self._resume is not None and self._resume[0] != epoch:
            self._resume = None
        self._epoch = epoch

    def rank_and_world_size(self) -> tuple[int, int]:
        """``(rank, world_size)``: explicit arguments, else torch.distributed, else env, else (0, 1)."""
        if self._rank is not None and self._world is not None:
            return self._rank, self._world
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            if not 0 <= rank < world:
                raise ValueError(f"environment RANK={rank} is not in [0, WORLD_SIZE={world})")
            return rank, world
        return 0, 1

    def samples_per_rank(self) -> int:
        """Samples each rank yields per epoch (the remainder policy applied, batching not)."""
        return self._per_rank(self.rank_and_world_size()[1])

    def _per_rank(self, world: int) -> int:
        n = self.num_samples
        return n // world if self.drop_last else -(-n // world)

    def _samples_out(self, per_rank: int) -> int:
        """Samples a rank actually emits: ``per_rank`` less a dropped short batch."""
        if self.drop_last and self.batch_size:
            return per_rank - per_rank % self.batch_size
        return per_rank

    def __len__(self) -> int:
        """Items this rank yields in a whole epoch: samples, or batches with ``batch_size``.

        The same on every rank. A resumed epoch yields fewer (the remainder only).
        """
        per_rank = self.samples_per_rank()
        if self.batch_size is None:
            return per_rank
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def __getstate__(self) -> dict[str, Any]:
        # Pickled for a DataLoader worker: pin the rank and world size now, in the main
        # process, because torch.distributed is not initialized inside workers.
        state = self.__dict__.copy()
        if state["_rank"] is None:
            state["_rank"], state["_world"] = self.rank_and_world_size()
        return state

    # ------------------------------------------------------------------ state

    def state_dict(self, consumed: int = 0) -> dict[str, Any]:
        """The resume point after your loop received ``consumed`` samples of this pass.

        ``consumed`` counts samples (not batches) delivered since the current pass
        over the epoch began; a pass that itself resumed adds its starting point, so
        the returned ``"consumed"`` is always counted from the start of the epoch.
        """
        per_rank = self._samples_out(self.samples_per_rank())
        start = self._resume[1] if self._resume is not None and self._resume[0] == self._epoch else 0
        total = start + int(consumed)
        if consumed < 0 or total > per_rank:
            raise ValueError(f"consumed={consumed}: this rank delivers {per_rank - start} samples in this pass")
        return {
            "epoch": self._epoch,
            "consumed": total,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "world_size": self.rank_and_world_size()[1],
            "num_samples": self.num_samples,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue epoch ``state["epoch"]`` after its first ``state["consumed"]`` samples.

        Raises ``ValueError`` if the state was saved with another seed, shuffle
        setting, world size or number of samples (the remaining samples would differ).
        """
        mine = {"seed": self.seed, "shuffle": self.shuffle, "world_size": self.rank_and_world_size()[1], "num_samples": self.num_samples}
        for key, value in mine.items():
            if key in state and state[key] != value:
                raise ValueError(f"state was saved with {key}={state[key]!r}, this dataset has {value!r}")
        epoch, consumed = int(state["epoch"]), int(state["consumed"])
        if epoch < 0 or consumed < 0:
            raise ValueError(f"bad state: epoch {epoch}, consumed {consumed}")
        self._epoch = epoch
        self._resume = (epoch, consumed)

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rank, world = self.rank_and_world_size()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        act = resolve_act_mode(self.act_mode_8bit)
        outputs, inputs = self._worker_plan(self._epoch, rank, world, worker, workers)
        shard_ids, withins = self._locate(self._epoch, rank, world, inputs)
        order = np.argsort(inputs, kind="stable")
        reader = self._read(shard_ids[order], withins[order])
        return self._emit(outputs, inputs, inputs[order], reader, act)

    def _worker_plan(self, epoch: int, rank: int, world: int, worker: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
        """This worker's outputs (positions in the rank sequence) and the rank inputs they read."""
        per_rank = self._per_rank(world)
        end = self._samples_out(per_rank)
        start = self._resume[1] if self._resume is not None and self._resume[0] == epoch else 0
        start = min(start, end)
        chunk = self.batch_size or self.loader_batch_size or 1
        positions = np.arange(start, end, dtype=np.int64)
        outputs = positions[((positions - start) // chunk) % workers == worker]
        if not self.shuffle or self.shuffle_buffer <= 1 or per_rank <= 1:
            return outputs, outputs
        rng = np.random.default_rng([self.seed, epoch, _WINDOW, rank])
        keys = np.arange(per_rank, dtype=np.float64) + rng.random(per_rank) * self.shuffle_buffer
        perm = np.argsort(keys, kind="stable")
        return outputs, perm[outputs]

    def _locate(self, epoch: int, rank: int, world: int, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard number, sample number within the shard) of rank inputs ``inputs``."""
        n = self.num_samples
        if n == 0:
            return inputs, inputs
        if self.shuffle:
            shard_order = np.random.default_rng([self.seed, epoch, _SHARD_ORDER]).permutation(len(self._shards))
        else:
            shard_order = np.arange(len(self._shards))
        counts = self._counts[shard_order]
        ends = np.cumsum(counts)
        g = (rank * self._per_rank(world) + inputs) % n  # position in the epoch's global sequence
        k = np.searchsorted(ends, g, side="right")
        return shard_order[k], g - (ends[k] - counts[k])

    def _rows(self, shard: _Shard) -> np.ndarray:
        """The shard's index rows; their number must match the shard's count."""
        if shard.rows is not None:
            return shard.rows
        if shard.location is not None:
            buf = storage.read_bytes(shard.location, shard.index)
            where = storage.describe(shard.location, shard.index)
        else:
            where = shard.index
            try:
                buf = Path(shard.index).read_bytes()
            except OSError as exc:
                raise storage.StorageError(f"{where}: cannot read ({exc.strerror or exc})") from None
        rows = fmt.decode_index(buf, where)
        if len(rows) != shard.count:
            source = "the manifest says" if shard.location is not None else "it listed when this dataset was made"
            raise fmt.FormatError(f"{where}: lists {len(rows)} samples of {shard.name}, not the {shard.count} {source}")
        return rows

    @staticmethod
    def _open(shard: _Shard) -> IO[bytes]:
        if shard.location is not None:
            return storage.open_stream(shard.location, shard.file)
        try:
            return open(shard.file, "rb", buffering=1 << 20)
        except OSError as exc:
            raise storage.StorageError(f"{shard.file}: cannot open shard ({exc.strerror or exc})") from None

    def _read(self, shard_ids: np.ndarray, withins: np.ndarray) -> Iterator[tuple[bytes, _Where, tuple[int, ...]]]:
        """Payloads of the given samples, in the given order (forward through each shard).

        Yields ``(payload, where, index row)``; ``where`` is ``(shard, member, byte)``, formatted only for errors. Consecutive samples of a shard are read as one run
        of :func:`~shardwriter.format.iter_tar_members` (every header checked); a run
        that ends at the shard's last sample also checks the end-of-archive marker, so
        a shard holding more or fewer samples than its index is an error.
        """
        n = len(shard_ids)
        if n == 0:
            return
        cut = np.flatnonzero((np.diff(shard_ids) != 0) | (np.diff(withins) != 1)) + 1
        f: IO[bytes] | None = None
        current, pos = -1, 0
        rows = np.empty(0, dtype=fmt.INDEX_DTYPE)
        try:
            for a, b in zip(np.concatenate([[0], cut]).tolist(), np.concatenate([cut, [n]]).tolist()):
                number, first, stop = int(shard_ids[a]), int(withins[a]), int(withins[b - 1]) + 1
                shard = self._shards[number]
                if number != current:
                    rows, current = self._rows(shard), number
                    if f is not None:
                        f.close()
                        f = None
                header = int(rows["offset"][first]) - fmt.BLOCK
                if f is None or header < pos:  # a new shard, or a shard met again after wrapping
                    if f is not None:
                        f.close()
                    f, pos = self._open(shard), 0
                _advance(f, pos, header, shard.name)
                pos = header
                members = fmt.iter_tar_members(f, shard.name, start=header)
                # column by column: a structured array's own tolist() costs microseconds a row
                run_rows = zip(*(rows[name][first:stop].tolist() for name in fmt.INDEX_DTYPE.names))
                for k, row in enumerate(run_rows, first):
                    m = next(members, None)
                    if m is None:
                        raise fmt.FormatError(
                            f"{shard.name}: end-of-archive marker at byte {pos}, where sample {k} of the {shard.count} "
                            "its index lists should start (the shard holds fewer samples)"
                        )
                    if m.offset != row[0] or len(m.payload) != row[1]:
                        raise fmt.FormatError(
                            f"{shard.name}: member {m.name!r} at byte {m.header_offset} does not match index row {k} "
                            f"(payload at byte {row[0]}, {row[1]} bytes)"
                        )
                    pos = m.offset + len(m.payload) + (-len(m.payload) % fmt.BLOCK)
                    yield m.payload, (shard.name, m.name, m.header_offset), row
                if stop == shard.count:
                    extra = next(members, None)
                    if extra is not None:
                        raise fmt.FormatError(
                            f"{shard.name}: holds more than the {shard.count} samples its index lists "
                            f"(member {extra.name!r} at byte {extra.header_offset})"
                        )
                    pos += fmt.BLOCK
        finally:
            if f is not None:
                f.close()

    def _emit(
        self,
        outputs: np.ndarray,
        inputs: np.ndarray,
        read_order: np.ndarray,
        reader: Iterator[tuple[bytes, _Where, tuple[int, ...]]],
        act: bool,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield this worker's samples (or batches) in output order from the forward reader."""
        held: dict[int, tuple[bytes, _Where, tuple[int, ...]]] = {}  # read but not yet yielded: raw payloads only
        arrivals = iter(read_order.tolist())

        def take(j: int) -> tuple[np.ndarray, Any]:
            while j not in held:
                held[next(arrivals)] = next(reader)
            return self._decode(*held.pop(j))

        if self.batch_size is None:
            for j in inputs.tolist():
                yield self._sample(take(j), act)
        else:
            chunks = np.flatnonzero(np.diff(outputs) != 1) + 1  # the worker's chunks are runs of outputs
            bounds = zip(np.concatenate([[0], chunks]).tolist(), np.concatenate([chunks, [len(outputs)]]).tolist())
            for a, b in bounds:
                for c in range(a, b, self.batch_size):
                    yield self._batch([take(j) for j in inputs[c : min(b, c + self.batch_size)].tolist()], act)
        next(reader, None)  # let the reader finish its last shard's checks (end-of-archive marker)

    def _decode(self, payload: bytes, at: _Where, row: tuple[int, ...]) -> tuple[np.ndarray, Any]:
        """A sample's ``(x, y)`` arrays, sliced out of its record where the index row says.

        The first record of a dataset without a manifest is decoded in full (msgpack) to
        learn the shapes; after that no record is parsed: the index locates the bytes.
        """
        if self.input_shape is None or self._target_shape is None:
            where = _where(at)
            rec = fmt.decode_record(payload, where)
            if self.input_shape is None:
                self.input_shape, self.target_kind = tuple(rec.x.shape), rec.target_kind
            if tuple(rec.x.shape) != self.input_shape or rec.target_kind != self.target_kind:
                raise fmt.FormatError(
                    f"{where}: input {tuple(rec.x.shape)} with a {rec.target_kind} target; "
                    f"the dataset has input {self.input_shape} with a {self.target_kind} target"
                )
            self._target_shape = tuple(np.shape(rec.y))
        offset, _, x_off, x_len, y_off, y_len, label = row
        try:
            x = np.frombuffer(payload, np.uint8, x_len, x_off - offset).reshape(self.input_shape)
            if self.target_kind == "class":
                return x, label
            dtype = _U8 if self.target_kind == "mask" else _F32
            if y_len % dtype.itemsize:
                raise ValueError("partial item")
            return x, np.frombuffer(payload, dtype, y_len // dtype.itemsize, y_off - offset).reshape(self._target_shape)
        except ValueError:
            raise fmt.FormatError(
                f"{_where(at)}: its index row does not fit the record (input {x_len} bytes, target {y_len} bytes; "
                f"the dataset has input {self.input_shape} and target {self._target_shape})"
            ) from None

    def _sample(self, rec: tuple[np.ndarray, Any], act: bool) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = rec
        x = torch.from_numpy(np.array(x)) if self.output == "uint8" else torch.from_numpy(normalize_np(x, act))
        if self.target_kind == "class":
            return x, torch.tensor(y, dtype=torch.int64)
        dtype = np.int64 if self.target_kind == "mask" else np.float32
        return x, torch.from_numpy(np.array(y, dtype=dtype))

    def _batch(self, recs: list[tuple[np.ndarray, Any]], act: bool) -> Any:
        """One batch, normalized once; from a DataLoader worker it travels as uint8 (:mod:`loaders.batch`)."""
        assert self.input_shape is not None and self._target_shape is not None
        xb = np.empty((len(recs), *self.input_shape), dtype=np.uint8)
        if self.target_kind == "class":
            yb = np.fromiter((y for _, y in recs), dtype=np.int64, count=len(recs))
            for t, (x, _) in enumerate(recs):
                xb[t] = x
        else:
            yb = np.empty((len(recs), *self._target_shape), dtype=np.uint8 if self.target_kind == "mask" else np.float32)
            for t, (x, y) in enumerate(recs):
                xb[t] = x
                yb[t] = y
        batch = Batch(torch.from_numpy(xb), torch.from_numpy(yb), None if self.output == "uint8" else act, self.target_kind == "mask")
        return for_transfer(batch)


def _advance(f: IO[bytes], pos: int, target: int, shard: str) -> None:
    """Move ``f`` from byte ``pos`` forward to byte ``target`` (seek, or read and drop)."""
    if target == pos:
        return
    if f.seekable():
        f.seek(target)
        return
    left = target - pos
    while left > 0:
        got = len(f.read(min(left, 1 << 20)))
        if got == 0:
            raise fmt.FormatError(f"{shard}: ends at byte {target - left}, before byte {target} (truncated)")
        left -= got


def _scan(path: str) -> np.ndarray:
    """Index rows of a shard that has no index file (built by reading it once)."""
    try:
        f = open(path, "rb", buffering=1 << 20)
    except OSError as exc:
        raise storage.StorageError(f"{path}: cannot open shard ({exc.strerror or exc})") from None
    with f:
        return fmt.build_index(f, path)
