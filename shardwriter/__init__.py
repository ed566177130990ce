"""ai8x-shards writer: packs preprocessed uint8 samples into WebDataset tar shards.

Public API: :class:`ShardWriter` (low level), :func:`pack` with the sources in
:mod:`shardwriter.sources`, :func:`verify` and :func:`info`. The on-disk contract
lives in :mod:`shardwriter.format` and ``docs/FORMAT.md``.
"""

__version__ = "0.1.0"

from .errors import BadInput, PackError  # noqa: E402
from .format import FormatError  # noqa: E402
from .pack import pack  # noqa: E402
from .writer import ShardWriter  # noqa: E402

__all__ = ["BadInput", "FormatError", "PackError", "ShardWriter", "pack", "__version__"]
