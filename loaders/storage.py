"""Where a dataset lives: opening manifests, shards and indexes by location.

A location is a local folder today; remote locations (s3://, gs://, http(s)://) plug in
here without the datasets changing. Everything the loaders read goes through these
functions: :func:`read_manifest`, :func:`read_bytes` (small files: indexes),
:func:`open_stream` (sequential shard reads) and :func:`local_path` (a local file for
positioned reads).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

from shardwriter import format as fmt


class StorageError(OSError):
    """A dataset file could not be read; the message names the location and file."""


def _join(location: str | os.PathLike[str], name: str) -> Path:
    if name != fmt.MANIFEST_NAME:
        fmt.check_shard_file_name(name[:-4] + ".tar" if name.endswith(".idx") else name)
    return Path(location) / name


def read_manifest(location: str | os.PathLike[str]) -> dict[str, Any]:
    """Fetch and check ``LOCATION/manifest.json``."""
    path = Path(location) / fmt.MANIFEST_NAME
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise StorageError(f"{path}: cannot read the manifest ({exc.strerror or exc}); is this a dataset folder?") from None
    return fmt.parse_manifest(buf, str(path))


def read_bytes(location: str | os.PathLike[str], name: str) -> bytes:
    """Whole contents of a (small) file of the dataset, such as an index."""
    path = _join(location, name)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StorageError(f"{path}: cannot read ({exc.strerror or exc})") from None


def open_stream(location: str | os.PathLike[str], name: str) -> IO[bytes]:
    """A binary file object reading shard ``name`` sequentially from its start."""
    path = _join(location, name)
    try:
        return open(path, "rb", buffering=1 << 20)
    except OSError as exc:
        raise StorageError(f"{path}: cannot open shard ({exc.strerror or exc})") from None


def local_path(location: str | os.PathLike[str], name: str) -> Path:
    """A local file holding shard ``name`` (remote shards are fetched into a cache)."""
    path = _join(location, name)
    if not path.exists():
        raise StorageError(f"{path}: shard missing")
    return path
