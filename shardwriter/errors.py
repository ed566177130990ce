"""The one error family of ai8x-shards, and the exit code the command line gives each.

Every error the package raises on bad data, storage or settings derives from
:class:`ShardsError` and names the file, URL or sample it is about, and what to do. The
command line prints such an error as one line (``ai8x-shards: error: ...``, no
traceback) and exits with the code of its class (:func:`exit_code`):

=====================  ====  ====================================================
class                  exit  meaning
=====================  ====  ====================================================
:class:`SettingsError` 2     a setting or argument is wrong: nothing was done
:class:`FormatError`   3     a dataset file does not follow the format (damaged)
:class:`PackError`     3     packing stopped on bad input, or OUT is in the way
:class:`StorageError`  4     a file or URL cannot be read or written
:class:`InstallError`  5     an ai8x-training checkout cannot take the module
=====================  ====  ====================================================

``verify`` exits 1 when it finds problems (it reports them all, then stops). Names
users already catch stay: :class:`FormatError` is also a ``ValueError``,
:class:`StorageError` an ``OSError``, :class:`PackError` a ``RuntimeError``.
"""

from __future__ import annotations


class ShardsError(Exception):
    """Base of every error ai8x-shards raises about data, storage or settings."""

    exit_code = 1


class SettingsError(ShardsError, ValueError):
    """A setting, option or argument is wrong (raised before any work is done)."""

    exit_code = 2


class FormatError(ShardsError, ValueError):
    """A shard, index, record or manifest does not follow the format.

    The message names the file (and byte offset or sample where known) and what is
    wrong; ``ai8x-shards verify DIR`` checks a whole dataset the same way.
    """

    exit_code = 3


class IntegrityError(FormatError):
    """Bytes read from a shard differ from what the writer wrote (checksum mismatch)."""


class PackError(ShardsError, RuntimeError):
    """Packing stopped: bad input (without ``skip_bad``) or an output folder in the way."""

    exit_code = 3


class BadInput(PackError):
    """One input item cannot be packed; ``name`` identifies it (a file, an index)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # crosses worker processes intact
        return (type(self), (self.name, self.reason))


class StorageError(ShardsError, OSError):
    """A dataset file could not be read or written; the message names the location and file."""

    exit_code = 4


class MissingError(StorageError):
    """The object or file does not exist (HTTP 404, S3 NoSuchKey, GCS NotFound, ENOENT)."""


class InstallError(ShardsError, RuntimeError):
    """The target is not an ai8x-training checkout, or holds a file we did not write."""

    exit_code = 5


def exit_code(exc: BaseException) -> int:
    """The command line's exit status for ``exc`` (see the module docstring)."""
    return exc.exit_code if isinstance(exc, ShardsError) else 1


__all__ = [
    "BadInput",
    "FormatError",
    "InstallError",
    "IntegrityError",
    "MissingError",
    "PackError",
    "SettingsError",
    "ShardsError",
    "StorageError",
    "exit_code",
]
