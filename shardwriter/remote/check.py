"""Checking datasets in place: :func:`verify_location` and :func:`info_location` (a folder
or a URL), and :func:`check_sha256` (a manifest's sha256 field, before it names a file)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from .. import format as fmt
from .locations import is_url, normalize, object_url
from .options import Options, StorageError
from .stream import download, read_all, read_manifest

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def verify_location(location: str | os.PathLike[str], opts: Options | None = None) -> list[str]:
    """:func:`shardwriter.verify.verify` for a folder or a URL (problems; empty when sound).

    A URL's shards are downloaded one at a time into a temporary folder and checked
    like local ones (sizes, sha256, every record, every index).
    """
    from ..verify import _verify_shard, verify

    if not is_url(location):
        return verify(location)
    try:
        url = normalize(location)
        m = read_manifest(url, opts)
    except (StorageError, fmt.FormatError) as exc:
        return [str(exc)]
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ai8x-shards-verify-") as tmp:
        d = Path(tmp)
        for info in m["splits"].values():
            for shard in info["shards"]:
                files = (shard["file"], shard["index"]["file"])
                for name in files:
                    try:
                        download(url, name, d / name, opts=opts)
                    except StorageError as exc:
                        if name == shard["file"]:
                            problems.append(f"{name}: missing or unreadable ({exc})")
                if (d / shard["file"]).exists():
                    problems += [p.replace(tmp, url) for p in _verify_shard(d, m, shard)]
                for name in files:
                    (d / name).unlink(missing_ok=True)
    return problems


def info_location(location: str | os.PathLike[str]) -> str:
    """:func:`shardwriter.verify.info` for a folder or a URL (reads only the manifest)."""
    from ..verify import info

    if not is_url(location):
        return info(location)
    url = normalize(location)
    buf = read_all(url, fmt.MANIFEST_NAME)
    fmt.parse_manifest(buf, object_url(url, fmt.MANIFEST_NAME))
    with tempfile.TemporaryDirectory(prefix="ai8x-shards-info-") as tmp:
        (Path(tmp) / fmt.MANIFEST_NAME).write_bytes(buf)
        return info(tmp)


def check_sha256(value: Any, where: str) -> str:
    """A manifest's sha256 field, checked to be 64 lowercase hex digits (it names cache files)."""
    if not isinstance(value, str) or not _SHA_RE.match(value):
        raise fmt.FormatError(f"{where}: sha256 {value!r} is not 64 hex digits")
    return value
