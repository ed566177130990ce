"""The streaming dataset: an ``IterableDataset`` over the shards of one split.

This module owns the dataset object: its settings, epoch and resume state, rank
detection, and turning records into tensors (one vectorized normalize per batch, the
per-sample hash checks). The epoch plan is :mod:`loaders.plan` (pure functions), reading
shards forward with their checks is :mod:`loaders.reader`, the index and its checks are
:mod:`loaders.index`, opening files is :mod:`shardwriter.storage`, the normalize
arithmetic is :mod:`loaders.transforms`.

Each worker computes its plan with numpy when an iteration starts (a few tens of bytes
per sample of its rank, briefly); the samples themselves are never all in memory, and a
reader holds at most ``shuffle_buffer`` raw payloads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.distributed as dist
import xxhash
from braceexpand import braceexpand
from torch.utils.data import IterableDataset, get_worker_info

from shardwriter import format as fmt
from shardwriter.errors import FormatError, SettingsError, StorageError
from shardwriter.options import Options
from shardwriter.storage import Store, open_regular, open_store

from . import plan
from .batch import Batch, for_transfer
from .index import SplitIndex, integrity_error, warn_unhashed
from .reader import ShardRef, read_records
from .transforms import normalize, normalize_np, resolve_act_mode

__all__ = ["StreamingShardDataset", "normalize_batch"]

OUTPUTS = ("float", "uint8")
_U8, _F32 = np.dtype(np.uint8), np.dtype("<f4")
_xxh3 = xxhash.xxh3_64_intdigest


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


def _open_path(path: str, size: int) -> IO[bytes]:
    return os.fdopen(open_regular(path, size, "shard"), "rb", buffering=1 << 20)


def _open_store(store: Store, shard: fmt.ShardEntry) -> IO[bytes]:
    return store.open_read(shard.file, size=shard.bytes, sha256=shard.sha256, xxh3=shard.xxh3)


def index_from_paths(paths: list[str]) -> tuple[SplitIndex, fmt.Schema]:
    """A :class:`SplitIndex` of explicit shard files (no manifest): each ``.idx`` beside its shard, or a scan.

    Every index is checked against its shard's real size and the record layout of the
    first record; keys cannot be checked against split positions (unknown here).
    """
    found: list[tuple[str, int, np.ndarray, int]] = []
    wheres: list[str] = []
    for p in paths:
        fd = open_regular(p, None, "shard")
        try:
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        idx = p[: -len(".tar")] + ".idx" if p.endswith(".tar") else p + ".idx"
        if os.path.exists(idx):
            try:
                buf = Path(idx).read_bytes()
            except OSError as exc:
                raise StorageError(f"{idx}: cannot read ({exc.strerror or exc})") from None
            found.append((p, size, fmt.decode_index(buf, idx), fmt.index_version(buf, idx)))
            wheres.append(idx)
        else:
            with _open_path(p, size) as f:
                found.append((p, size, fmt.build_index(f, p, size), 2))
            wheres.append(p)
    schema = _schema_of(found)
    shards: list[fmt.ShardEntry] = []
    parts, owner = [], []
    hashed = all(v >= 2 for *_, v in found)
    layout = fmt.record_layout(schema)
    for (p, size, rows, _), where in zip(found, wheres):
        fmt.check_rows(rows, where=where, count=len(rows), shard_bytes=size, layout=layout, schema=schema, hashed=hashed)
        owner.append(np.full(len(rows), len(shards), np.int32))
        parts.append(rows)
        shards.append(fmt.ShardEntry(p, size, "", count=len(rows), split="", number=len(shards), first=-1))
    rows = np.concatenate(parts) if parts else np.zeros(0, fmt.INDEX_DTYPE)
    ix = SplitIndex(shards, np.concatenate(owner) if owner else np.zeros(0, np.int32), rows["offset"].astype(np.int64),
                    rows["size"].astype(np.int64), rows["x_off"].astype(np.int64), rows["y_off"].astype(np.int64),
                    rows["label"].astype(np.int64), rows["x_hash"].astype(np.uint64), rows["y_hash"].astype(np.uint64), hashed)
    return ix, schema


def _schema_of(found: list[tuple[str, int, np.ndarray, int]]) -> fmt.Schema:
    """The schema the first record of the first non-empty shard shows (shapes and target kind)."""
    for p, _, rows, _ in found:
        if len(rows):
            fd = open_regular(p, None, "shard")
            try:
                payload = os.pread(fd, int(rows["size"][0]), int(rows["offset"][0]))
            finally:
                os.close(fd)
            rec = fmt.decode_record(payload, f"{p} sample 0")
            kind = rec.target_kind
            shape = None if kind == "class" else tuple(np.shape(rec.y))
            classes = range(fmt.schema.MAX_CLASSES if kind == "class" else 256 if kind == "mask" else 1)
            return fmt.Schema(tuple(rec.x.shape), fmt.Target(kind, shape), tuple(classes))
    return fmt.Schema((1,), fmt.Target("class"), (0,))


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
        location: dataset folder holding ``manifest.json`` (or its URL). Leave ``None`` and give ``shards``
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

        options: :class:`~shardwriter.options.Options` (storage, retries, per-sample
            checks); default: read from the ``AI8X_SHARDS_*`` environment now.

    Integrity: at construction every index file is checked (size and sha256 against
    the manifest, every row against the record layout); while iterating, every member
    header is checked against its index row and (format 2) every sample's bytes against
    its hash; a shard read from a URL front to back is also checked against its sha256.

    Raises:
        shardwriter.errors.FormatError: a damaged manifest or index (at construction);
            while iterating, a corrupt, truncated or swapped shard (naming the shard and
            the byte offset), and :class:`~shardwriter.errors.IntegrityError` for a
            sample whose bytes differ from what the writer wrote.
        shardwriter.errors.StorageError: a manifest, shard or index cannot be read.

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
        location: str | os.PathLike[str] | Store | None = None,
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
        options: Options | None = None,
    ) -> None:
        super().__init__()
        if (location is None) == (shards is None):
            raise SettingsError("give either a dataset folder (location) or shards, not both")
        if output not in OUTPUTS:
            raise SettingsError(f"output must be one of {OUTPUTS}, not {output!r}")
        for what, value in (("batch_size", batch_size), ("loader_batch_size", loader_batch_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise SettingsError(f"{what} must be a positive integer or None, not {value!r}")
        if batch_size is not None and loader_batch_size is not None:
            raise SettingsError("batch_size (the dataset batches) and loader_batch_size (the DataLoader batches) exclude each other")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SettingsError(f"seed must be a non-negative integer, not {seed!r}")
        if isinstance(shuffle_buffer, bool) or not isinstance(shuffle_buffer, int) or shuffle_buffer < 0:
            raise SettingsError(f"shuffle_buffer must be an integer >= 0, not {shuffle_buffer!r}")
        if (rank is None) != (world_size is None):
            raise SettingsError("give both rank and world_size, or neither")
        if world_size is not None and rank is not None and not 0 <= rank < world_size:
            raise SettingsError(f"rank {rank} is not in [0, {world_size})")

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
        self.options = options or Options.from_env()
        self.manifest: fmt.Manifest | None = None
        self.store: Store | None = None
        if location is not None:
            self.store = open_store(location, self.options)
            self.manifest = m = self.store.read_manifest()
            m.split(split, self.store.location)
            self.index = SplitIndex.load(self.store, m, [split])
            schema = m.schema
            where = self.store.location
        else:
            assert shards is not None
            patterns = [shards] if isinstance(shards, str) else [os.fspath(p) for p in shards]
            paths = [p for pattern in patterns for p in braceexpand(pattern)]
            if not paths:
                raise SettingsError("shards names no files")
            self.index, schema = index_from_paths(paths)
            where = paths[0]
        self.input_shape: tuple[int, ...] = schema.input_shape
        self.target_kind: str = schema.target.kind
        self._target_shape = schema.target.served_shape
        self._x_len = int(np.prod(self.input_shape))
        self._counts = np.array([s.count for s in self.index.shards], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(self._counts)[:-1]]).astype(np.int64) if len(self._counts) else self._counts
        self._verify = self.index.hashed and self.options.verify_samples
        if not self.index.hashed:
            warn_unhashed(where)

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
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise SettingsError(f"epoch must be a non-negative integer, not {epoch!r}")
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
            try:
                rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            except ValueError:
                raise SettingsError(f"environment RANK={os.environ['RANK']!r} / WORLD_SIZE={os.environ['WORLD_SIZE']!r} are not integers") from None
            if not 0 <= rank < world:
                raise SettingsError(f"environment RANK={rank} is not in [0, WORLD_SIZE={world})")
            return rank, world
        return 0, 1

    def samples_per_rank(self) -> int:
        """Samples each rank yields per epoch (the remainder policy applied, batching not)."""
        return plan.per_rank(self.num_samples, self.rank_and_world_size()[1], self.drop_last)

    def __len__(self) -> int:
        """Items this rank yields in a whole epoch: samples, or batches with ``batch_size``.

        The same on every rank. A resumed epoch yields fewer (the remainder only).
        """
        return plan.items_per_epoch(self.samples_per_rank(), self.batch_size, self.drop_last)

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
        rank_out = plan.samples_out(self.samples_per_rank(), self.batch_size, self.drop_last)
        start = self._resume[1] if self._resume is not None and self._resume[0] == self._epoch else 0
        total = start + int(consumed)
        if consumed < 0 or total > rank_out:
            raise SettingsError(f"consumed={consumed}: this rank delivers {rank_out - start} samples in this pass")
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

        Raises :class:`~shardwriter.errors.SettingsError` if the state was saved with
        another seed, shuffle setting, world size or number of samples (the remaining
        samples would differ).
        """
        mine = {"seed": self.seed, "shuffle": self.shuffle, "world_size": self.rank_and_world_size()[1], "num_samples": self.num_samples}
        for key, value in mine.items():
            if key in state and state[key] != value:
                raise SettingsError(f"state was saved with {key}={state[key]!r}, this dataset has {value!r}")
        epoch, consumed = int(state["epoch"]), int(state["consumed"])
        if epoch < 0 or consumed < 0:
            raise SettingsError(f"bad state: epoch {epoch}, consumed {consumed}")
        self._epoch = epoch
        self._resume = (epoch, consumed)

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[Any]:
        rank, world = self.rank_and_world_size()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        act = resolve_act_mode(self.act_mode_8bit)
        epoch = self._epoch
        start = self._resume[1] if self._resume is not None and self._resume[0] == epoch else 0
        p = plan.worker_plan(self._counts, seed=self.seed, epoch=epoch, rank=rank, world=world, worker=worker,
                             workers=workers, shuffle=self.shuffle, buffer=self.shuffle_buffer, drop_last=self.drop_last,
                             chunk=self.batch_size or self.loader_batch_size or 1, batch_size=self.batch_size, start=start)
        order = np.argsort(p.inputs, kind="stable")
        rows = (self._starts[p.shards] + p.withins)[order]
        reader = read_records(self._refs(), self._offsets, p.shards[order], p.withins[order])
        return self._emit(p.outputs, p.inputs, p.inputs[order], rows, reader, act)

    def _refs(self) -> list[ShardRef]:
        refs = []
        for s in self.index.shards:
            if self.store is not None:
                opener = partial(_open_store, self.store, s)
                name = self.store.describe(s.file)
            else:
                opener, name = partial(_open_path, s.file, s.bytes), s.file
            refs.append(ShardRef(name, s.count, s.first if s.first >= 0 else None, opener))
        return refs

    def _offsets(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self._starts[s]), int(self._starts[s] + self._counts[s])
        return self.index.offset[a:b], self.index.size[a:b]

    def _emit(self, outputs: np.ndarray, inputs: np.ndarray, read_order: np.ndarray, read_rows: np.ndarray,
              reader: Iterator[bytes], act: bool) -> Iterator[Any]:
        """Yield this worker's samples (or batches) in output order from the forward reader."""
        held: dict[int, tuple[bytes, int]] = {}  # read but not yet yielded: raw payloads only
        arrivals = iter(zip(read_order.tolist(), read_rows.tolist()))

        def take(j: int) -> tuple[np.ndarray, Any]:
            while j not in held:
                pos, row = next(arrivals)
                held[pos] = (next(reader), row)
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

    def _decode(self, payload: bytes, i: int) -> tuple[np.ndarray, Any]:
        """Sample ``i``'s ``(x, y)``, sliced out of its record where the index says, its hashes checked."""
        ix = self.index
        base = int(ix.offset[i])
        x_len = self._x_len
        x_at = int(ix.x_off[i]) - base
        xb = memoryview(payload)[x_at : x_at + x_len]
        label = int(ix.label[i])
        if self._verify and (_xxh3(xb) ^ fmt.label_mix(label)) != int(ix.x_hash[i]):
            raise self._sample_error(i, "its input bytes" if self.target_kind != "class" else "its input bytes or label")
        x = np.frombuffer(payload, np.uint8, x_len, x_at).reshape(self.input_shape)
        if self.target_kind == "class":
            return x, label
        dtype = _U8 if self.target_kind == "mask" else _F32
        n = int(np.prod(self._target_shape, dtype=np.int64))
        y_at = int(ix.y_off[i]) - base
        if self._verify and _xxh3(memoryview(payload)[y_at : y_at + n * dtype.itemsize]) != int(ix.y_hash[i]):
            raise self._sample_error(i, "its target bytes")
        return x, np.frombuffer(payload, dtype, n, y_at).reshape(self._target_shape)

    def _sample_error(self, i: int, what: str) -> FormatError:
        shard, _ = self.index.position(i)
        where = self.store.location if self.store is not None else shard.file
        return integrity_error(where, Path(shard.file).name, self.index.describe(i), what)

    def _sample(self, rec: tuple[np.ndarray, Any], act: bool) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = rec
        x = torch.from_numpy(np.array(x)) if self.output == "uint8" else torch.from_numpy(normalize_np(x, act))
        if self.target_kind == "class":
            return x, torch.tensor(y, dtype=torch.int64)
        dtype = np.int64 if self.target_kind == "mask" else np.float32
        return x, torch.from_numpy(np.array(y, dtype=dtype))

    def _batch(self, recs: list[tuple[np.ndarray, Any]], act: bool) -> Any:
        """One batch, normalized once; from a DataLoader worker it travels as uint8 (:mod:`loaders.batch`)."""
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
