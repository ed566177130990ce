"""Writing datasets to S3 / GCS: :func:`upload_file`, :func:`delete_file`,
:func:`upload_dataset` (shards and indexes first, the manifest last), :func:`dataset_dirs`
and :func:`staged_output` (pack into a local staging folder, then upload)."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from .. import format as fmt
from .clients import _gcs_bucket, _s3_client
from .gcs_backend import _gcs_fail
from .locations import PIPE, _Target, _target, cache_root, is_url, normalize, object_url, sub_location
from .options import MissingError, Options, StorageError, _delay, _Transient
from .s3_backend import _s3_fail
from .stream import read_manifest

_S3_SINGLE_PUT = 5 << 30

T = TypeVar("T")


def _retrying(what: str, fn: Callable[[], T], opts: Options) -> T:
    failures = 0
    while True:
        try:
            return fn()
        except _Transient as exc:
            failures += 1
            if failures > opts.retries:
                raise StorageError(f"{what}: gave up after {failures} failed attempts (last: {exc}); "
                                   f"retry budget AI8X_SHARDS_RETRIES={opts.retries}") from None
            time.sleep(_delay(opts, failures))


def _writable(location: str) -> str:
    loc = normalize(location)
    if loc.startswith(PIPE) or loc.startswith(("http://", "https://")):
        raise StorageError(f"{loc}: read-only location; upload to s3://... or gs://..., or write to a local folder")
    return loc


def _remote_state(t: _Target, opts: Options) -> tuple[int, str | None] | None:
    """(size, recorded sha256) of an existing object, or None."""

    def head() -> tuple[int, str | None] | None:
        if t.kind == "s3":
            try:
                h = _s3_client(opts).head_object(Bucket=t.bucket, Key=t.key)
            except Exception as exc:
                err = _s3_fail(t, exc)
                if isinstance(err, MissingError):  # HEAD answers a bare 404
                    return None
                raise err from None
            meta = {k.lower(): v for k, v in (h.get("Metadata") or {}).items()}
            return int(h["ContentLength"]), meta.get("sha256")
        try:
            blob = _gcs_bucket(t, opts).get_blob(t.key, timeout=opts.timeout, retry=None)
        except Exception as exc:
            raise _gcs_fail(t, exc) from None
        if blob is None:
            return None
        return int(blob.size), (blob.metadata or {}).get("sha256")

    return _retrying(t.url, head, opts)


def upload_file(location: str, name: str, path: str | os.PathLike[str], *, sha256: str | None = None,
                opts: Options | None = None) -> bool:
    """Put local file ``path`` as ``name`` at ``location`` in one atomic request.

    Skips the upload (returns False) when an object of the same size and recorded
    sha256 is already there. The sha256 is stored as object metadata.
    """
    opts = opts or Options.from_env()
    t = _target(_writable(location), name)
    path = Path(path)
    size = path.stat().st_size
    if sha256 is None:
        sha256 = _file_sha256(path)
    state = _remote_state(t, opts)
    if state == (size, sha256):
        return False

    def put() -> None:
        if t.kind == "s3":
            client = _s3_client(opts)
            try:
                if size <= _S3_SINGLE_PUT:
                    with open(path, "rb") as f:
                        client.put_object(Bucket=t.bucket, Key=t.key, Body=f, ContentLength=size, Metadata={"sha256": sha256})
                else:  # multipart: the object still appears only when complete
                    client.upload_file(str(path), t.bucket, t.key, ExtraArgs={"Metadata": {"sha256": sha256}})
            except Exception as exc:
                raise _s3_fail(t, exc) from None
        else:
            blob = _gcs_bucket(t, opts).blob(t.key)
            blob.metadata = {"sha256": sha256}
            try:
                blob.upload_from_filename(str(path), retry=None, timeout=opts.timeout)
            except Exception as exc:
                raise _gcs_fail(t, exc) from None

    _retrying(t.url, put, opts)
    return True


def delete_file(location: str, name: str, opts: Options | None = None) -> None:
    """Remove file ``name`` at ``location`` (no error when it is not there)."""
    opts = opts or Options.from_env()
    t = _target(_writable(location), name)

    def delete() -> None:
        try:
            if t.kind == "s3":
                _s3_client(opts).delete_object(Bucket=t.bucket, Key=t.key)
            else:
                _gcs_bucket(t, opts).blob(t.key).delete(retry=None, timeout=opts.timeout)
        except Exception as exc:
            err = _s3_fail(t, exc) if t.kind == "s3" else _gcs_fail(t, exc)
            if not isinstance(err, MissingError):
                raise err from None

    _retrying(t.url, delete, opts)


def _file_sha256(path: Path) -> str:
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


def _fingerprint(m: dict[str, Any]) -> Any:
    return (m.get("source") or {}).get("fingerprint")


def upload_dataset(local_dir: str | os.PathLike[str], location: str, *, overwrite: bool = False,
                   opts: Options | None = None, log: Callable[[str], None] | None = None) -> list[str]:
    """Upload the dataset(s) in ``local_dir`` to ``location``; returns the names uploaded.

    Per dataset: every shard and index (one atomic PUT each, skipped when the same bytes
    are already there), then the manifest. A dataset with another source fingerprint
    already at the location is refused unless ``overwrite``; with it, the files of the
    old manifest that the new one does not list are deleted after the new manifest is in.
    Sub-folder datasets (``pack aisegment`` writes one per variant) go to
    ``location/SUB``.
    """
    opts = opts or Options.from_env()
    dirs = dataset_dirs(local_dir)
    if not dirs:
        raise StorageError(f"{local_dir}: no {fmt.MANIFEST_NAME} (nor sub-folders holding one) to upload")
    dest_root = _writable(location)
    uploaded: list[str] = []
    for sub, d in dirs:
        dest = sub_location(dest_root, sub)
        m = fmt.parse_manifest((d / fmt.MANIFEST_NAME).read_bytes(), str(d / fmt.MANIFEST_NAME))
        try:
            old: dict[str, Any] | None = read_manifest(dest, opts)
        except MissingError:
            old = None
        except fmt.FormatError:
            old = {}
        if old is not None and _fingerprint(old) != _fingerprint(m) and not overwrite:
            raise StorageError(f"{dest} already holds a different dataset; pass --overwrite to replace it, or choose another location")
        names = []
        for info in m["splits"].values():
            for shard in info["shards"]:
                names += [(shard["file"], shard["sha256"]), (shard["index"]["file"], shard["index"]["sha256"])]
        for name, sha in names:
            if _file_sha256(d / name) != sha:  # never publish bytes under a hash they do not have
                raise StorageError(f"{d / name}: sha256 differs from its manifest; run ai8x-shards verify {d}")
            if upload_file(dest, name, d / name, sha256=sha, opts=opts):
                uploaded.append(f"{sub}/{name}" if sub else name)
                if log:
                    log(f"uploaded {object_url(dest, name)}")
        if upload_file(dest, fmt.MANIFEST_NAME, d / fmt.MANIFEST_NAME, opts=opts):
            uploaded.append(f"{sub}/{fmt.MANIFEST_NAME}" if sub else fmt.MANIFEST_NAME)
        if old:
            keep = {n for n, _ in names}
            for info in old.get("splits", {}).values():
                for shard in info.get("shards", []):
                    for name in (shard["file"], shard["index"]["file"]):
                        if name not in keep:
                            delete_file(dest, name, opts)
    return uploaded


@contextmanager
def staged_output(out: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Where to write a dataset bound for ``out``: ``out`` itself, or for a URL a staging folder.

    For a URL the folder is ``AI8X_SHARDS_CACHE/staging/<hash of the URL>``, uploaded with
    :func:`upload_dataset` when the block ends without an exception and then removed; after a
    failure it is kept, so the same command resumes the pack and uploads only what is missing.
    """
    if not is_url(out):
        yield Path(out)
        return
    url = _writable(out)
    stage = cache_root() / "staging" / hashlib.sha256(url.encode()).hexdigest()[:16]
    stage.mkdir(parents=True, exist_ok=True)
    yield stage
    upload_dataset(stage, url, overwrite=overwrite)
    shutil.rmtree(stage, ignore_errors=True)
