"""Small helpers shared by the tests (imported as ``helpers``; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, SubsetRandomSampler

from shardwriter import pack
from shardwriter.sources import NpzSource


def make_npz(path: Path, n: int = 200, shape: tuple[int, ...] = (1, 28, 28), classes: int = 10, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    y = rng.integers(0, classes, n).astype(np.int64)
    np.savez(path, x=x, y=y)
    return path


def tagged(n: int, seed: int, shape: tuple[int, ...] = (3, 8, 8)) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs whose first two bytes spell the sample number (so a batch tells who it holds)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    x.reshape(n, -1)[:, 0] = np.arange(n) // 256
    x.reshape(n, -1)[:, 1] = np.arange(n) % 256
    return x, rng.integers(0, 5, n).astype(np.int64)


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative name -> bytes), for byte-identity checks."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def get_data_loaders(train_ds, test_ds, batch_size, workers, validation_split=0.1, rank=None, world=None, collate_fn=None):
    """The distiller get_data_loaders flow, as the contract document describes it."""
    assert isinstance(test_ds[0][0], torch.Tensor)
    test_ds[0][0].unsqueeze(0)
    kw = {"batch_size": batch_size, "num_workers": workers, "pin_memory": workers == 0 and torch.cuda.is_available(), "collate_fn": collate_fn}
    test_loader = DataLoader(test_ds, sampler=SubsetRandomSampler(list(range(len(test_ds)))), **kw)
    indices = list(range(len(train_ds)))
    if hasattr(train_ds, "valid_indices"):
        valid = list(train_ds.valid_indices)
        train = [i for i in indices if i not in set(valid)]
    else:
        np.random.shuffle(indices)
        split = int(np.floor(validation_split * len(train_ds)))
        valid, train = indices[:split], indices[split:]
    if world is None:
        train_sampler = SubsetRandomSampler(train)
        train_loader = DataLoader(train_ds, sampler=train_sampler, **kw)
    else:
        subset = torch.utils.data.Subset(train_ds, train)
        train_loader = DataLoader(subset, sampler=DistributedSampler(subset, num_replicas=world, rank=rank, shuffle=True), **kw)
    valid_loader = DataLoader(train_ds, sampler=SubsetRandomSampler(valid), **kw)
    return train_loader, valid_loader, test_loader


# --------------------------------------------------------------------------- streaming datasets


def make_dataset(directory: Path, n: int, *, shape=(1, 4, 4), max_count: int = 5, target: str = "class", seed: int = 0) -> Path:
    """Pack ``n`` samples whose input carries its own number in pixels [0,0,0] and [0,0,1].

    Class targets are ``number % 7``; masks are random ``H x W`` uint8; regression
    targets are ``[number / 2, -number]`` float32.
    """
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
    if target == "mask":
        y = rng.integers(0, 3, (n, *shape[1:]), dtype=np.uint8)
    elif target == "regression":
        y = np.stack([np.arange(n) / 2, -np.arange(n)], axis=1).astype(np.float32)
    else:
        y = (np.arange(n) % 7).astype(np.int64)
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / "src.npz", x=x, y=y)
    out = directory / "ds"
    npz = NpzSource(directory / "src.npz", test_fraction=0.0, layout="chw", target=target)
    pack(npz, out, max_count=max_count, shuffle=False, quiet=True)
    return out


def numbers(x: torch.Tensor) -> list[int]:
    """Sample numbers carried by a sample or a batch, float (normalized) or uint8."""
    if x.dtype == torch.float32:
        x = (x * 128 + 128).round()
    x = x.to(torch.int64)
    if x.ndim == 3:
        x = x[None]
    return (x[:, 0, 0, 0] + 256 * x[:, 0, 0, 1]).tolist()


def batches(items) -> list[list[int]]:
    """The sample numbers of each item (sample or batch) an iterable yields, checking targets."""
    out = []
    for x, y in items:
        ns = numbers(x)
        assert y.dtype == torch.int64 and y.reshape(-1).tolist() == [n % 7 for n in ns]  # target travels with input
        out.append(ns)
    return out


def flat(bs: list[list[int]]) -> list[int]:
    return [n for b in bs for n in b]


def drain(loader: Iterable) -> Iterator:
    """Iterate a DataLoader; however the loop ends, stop its workers and queue threads first.

    An iterator that raised (a worker's error re-raised) stays alive in the traceback, and
    with it its worker processes and this process's queue feeder threads, so the next
    DataLoader would fork a multi-threaded process (tests/conftest.py fails that).
    """
    before = set(threading.enumerate())
    it = iter(loader)
    try:
        yield from it
    finally:
        stop = getattr(it, "_shutdown_workers", None)
        if stop is not None:
            stop()
        for t in set(threading.enumerate()) - before:  # this loader's only: a failed test's may live on in its report
            if t.name == "QueueFeederThread":
                t.join(timeout=10)
