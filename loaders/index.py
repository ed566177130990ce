"""The index of a dataset's splits, loaded and checked once: :class:`SplitIndex`.

Both datasets build their view of the data here. Loading reads each index file of the
requested splits through the dataset's :class:`~shardwriter.storage.Store`: exactly the
size the manifest gives, checked against the manifest's sha256 (an index copied from
another shard, or with one flipped bit, is refused here), then every row against the
shard and the record layout (:func:`shardwriter.format.check_rows`). Nothing is
allocated beyond what the manifest allows, and no shard byte is read.

Per sample it keeps, as flat arrays: the shard it lives in, where its input and target
bytes are, its label, and (format 2) the hashes every read is checked against
(the datasets raise :func:`integrity_error` on a mismatch). A format-1 dataset has no hashes: it is read with these cheap
checks only, and :func:`warn_unhashed` says so once per dataset.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shardwriter import format as fmt
from shardwriter.errors import IntegrityError
from shardwriter.storage import Store


class UnhashedDatasetWarning(UserWarning):
    """A format-1 dataset: its samples carry no checksums, so damage inside a record goes unseen."""


_WARNED: set[str] = set()
_WARNED_LOCK = threading.Lock()


def warn_unhashed(where: str) -> None:
    """One warning per dataset (per process) that its samples are not checksummed."""
    with _WARNED_LOCK:
        if where in _WARNED:
            return
        _WARNED.add(where)
    warnings.warn(
        f"{where}: format-1 dataset: samples carry no checksums, so a damaged shard can go unnoticed; "
        f"run `ai8x-shards reindex {where}` to upgrade it to format 2",
        UnhashedDatasetWarning,
        stacklevel=3,
    )


@dataclass
class SplitIndex:
    """Every sample of one or more splits, in order (see the module docstring)."""

    shards: list[fmt.ShardEntry]
    shard: np.ndarray  # int32: position in ``shards`` of each sample's shard
    offset: np.ndarray  # int64: first byte of each record (payload)
    size: np.ndarray  # int64: record length
    x_off: np.ndarray  # int64: first byte of each input
    y_off: np.ndarray  # int64: first byte of each target (0 without target bytes)
    label: np.ndarray  # int64: class label, -1 for masks and regression
    x_hash: np.ndarray  # uint64 (format 2; zeros in format 1)
    y_hash: np.ndarray  # uint64
    hashed: bool

    @property
    def x_plain(self) -> np.ndarray:
        """XXH3-64 of each input's bytes alone (``x_hash`` with the label's mix taken out): what a batch is checked against."""
        plain = self.__dict__.get("_x_plain")
        if plain is None:
            plain = self.__dict__["_x_plain"] = self.x_hash ^ fmt.label_mix(self.label)
        return plain

    def __len__(self) -> int:
        return len(self.shard)

    @classmethod
    def load(cls, store: Store, manifest: fmt.Manifest, splits: Sequence[str]) -> SplitIndex:
        """Read and check the index files of ``splits`` (in that order) of the dataset at ``store``."""
        shards: list[fmt.ShardEntry] = []
        parts: list[np.ndarray] = []
        owner: list[np.ndarray] = []
        layout = manifest.layout
        for split in splits:
            for shard in manifest.split(split, store.location).shards:
                ix = shard.index
                where = store.describe(ix.file)
                buf = store.read_bytes(ix.file, size=ix.bytes, sha256=ix.sha256)
                rows = fmt.decode_index(buf, where, manifest.version)
                fmt.check_rows(rows, where=where, count=shard.count, shard_bytes=shard.bytes, layout=layout,
                               schema=manifest.schema, hashed=manifest.hashed)
                owner.append(np.full(len(rows), len(shards), dtype=np.int32))
                parts.append(rows)
                shards.append(shard)
        rows = np.concatenate(parts) if parts else np.zeros(0, fmt.INDEX_DTYPE)
        return cls(
            shards=shards,
            shard=np.concatenate(owner) if owner else np.zeros(0, np.int32),
            offset=rows["offset"].astype(np.int64),
            size=rows["size"].astype(np.int64),
            x_off=rows["x_off"].astype(np.int64),
            y_off=rows["y_off"].astype(np.int64),
            label=rows["label"].astype(np.int64),
            x_hash=rows["x_hash"].astype(np.uint64),
            y_hash=rows["y_hash"].astype(np.uint64),
            hashed=manifest.hashed,
        )

    def position(self, i: int) -> tuple[fmt.ShardEntry, int]:
        """Sample ``i``'s shard and its position in that shard."""
        return self.shards[int(self.shard[i])], i - int(np.searchsorted(self.shard, self.shard[i]))

    def describe(self, i: int) -> str:
        """How errors name sample ``i``: its position in its split (or in its shard, where the split is unknown)."""
        shard, within = self.position(i)
        return f"{shard.first + within}" if shard.first >= 0 else f"{within} of the shard"


def integrity_error(where: str, shard: str, sample: str, what: str) -> IntegrityError:
    """The error a failed per-sample check raises: dataset, shard, sample and the remedy."""
    return IntegrityError(
        f"{where}: {shard}: sample {sample}: {what} differ from what the writer wrote (checksum mismatch): "
        f"the shard is damaged. Run `ai8x-shards verify {where}` to list all damage, then re-copy or re-pack "
        "the dataset (options=Options(verify_samples=False) or AI8X_SHARDS_VERIFY_SAMPLES=0 skips this check; not advised)"
    )
