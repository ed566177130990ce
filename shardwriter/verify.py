"""Check, repair and describe datasets: ``ai8x-shards verify``, ``reindex`` and ``info``.

All three work on any location (:func:`shardwriter.storage.open_store`). ``verify`` reads
every byte once, sequentially: each shard's size and sha256 against the manifest, every
tar header and record decoded, its key checked against its position and its contents
against the manifest's schema, and each index file against the index rebuilt from its
shard (which also checks every per-sample hash). It reports every problem found, each
naming the shard (and sample or byte offset), rather than stopping at the first.

``reindex`` rebuilds missing or damaged index files of a local dataset, and upgrades a
format-1 dataset to format 2 (per-sample hashes). It never writes an index built from a
shard that fails its checks: it then raises :class:`FormatError` naming every problem
and leaves the dataset as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from typing import IO, Any

import numpy as np
import xxhash

from . import format as fmt
from .errors import FormatError, SettingsError, StorageError
from .options import Options
from .storage import LocalStore, Store, open_store

#: Problems listed per shard (the rest are counted): a shard of the wrong dataset fails every sample.
MAX_SAMPLE_PROBLEMS = 20


class _Hashing:
    """A read-only file wrapper that hashes and counts every byte read through it."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.sha, self.xxh, self.n = f, hashlib.sha256(), xxhash.xxh3_128(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.sha.update(data)
        self.xxh.update(data)
        self.n += len(data)
        return data

    def drain(self, limit: int) -> None:
        """Read on to the end of the file (at most ``limit`` more bytes)."""
        while limit > 0:
            data = self.read(min(limit, 1 << 20))
            if not data:
                return
            limit -= len(data)


def _scan(store: Store, m: fmt.Manifest, shard: fmt.ShardEntry) -> tuple[np.ndarray | None, list[str]]:
    """Read ``shard`` once: its rebuilt index rows (None when its framing is broken) and its problems."""
    name = shard.file
    try:
        f = store.open_read(name)
    except (FormatError, StorageError) as exc:
        return None, [f"{name}: missing or unreadable ({exc})"]
    problems: list[str] = []
    rows = None
    with f:
        h = _Hashing(f)
        try:
            found: list[tuple[int, ...]] = []
            members = fmt.iter_tar_members(h, name, shard.bytes)  # type: ignore[arg-type]
            for k, member in enumerate(members):
                where = f"{name} sample {k} (byte {member.header_offset})"
                key = fmt.member_key(member.name, where)
                want = fmt.sample_key(shard.first + k) if shard.first + k < fmt.MAX_SPLIT_SAMPLES else "?"
                if key != want:
                    problems.append(f"{where}: key {key}, expected {want} (samples swapped or from another shard)")
                try:
                    rec = fmt.decode_record(member.payload, where)
                except FormatError as exc:
                    problems.append(str(exc))
                    found.append((member.offset, len(member.payload), 0, 0, 0, 0, -1, 0, 0))
                    continue
                why = m.schema.problem(rec.x, rec.y) if rec.target_kind == m.target.kind else (
                    f"target kind {rec.target_kind}, the manifest says {m.target.kind}")
                if why:
                    problems.append(f"{where}: {why}")
                enc = fmt.encode_record(rec.key, rec.x, rec.target_kind, rec.y, rec.source)
                if enc.payload != member.payload:
                    problems.append(f"{where}: record is not in canonical form")
                found.append(fmt.index_row(member.offset, enc))
            rows = np.array(found, dtype=fmt.INDEX_DTYPE)
            if len(rows) != shard.count:
                problems.append(f"{name}: holds {len(rows)} samples, the manifest says {shard.count}")
        except FormatError as exc:
            problems.append(str(exc))
        h.drain(shard.bytes + 1 - h.n)
    first = []  # what is wrong with the shard as a whole comes before what is wrong inside it
    if h.n != shard.bytes:
        first.append(f"{name}: {h.n if h.n <= shard.bytes else 'more than ' + str(shard.bytes)} bytes, "
                     f"the manifest says {shard.bytes} (truncated or altered)")
    if h.sha.hexdigest() != shard.sha256:
        first.append(f"{name}: sha256 mismatch (shard altered or corrupt)")
    elif shard.xxh3 is not None and h.xxh.hexdigest() != shard.xxh3:
        first.append(f"{name}: XXH3-128 mismatch with a matching sha256 (the manifest's xxh3 field was altered)")
    if len(problems) > MAX_SAMPLE_PROBLEMS:
        problems = problems[:MAX_SAMPLE_PROBLEMS] + [f"{name}: ... and {len(problems) - MAX_SAMPLE_PROBLEMS} more problems in this shard"]
    return rows, first + problems


