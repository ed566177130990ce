"""Where datasets live: one :class:`Store` per location, one class per backend.

A location is a local folder or a URL prefix that file names are appended to:

* a folder: :class:`LocalStore`;
* ``s3://BUCKET/PREFIX`` (boto3: ``pip install 'ai8x-shards[s3]'``): :class:`S3Store`;
* ``gs://BUCKET/PREFIX`` or ``gcs://...`` (google-cloud-storage: ``[gcs]``): :class:`GcsStore`;
* ``http://HOST/PREFIX`` and ``https://...`` (the standard library; read-only): :class:`HttpStore`;
* ``pipe:COMMAND ... {name} ...``, a command whose standard output is the file named
  ``{name}`` (opt-in, read-only, never through a shell): :class:`PipeStore`.

:func:`open_store` picks the class; every caller (the loaders, ``verify``, ``info``,
``reindex``, the uploader) then uses the same interface (:mod:`.base`). Settings come
from one :class:`~shardwriter.options.Options` object passed in, never from the
environment down here. Remote reads retry and resume after faults (:mod:`.remote`);
positioned reads of remote shards go through the local cache (:mod:`.cache`); uploads
put every shard and index as one object each and the manifest last (:mod:`.upload`), so
a reader never sees a manifest whose files are not all there. This package imports
neither :mod:`loaders` nor torch.
"""

from __future__ import annotations

import os

from ..errors import MissingError, StorageError
from ..options import Options
from .base import Store, Transient
from .cache import ShardCache, cache_for
from .gcs import GcsStore
from .http import HttpStore
from .local import LocalStore, open_regular
from .locations import PIPE, SCHEMES, is_url, normalize, object_url, sub_location
from .pipe import PipeStore
from .remote import RemoteStore, RemoteStream
from .s3 import S3Store
from .upload import dataset_dirs, staged_output, upload_dataset

_BY_SCHEME: dict[str, type[Store]] = {"s3": S3Store, "gs": GcsStore, "http": HttpStore, "https": HttpStore}


def open_store(location: str | os.PathLike[str] | Store, opts: Options | None = None) -> Store:
    """The :class:`Store` of ``location`` (a folder, a URL, or a store, returned as it is)."""
    if isinstance(location, Store):
        return location
    opts = opts or Options.from_env()
    if not is_url(location):
        return LocalStore(os.fspath(location), opts)
    loc = normalize(location)
    if loc.startswith(PIPE):
        return PipeStore(loc, opts)
    return _BY_SCHEME[loc.partition("://")[0]](loc, opts)


__all__ = [
    "PIPE",
    "SCHEMES",
    "GcsStore",
    "HttpStore",
    "LocalStore",
    "MissingError",
    "Options",
    "PipeStore",
    "RemoteStore",
    "RemoteStream",
    "S3Store",
    "ShardCache",
    "StorageError",
    "Store",
    "Transient",
    "cache_for",
    "dataset_dirs",
    "is_url",
    "normalize",
    "object_url",
    "open_regular",
    "open_store",
    "staged_output",
    "sub_location",
    "upload_dataset",
]
