"""ai8x-shards: fast, bit-exact data loading for ai8x-training (MAX78000/MAX78002).

One import for the whole public API::

    import ai8x_shards as a8

    a8.pack(a8.NpzSource("data.npz"), "OUT")          # write (shardwriter)
    train = a8.ShardDataset("OUT", "train")            # read (loaders)
    loader = DataLoader(train, batch_size=256, collate_fn=a8.collate)

The names are looked up when first used, so ``import ai8x_shards`` stays light: the
writer side never imports torch, and the readers import it only when one of their
names is touched. Each name is the object of the package that owns it, listed in
:data:`EXPORTS`: :mod:`shardwriter` (writes and checks datasets; the on-disk format and
storage) and :mod:`loaders` (reads them as PyTorch datasets; ai8x-training glue).
This package also holds the ``ai8x-shards`` command line (:mod:`ai8x_shards.cli`), the
one layer above both, and the benchmark (``ai8x_shards.benchmarks``, the repository's
``benchmarks/`` folder).
"""

from __future__ import annotations

import importlib
from typing import Any

from shardwriter import __version__

#: Public name -> the module that defines it.
EXPORTS: dict[str, str] = {
    # writing (no torch)
    "pack": "shardwriter.pack",
    "ShardWriter": "shardwriter.writer",
    "NpzSource": "shardwriter.sources",
    "ImageFolderSource": "shardwriter.sources",
    "DatasetSource": "shardwriter.sources",
    "AISegmentSource": "shardwriter.sources",
    # checking and describing (no torch)
    "verify": "shardwriter.verify",
    "reindex": "shardwriter.verify",
    "info": "shardwriter.verify",
    "summary": "shardwriter.verify",
    "load_manifest": "shardwriter.verify",
    # settings and errors (no torch)
    "Options": "shardwriter.options",
    "ShardsError": "shardwriter.errors",
    "SettingsError": "shardwriter.errors",
    "FormatError": "shardwriter.errors",
    "IntegrityError": "shardwriter.errors",
    "PackError": "shardwriter.errors",
    "StorageError": "shardwriter.errors",
    "InstallError": "shardwriter.errors",
    # reading (torch)
    "ShardDataset": "loaders.mapstyle",
    "StreamingShardDataset": "loaders.streaming",
    "collate": "loaders.batch",
    "normalize": "loaders.transforms",
    "normalize_batch": "loaders.streaming",
    "fold": "loaders.transforms",
    "unfold": "loaders.transforms",
    "prepare_image": "loaders.transforms",
    "UnhashedDatasetWarning": "loaders.index",
    "decode_sample": "loaders.wds",
    "shard_urls": "loaders.wds",
    "preview": "loaders.preview",
    # ai8x-training glue
    "entry": "loaders.ai8x",
    "make_loader": "loaders.ai8x",
    "install_ai8x": "loaders.install",
}
_RENAMED = {"install_ai8x": "install"}

__all__ = ["EXPORTS", "__version__", *EXPORTS]


def __getattr__(name: str) -> Any:
    module = EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ai8x_shards' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _RENAMED.get(name, name))
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(EXPORTS))
