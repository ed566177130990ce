"""Dataset locations: telling a URL from a folder (:func:`is_url`), the canonical form of a
URL (:func:`normalize`), file URLs (:func:`object_url`, :func:`sub_location`), and the
``pipe:`` command of one file (split into argv, never given to a shell).

File names are checked with :func:`shardwriter.format.check_file_name` before they are
appended to a location, so no name from a manifest ever becomes a path or a query.
"""

from __future__ import annotations

import os
import re
import shlex
from typing import Any

from .. import format as fmt
from ..errors import SettingsError, StorageError

SCHEMES = ("s3", "gs", "gcs", "http", "https")
PIPE = "pipe:"
_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
_MANGLED_RE = re.compile(r"^(s3|gs|gcs|https?):/(?!/)", re.IGNORECASE)  # Path("s3://b/x") -> "s3:/b/x"


def is_url(location: Any) -> bool:
    """True for ``scheme://...`` and ``pipe:...`` locations (and a URL mangled by ``Path``)."""
    if not isinstance(location, (str, os.PathLike)):
        return False
    s = os.fspath(location)
    if not isinstance(s, str):
        return False
    return s.startswith(PIPE) or bool(_URL_RE.match(s)) or (bool(_MANGLED_RE.match(s)) and not os.path.exists(s))


def normalize(location: str | os.PathLike[str]) -> str:
    """The canonical form of a URL location (no trailing slash); refuses what it cannot read."""
    s = os.fspath(location)
    if s.startswith(PIPE):
        return s
    if _MANGLED_RE.match(s) and not _URL_RE.match(s):
        s = s.replace(":/", "://", 1)  # a URL that went through pathlib.Path or os.path.join
    m = _URL_RE.match(s)
    if not m:
        raise SettingsError(f"{s}: not a URL")
    scheme = m.group(1).lower()
    rest = s[m.end() :].rstrip("/")
    if scheme not in SCHEMES:
        raise SettingsError(f"{s}: unsupported scheme {scheme}://; use s3://, gs://, http(s):// or a local folder")
    if not rest or rest.startswith("/"):
        raise SettingsError(f"{s}: no {'bucket' if scheme in ('s3', 'gs', 'gcs') else 'host'} in the URL")
    if "?" in rest or "#" in rest:
        raise SettingsError(f"{s}: a location is a prefix that file names are appended to; query strings are not supported")
    if scheme == "gcs":
        scheme = "gs"
    return f"{scheme}://{rest}"


def object_url(location: str | os.PathLike[str], name: str) -> str:
    """The URL of file ``name`` of the dataset at ``location`` (for messages)."""
    fmt.check_file_name(name)
    loc = normalize(location)
    if loc.startswith(PIPE):
        return PIPE + shlex.join(pipe_argv(loc, name))
    return f"{loc}/{name}"


def sub_location(location: str, sub: str) -> str:
    """``location`` + ``/sub`` (an output's sub-folder, such as ``AISegment_80``)."""
    loc = normalize(location)
    return f"{loc}/{sub}" if sub else loc


def split_bucket(url: str) -> tuple[str, str]:
    """``s3://bucket/key/parts`` -> ``("bucket", "key/parts")``."""
    rest = url.partition("://")[2]
    bucket, _, key = rest.partition("/")
    return bucket, key


def pipe_argv(loc: str, name: str) -> list[str]:
    """The argv of a ``pipe:`` location for file ``name`` (split with shlex; ``{name}`` filled in)."""
    try:
        argv = shlex.split(loc[len(PIPE) :])
    except ValueError as exc:
        raise SettingsError(f"{loc}: cannot split the command ({exc})") from None
    if not argv or not any("{name}" in a for a in argv):
        raise SettingsError(f"{loc}: a pipe: location needs {{name}} where the file name goes, e.g. pipe:cat /data/{{name}}")
    return [a.replace("{name}", name) for a in argv]


__all__ = ["PIPE", "SCHEMES", "StorageError", "is_url", "normalize", "object_url", "pipe_argv", "split_bucket", "sub_location"]
