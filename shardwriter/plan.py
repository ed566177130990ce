"""The plan of a pack: every split's items in write order, cut into shards, before anything is loaded.

Pure and deterministic: the same source, options and seed give the same plan on every
machine, so workers (and the parts of a ``--part K/N`` job) can each write whole shards
or pieces of shards at offsets known in advance, and the output is the same for any
number of them.

* **Order.** A split's items are written in source order, or (the default) sorted by
  XXH3-64 of each item's name with the shuffle seed (:func:`~.preprocess.shuffle_order`).
  An item's samples (an AISegment image's three crops) stay together.
* **Shards.** Items are cut into shards in that order; a shard ends before the item that
  would take any output past ``max_count`` samples or ``max_bytes`` bytes (an item larger
  than ``max_bytes`` gets a shard of its own). With several outputs (AISegment variants)
  every output's shard ``k`` holds the same items, so the largest output sets the cut.
* **Sizes.** Every sample's member size follows from its name (and, for class targets
  with more than 128 classes, its label; where the label is unknown before loading, the
  largest possible size is planned and shards are written whole).
* **Pieces.** With several workers a shard may be written as several pieces, each at its
  planned byte offset (:func:`shardwriter.pack.balance`); pieces only change who writes
  which bytes, never the bytes. Where sizes are not exact, shards are written whole.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import format as fmt
from .errors import PackError, SettingsError
from .preprocess import shuffle_order
from .sources.base import OutputSpec, Source


@dataclass(frozen=True)
class ShardPlan:
    """Shard ``number`` of ``split``: items ``start:stop`` of the split's ordered items."""

    split: str
    number: int
    start: int
    stop: int
    first: int  # planned split position of its first sample (the same in every output)
    count: int  # planned samples per output
    bytes: tuple[int, ...]  # planned bytes per output, end-of-archive marker included

    @property
    def key(self) -> str:
        return f"{self.split}-{self.number:06d}"


@dataclass
class SplitPlan:
    name: str
    items: list[Any]
    names: list[list[str]]  # the sample names of each item
    per_item: list[int]  # samples each item gives each output
    offsets: list[np.ndarray]  # per output: cumulative planned bytes of items (len(items) + 1)
    shards: list[ShardPlan] = field(default_factory=list)


@dataclass
class Plan:
    """Every split's plan (see the module docstring); ``exact`` when all sizes are known up front."""

    outputs: list[OutputSpec]
    splits: dict[str, SplitPlan]
    exact: bool
    seed: int | None

    def shards(self) -> list[ShardPlan]:
        """Every shard of every split, in the global order parts are dealt from."""
        return [s for sp in self.splits.values() for s in sp.shards]

    def shard(self, split: str, number: int) -> ShardPlan:
        return self.splits[split].shards[number]

    def piece_offset(self, shard: ShardPlan, item: int, output: int) -> int:
        """Planned byte offset, inside its shard, of item ``item``'s first member in ``output``."""
        off = self.splits[shard.split].offsets[output]
        return int(off[item] - off[shard.start])

    def first_sample(self, shard: ShardPlan, item: int) -> int:
        """Planned position in the shard of item ``item``'s first sample."""
        per = self.splits[shard.split].per_item
        return sum(per[shard.start : item])

    def table(self) -> dict[str, list[int]]:
        """Planned samples per shard, per split (what assembling needs of the plan)."""
        return {name: [s.count for s in sp.shards] for name, sp in self.splits.items()}

    def digest(self, source: Source) -> str:
        """sha256 over the cut and every item's name: two plans with one digest write the same files."""
        h = hashlib.sha256()
        h.update(json.dumps({"seed": self.seed, "exact": self.exact, "table": self.table(),
                             "bytes": {n: [list(s.bytes) for s in sp.shards] for n, sp in self.splits.items()}}).encode())
        for sp in self.splits.values():
            h.update("\0".join("\1".join(ns) for ns in sp.names).encode("utf-8", "surrogatepass") + b"\2")
        return h.hexdigest()


def make_plan(source: Source, max_count: int, max_bytes: int, shuffle: bool, seed: int) -> Plan:
    """The plan of ``source`` (see the module docstring)."""
    specs = source.outputs()
    encoders = [fmt.MemberEncoder(s.schema) for s in specs]
    raw = source.plan()
    for split in ("train", "test"):
        raw.setdefault(split, [])  # loaders and train.py expect both, even if empty
    unknown = [s for s in raw if s not in fmt.SPLITS]
    if unknown:
        raise PackError(f"the source plans split {unknown[0]!r}; splits are {', '.join(fmt.SPLITS)}")
    exact = True
    splits: dict[str, SplitPlan] = {}
    default_item_name = type(source).item_name is Source.item_name
    for name in fmt.SPLITS:
        if name not in raw:
            continue
        items = list(raw[name])
        names = [source.sample_names(it) for it in items]
        if shuffle and len(items) > 1:
            keys = [n[0] for n in names] if default_item_name else [source.item_name(it) for it in items]
            order = shuffle_order(keys, seed)
            items, names = [items[i] for i in order], [names[i] for i in order]
        per_item = [len(n) for n in names]
        if any(c < 1 for c in per_item):
            raise PackError(f"split {name}: the source plans an item with no samples")
        flat = [n for ns in names for n in ns]
        lens = np.fromiter((len(n.encode("utf-8", "surrogatepass")) for n in flat), np.int64, len(flat))
        owner = np.repeat(np.arange(len(items)), per_item)
        labels = None
        offsets = []
        for enc in encoders:
            if enc.label_sizes_vary() and labels is None:
                got = [source.sample_labels(it) for it in items]
                if all(g is not None for g in got):
                    labels = np.array([v for g in got for v in g], np.int64)  # type: ignore[union-attr]
            if enc.label_sizes_vary() and labels is None:
                exact = False
            sizes = enc.member_sizes(lens, labels if enc.label_sizes_vary() else None)
            per = np.zeros(len(items) + 1, np.int64)
            np.add.at(per, owner + 1, sizes)
            offsets.append(np.cumsum(per))
        sp = SplitPlan(name, items, names, per_item, offsets)
        _cut(sp, len(specs), max_count, max_bytes)
        if sum(per_item) >= fmt.MAX_SPLIT_SAMPLES:
            raise SettingsError(f"split {name} would hold {sum(per_item)} samples; a split holds fewer than 10^9")
        if len(sp.shards) > 10**6:
            raise SettingsError(f"split {name} would need {len(sp.shards)} shards (at most 10^6); raise --max-count or --max-bytes")
        splits[name] = sp
    return Plan(specs, splits, exact, seed if shuffle else None)


def _cut(sp: SplitPlan, outputs: int, max_count: int, max_bytes: int) -> None:
    n = len(sp.items)
    counts = np.concatenate([[0], np.cumsum(np.asarray(sp.per_item, np.int64))])
    room = max_bytes - len(fmt.TAR_END)
    start = first = 0
    while start < n:
        stop = int(np.searchsorted(counts, counts[start] + max_count, "right")) - 1
        for o in range(outputs):
            off = sp.offsets[o]
            stop = min(stop, int(np.searchsorted(off, off[start] + room, "right")) - 1)
        stop = min(max(stop, start + 1), n)  # an item larger than the limits gets a shard of its own
        count = int(counts[stop] - counts[start])
        sp.shards.append(ShardPlan(sp.name, len(sp.shards), start, stop, first, count,
                                   tuple(int(sp.offsets[o][stop] - sp.offsets[o][start]) + len(fmt.TAR_END) for o in range(outputs))))
        first += count
        start = stop