def _index_problems(store: Store, m: fmt.Manifest, shard: fmt.ShardEntry, rows: np.ndarray | None) -> list[str]:
    ix = shard.index
    try:
        buf = store.read_bytes(ix.file, limit=max(ix.bytes, fmt.INDEX_HEADER) + 1)
    except (FormatError, StorageError) as exc:
        return [f"{ix.file}: index missing or unreadable ({exc}); rebuild it with: ai8x-shards reindex {store.location}"]
    problems = []
    if len(buf) != ix.bytes or hashlib.sha256(buf).hexdigest() != ix.sha256:
        problems.append(f"{ix.file}: does not match the manifest (size or sha256); rebuild it with: ai8x-shards reindex {store.location}")
    try:
        stored = fmt.decode_index(buf, ix.file, m.version)
    except FormatError as exc:
        return problems + [str(exc)]
    if rows is not None and not np.array_equal(stored, _as_version(rows, m.version)):
        problems.append(f"{ix.file}: does not match its shard (rebuild it with: ai8x-shards reindex {store.location})")
    return problems


def _as_version(rows: np.ndarray, version: int) -> np.ndarray:
    """Rows as a format-``version`` index holds them (format 1: no hashes)."""
    return fmt.decode_index(fmt.encode_index(rows, version), "rows")


def verify(location: str | os.PathLike[str] | Store, opts: Options | None = None) -> list[str]:
    """Every problem of the dataset at ``location`` (empty when it is sound)."""
    store = open_store(location, opts)
    try:
        m = store.read_manifest()
    except (FormatError, StorageError) as exc:
        return [str(exc)]
    problems: list[str] = []
    for shard in m.shards():
        rows, found = _scan(store, m, shard)
        problems += found + _index_problems(store, m, shard, rows)
    return problems


def reindex(location: str | os.PathLike[str], opts: Options | None = None) -> list[str]:
    """Rebuild the missing or damaged indexes of a local dataset (format 1: upgrade to 2); the files written.

    Every shard is read and checked first (size, sha256, every record); if any fails, a
    :class:`FormatError` names each problem and nothing is written. A rebuilt index must
    be the one the manifest records (the writer is deterministic); a format-1 dataset
    gets format-2 indexes and manifest (the shards stay as they are).
    """
    store = open_store(location, opts)
    if not isinstance(store, LocalStore):
        raise SettingsError(f"{store.location}: reindex rewrites files, so it works on a local folder; "
                            "copy the dataset here, reindex, and upload it again")
    m = store.read_manifest()
    version = fmt.FORMAT_VERSION
    built: dict[str, bytes] = {}
    problems: list[str] = []
    for shard in m.shards():
        rows, found = _scan(store, m, shard)
        problems += found
        if rows is not None and not found:
            buf = fmt.encode_index(rows, version)
            if m.version == version and hashlib.sha256(buf).hexdigest() != shard.index.sha256:
                problems.append(f"{shard.index.file}: the index rebuilt from {shard.file} differs from the one the manifest "
                                "records (the manifest does not belong to these shards)")
            built[shard.index.file] = buf
    if problems:
        raise FormatError(f"{store.location}: not reindexed, {len(problems)} problem(s): " + "; ".join(problems[:20])
                          + (" ..." if len(problems) > 20 else ""))
    from .writer import write_atomic

    written = []
    for name, buf in built.items():
        path = store.path(name)
        try:
            same = path.read_bytes() == buf
        except OSError:
            same = False
        if not same:
            write_atomic(path, buf)
            written.append(name)
    if m.version != version:
        splits = {}
        for name, split in m.splits.items():
            shards = tuple(replace(s, index=fmt.FileEntry(s.index.file, len(built[s.index.file]),
                                                          hashlib.sha256(built[s.index.file]).hexdigest())) for s in split.shards)
            splits[name] = replace(split, shards=shards)
        write_atomic(store.path(fmt.MANIFEST_NAME), m.with_splits(splits, version).dump())
        written.append(fmt.MANIFEST_NAME)
    return written


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def summary(m: fmt.Manifest) -> dict[str, Any]:
    """What ``info`` shows, as plain data (``info --json``)."""
    return {
        "name": m.name,
        "variant": m.variant,
        "format_version": m.version,
        "created_by": m.created_by,
        "per_sample_hashes": m.hashed,
        "input_shape": list(m.input_shape),
        "preprocessing": dict(m.preprocessing),
        "target": {"kind": m.target.kind, "shape": list(m.target.shape) if m.target.shape is not None else None},
        "classes": list(m.classes),
        "splits": {
            name: {"count": s.count, "shards": len(s.shards), "bytes": s.bytes,
                   "class_histogram": list(s.class_histogram) if s.class_histogram is not None else None,
                   "class_weights": list(s.class_weights) if s.class_weights is not None else None}
            for name, s in m.splits.items()
        },
        "skipped": [{"split": r.split, "name": r.name, "reason": r.reason} for r in m.skipped],
        "warnings": warnings_of(m),
    }


