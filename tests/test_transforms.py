"""normalize and fold/unfold against literal implementations of the reference chain."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loaders.transforms import fold, fold_torch, normalize, normalize_np, reference_normalize, unfold, unfold_torch
from shardwriter.preprocess import OffGridError, float_to_uint8


def literal_chain(p: np.ndarray, act_mode_8bit: bool) -> torch.Tensor:
    """ToTensor-style /256 then ai8x.normalize, written out as in ai8x.py."""
    x = torch.from_numpy(p.astype(np.float32) / 256)
    x = x.sub(0.5).mul(256.0).round().clamp(min=-128, max=127)
    return x if act_mode_8bit else x.div(128.0)


@pytest.mark.parametrize("act_mode_8bit", [False, True])
def test_normalize_is_bit_exact_on_all_256_values_and_random_tensors(act_mode_8bit):
    every = np.arange(256, dtype=np.uint8)
    rand = np.random.default_rng(0).integers(0, 256, (4, 48, 22, 22), dtype=np.uint8)
    for p in (every, rand):
        want = literal_chain(p, act_mode_8bit)
        for got in (normalize(p, act_mode_8bit), normalize(torch.from_numpy(p), act_mode_8bit),
                    torch.from_numpy(normalize_np(p, act_mode_8bit)), reference_normalize(torch.from_numpy(p), act_mode_8bit)):
            assert got.dtype == torch.float32
            assert torch.equal(got, want)  # bit for bit, not allclose
    assert normalize(every, True)[0] == -128 and normalize(every, True)[255] == 127
    assert normalize(every)[0] == -1 and normalize(every)[255] == 127 / 128


def test_normalize_refuses_non_uint8():
    with pytest.raises(TypeError, match="uint8"):
        normalize(np.zeros(3, np.float32))


def loop_fold(img: np.ndarray, r: int) -> np.ndarray:
    """The contract's definition: concatenate img[:, i::r, j::r] for i, then j."""
    return np.concatenate([img[:, i::r, j::r] for i in range(r) for j in range(r)], axis=0)


@pytest.mark.parametrize("r,shape", [(1, (3, 8, 8)), (2, (3, 8, 6)), (4, (3, 352, 352)), (3, (2, 9, 12)), (4, (1, 8, 16))])
def test_fold_matches_loop_definition_and_unfold_inverts_it(r, shape):
    img = np.random.default_rng(r).integers(0, 256, shape, dtype=np.uint8)
    folded = fold(img, r)
    assert folded.shape == (shape[0] * r * r, shape[1] // r, shape[2] // r)
    assert np.array_equal(folded, loop_fold(img, r))
    assert np.array_equal(unfold(folded, r), img)
    t = torch.from_numpy(img)
    assert torch.equal(fold_torch(t, r), torch.from_numpy(folded))
    batch = torch.stack([t, t.flip(0)])
    assert torch.equal(unfold_torch(fold_torch(batch, r), r), batch)
    assert torch.equal(fold_torch(batch, r)[1], torch.from_numpy(loop_fold(img[::-1].copy(), r)))


def test_fold_refuses_sizes_that_do_not_divide():
    with pytest.raises(ValueError, match="divide"):
        fold(np.zeros((3, 10, 10), np.uint8), 4)


@pytest.mark.parametrize("act_mode_8bit", [False, True])
def test_float_to_uint8_inverts_normalize_losslessly(act_mode_8bit):
    p = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    f = literal_chain(p, act_mode_8bit).numpy()
    assert np.array_equal(float_to_uint8(f), p)  # auto detects the range
    assert np.array_equal(float_to_uint8(f, "8bit" if act_mode_8bit else "unit"), p)
    with pytest.raises(OffGridError, match=r"at \(0, 0, 1\)"):
        off = f.copy()
        off[0, 0, 1] += 0.001
        float_to_uint8(off)
