"""Where a dataset lives: opening manifests, shards and indexes by location.

A location is a local folder or a URL: ``s3://bucket/prefix``, ``gs://bucket/prefix``,
``http(s)://host/prefix`` (and, opted in with ``AI8X_SHARDS_ALLOW_PIPE=1``,
``pipe:COMMAND ... {name}``; never run through a shell). Everything the loaders read goes
through these functions: :func:`read_manifest`, :func:`read_bytes` (small files:
indexes), :func:`open_stream` (sequential shard reads) and :func:`local_path` (a local
file for positioned reads).

Remote reads retry and resume after faults (:mod:`shardwriter.remote` has the
transport and its ``AI8X_SHARDS_*`` settings); :func:`local_path` fetches a remote
shard into the local cache of :mod:`loaders.cache`, checked against the manifest's
sha256. The manifest of each remote location is remembered per process (the last one
:func:`read_manifest` fetched), so index and shard bytes can be checked against it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import IO, Any

from shardwriter import format as fmt
from shardwriter import remote
from shardwriter.remote import StorageError

__all__ = ["StorageError", "describe", "is_remote", "local_path", "open_stream", "read_bytes", "read_manifest"]

_MANIFESTS: dict[str, dict[str, Any]] = {}
_LOCK = threading.Lock()


def _after_fork() -> None:
    global _LOCK
    _LOCK = threading.Lock()  # another thread may have held it at the fork


os.register_at_fork(after_in_child=_after_fork)


def is_remote(location: str | os.PathLike[str]) -> bool:
    """True for URL (and ``pipe:``) locations."""
    return remote.is_url(location)


def _check(name: str) -> None:
    if name != fmt.MANIFEST_NAME:
        fmt.check_shard_file_name(name[:-4] + ".tar" if name.endswith(".idx") else name)


def _join(location: str | os.PathLike[str], name: str) -> Path:
    _check(name)
    return Path(location) / name


def _manifest(url: str) -> dict[str, Any]:
    with _LOCK:
        m = _MANIFESTS.get(url)
    return m if m is not None else read_manifest(url)


def _entry(url: str, name: str, fetch: bool) -> dict[str, Any] | None:
    """The manifest's record (``bytes``, ``sha256``) of shard or index ``name``, if known."""
    if fetch:
        m: dict[str, Any] | None = _manifest(url)
    else:
        with _LOCK:
            m = _MANIFESTS.get(url)
    if m is None:
        return None
    for info in m["splits"].values():
        for shard in info["shards"]:
            if shard["file"] == name:
                return shard
            if shard["index"]["file"] == name:
                return shard["index"]
    return None


def read_manifest(location: str | os.PathLike[str]) -> dict[str, Any]:
    """Fetch and check ``LOCATION/manifest.json``."""
    if remote.is_url(location):
        url = remote.normalize(location)
        m = remote.read_manifest(url)
        with _LOCK:
            _MANIFESTS[url] = m
        return m
    path = Path(location) / fmt.MANIFEST_NAME
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise StorageError(f"{path}: cannot read the manifest ({exc.strerror or exc}); is this a dataset folder?") from None
    return fmt.parse_manifest(buf, str(path))


def read_bytes(location: str | os.PathLike[str], name: str) -> bytes:
    """Whole contents of a (small) file of the dataset, such as an index.

    For a URL, a file the manifest lists is checked against its size and sha256.
    """
    if remote.is_url(location):
        _check(name)
        url = remote.normalize(location)
        entry = _entry(url, name, fetch=False)
        buf = remote.read_all(url, name, size=entry["bytes"] if entry else None)
        if entry is not None and "sha256" in entry and hashlib.sha256(buf).hexdigest() != entry["sha256"]:
            raise StorageError(f"{remote.object_url(url, name)}: sha256 does not match the manifest (corrupt or replaced)")
        return buf
    path = _join(location, name)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StorageError(f"{path}: cannot read ({exc.strerror or exc})") from None


def open_stream(location: str | os.PathLike[str], name: str) -> IO[bytes]:
    """A binary file object reading shard ``name`` sequentially from its start.

    For a URL: a :class:`shardwriter.remote.RemoteStream`, whose reads resume after
    dropped connections, stalls and 5xx answers, and raise :class:`StorageError` naming
    the URL and byte offset once the retry budget is spent.
    """
    if remote.is_url(location):
        _check(name)
        url = remote.normalize(location)
        entry = _entry(url, name, fetch=False)
        return remote.open_stream(url, name, size=entry["bytes"] if entry else None)  # type: ignore[return-value]
    path = _join(location, name)
    try:
        return open(path, "rb", buffering=1 << 20)
    except OSError as exc:
        raise StorageError(f"{path}: cannot open shard ({exc.strerror or exc})") from None


def local_path(location: str | os.PathLike[str], name: str) -> Path:
    """A local file holding shard ``name`` (remote shards are fetched into a cache)."""
    if remote.is_url(location):
        _check(name)
        from .cache import default_cache

        url = remote.normalize(location)
        entry = _entry(url, name, fetch=True)
        if entry is None:
            raise StorageError(f"{remote.object_url(url, name)}: not listed in the manifest")
        return default_cache().get(url, name, entry["sha256"], int(entry["bytes"]))
    path = _join(location, name)
    if not path.exists():
        raise StorageError(f"{path}: shard missing")
    return path


def describe(location: str | os.PathLike[str], name: str) -> str:
    """How messages name file ``name`` of the dataset at ``location`` (a URL or a path)."""
    return remote.object_url(location, name) if is_remote(location) else str(_join(location, name))
