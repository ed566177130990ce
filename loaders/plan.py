"""The streaming epoch plan, as pure functions: who reads which sample, in which order.

``N`` samples in shards, ``R`` ranks, epoch ``e``, seed ``s``:

1. **Shard order** (:func:`shard_order`). With ``shuffle`` the shards are permuted by
   ``(s, e)``; otherwise manifest order. The *global sequence* is every sample of every
   shard, shard after shard in that order, each shard in file order.
2. **Ranks** (:func:`per_rank`). Rank ``r`` takes positions ``r*P .. r*P + P - 1`` of the
   global sequence. ``drop_last=False``: ``P = ceil(N / R)`` and positions past the end
   wrap around to the start (up to ``R - 1`` samples seen twice that epoch, like
   ``DistributedSampler``); ``drop_last=True``: ``P = floor(N / R)`` (the last ``N mod
   R`` positions are left out that epoch). Every rank yields exactly ``P`` samples.
3. **Window shuffle** (:func:`window_shuffle`). With ``shuffle`` a rank's ``P`` samples
   are reordered by a window shuffle seeded by ``(s, e, r)``: sample ``j`` gets the key
   ``j + u * buffer`` (``u`` uniform in [0, 1)) and the rank yields samples in key order.
   No sample moves more than ``buffer`` places, so a reader holds at most ``buffer`` raw
   payloads at a time. This is the *rank sequence*: a function of ``(s, e, r, R)`` and
   the shard counts, never of the number of workers.
4. **Workers** (:func:`worker_outputs`). The rank sequence, from the resume point on, is
   cut into chunks of ``chunk`` samples (the batch size, or 1); DataLoader worker ``w``
   of ``W`` produces chunks ``w, w + W, w + 2W, ...``. A stock DataLoader (``in_order``)
   takes one item from each worker in turn, so items arrive in rank-sequence order
   whatever ``W`` is.

:func:`worker_plan` puts them together; :func:`batch_bounds` cuts a worker's share into
the items it yields. Nothing here reads a file or keeps state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_SHARD_ORDER, _WINDOW = 1, 2  # domain tags that keep the two random streams apart


def shard_order(n_shards: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The epoch's shard order (a permutation of ``range(n_shards)``)."""
    if shuffle:
        return np.random.default_rng([seed, epoch, _SHARD_ORDER]).permutation(n_shards)
    return np.arange(n_shards)


def per_rank(n: int, world: int, drop_last: bool) -> int:
    """Samples each rank takes from the global sequence per epoch."""
    return n // world if drop_last else -(-n // world)


def samples_out(rank_samples: int, batch_size: int | None, drop_last: bool) -> int:
    """Samples a rank emits: ``rank_samples`` less a dropped short final batch."""
    if drop_last and batch_size:
        return rank_samples - rank_samples % batch_size
    return rank_samples


def items_per_epoch(rank_samples: int, batch_size: int | None, drop_last: bool) -> int:
    """Items a rank yields per epoch: samples, or batches of ``batch_size``."""
    if batch_size is None:
        return rank_samples
    return rank_samples // batch_size if drop_last else -(-rank_samples // batch_size)


def window_shuffle(rank_samples: int, seed: int, epoch: int, rank: int, buffer: int) -> np.ndarray:
    """The rank sequence as a permutation of the rank's positions (identity without a window)."""
    if buffer <= 1 or rank_samples <= 1:
        return np.arange(rank_samples, dtype=np.int64)
    rng = np.random.default_rng([seed, epoch, _WINDOW, rank])
    keys = np.arange(rank_samples, dtype=np.float64) + rng.random(rank_samples) * buffer
    return np.argsort(keys, kind="stable")


def worker_outputs(start: int, end: int, chunk: int, worker: int, workers: int) -> np.ndarray:
    """Positions in the rank sequence worker ``worker`` of ``workers`` produces, from ``start`` to ``end``."""
    positions = np.arange(start, end, dtype=np.int64)
    return positions[((positions - start) // chunk) % workers == worker]


def batch_bounds(outputs: np.ndarray, batch_size: int | None) -> list[tuple[int, int]]:
    """Where a worker's items start and end in ``outputs``: one sample each, or batches.

    With ``batch_size``, each run of consecutive positions (one of the worker's chunks,
    or several adjacent ones when it is the only worker) is cut into batches of
    ``batch_size``, the last of a run possibly short.
    """
    n = len(outputs)
    if batch_size is None:
        return [(k, k + 1) for k in range(n)]
    if n == 0:
        return []
    cuts = (np.flatnonzero(np.diff(outputs) != 1) + 1).tolist()
    bounds = []
    for a, b in zip([0, *cuts], [*cuts, n]):
        bounds += [(c, min(b, c + batch_size)) for c in range(a, b, batch_size)]
    return bounds


def locate(counts: np.ndarray, order: np.ndarray, rank: int, rank_samples: int, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shard, sample within the shard) of rank positions ``inputs``, shards taken in ``order``."""
    n = int(counts.sum())
    if n == 0:
        return inputs, inputs
    ordered = counts[order]
    ends = np.cumsum(ordered)
    g = (rank * rank_samples + inputs) % n  # position in the epoch's global sequence
    k = np.searchsorted(ends, g, side="right")
    return order[k], g - (ends[k] - ordered[k])


@dataclass(frozen=True)
class WorkerPlan:
    """What one worker produces in one epoch: ``outputs`` (rank-sequence positions, in order),
    the rank positions they read (``inputs``), and where those live (``shards``, ``withins``)."""

    outputs: np.ndarray
    inputs: np.ndarray
    shards: np.ndarray
    withins: np.ndarray


def worker_plan(counts: np.ndarray, *, seed: int, epoch: int, rank: int, world: int, worker: int, workers: int,
                shuffle: bool, buffer: int, drop_last: bool, chunk: int, batch_size: int | None, start: int = 0,
                skip: int = 0) -> WorkerPlan:
    """The whole plan of one worker (see the module docstring).

    ``start``: samples of the rank sequence already delivered when the pass began (a
    resume point; the chunks are cut from there). ``skip``: samples of *this worker's*
    share already delivered (a per-worker resume point, as a stateful DataLoader keeps
    it); the worker's plan continues after them.
    """
    n = int(counts.sum())
    rank_samples = per_rank(n, world, drop_last)
    end = samples_out(rank_samples, batch_size, drop_last)
    outputs = worker_outputs(min(start, end), end, chunk, worker, workers)[skip:]
    inputs = window_shuffle(rank_samples, seed, epoch, rank, buffer if shuffle else 0)[outputs]
    shards, withins = locate(counts, shard_order(len(counts), seed, epoch, shuffle), rank, rank_samples, inputs)
    return WorkerPlan(outputs, inputs, shards, withins)
