"""ai8x-shards writer: packs preprocessed uint8 samples into WebDataset tar shards.

Public API: :func:`pack` (a source from :mod:`shardwriter.sources`, a ``module:function``,
a map-style dataset or an iterable of samples) and :func:`merge` (the parts of a
``part=(K, N)`` job), :class:`ShardWriter` (low level), :func:`verify` and :func:`info`. The on-disk contract
lives in :mod:`shardwriter.format` and ``docs/FORMAT.md``.
"""

__version__ = "0.1.0"

from .errors import BadInput, PackError, SettingsError, StorageError  # noqa: E402
from .format import FormatError  # noqa: E402
from .pack import PackResult, merge, pack  # noqa: E402
from .writer import ShardWriter  # noqa: E402

__all__ = ["BadInput", "FormatError", "PackError", "PackResult", "SettingsError", "ShardWriter", "StorageError", "merge", "pack",
           "__version__"]
