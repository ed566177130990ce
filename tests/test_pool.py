"""loaders.pool: large output buffers are recycled, never while anything can still read them."""

from __future__ import annotations

import gc

import numpy as np
import torch

from loaders import pool
from loaders.transforms import normalize, reference_normalize

BIG = (pool.MIN_BYTES // 4 + 1024,)  # float32 elements: just over the pooling threshold


def _ptr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def test_a_buffer_is_reused_only_after_every_reference_is_gone():
    pool._free.clear()
    a = pool.empty(BIG, np.float32)
    addr_a = _ptr(a)
    a[:] = 1.0
    t = torch.from_numpy(a)
    v = t[10:20]  # a view of the tensor keeps the memory alive too
    del a, t
    gc.collect()
    b = pool.empty(BIG, np.float32)
    addr_b = _ptr(b)
    assert addr_b != addr_a  # a's memory is still readable through v: never handed out again
    del b
    gc.collect()
    c = pool.empty(BIG, np.float32)
    assert _ptr(c) == addr_b  # b's buffer came back and is reused
    c[:] = 2.0
    assert torch.all(v == 1.0)  # v still sees a's values
    del v, c
    gc.collect()
    d, e = pool.empty(BIG, np.float32), pool.empty(BIG, np.float32)
    assert {_ptr(d), _ptr(e)} == {addr_a, addr_b}  # both free again, both reused


def test_recycled_outputs_hold_exactly_the_new_values():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (pool.MIN_BYTES // 4 + 5000,), dtype=np.uint8)
    seen = set()
    for act in (False, True, False, True):
        out = normalize(x, act)
        seen.add(out.data_ptr())
        assert torch.equal(out, reference_normalize(torch.from_numpy(x), act))
        del out
        gc.collect()
    assert len(seen) < 4  # buffers came back and were reused


def test_small_arrays_are_not_pooled():
    a = pool.empty((100,), np.float32)
    assert a.base is None  # a plain numpy array, no finalizer
