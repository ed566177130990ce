"""Streaming epochs that follow the user: set_epoch, automatic advance, persistent workers, fork and spawn."""

from __future__ import annotations

import pickle

import pytest
from helpers import batches, flat, make_dataset
from torch.utils.data import DataLoader

from loaders.epochs import EpochClock
from loaders.streaming import StreamingShardDataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """42 samples in shards of 5: 11 batches of 4 per epoch, the last short."""
    return make_dataset(tmp_path_factory.mktemp("epochs"), 42)


def dataset(data, **kw) -> StreamingShardDataset:
    return StreamingShardDataset(data, seed=11, shuffle_buffer=8, batch_size=4, **kw)


def reference(data, epoch: int) -> list[int]:
    """The epoch's order as one process reads it, from a fresh dataset told the epoch."""
    ds = dataset(data)
    ds.set_epoch(epoch)
    return flat(batches(ds))


def epochs(loader, ds, n: int, set_epoch: bool, start: int = 0) -> list[list[int]]:
    out = []
    for e in range(start, start + n):
        if set_epoch:
            ds.set_epoch(e)
        out.append(flat(batches(loader)))
    return out


def test_per_epoch_orders_equal_for_persistent_and_per_epoch_workers_and_differ_between_epochs(data):
    want = [reference(data, e) for e in range(3)]
    assert all(sorted(w) == list(range(42)) for w in want)
    assert want[0] != want[1] != want[2] != want[0]
    for persistent in (False, True):
        ds = dataset(data)
        loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=persistent)
        assert epochs(loader, ds, 3, set_epoch=True) == want, persistent
        assert ds.epoch == 3  # the main process sees the passes the workers played


def test_without_set_epoch_each_new_pass_advances_and_set_epoch_wins(data):
    want = [reference(data, e) for e in range(6)]
    ds = dataset(data)
    assert [flat(batches(ds)) for _ in range(2)] == want[:2]  # in the main process
    for persistent in (False, True):
        ds = dataset(data)
        loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=persistent)
        assert epochs(loader, ds, 3, set_epoch=False) == want[:3], persistent
        ds.set_epoch(1)  # wins, also in live persistent workers; the passes after it count on from it
        assert epochs(loader, ds, 2, set_epoch=False) == want[1:3], persistent
        ds.set_epoch(5)
        assert ds.epoch == 5 and flat(batches(loader)) == want[5]
        # A peek in the main process is a pass of its own kind; the workers' count is untouched.
        next(iter(ds))
        assert flat(batches(loader)) == reference(data, 7)


def test_passes_of_loaders_with_other_worker_counts_count_too(data):
    ds = dataset(data)
    two = DataLoader(ds, batch_size=None, num_workers=2)
    three = DataLoader(ds, batch_size=None, num_workers=3, persistent_workers=True)
    got = [flat(batches(two)), flat(batches(ds)), flat(batches(three)), flat(batches(two)), flat(batches(three))]
    assert got == [reference(data, e) for e in range(5)]


def test_persistent_spawned_workers_follow_set_epoch(data):
    want = [reference(data, e) for e in (4, 9)]
    ds = dataset(data)
    loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True, multiprocessing_context="spawn")
    ds.set_epoch(4)
    assert flat(batches(loader)) == want[0]
    assert flat(batches(loader)) == reference(data, 5)  # automatic advance in the spawned workers
    ds.set_epoch(9)
    assert flat(batches(loader)) == want[1]


def test_the_epoch_table_pickles_small_and_copies_count_on_their_own(data):
    ds = dataset(data)
    ds.set_epoch(3)
    blob = pickle.dumps(ds._clock)
    assert len(blob) < 20_000
    copy = pickle.loads(pickle.dumps(ds))  # a plain pickle copies the table: its own shared memory
    assert copy.epoch == 3 and copy._clock._table.is_shared()
    list(copy)
    assert copy.epoch == 4 and ds.epoch == 3
    with pytest.raises(ValueError, match="at most 64 DataLoader workers"):
        EpochClock().begin(0, 65)
    with pytest.raises(ValueError, match="non-negative"):
        ds.set_epoch(-1)


def test_resume_point_serves_one_pass_then_the_next_epoch_follows(data):
    ds = dataset(data)
    full = reference(data, 2)
    ds.load_state_dict({"epoch": 2, "consumed": 12})
    assert ds.epoch == 2 and ds.state_dict()["consumed"] == 12  # before the pass: the pending point
    loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    assert flat(batches(loader)) == full[12:]
    assert flat(batches(loader)) == reference(data, 3)  # the pass after a resumed one: the next epoch, whole
    ds.load_state_dict({"epoch": 2, "consumed": 12})
    ds.set_epoch(4)  # another epoch: the resume point is forgotten
    assert flat(batches(loader)) == reference(data, 4)
