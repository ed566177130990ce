"""Dataset locations: telling a URL from a folder (:func:`is_url`), the canonical form
(:func:`normalize`), file URLs (:func:`object_url`, :func:`sub_location`), the parsed
``_Target`` of one file (with its name checked and a ``pipe:`` command split into argv),
and the local cache folder (:func:`cache_root`)."""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import format as fmt
from .options import StorageError

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
        raise StorageError(f"{s}: not a URL")
    scheme = m.group(1).lower()
    rest = s[m.end() :].rstrip("/")
    if scheme not in SCHEMES:
        raise StorageError(f"{s}: unsupported scheme {scheme}://; use s3://, gs://, http(s):// or a local folder")
    if not rest or rest.startswith("/"):
        raise StorageError(f"{s}: no {'bucket' if scheme in ('s3', 'gs', 'gcs') else 'host'} in the URL")
    if "?" in rest or "#" in rest:
        raise StorageError(f"{s}: a location is a prefix that file names are appended to; query strings are not supported")
    return f"{scheme}://{rest}"


def object_url(location: str | os.PathLike[str], name: str) -> str:
    """The URL of file ``name`` of the dataset at ``location`` (for messages)."""
    return _target(normalize(location), name, check_pipe=False).url


def sub_location(location: str, sub: str) -> str:
    """``location`` + ``/sub`` (an output's sub-folder, such as ``AISegment_80``)."""
    loc = normalize(location)
    return f"{loc}/{sub}" if sub else loc


@dataclass(frozen=True)
class _Target:
    kind: str  # "http", "s3", "gs", "pipe"
    url: str
    bucket: str = ""
    key: str = ""
    argv: tuple[str, ...] = ()


def _check_name(name: str) -> None:
    if name != fmt.MANIFEST_NAME:
        fmt.check_shard_file_name(name[:-4] + ".tar" if name.endswith(".idx") else name)


def _target(loc: str, name: str, check_pipe: bool = True) -> _Target:
    _check_name(name)
    if loc.startswith(PIPE):
        argv = _pipe_argv(loc, name, check_pipe)
        return _Target("pipe", PIPE + shlex.join(argv), argv=tuple(argv))
    url = f"{loc}/{name}"
    scheme, _, rest = url.partition("://")
    if scheme in ("http", "https"):
        return _Target("http", url)
    bucket, _, key = rest.partition("/")
    return _Target("s3" if scheme == "s3" else "gs", url, bucket, key)


def _pipe_argv(loc: str, name: str, check: bool) -> list[str]:
    if check and os.environ.get("AI8X_SHARDS_ALLOW_PIPE") != "1":
        raise StorageError(
            f"{loc}: a pipe: location runs a command; refused unless you opt in with AI8X_SHARDS_ALLOW_PIPE=1 "
            "(the command then runs without a shell)"
        )
    try:
        argv = shlex.split(loc[len(PIPE) :])
    except ValueError as exc:
        raise StorageError(f"{loc}: cannot split the command ({exc})") from None
    if not argv or not any("{name}" in a for a in argv):
        raise StorageError(f"{loc}: a pipe: location needs {{name}} where the file name goes, e.g. pipe:cat /data/{{name}}")
    return [a.replace("{name}", name) for a in argv]


def cache_root() -> Path:
    """``AI8X_SHARDS_CACHE``, else ``$XDG_CACHE_HOME/ai8x-shards`` (``~/.cache/ai8x-shards``)."""
    env = os.environ.get("AI8X_SHARDS_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ai8x-shards"
