"""ai8x-shards writer: packs preprocessed uint8 samples into WebDataset tar shards.

Public API: :func:`pack` (a source from :mod:`shardwriter.sources`, a ``module:function``,
a map-style dataset or an iterable of samples) and :func:`merge` (the parts of a
``part=(K, N)`` job), :class:`ShardWriter` (low level), :class:`Options` (storage and
checking settings) and the error family (:class:`ShardsError` and its subclasses,
:mod:`shardwriter.errors`). Checking and describing a dataset lives in
:mod:`shardwriter.verify` (``verify``, ``reindex``, ``info``, ``summary``). The on-disk
contract lives in :mod:`shardwriter.format` and ``docs/FORMAT.md``; storage backends in
:mod:`shardwriter.storage`. This package never imports :mod:`loaders` or torch.
"""

__version__ = "0.1.0"

from .errors import BadInput, IntegrityError, PackError, SettingsError, ShardsError, StorageError  # noqa: E402
from .format import FormatError  # noqa: E402
from .options import Options  # noqa: E402
from .pack import PackResult, merge, pack  # noqa: E402
from .writer import ShardWriter  # noqa: E402

__all__ = [
    "BadInput",
    "FormatError",
    "IntegrityError",
    "Options",
    "PackError",
    "PackResult",
    "SettingsError",
    "ShardWriter",
    "ShardsError",
    "StorageError",
    "__version__",
    "merge",
    "pack",
]
