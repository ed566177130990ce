"""The storage interface every backend implements: :class:`Store`, one per location.

A store is a dataset location (a local folder, or a URL prefix) with the operations the
readers, ``verify`` and the uploader need, whatever the backend:

* :meth:`Store.read_manifest` -> the typed, validated :class:`~shardwriter.format.Manifest`;
* :meth:`Store.read_bytes` (small files such as indexes, bounded by their manifest size
  and checked against its sha256);
* :meth:`Store.open_read` (a sequential binary stream; remote streams resume after faults
  and check the whole file's digest, XXH3-128 where the manifest has one, else sha256,
  when they read it to its end);
* :meth:`Store.open_random` (a file descriptor for positioned reads: the file itself, or
  its copy in the local cache; a regular file of the manifest's size);
* :meth:`Store.stat`, :meth:`Store.upload`, :meth:`Store.delete` for writable locations.

Backends: :mod:`.local`, :mod:`.http`, :mod:`.s3`, :mod:`.gcs`, :mod:`.pipe`. Remote
backends share :class:`.remote.RemoteStore`, which implements everything on top of one
method, ``_get`` (a GET from a byte offset). File names are checked before use
(:func:`shardwriter.format.check_file_name`): a name from a manifest never becomes a path.
"""

from __future__ import annotations

import hashlib
import os
import random
from abc import ABC, abstractmethod
from typing import IO

from .. import format as fmt
from ..errors import IntegrityError, StorageError
from ..options import Options


class Transient(Exception):
    """A fault worth retrying: a 5xx or 429 answer, a reset, a stall, a body cut short."""


def backoff_delay(opts: Options, failures: int) -> float:
    """Seconds to wait before retry number ``failures`` (exponential, capped, jittered)."""
    return min(opts.backoff * 2 ** (failures - 1), opts.backoff_max) * random.uniform(0.5, 1.0)


def check_sha256(data: bytes, sha256: str | None, what: str) -> None:
    """``data`` must hash to ``sha256`` (when given); an IntegrityError naming ``what`` otherwise."""
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise IntegrityError(f"{what}: sha256 does not match the manifest (corrupt or replaced; re-copy or re-pack it)")


class Store(ABC):
    """A dataset location and the operations on its files (see the module docstring)."""

    kind = ""
    writable = False

    def __init__(self, location: str, opts: Options) -> None:
        self.location = location
        self.opts = opts

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"

    def __reduce__(self) -> tuple[type, tuple[str, Options]]:  # picklable for DataLoader workers: no clients or files
        return (type(self), (self.location, self.opts))

    @abstractmethod
    def describe(self, name: str) -> str:
        """How messages name file ``name`` (a path or a URL)."""

    def read_manifest(self) -> fmt.Manifest:
        """The dataset's manifest, parsed and validated."""
        buf = self.read_bytes(fmt.MANIFEST_NAME, limit=64 << 20)
        return fmt.parse_manifest(buf, self.describe(fmt.MANIFEST_NAME))

    @abstractmethod
    def read_bytes(self, name: str, *, size: int | None = None, sha256: str | None = None, limit: int | None = None) -> bytes:
        """The whole of small file ``name``: exactly ``size`` bytes when given (else at most ``limit``), sha256-checked."""

    @abstractmethod
    def open_read(self, name: str, *, size: int | None = None, sha256: str | None = None, xxh3: str | None = None) -> IO[bytes]:
        """A binary stream over file ``name`` from its first byte (remote: whole-file digest checked, ``xxh3`` preferred)."""

    @abstractmethod
    def open_random(self, entry: fmt.FileEntry) -> int:
        """An open file descriptor of ``entry`` for ``os.pread`` (the caller closes it)."""

    # ------------------------------------------------------------------ writing

    def _read_only(self) -> StorageError:
        return StorageError(f"{self.location}: read-only location; upload to s3://... or gs://..., or write to a local folder")

    def stat(self, name: str) -> tuple[int, str | None] | None:
        """``(size, recorded sha256 or None)`` of file ``name``, or None when it is not there."""
        raise self._read_only()

    def upload(self, name: str, path: str | os.PathLike[str], sha256: str) -> bool:
        """Put local file ``path`` as ``name`` atomically; False when the same bytes are already there."""
        raise self._read_only()

    def delete(self, name: str) -> None:
        """Remove file ``name`` (no error when it is not there)."""
        raise self._read_only()
