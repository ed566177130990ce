"""The streaming dataset: an ``IterableDataset`` over the shards of one split.

This module owns the dataset object: its settings, its resume state, and turning records
into tensors (one vectorized normalize per batch, the per-sample hash checks). The epoch
plan is :mod:`loaders.plan` (pure functions); which epoch a pass plays, across DataLoader
workers, is :mod:`loaders.epochs`; rank detection is :mod:`loaders.ranks`; reading shards
forward with their checks is :mod:`loaders.reader`; the index and its checks are
:mod:`loaders.index` (:mod:`loaders.paths` for ``shards=`` without a manifest); opening
files is :mod:`shardwriter.storage`; the normalize arithmetic is :mod:`loaders.transforms`.

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
import xxhash
from torch.utils.data import IterableDataset, get_worker_info

from shardwriter import format as fmt
from shardwriter.errors import FormatError, SettingsError
from shardwriter.options import Options
from shardwriter.storage import Store, open_store

from . import plan, ranks
from .augment import Augmentation, Augmenter, Spec
from .batch import Batch, for_transfer
from .epochs import EpochClock, Resume
from .index import SplitIndex, integrity_error, warn_unhashed
from .paths import expand, index_from_paths, open_path
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


def _open_store(store: Store, shard: fmt.ShardEntry) -> IO[bytes]:
    return store.open_read(shard.file, size=shard.bytes, sha256=shard.sha256, xxh3=shard.xxh3)


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
    :mod:`loaders.plan`: the order of a pass depends only on ``(seed, epoch)``, the rank,
    the world size and (for how items are dealt out, not the rank's sequence) the number
    of DataLoader workers.

    Epochs follow the user (:mod:`loaders.epochs`): each new pass over the dataset (each
    ``iter(loader)``, or ``for x in dataset``) plays the next epoch: 0, 1, 2, ... without
    any call. :meth:`set_epoch` wins: the next pass plays the epoch it sets, and passes
    after it count on from there (so a loop that calls ``set_epoch(epoch)`` before every
    epoch plays exactly those epochs). Both hold with ``num_workers=0``, with workers
    started per epoch, and with ``persistent_workers=True`` (a ``set_epoch`` between two
    passes reaches the live workers), under fork and spawn, and give the same orders in
    all three. The count is kept per loader kind, in shared memory, so every worker of a
    pass, the main process (:attr:`epoch`) and every rank running the same loop agree,
    with no communication: a pass of a loader with another ``num_workers``, or a peek
    with ``next(iter(dataset))`` in the main process, counts as a pass too. Only two
    loaders iterating one dataset object at the same time are not told apart (each
    DataLoader begins a pass in all its workers before the next pass begins).

    Remainder policy: every rank yields exactly ``len(dataset)`` items per epoch.
    ``drop_last=False`` (default): each rank gets ``ceil(N / world_size)`` samples, the
    shortfall filled by repeating the first samples of the epoch's global sequence
    (at most ``world_size - 1`` repeats per epoch), and the last batch of a rank may
    be short. ``drop_last=True``: each rank gets ``floor(N / world_size)`` samples (at
    most ``world_size - 1`` samples are left out of that epoch; which ones changes
    with the shard order) and a short last batch is dropped.

    Resume, two ways; both give exactly the rank's remaining samples of the epoch, in
    the order the uninterrupted epoch would have delivered them, on a new dataset with
    the same data, ``seed``, ``shuffle``, ``shuffle_buffer``, ``drop_last`` and world size:

    - **Through the loader**: with torchdata's ``StatefulDataLoader``,
      ``loader.state_dict()`` / ``loader.load_state_dict(state)`` (the loader calls this
      dataset's :meth:`state_dict` and :meth:`load_state_dict` in each worker: each
      worker's state is the samples it delivered of its share). Resume with the same
      ``num_workers`` (the loader requires it), ``0`` included.
    - **Yourself**: ``dataset.state_dict(consumed)``, where ``consumed`` is the number of
      samples your loop received since the pass began (count ``len(y)`` per batch),
      records the epoch and the rank's delivered samples; ``dataset.load_state_dict(state)``
      makes the next pass play that epoch from there, with any ``num_workers``. This
      holds when items reach your loop in rank-sequence order: with ``num_workers=0``;
      with dataset batching (``batch_size=B``, ``DataLoader(batch_size=None)``); with
      per-sample items and ``DataLoader(batch_size=None)``; or with
      ``DataLoader(batch_size=B)`` when ``loader_batch_size=B`` is passed here, and the
      DataLoader's default ``in_order=True``.

    A resume point is used by the next pass only: the pass after it plays the next
    epoch. :meth:`set_epoch` with another epoch before that pass forgets it.

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
        augment: on-the-fly augmentation of the uint8 pixels before normalization, image
            and mask together (a per-sample callable ``fn(image, mask, rng)`` given the
            unfolded ``H x W x C`` image, the built-ins of :mod:`loaders.augment`, an
            albumentations pipeline, a torchvision v2 transform, or a list of them). Its
            randomness is keyed by ``(seed, epoch of the pass, position in the split)``:
            the same for any worker count, batch size or order. With ``shards=`` the fold
            ratio is read off the mask's size (segmentation), else taken as 1.
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
        augment: Any = None,
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
        ranks.check_explicit(rank, world_size)

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
        self._clock = EpochClock()  # shared with every DataLoader worker's copy (loaders.epochs)
        self._local: Resume | None = None  # a resume point loaded into this copy (a worker's own state)
        self._live: _Pass | None = None  # the last pass begun in this process
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
            paths = expand(shards)
            self.index, schema = index_from_paths(paths)
            where = paths[0]
        self.input_shape: tuple[int, ...] = schema.input_shape
        self.target_kind: str = schema.target.kind
        self._target_shape = schema.target.served_shape
        self._x_len = int(np.prod(self.input_shape))
        self._layout = fmt.record_layout(schema)
        self._counts = np.array([s.count for s in self.index.shards], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(self._counts)[:-1]]).astype(np.int64) if len(self._counts) else self._counts
        self._verify = self.index.hashed and self.options.verify_samples
        self.augment: Augmentation | None = None
        self._augmenter: Augmenter | None = None
        if augment is not None:
            if self.manifest is not None:
                fold = self.manifest.fold_ratio
            elif self.target_kind == "mask" and len(self.input_shape) == 3:
                fold = max(1, self._target_shape[0] // self.input_shape[1])
            else:
                fold = 1
            self._augmenter = Augmenter(augment, Spec(tuple(self.input_shape), fold, self.target_kind), seed)
            self.augment = self._augmenter.augmentation
        if not self.index.hashed:
            warn_unhashed(where)

    # ------------------------------------------------------------------ epoch and ranks

    @property
    def num_samples(self) -> int:
        """Samples in the split (all ranks together, before the remainder policy)."""
        return int(self._counts.sum())

    @property
    def epoch(self) -> int:
        """The epoch the next pass plays (see :meth:`set_epoch` and the class docstring)."""
        return self._clock.next_epoch()

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch the next pass plays; later passes go on from it (epoch + 1, ...).

        Takes effect at the next ``iter()``, also in persistent DataLoader workers. A
        resume point loaded by :meth:`load_state_dict` is kept only if ``epoch`` is the
        epoch it was saved in.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise SettingsError(f"epoch must be a non-negative integer, not {epoch!r}")
        self._clock.set_epoch(epoch)

    def rank_and_world_size(self) -> tuple[int, int]:
        """``(rank, world_size)``: explicit arguments, else torch.distributed, else env, else (0, 1)."""
        return ranks.rank_and_world_size(self._rank, self._world)

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
        # process, because torch.distributed is not initialized inside workers. The epoch
        # table travels as shared memory (loaders.epochs); a pass begun here stays here.
        state = self.__dict__.copy()
        if state["_rank"] is None:
            state["_rank"], state["_world"] = self.rank_and_world_size()
        state["_live"] = None
        return state

    # ------------------------------------------------------------------ state

    def _fingerprint(self) -> dict[str, Any]:
        return {"seed": self.seed, "shuffle": self.shuffle, "world_size": self.rank_and_world_size()[1], "num_samples": self.num_samples}

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """The resume point: after your loop received ``consumed`` samples of this pass, or as counted here.

        ``consumed`` counts samples (not batches) delivered since the current pass over
        the epoch began; a pass that itself resumed adds its starting point, so the
        returned ``"consumed"`` is always counted from the start of the epoch. The
        current pass is the last one begun, unless :meth:`set_epoch` or
        :meth:`load_state_dict` was called since (then it is the next one, not begun).

        Without ``consumed`` (how torchdata's ``StatefulDataLoader`` calls it): the
        samples this process's own pass delivered. In a DataLoader worker that is the
        worker's share (a per-worker state, ``"worker"`` and ``"workers"`` set); in the
        main process, the pass it iterates itself. For a pass run by DataLoader workers
        the main process cannot know it: give ``consumed``.
        """
        rank_out = plan.samples_out(self.samples_per_rank(), self.batch_size, self.drop_last)
        info = get_worker_info()
        live = self._live
        if consumed is None and live is not None and (info is not None or self._clock.current() == (live.epoch, live.start, 0)):
            if live.workers > 1:  # one worker's share: only that worker of a loader with as many workers can go on from it
                return {"epoch": live.epoch, "start": live.start, "worker": live.worker, "workers": live.workers,
                        "yielded": live.skip + live.yielded, **self._fingerprint()}
            return {"epoch": live.epoch, "consumed": live.start + live.yielded, **self._fingerprint()}
        current = self._clock.current()
        if current is None:  # no pass begun since set_epoch/load_state_dict: the next one
            pending = self._clock.pending()
            epoch, start = self._clock.next_epoch(), pending.start if pending is not None else 0
        else:
            epoch, start, workers = current
            if consumed is None:
                raise SettingsError("this pass ran in DataLoader workers, which count what they delivered: pass "
                                    "consumed= (the samples your loop received in this pass), or use torchdata's StatefulDataLoader")
        consumed = 0 if consumed is None else int(consumed)
        total = start + consumed
        if consumed < 0 or total > rank_out:
            raise SettingsError(f"consumed={consumed}: this rank delivers {rank_out - start} samples in this pass")
        return {"epoch": epoch, "consumed": total, **self._fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next pass continue epoch ``state["epoch"]`` where ``state`` says.

        ``state`` is what :meth:`state_dict` returned: ``"consumed"`` samples of the rank
        sequence delivered, or (in a DataLoader worker, from ``StatefulDataLoader``) one
        worker's share. Raises :class:`~shardwriter.errors.SettingsError` if the state was
        saved with another seed, shuffle setting, world size or number of samples (the
        remaining samples would differ), or holds one worker's share outside a DataLoader
        worker.
        """
        for key, value in self._fingerprint().items():
            if key in state and state[key] != value:
                raise SettingsError(f"state was saved with {key}={state[key]!r}, this dataset has {value!r}")
        try:
            epoch = int(state["epoch"])
            if "workers" in state:
                start, skip = int(state["start"]), int(state["yielded"])
                worker, workers = int(state["worker"]), int(state["workers"])
            else:
                start, skip, worker, workers = int(state["consumed"]), 0, 0, 1
        except (KeyError, TypeError, ValueError) as exc:
            raise SettingsError(f"not a state of this dataset ({type(exc).__name__}: {exc})") from None
        if min(epoch, start, skip) < 0 or not 0 <= worker < workers:
            raise SettingsError(f"bad state: epoch {epoch}, consumed {start}, worker {worker} of {workers}")
        if get_worker_info() is not None:  # in a worker (StatefulDataLoader restoring it): this copy only
            self._local = Resume(epoch, start, skip, worker, workers) if workers > 1 else Resume(epoch, start + skip)
        elif workers > 1:
            raise SettingsError(f"this state is DataLoader worker {worker}'s share of {workers} workers: load it through "
                                "the StatefulDataLoader that saved it, or save with dataset.state_dict(consumed)")
        else:
            self._local = None
            self._clock.resume(epoch, start + skip)

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[Any]:
        rank, world = self.rank_and_world_size()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 0)
        act = resolve_act_mode(self.act_mode_8bit)
        local, self._local = self._local, None
        if local is not None and local.workers is not None and (local.worker, local.workers) != (worker, workers):
            raise SettingsError(f"this state is DataLoader worker {local.worker}'s share of {local.workers} workers; "
                                f"it was loaded into worker {worker} of {workers}")
        how = self._clock.begin(worker, workers, local)
        p = plan.worker_plan(self._counts, seed=self.seed, epoch=how.epoch, rank=rank, world=world, worker=worker,
                             workers=max(workers, 1), shuffle=self.shuffle, buffer=self.shuffle_buffer, drop_last=self.drop_last,
                             chunk=self.batch_size or self.loader_batch_size or 1, batch_size=self.batch_size,
                             start=how.start, skip=how.skip)
        order = np.argsort(p.inputs, kind="stable")
        out_rows = self._starts[p.shards] + p.withins  # each output's sample: its position in the split
        reader = read_records(self._refs(), self._offsets, p.shards[order], p.withins[order])
        self._live = live = _Pass(how.epoch, how.start, how.skip, worker, max(workers, 1))
        aug = None if self._augmenter is None else partial(self._augmenter, epochs=how.epoch)
        items = self._emit(p.outputs, p.inputs, p.inputs[order], out_rows[order], reader, act, out_rows, aug)
        return live.count(items, p.outputs, self.batch_size)

    def _refs(self) -> list[ShardRef]:
        refs = []
        for s in self.index.shards:
            if self.store is not None:
                opener = partial(_open_store, self.store, s)
                name = self.store.describe(s.file)
            else:
                opener, name = partial(open_path, s.file, s.bytes), s.file
            refs.append(ShardRef(name, s.count, s.first if s.first >= 0 else None, opener))
        return refs

    def _offsets(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self._starts[s]), int(self._starts[s] + self._counts[s])
        return self.index.offset[a:b], self.index.size[a:b]

    def _emit(self, outputs: np.ndarray, inputs: np.ndarray, read_order: np.ndarray, read_rows: np.ndarray,
              reader: Iterator[bytes], act: bool, out_rows: np.ndarray | None = None, aug: Any = None) -> Iterator[Any]:
        """Yield this worker's samples (or batches) in output order from the forward reader."""
        held: dict[int, tuple[bytes, int]] = {}  # read but not yet yielded: raw payloads only
        arrivals = iter(zip(read_order.tolist(), read_rows.tolist()))

        def raw(j: int) -> tuple[bytes, int]:
            while j not in held:
                pos, row = next(arrivals)
                held[pos] = (next(reader), row)
            return held.pop(j)

        def take(j: int) -> tuple[np.ndarray, Any]:
            return self._decode(*raw(j))

        if self.batch_size is None:
            if aug is None:
                for j in inputs.tolist():
                    yield self._sample(take(j), act)
            else:
                assert out_rows is not None
                for j, row in zip(inputs.tolist(), out_rows.tolist()):
                    yield self._sample(take(j), act, aug, row)
        else:
            for a, b in plan.batch_bounds(outputs, self.batch_size):  # the worker's chunks, cut into batches
                xb, yb = self._decode_batch([raw(j) for j in inputs[a:b].tolist()])
                yield self._batch_of(xb, yb, act, aug, None if out_rows is None else out_rows[a:b])
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

    def _decode_batch(self, got: list[tuple[Any, int]]) -> tuple[np.ndarray, np.ndarray]:
        """The ``(x, y)`` arrays of a batch of records, checked against their hashes in one vectorized step.

        Every record of a dataset has the same layout (the index rows were checked against
        it when loaded), so the input and target bytes sit at the same offsets in each.
        """
        n = len(got)
        ix = self.index
        rows = np.fromiter((r for _, r in got), np.int64, n)
        lay = self._layout
        xv = [memoryview(p)[lay.x_start : lay.x_start + lay.x_len] for p, _ in got]
        if self._verify:
            h, want = np.fromiter(map(_xxh3, xv), np.uint64, n), ix.x_plain[rows]
            if h.tobytes() != want.tobytes():
                raise self._sample_error(int(rows[np.flatnonzero(h != want)[0]]), self._what())
        xb = np.frombuffer(bytearray().join(xv), np.uint8).reshape(n, *self.input_shape)
        if self.target_kind == "class":
            return xb, ix.label[rows]
        yv = [memoryview(p)[lay.y_start : lay.y_start + lay.y_len] for p, _ in got]
        if self._verify:
            h, want = np.fromiter(map(_xxh3, yv), np.uint64, n), ix.y_hash[rows]
            if h.tobytes() != want.tobytes():
                raise self._sample_error(int(rows[np.flatnonzero(h != want)[0]]), "its target bytes")
        dtype = _U8 if self.target_kind == "mask" else _F32
        return xb, np.frombuffer(bytearray().join(yv), dtype).reshape(n, *self._target_shape)

    def _what(self) -> str:
        return "its input bytes" if self.target_kind != "class" else "its input bytes or label"

    def _sample_error(self, i: int, what: str) -> FormatError:
        shard, _ = self.index.position(i)
        where = self.store.location if self.store is not None else shard.file
        return integrity_error(where, Path(shard.file).name, self.index.describe(i), what)

    def _sample(self, rec: tuple[np.ndarray, Any], act: bool, aug: Any = None, row: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = rec
        if aug is not None:  # augmented as a batch of one, uint8, before normalization
            mask = self.target_kind == "mask"
            xs, ms = aug(np.array(x)[None], np.array(y)[None] if mask else None, indices=np.array([row]))
            x, y = xs[0], (ms[0] if mask else y)
        x = torch.from_numpy(np.array(x)) if self.output == "uint8" else torch.from_numpy(normalize_np(x, act))
        if self.target_kind == "class":
            return x, torch.tensor(y, dtype=torch.int64)
        dtype = np.int64 if self.target_kind == "mask" else np.float32
        return x, torch.from_numpy(np.array(y, dtype=dtype))

    def _batch_of(self, xb: np.ndarray, yb: np.ndarray, act: bool, aug: Any = None, rows: np.ndarray | None = None) -> Any:
        """One batch, normalized once; from a DataLoader worker it travels as uint8 (:mod:`loaders.batch`)."""
        if aug is not None:  # uint8, checked, before normalization
            xb, masks = aug(xb, yb if self.target_kind == "mask" else None, indices=rows)
            yb = masks if masks is not None else yb
        batch = Batch(torch.from_numpy(xb), torch.from_numpy(yb), None if self.output == "uint8" else act, self.target_kind == "mask")
        return for_transfer(batch)


class _Pass:
    """One pass begun in this process: where it started, and how many samples it has delivered."""

    __slots__ = ("epoch", "start", "skip", "worker", "workers", "yielded")

    def __init__(self, epoch: int, start: int, skip: int, worker: int, workers: int) -> None:
        self.epoch, self.start, self.skip, self.worker, self.workers = epoch, start, skip, worker, workers
        self.yielded = 0

    def count(self, items: Iterator[Any], outputs: np.ndarray, batch_size: int | None) -> Iterator[Any]:
        """``items``, counting the samples delivered as each is handed over (for ``state_dict()``)."""
        if batch_size is None:
            for k, item in enumerate(items, 1):
                self.yielded = k
                yield item
            return
        ends = iter([b for _, b in plan.batch_bounds(outputs, batch_size)])
        for item in items:
            self.yielded = next(ends)
            yield item
