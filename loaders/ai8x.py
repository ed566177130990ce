"""ai8x-training glue: ``datasets`` entries and loader functions for train.py.

train.py imports every module in its ``datasets/`` folder and concatenates their
``datasets`` lists; a module that raises at import kills every run. This module is
therefore light at import (no file access) and does its work inside the loader
functions. ``ai8x-shards install-ai8x`` writes a small shim into an ai8x-training
checkout that imports from here (see :mod:`loaders.install`).

Entries: ``AISegment_80_shards`` and ``AISegment_352_shards`` read
``<data_dir>/AISegment_80`` and ``<data_dir>/AISegment_352`` (``data_dir`` is train.py's
``--data``). :func:`entry` builds an entry for any shard dataset folder from its manifest.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset

from .mapstyle import ShardDataset, collate

Loader = Callable[..., tuple[Dataset | None, Dataset | None]]


def join_location(data_dir: str, sub: str) -> str:
    """``data_dir/sub`` for folders and URLs alike; an absolute ``sub`` or URL wins."""
    if "://" in sub or os.path.isabs(sub):
        return sub
    if "://" in data_dir:
        return data_dir.rstrip("/") + "/" + sub
    return os.path.join(data_dir, sub)


def make_loader(sub: str, augment: Any = None) -> Loader:
    """A train.py loader ``f((data_dir, args), load_train=True, load_test=True)`` for ``data_dir/sub``.

    Honours ``args.act_mode_8bit`` (read at call time) and ``args.truncate_testset``;
    returns ``None`` for a split not asked for. When the dataset has a ``val`` split, the
    train dataset carries it as ``valid_indices`` and train.py validates on it.
    ``augment`` (anything :mod:`loaders.augment` accepts, e.g. ``"module:name"``, imported
    when the loader is called, from train.py's folder) augments the train split on the fly;
    the test split and the held-out ``valid_indices`` are served as packed.
    """

    def loader(data: tuple[str, Any], load_train: bool = True, load_test: bool = True) -> tuple[Dataset | None, Dataset | None]:
        data_dir, args = data
        location = join_location(str(data_dir), sub)
        train = ShardDataset(location, "train", act_mode_8bit=args, use_val_split=True, augment=augment) if load_train else None
        test = None
        if load_test:
            test = ShardDataset(location, "test", act_mode_8bit=args, truncate=bool(getattr(args, "truncate_testset", False)))
        return train, test

    loader.__name__ = f"shards_{sub.replace('/', '_').replace(':', '_')}_get_datasets"
    loader.__doc__ = f"Load the shard dataset at <data_dir>/{sub} (ai8x-shards)."
    return loader


def entry(location: str, name: str | None = None, *, sub: str | None = None, weight: bool = True) -> dict[str, Any]:
    """A train.py ``datasets`` entry for the shard dataset at ``location``.

    ``name`` defaults to the manifest's name; ``input``, ``output``, ``weight`` (the
    train split's inverse-frequency weights, if ``weight``) and ``regression`` come from
    the manifest. The loader reads ``sub`` relative to ``--data`` (default: ``location``
    itself, absolute).
    """
    from shardwriter.storage import open_store

    m = open_store(location).read_manifest()
    d: dict[str, Any] = {
        "name": name or m.name,
        "input": tuple(m.input_shape),
        "output": tuple(m.classes),
        "loader": make_loader(sub if sub is not None else location if "://" in location else os.path.abspath(location)),
        "collate": collate,
    }
    train = m.splits.get("train")
    weights = train.class_weights if train is not None else None
    if weight and weights and not m.regression:
        d["weight"] = tuple(weights)
    if m.regression:
        d["regression"] = True
    if m.fold_ratio != 1:
        d["fold_ratio"] = m.fold_ratio
    return d


datasets: list[dict[str, Any]] = [
    {
        "name": "AISegment_80_shards",
        "input": (3, 80, 80),
        "output": (0, 1),
        "loader": make_loader("AISegment_80"),
        "collate": collate,
    },
    {
        "name": "AISegment_352_shards",
        "input": (48, 88, 88),
        "output": (0, 1),
        "fold_ratio": 4,
        "loader": make_loader("AISegment_352"),
        "collate": collate,
    },
]
