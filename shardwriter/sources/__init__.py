"""Sources the writer can pack: one module per kind, each a :class:`Source`."""

from .aisegment import AISegmentSource
from .base import BadInput, OutputSpec, Sample, Source
from .dataset import DatasetSource
from .imagefolder import ImageFolderSource
from .npz import NpzSource

__all__ = ["AISegmentSource", "BadInput", "DatasetSource", "ImageFolderSource", "NpzSource", "OutputSpec", "Sample", "Source"]