def warnings_of(m: fmt.Manifest) -> list[str]:
    """What a user should know before training on this dataset."""
    out = [f"split {name} is empty" for name, s in m.splits.items() if s.count == 0] + list(m.warnings)
    if not m.hashed:
        out.append("format 1: samples carry no checksums, so damaged shards can go unnoticed; "
                   "run ai8x-shards reindex on the folder to upgrade it to format 2")
    return out


def info(location: str | os.PathLike[str] | Store, opts: Options | None = None, *, as_json: bool = False, all_skipped: bool = False) -> str:
    """A readable summary of a dataset (or, with ``as_json``, :func:`summary` as JSON)."""
    m = open_store(location, opts).read_manifest()
    if as_json:
        return json.dumps(summary(m), indent=1)
    classes = m.classes
    lines = [
        f"dataset   {m.name}" + (f" ({m.variant})" if m.variant else ""),
        f"format    {fmt.FORMAT_NAME} v{m.version} ({m.created_by or '?'})" + ("" if m.hashed else ", no per-sample checksums"),
        f"input     uint8 {tuple(m.input_shape)}",
        *(f"  {k:<14} {v}" for k, v in m.preprocessing.items()),
        f"target    {m.target.kind}" + (f" {tuple(m.target.shape)}" if m.target.shape else ""),
        f"classes   {len(classes)}: {', '.join(map(str, classes[:12]))}{' ...' if len(classes) > 12 else ''}",
    ]
    for split, s in m.splits.items():
        lines.append(f"{split:<9} {s.count} samples in {len(s.shards)} shard(s), {_size(s.bytes)}")
        if s.class_histogram is not None:
            lines.append(f"{'':<9} histogram {list(s.class_histogram)}  weights {list(s.class_weights or ())}")
    shown = m.skipped if all_skipped else m.skipped[:10]
    lines.append(f"skipped   {len(m.skipped)} bad input(s)" + "".join(f"\n          {r.name}: {r.reason}" for r in shown))
    if len(shown) < len(m.skipped):
        lines.append(f"          ... and {len(m.skipped) - len(shown)} more (info --all-skipped lists them)")
    lines += [f"warning   {w}" for w in warnings_of(m)]
    return "\n".join(lines)


def load_manifest(location: str | os.PathLike[str], opts: Options | None = None) -> fmt.Manifest:
    """The typed manifest of the dataset at ``location``."""
    return open_store(location, opts).read_manifest()


__all__ = ["info", "load_manifest", "reindex", "summary", "verify", "warnings_of"]
