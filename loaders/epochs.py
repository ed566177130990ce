"""Which epoch a streaming pass plays: one small shared-memory table per dataset.

A :class:`~loaders.streaming.StreamingShardDataset` is copied into every DataLoader
worker (forked or spawned every epoch, or once with ``persistent_workers=True``), and a
worker calls ``__iter__`` on its copy once per pass. For ``set_epoch`` to reach
persistent workers, and for passes to be counted when each pass runs in fresh copies,
the dataset keeps an :class:`EpochClock`: a few hundred int64 in shared memory, created in
the main process, that every copy reads and writes (the same memory under fork and spawn;
pickled for spawn it travels as a file descriptor, so pickling stays cheap).

The rule, with no communication between processes or ranks:

- **Passes are counted per worker slot.** A pass run by a DataLoader with ``W`` workers
  is begun once in each of the slots ``(W, 0) .. (W, W-1)``; a pass in the main process
  (``num_workers=0``, or a plain ``for x in dataset``) in the main slot. Each slot is
  written only by the one process that holds it at a time, so no lock is needed.
- **The pass number** ``n`` a worker begins is the passes already begun by every other
  kind of loader (the count of slot 0 of each other worker count, and of the main slot)
  plus its own slot's count. Passes of other loaders are finished (a DataLoader begins
  the next pass's workers only after the last pass's), and every worker of one pass has
  begun the same passes of its own kind, so all the workers of a pass find the same
  ``n`` whatever order they start in, and so does every rank that runs the same loop.
- **The epoch** of pass ``n`` is ``base + n``. :meth:`EpochClock.set_epoch` sets
  ``base = epoch - passes so far``, so the next pass plays ``epoch`` and each pass
  after it the next epoch, until ``set_epoch`` is called again.
- **A resume point** loaded in the main process is tied to the pass number it applies
  to (the next one), so it is used by exactly one pass. The pass that begins records
  its epoch and starting point (``current``), for ``state_dict(consumed)``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from shardwriter.errors import SettingsError

__all__ = ["MAX_WORKERS", "EpochClock", "Resume"]

#: DataLoader workers a streaming dataset can be read with (the table has a slot for each).
MAX_WORKERS = 64

_BASE, _RESUME_AT, _RESUME_EPOCH, _RESUME_START, _CUR_PASS, _CUR_EPOCH, _CUR_START, _CUR_WORKERS, _MARKER = range(9)
_SLOTS = 9
_LEADS = np.array([_SLOTS] + [_SLOTS + 1 + w * (w - 1) // 2 for w in range(1, MAX_WORKERS + 1)], dtype=np.int64)
_SIZE = _SLOTS + 1 + MAX_WORKERS * (MAX_WORKERS + 1) // 2


def _slot(worker: int, workers: int) -> int:
    return int(_LEADS[workers]) + (worker if workers else 0)


@dataclass(frozen=True)
class Resume:
    """Where a pass starts: ``epoch``; ``start`` samples of the rank sequence already
    delivered when the pass began; ``skip`` samples of one worker's own share delivered
    since (a per-worker resume point, with the ``worker`` and ``workers`` it belongs to)."""

    epoch: int
    start: int = 0
    skip: int = 0
    worker: int | None = None
    workers: int | None = None


class EpochClock:
    """The shared table (see the module docstring). Create it in the main process."""

    def __init__(self) -> None:
        table = torch.zeros(_SIZE, dtype=torch.int64)
        table[_RESUME_AT] = table[_CUR_PASS] = -1
        try:
            table.share_memory_()
        except RuntimeError as exc:  # no usable /dev/shm: still right in one process
            warnings.warn(f"no shared memory for the epoch table ({exc}); with DataLoader workers, call set_epoch "
                          "before every epoch and do not use persistent_workers", RuntimeWarning, stacklevel=3)
        self._table = table
        self._t = table.numpy()

    # pickling: for a DataLoader worker (ForkingPickler) the tensor travels as shared memory;
    # a plain pickle copies it, and the copy gets shared memory of its own.
    def __getstate__(self) -> dict[str, torch.Tensor]:
        return {"table": self._table}

    def __setstate__(self, state: dict[str, torch.Tensor]) -> None:
        table = state["table"]
        if not table.is_shared():
            try:
                table.share_memory_()
            except RuntimeError:
                pass
        self._table = table
        self._t = table.numpy()

    # ------------------------------------------------------------------ reading

    def passes(self) -> int:
        """Passes begun so far, all kinds of loader together (the main process's view)."""
        return int(self._t[_LEADS].sum())

    def _passes_before(self, worker: int, workers: int) -> int:
        # One read of the lead slots: the other workers of this pass are incrementing theirs right now
        # (worker 0's slot is a lead), so every value is read once and this kind's lead left out by position.
        leads = self._t[_LEADS].copy()
        own = int(leads[workers]) if worker == 0 else int(self._t[_slot(worker, workers)])
        return int(leads.sum() - leads[workers]) + own

    def next_epoch(self) -> int:
        """The epoch the next pass plays (a pending resume point's epoch, if one applies)."""
        n = self.passes()
        t = self._t
        return int(t[_RESUME_EPOCH]) if t[_RESUME_AT] == n else int(t[_BASE]) + n

    def pending(self) -> Resume | None:
        """The resume point the next pass will use, if any."""
        t = self._t
        if t[_RESUME_AT] >= 0 and t[_RESUME_AT] == self.passes():
            return Resume(int(t[_RESUME_EPOCH]), int(t[_RESUME_START]))
        return None

    def current(self) -> tuple[int, int, int] | None:
        """``(epoch, start, workers)`` of the last pass begun, if one began since the last
        ``set_epoch``/``resume`` (else None: the next pass is the current one)."""
        t = self._t
        if t[_CUR_PASS] < 0 or t[_CUR_PASS] < t[_MARKER]:
            return None
        return int(t[_CUR_EPOCH]), int(t[_CUR_START]), int(t[_CUR_WORKERS])

    # ------------------------------------------------------------------ writing

    def set_epoch(self, epoch: int) -> None:
        """The next pass plays ``epoch``; a pending resume point of another epoch is dropped."""
        t = self._t
        n = self.passes()
        t[_BASE] = epoch - n
        if t[_RESUME_AT] == n and t[_RESUME_EPOCH] != epoch:
            t[_RESUME_AT] = -1
        t[_MARKER] = n

    def resume(self, epoch: int, start: int) -> None:
        """The next pass plays ``epoch`` from sample ``start`` of the rank sequence."""
        t = self._t
        n = self.passes()
        t[_BASE] = epoch - n
        t[_RESUME_EPOCH], t[_RESUME_START], t[_RESUME_AT] = epoch, start, n
        t[_MARKER] = n

    def begin(self, worker: int, workers: int, local: Resume | None = None) -> Resume:
        """Begin a pass in this process (``workers=0``: the main process); its epoch and resume point.

        ``local``: a resume point loaded into this copy of the dataset (a DataLoader
        worker's own state, from a stateful DataLoader); it wins over the shared one.
        """
        if not 0 <= workers <= MAX_WORKERS:
            raise SettingsError(f"a streaming dataset reads with at most {MAX_WORKERS} DataLoader workers, not {workers}")
        t = self._t
        n = self._passes_before(worker, workers)
        if local is not None:
            how = local
        elif t[_RESUME_AT] >= 0 and t[_RESUME_AT] == n:
            how = Resume(int(t[_RESUME_EPOCH]), int(t[_RESUME_START]))
        else:
            how = Resume(int(t[_BASE]) + n)
        if local is not None:
            t[_BASE] = how.epoch - n  # the same value from every worker of the pass: the next pass plays epoch + 1
        t[_CUR_EPOCH], t[_CUR_START], t[_CUR_WORKERS] = how.epoch, how.start, workers
        t[_CUR_PASS] = n
        t[_slot(worker, workers)] += 1
        return how
