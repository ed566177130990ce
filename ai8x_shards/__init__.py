"""ai8x-shards: fast, bit-exact data loading for ai8x-training (MAX78000/MAX78002).

This package holds the ``ai8x-shards`` command line (:mod:`ai8x_shards.cli`), the one layer
above the two libraries: :mod:`shardwriter` (writes and checks datasets; owns the on-disk
format and storage) and :mod:`loaders` (reads them as PyTorch datasets; ai8x-training glue).
"""

from shardwriter import __version__

__all__ = ["__version__"]
