"""ai8x-shards loaders: read shard datasets as PyTorch datasets, bit-exact with ai8x.

:class:`ShardDataset` is map-style (what train.py needs; hand DataLoaders
:func:`collate`); :class:`StreamingShardDataset` is an IterableDataset for custom loops
and data larger than RAM. :mod:`loaders.transforms` holds the pure normalize/fold
functions both use, :mod:`loaders.wds` the decoder for stock webdataset pipelines,
:mod:`loaders.ai8x` and :mod:`loaders.install` the ai8x-training glue, and
:mod:`loaders.preview` the preview grid.
"""

from .batch import collate
from .index import UnhashedDatasetWarning
from .mapstyle import ShardDataset
from .streaming import StreamingShardDataset, normalize_batch
from .transforms import fold, normalize, prepare_image, unfold

__all__ = [
    "ShardDataset",
    "StreamingShardDataset",
    "UnhashedDatasetWarning",
    "collate",
    "fold",
    "normalize",
    "normalize_batch",
    "prepare_image",
    "unfold",
]
