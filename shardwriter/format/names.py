"""Names in a dataset folder: shards, indexes, the manifest, sample keys and tar members.

A shard is exactly ``SPLIT-NNNNNN.tar`` (SPLIT in ``train``, ``test``, ``val``); its index
is the same name with ``.idx``. A sample's key is its position in its split, 9 decimal
digits; its tar member is ``KEY.msgpack``. Readers refuse any other name found in a
manifest or shard (no paths, no ``..``), so no name from a dataset ever becomes a path.
"""

from __future__ import annotations

import re

from ..errors import FormatError

FORMAT_NAME = "ai8x-shards"
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "test", "val")
MEMBER_SUFFIX = ".msgpack"
#: A split holds fewer samples than this, so every key has exactly KEY_DIGITS digits.
KEY_DIGITS = 9
MAX_SPLIT_SAMPLES = 10**KEY_DIGITS

_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SHARD_RE = re.compile(r"^(train|test|val)-(\d{6})\.tar$")
_INDEX_RE = re.compile(r"^(train|test|val)-(\d{6})\.idx$")


def shard_name(split: str, number: int) -> str:
    """File name of shard ``number`` of ``split``: ``train-000000.tar``."""
    if split not in SPLITS:
        raise FormatError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if not 0 <= number < 10**6:
        raise FormatError(f"shard number {number} of split {split} is outside 0..999999")
    return f"{split}-{number:06d}.tar"


def index_name(shard: str) -> str:
    """File name of a shard's index: ``train-000000.tar`` -> ``train-000000.idx``."""
    check_shard_file_name(shard)
    return shard[: -len(".tar")] + ".idx"


def shard_of_index(index: str) -> str:
    """The shard an index file belongs to: ``train-000000.idx`` -> ``train-000000.tar``."""
    if not _INDEX_RE.match(index):
        raise FormatError(f"{index!r} is not a plain SPLIT-NNNNNN.idx index name")
    return index[: -len(".idx")] + ".tar"


def check_shard_file_name(name: str) -> str:
    """Refuse shard names that are not plain ``SPLIT-NNNNNN.tar`` (no paths, no ``..``)."""
    if not isinstance(name, str) or not _SHARD_RE.match(name):
        raise FormatError(f"shard {name!r} is not a plain SPLIT-NNNNNN.tar name")
    return name


def check_file_name(name: str) -> str:
    """A name a dataset folder may hold: the manifest, a shard or an index (never a path)."""
    if name == MANIFEST_NAME or (isinstance(name, str) and (_SHARD_RE.match(name) or _INDEX_RE.match(name))):
        return name
    raise FormatError(f"{name!r} is not a file of an ai8x-shards dataset (manifest.json, SPLIT-NNNNNN.tar or .idx)")


def sample_key(number: int) -> str:
    """Key of the ``number``-th sample of a split (its position in the split)."""
    if not 0 <= number < MAX_SPLIT_SAMPLES:
        raise FormatError(f"sample number {number} is outside 0..{MAX_SPLIT_SAMPLES - 1} (a split holds < 10^9 samples)")
    return f"{number:0{KEY_DIGITS}d}"


def check_key(key: str) -> str:
    """A key the encoder accepts: 1-64 ASCII letters, digits, ``_`` or ``-``."""
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise FormatError(f"sample key {key!r}: keys are 1-64 ASCII letters, digits, _ or -")
    return key


def member_name(key: str) -> str:
    """Tar member name of sample ``key``."""
    return check_key(key) + MEMBER_SUFFIX


def member_key(name: str, where: str) -> str:
    """The sample key of member ``name`` (``KEY.msgpack``); refuses anything else."""
    if not name.endswith(MEMBER_SUFFIX):
        raise FormatError(f"{where}: member {name!r} is not a KEY{MEMBER_SUFFIX} sample")
    key = name[: -len(MEMBER_SUFFIX)]
    if not _KEY_RE.match(key):
        raise FormatError(f"{where}: member {name!r} has a bad sample key")
    return key
