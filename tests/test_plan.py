"""loaders.plan on its own: pure functions, no files, no processes."""

from __future__ import annotations

import numpy as np
import pytest

from loaders import plan


def global_sequence(counts: np.ndarray, order: np.ndarray) -> list[tuple[int, int]]:
    """(shard, within) of every sample, shard after shard in ``order``."""
    return [(int(s), w) for s in order for w in range(int(counts[s]))]


def test_shard_order_is_a_seeded_permutation_per_epoch():
    a = plan.shard_order(20, seed=3, epoch=0, shuffle=True)
    assert sorted(a.tolist()) == list(range(20))
    assert np.array_equal(a, plan.shard_order(20, seed=3, epoch=0, shuffle=True))
    assert not np.array_equal(a, plan.shard_order(20, seed=3, epoch=1, shuffle=True))
    assert not np.array_equal(a, plan.shard_order(20, seed=4, epoch=0, shuffle=True))
    assert plan.shard_order(20, seed=3, epoch=5, shuffle=False).tolist() == list(range(20))


@pytest.mark.parametrize("n, world", [(48, 2), (37, 2), (37, 3), (5, 8), (0, 2)])
def test_rank_ranges_and_remainder_policy(n, world):
    pad, cut = plan.per_rank(n, world, False), plan.per_rank(n, world, True)
    assert pad == -(-n // world) and cut == n // world
    counts = np.array([n], dtype=np.int64)
    seq = global_sequence(counts, np.arange(1))
    for drop_last, per in ((False, pad), (True, cut)):
        seen = []
        for r in range(world):
            inputs = np.arange(per, dtype=np.int64)
            shards, withins = plan.locate(counts, np.arange(1), r, per, inputs)
            seen += list(zip(shards.tolist(), withins.tolist()))
        assert len(seen) == per * world  # every rank yields exactly the same number
        if drop_last:
            assert len(set(seen)) == len(seen) and n - len(seen) < world  # at most world-1 left out, none repeated
        elif n:
            assert set(seen) == set(seq) and len(seen) - n < world  # every sample, at most world-1 repeats
            assert seen[n:] == seq[: len(seen) - n]  # the repeats are the first samples of the epoch


def test_samples_out_and_items_per_epoch():
    assert plan.samples_out(19, 4, drop_last=True) == 16 and plan.samples_out(19, 4, drop_last=False) == 19
    assert plan.samples_out(19, None, drop_last=True) == 19
    assert plan.items_per_epoch(19, 4, False) == 5 and plan.items_per_epoch(19, 4, True) == 4
    assert plan.items_per_epoch(19, None, True) == 19


def test_window_shuffle_moves_no_sample_further_than_the_buffer():
    perm = plan.window_shuffle(1000, seed=1, epoch=2, rank=0, buffer=16)
    assert sorted(perm.tolist()) == list(range(1000))
    assert np.array_equal(perm, plan.window_shuffle(1000, seed=1, epoch=2, rank=0, buffer=16))
    assert not np.array_equal(perm, plan.window_shuffle(1000, seed=1, epoch=2, rank=1, buffer=16))
    assert np.abs(perm - np.arange(1000)).max() <= 16
    # Reading forward, a reader holds at most `buffer` samples that are read but not yet yielded.
    read_upto, held_max = -1, 0
    for k, j in enumerate(perm.tolist()):
        read_upto = max(read_upto, j)
        held_max = max(held_max, read_upto + 1 - (k + 1))
    assert held_max <= 16
    assert plan.window_shuffle(7, 1, 2, 0, buffer=1).tolist() == list(range(7))


@pytest.mark.parametrize("workers, chunk", [(1, 1), (2, 4), (3, 4), (4, 1)])
def test_worker_chunks_deal_the_rank_sequence_round_robin(workers, chunk):
    start, end = 6, 45
    shares = [plan.worker_outputs(start, end, chunk, w, workers) for w in range(workers)]
    assert sorted(np.concatenate(shares).tolist()) == list(range(start, end))
    # A DataLoader takes one item (chunk) from each worker in turn: the rank sequence, in order.
    heads = [0] * workers
    merged = []
    w = 0
    while len(merged) < end - start:
        take = shares[w][heads[w] : heads[w] + chunk]
        merged += take.tolist()
        heads[w] += len(take)
        w = (w + 1) % workers
    assert merged == list(range(start, end))
    for s in shares:  # every chunk starts `chunk`-aligned from the resume point
        assert all((int(p) - start) % chunk == 0 for p, prev in zip(s[1:], s[:-1]) if p != prev + 1)


def test_batch_bounds_cut_each_chunk_into_batches():
    outputs = plan.worker_outputs(0, 22, 4, 1, 2)  # chunks 4..7, 12..15, 20..21
    assert plan.batch_bounds(outputs, 4) == [(0, 4), (4, 8), (8, 10)]
    alone = plan.worker_outputs(3, 14, 4, 0, 1)  # one worker: one run, batches of 4 from the resume point
    assert plan.batch_bounds(alone, 4) == [(0, 4), (4, 8), (8, 11)]
    assert plan.batch_bounds(alone, None)[:2] == [(0, 1), (1, 2)] and plan.batch_bounds(alone[:0], 4) == []


def _plan(workers: int, worker: int, **kw):
    counts = np.array([5, 5, 5, 5, 3], dtype=np.int64)
    args = {"seed": 2, "epoch": 1, "rank": 0, "world": 1, "shuffle": True, "buffer": 6, "drop_last": False,
            "chunk": 4, "batch_size": 4, **kw}
    return plan.worker_plan(counts, worker=worker, workers=workers, **args)


def test_worker_plan_resume_start_and_skip():
    whole = _plan(1, 0)
    assert whole.outputs.tolist() == list(range(23))
    # From a resume point: the same rank positions from `start` on, for any worker count.
    for workers in (1, 2, 3):
        parts = [_plan(workers, w, start=8) for w in range(workers)]
        got = sorted(zip(np.concatenate([p.outputs for p in parts]).tolist(), np.concatenate([p.inputs for p in parts]).tolist()))
        assert got == list(zip(range(8, 23), whole.inputs[8:].tolist()))
    # A worker's own resume point: its share after the samples it already delivered.
    full = _plan(2, 1)
    after = _plan(2, 1, skip=4)
    assert after.outputs.tolist() == full.outputs[4:].tolist() and after.inputs.tolist() == full.inputs[4:].tolist()
    assert after.shards.tolist() == full.shards[4:].tolist() and after.withins.tolist() == full.withins[4:].tolist()
    # Where each input lives: the shard order of the epoch, each shard in file order.
    counts = np.array([5, 5, 5, 5, 3], dtype=np.int64)
    seq = global_sequence(counts, plan.shard_order(5, 2, 1, True))
    assert list(zip(whole.shards.tolist(), whole.withins.tolist())) == [seq[j] for j in whole.inputs.tolist()]
