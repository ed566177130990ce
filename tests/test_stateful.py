"""Resume through the loader: torchdata's StatefulDataLoader (a real worker pool) with StreamingShardDataset."""

from __future__ import annotations

import copy
import pickle

import pytest
from helpers import batches, flat, make_dataset

from loaders.streaming import StreamingShardDataset

stateful = pytest.importorskip("torchdata.stateful_dataloader", reason="torchdata (StatefulDataLoader) is not installed")
StatefulDataLoader = stateful.StatefulDataLoader
pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("stateful"), 46)


def make(data, workers: int, batching: str, persistent: bool = False):
    if batching == "dataset":
        ds = StreamingShardDataset(data, seed=4, shuffle_buffer=9, batch_size=4)
        kw = {"batch_size": None}
    else:  # per-sample items, batched by the loader
        ds = StreamingShardDataset(data, seed=4, shuffle_buffer=9, loader_batch_size=4)
        kw = {"batch_size": 4}
    return ds, StatefulDataLoader(ds, num_workers=workers, persistent_workers=persistent and workers > 0, **kw)


@pytest.mark.parametrize("workers, batching, k", [(0, "dataset", 3), (2, "dataset", 3), (2, "dataset", 0), (2, "loader", 5),
                                                   (0, "loader", 2)])
def test_resume_after_k_batches_yields_exactly_the_remaining_samples(data, workers, batching, k, caplog):
    ds, loader = make(data, workers, batching)
    ds.set_epoch(6)
    it = iter(loader)
    first = batches(next(it) for _ in range(k))
    state = pickle.loads(pickle.dumps(loader.state_dict()))  # a checkpoint: plain data
    rest = batches(it)  # the same pass, uninterrupted
    assert sorted(flat(first + rest)) == list(range(46))

    ds2, loader2 = make(data, workers, batching)  # a new process would build these
    loader2.load_state_dict(copy.deepcopy(state))
    resumed = batches(loader2)
    assert resumed == rest  # exactly the remaining samples, in the same batches and order
    assert "fast-forwarding" not in caplog.text  # from the dataset's state, not by replaying batches
    # The pass after the resumed one plays the next epoch, whole, with no set_epoch.
    ref = StreamingShardDataset(data, seed=4, shuffle_buffer=9, batch_size=4)
    ref.set_epoch(7)
    assert flat(batches(loader2)) == flat(batches(ref))


def test_resume_with_persistent_workers_and_a_state_taken_in_the_second_epoch(data):
    ds, loader = make(data, 2, "dataset", persistent=True)
    whole = flat(batches(loader))  # epoch 0, no set_epoch
    it = iter(loader)  # epoch 1
    first = batches(next(it) for _ in range(4))
    state = loader.state_dict()
    rest = batches(it)
    assert sorted(flat(first + rest)) == list(range(46)) and flat(first + rest) != whole
    ds2, loader2 = make(data, 2, "dataset", persistent=True)
    loader2.load_state_dict(state)
    assert batches(loader2) == rest
    assert ds2.epoch == 2  # the main process counts on from the resumed pass


def test_worker_states_are_per_worker_and_refused_elsewhere(data):
    ds, loader = make(data, 2, "dataset")
    it = iter(loader)
    next(it)
    next(it)
    state = loader.state_dict()
    shares = [s["dataset_state"] for s in state["_snapshot"]["_worker_snapshots"].values()]
    assert [(s["worker"], s["workers"], s["yielded"]) for s in shares] == [(0, 2, 4), (1, 2, 4)]
    with pytest.raises(ValueError, match="worker 0's share of 2 workers"):
        StreamingShardDataset(data, seed=4, shuffle_buffer=9, batch_size=4).load_state_dict(shares[0])
    with pytest.raises(ValueError, match="consumed="):  # a plain DataLoader's workers: the main process cannot count
        ds.state_dict()
    assert ds.state_dict(8)["consumed"] == 8
    del it
