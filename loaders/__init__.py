"""ai8x-shards loaders: read shard datasets as PyTorch datasets, bit-exact with ai8x.

:class:`ShardDataset` is map-style (what train.py needs); :class:`StreamingShardDataset`
is an IterableDataset for custom loops and data larger than RAM. :mod:`loaders.transforms`
holds the pure normalize/fold functions both use.
"""

from .mapstyle import ShardDataset
from .streaming import StreamingShardDataset, normalize_batch
from .transforms import fold, normalize, unfold

__all__ = ["ShardDataset", "StreamingShardDataset", "fold", "normalize", "normalize_batch", "unfold"]
