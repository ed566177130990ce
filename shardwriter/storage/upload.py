"""Writing datasets to buckets: :func:`upload_dataset` (shards and indexes first, the manifest
last), :func:`staged_output` (pack into a local staging folder, then upload) and
:func:`dataset_dirs`. Works with any writable :class:`~.base.Store`."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from .. import format as fmt
from ..errors import FormatError, IntegrityError, MissingError, StorageError
from ..options import Options
from .base import Transient, backoff_delay

T = TypeVar("T")


def retrying(what: str, fn: Callable[[], T], opts: Options) -> T:
    """``fn()``, retried with backoff while it raises :class:`~.base.Transient`."""
    failures = 0
    while True:
        try:
            return fn()
        except Transient as exc:
            failures += 1
            if failures > opts.retries:
                raise StorageError(f"{what}: gave up after {failures} failed attempts (last: {exc}); "
                                   f"retry budget AI8X_SHARDS_RETRIES={opts.retries}") from None
            time.sleep(backoff_delay(opts, failures))


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dataset_dirs(local_dir: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """``(sub-folder, path)`` of each dataset in ``local_dir``: itself, or its sub-folders."""
    root = Path(local_dir)
    if (root / fmt.MANIFEST_NAME).is_file():
        return [("", root)]
    return sorted((p.name, p) for p in root.iterdir() if p.is_dir() and (p / fmt.MANIFEST_NAME).is_file()) if root.is_dir() else []


def upload_dataset(local_dir: str | os.PathLike[str], location: str, *, overwrite: bool = False,
                   opts: Options | None = None, log: Callable[[str], None] | None = None) -> list[str]:
    """Upload the dataset(s) in ``local_dir`` to ``location``; returns the names uploaded.

    Per dataset: every shard and index (one atomic PUT each, skipped when the same bytes
    are already there; a local file whose sha256 differs from its manifest is refused,
    never published), then the manifest. A dataset with another source fingerprint
    already at the location is refused unless ``overwrite``; with it, the files of the
    old manifest that the new one does not list are deleted after the new manifest is
    in. Sub-folder datasets (``pack aisegment`` writes one per variant) go to
    ``location/SUB``.
    """
    from . import open_store
    from .locations import sub_location

    opts = opts or Options.from_env()
    dirs = dataset_dirs(local_dir)
    if not dirs:
        raise StorageError(f"{local_dir}: no {fmt.MANIFEST_NAME} (nor sub-folders holding one) to upload")
    root = open_store(location, opts)
    if not root.writable or root.kind == "local":
        raise StorageError(f"{location}: read-only location; upload to s3://... or gs://..., or write to a local folder")
    uploaded: list[str] = []
    for sub, d in dirs:
        dest = open_store(sub_location(root.location, sub), opts)
        local = open_store(d, opts)
        m = local.read_manifest()
        try:
            old: fmt.Manifest | None = dest.read_manifest()
        except MissingError:
            old = None
        except FormatError:
            old = None if overwrite else ...  # type: ignore[assignment]
        if old is ...:
            raise StorageError(f"{dest.location} holds a damaged manifest; pass --overwrite to replace the dataset there")
        if old is not None and old.fingerprint != m.fingerprint and not overwrite:
            raise StorageError(f"{dest.location} already holds a different dataset; pass --overwrite to replace it, or choose another location")
        files = [f for s in m.shards() for f in (s, s.index)]
        for f in files:
            if file_sha256(d / f.file) != f.sha256:  # never publish bytes under a hash they do not have
                raise IntegrityError(f"{d / f.file}: sha256 differs from its manifest; run ai8x-shards verify {d}")
            if dest.upload(f.file, d / f.file, f.sha256):
                uploaded.append(f"{sub}/{f.file}" if sub else f.file)
                if log:
                    log(f"uploaded {dest.describe(f.file)}")
        if dest.upload(fmt.MANIFEST_NAME, d / fmt.MANIFEST_NAME, file_sha256(d / fmt.MANIFEST_NAME)):
            uploaded.append(f"{sub}/{fmt.MANIFEST_NAME}" if sub else fmt.MANIFEST_NAME)
        if old is not None:
            keep = {f.file for f in files}
            for s in old.shards():
                for name in (s.file, s.index.file):
                    if name not in keep:
                        dest.delete(name)
    return uploaded


@contextmanager
def staged_output(out: str | os.PathLike[str], *, overwrite: bool = False, opts: Options | None = None) -> Iterator[Path]:
    """Where to write a dataset bound for ``out``: ``out`` itself, or for a URL a staging folder.

    For a URL the folder is ``CACHE/staging/<hash of the URL>``, uploaded with
    :func:`upload_dataset` when the block ends without an exception and then removed; after a
    failure it is kept, so the same command resumes the pack and uploads only what is missing.
    """
    from . import open_store
    from .locations import is_url

    if not is_url(out):
        yield Path(out)
        return
    opts = opts or Options.from_env()
    store = open_store(out, opts)
    if not store.writable:
        raise StorageError(f"{store.location}: read-only location; upload to s3://... or gs://..., or write to a local folder")
    stage = opts.cache_path / "staging" / hashlib.sha256(store.location.encode()).hexdigest()[:16]
    stage.mkdir(parents=True, exist_ok=True)
    yield stage
    upload_dataset(stage, store.location, overwrite=overwrite, opts=opts)
    shutil.rmtree(stage, ignore_errors=True)
