"""The pack job as one object: its journal, its state, and the assembly of the finished dataset.

A job's state lives in one append-only journal, ``OUT/.ai8x-shards-job`` (one per part:
``.ai8x-shards-job-K-of-N``). Its first line is the **header**: everything the finished
dataset depends on (the source fingerprint, the plan's digest and shard table, every
output's manifest skeleton, the options). Every later line records one finished unit
of work, for every output at once: a **piece** (items ``start:stop`` of a shard written
at their planned offsets) or a **sealed** shard (its counts, bytes, sha256s, class
histogram, skipped inputs and content digest). Each line carries its own XXH3 checksum
and is appended with one ``write`` and an ``fsync``, after the files it describes are
fsynced; a torn last line (a crash mid-append) is ignored and cut off. So a kill at any
moment loses at most the work in flight, and a re-run finds each output's shards,
resume point and histogram together, never one output ahead of another.

:func:`assemble` turns the sealed shards (of one job, or of every part) into the
dataset: shards renamed to their final names in order (an empty one dropped, and keys
renumbered where skipped inputs shifted them), manifests written last. It works from
the journal alone and is idempotent, so a kill during assembly is resumed too, and its
result is byte-identical however the work was cut (workers, parts, kills). A merge first
writes the parts' sealed records, atomically, as the journal of the same job run in one
piece (part 1/1), then removes the part journals and assembles that one: no kill can
leave some part journals gone and the dataset unassembled.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from . import format as fmt
from .errors import FormatError, PackError, StorageError
from .writer import Segment, _named, file_digests, file_sha256, rebuild_shard, replace_named, temp_names, write_atomic

JOURNAL_PREFIX = ".ai8x-shards-job"
JOURNAL_VERSION = 1


def journal_name(part: tuple[int, int] | None = None) -> str:
    return JOURNAL_PREFIX if part is None or part == (1, 1) else f"{JOURNAL_PREFIX}-{part[0]}-of-{part[1]}"


def journal_line(record: dict[str, Any]) -> bytes:
    body = json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return f"{body} {xxhash.xxh3_64_hexdigest(body.encode())}\n".encode()


def read_journal(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The intact records of a journal and the byte length they take (a torn tail is left out)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    except OSError as exc:
        raise _named(path, exc, "read") from None
    records, good = [], 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        body, _, check = line.rstrip(b"\n").rpartition(b" ")
        if xxhash.xxh3_64_hexdigest(body) != check.decode("ascii", "replace"):
            break
        try:
            records.append(json.loads(body))
        except ValueError:
            break
        good += len(line)
    return records, good


class Journal:
    """Appends records to a job's journal (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def create(self, header: dict[str, Any]) -> None:
        write_atomic_named(self.path, journal_line(header))
        self._open(len(journal_line(header)))

    def _open(self, length: int) -> None:
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0))
            if os.fstat(self.fd).st_size != length:
                os.ftruncate(self.fd, length)  # cut a torn last line
        except OSError as exc:
            raise _named(self.path, exc, "open") from None

    def resume(self, length: int) -> None:
        self._open(length)

    def append(self, record: dict[str, Any]) -> None:
        assert self.fd is not None
        data = journal_line(record)
        try:
            n = os.write(self.fd, data)
            if n != len(data):
                raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (a short write to the job journal)")
            os.fsync(self.fd)
        except OSError as exc:
            raise _named(self.path, exc, "append to") from None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def write_atomic_named(path: Path, data: bytes) -> None:
    try:
        write_atomic(path, data)
    except OSError as exc:
        path.with_name(f".{path.name}.tmp").unlink(missing_ok=True)
        raise _named(path, exc, "write") from None


class PackJob:
    """A job's state: its header, the pieces written and the shards sealed (from its journal)."""

    def __init__(self, header: dict[str, Any], records: list[dict[str, Any]] = ()) -> None:  # type: ignore[assignment]
        self.header = header
        self.pieces: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.sealed: dict[tuple[str, int], dict[str, Any]] = {}
        for r in records:
            self.record(r)

    def record(self, r: dict[str, Any]) -> None:
        key = (r["split"], r["shard"])
        if r["t"] == "piece":
            self.pieces.setdefault(key, []).append(r)
        elif r["t"] == "sealed":
            self.sealed[key] = r
            self.pieces.pop(key, None)

    def done_pieces(self, split: str, shard: int) -> list[dict[str, Any]]:
        return sorted(self.pieces.get((split, shard), []), key=lambda r: r["start"])

    @property
    def part(self) -> tuple[int, int]:
        k, n = self.header["part"]
        return (k, n)


def sealed_record(split: str, shard: int, pieces: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """The journal record of a shard sealed from ``pieces`` (sorted), with ``outputs`` the sealed files."""
    n_out = len(outputs)
    total = sum(int(p["digest"], 16) for p in pieces) % (1 << 128)
    hist = [np.sum([p["outputs"][o]["hist"] for p in pieces], axis=0).astype(np.int64).tolist() for o in range(n_out)]
    return {"t": "sealed", "split": split, "shard": shard, "skipped": [s for p in pieces for s in p["skipped"]],
            "digest": f"{total:032x}", "outputs": [{**outputs[o], "hist": hist[o]} for o in range(n_out)]}


def shard_keys(header: dict[str, Any]) -> list[tuple[str, int]]:
    """Every planned shard, in the global order (splits in train, test, val order): how parts are dealt."""
    table = header["table"]
    return [(split, n) for split in fmt.SPLITS if split in table for n in range(len(table[split]))]


def output_dirs(out: Path, header: dict[str, Any]) -> list[Path]:
    return [out / o["subdir"] if o["subdir"] else out for o in header["outputs"]]


def final_fingerprint(header: dict[str, Any], sealed: dict[tuple[str, int], dict[str, Any]]) -> str:
    """The manifest's fingerprint: the source's, and for content-checked sources every shard's digest."""
    if not header["content_checked"]:
        return header["fingerprint"]
    h = hashlib.sha256(header["fingerprint"].encode())
    for key in shard_keys(header):
        h.update(sealed[key]["digest"].encode())
    return h.hexdigest()


def assemble(out: Path, header: dict[str, Any], sealed: dict[tuple[str, int], dict[str, Any]]) -> list[fmt.Manifest]:
    """Rename sealed shards to their final names, renumbering keys where needed; write the manifests."""
    dirs = output_dirs(out, header)
    n_out = len(dirs)
    missing = [f"{s}-{n:06d}" for s, n in shard_keys(header) if (s, n) not in sealed]
    if missing:
        raise PackError(f"{out}: {len(missing)} shard(s) not written yet ({', '.join(missing[:5])}); run every part first")
    splits: list[dict[str, Any]] = [{} for _ in range(n_out)]
    skipped: list[dict[str, str]] = []
    for split in (s for s in fmt.SPLITS if s in header["table"]):
        counts = header["table"][split]
        planned = actual = number = 0
        entries: list[list[dict[str, Any]]] = [[] for _ in range(n_out)]
        hist = [np.zeros(len(o["manifest"]["classes"]), np.int64) for o in header["outputs"]]
        for shard, planned_count in enumerate(counts):
            rec = sealed[(split, shard)]
            skipped += [{"split": split, "name": name, "reason": reason} for name, reason in rec["skipped"]]
            count = rec["outputs"][0]["count"]
            for o, d in enumerate(dirs):
                info = rec["outputs"][o]
                hist[o] += np.asarray(info["hist"], np.int64)
                tmp, tmp_index = temp_names(d, split, shard)
                if count == 0:
                    tmp.unlink(missing_ok=True)
                    tmp_index.unlink(missing_ok=True)
                    continue
                entries[o].append(_place(d, split, number, tmp, tmp_index, info, count, actual, planned))
            number += bool(count)
            planned += planned_count
            actual += count
        for o in range(n_out):
            entry: dict[str, Any] = {"count": actual, "shards": entries[o]}
            if header["outputs"][o]["manifest"]["target"]["kind"] != "regression":
                entry["class_histogram"] = hist[o].tolist()
                entry["class_weights"] = fmt.class_weights(hist[o].tolist())
            splits[o][split] = entry
    fingerprint = final_fingerprint(header, sealed)
    manifests = []
    for o, d in enumerate(dirs):
        obj = dict(header["outputs"][o]["manifest"])
        obj["splits"] = splits[o]
        obj["source"] = {**obj["source"], "fingerprint": fingerprint}
        obj["skipped"] = {"count": len(skipped), "inputs": skipped}
        path = d / fmt.MANIFEST_NAME
        m = fmt.manifest_from_json(obj, str(path))  # exactly what a reader will accept
        manifests.append(m)
    for d in dirs:  # what a killed assembly may have left (it holds all of OUT now)
        for p in d.glob(".*.rebuild.tmp"):
            p.unlink(missing_ok=True)
    for m, d in zip(manifests, dirs):
        write_atomic_named(d / fmt.MANIFEST_NAME, m.dump())
    return manifests


def _place(d: Path, split: str, number: int, tmp: Path, tmp_index: Path, info: dict[str, Any], count: int,
           first: int, planned_first: int) -> dict[str, Any]:
    """Put one sealed shard under its final name (idempotent); its manifest entry."""
    final = d / fmt.shard_name(split, number)
    final_index = d / fmt.index_name(final.name)
    if first != planned_first:  # skipped inputs before this shard moved its keys
        if tmp.exists():
            got = rebuild_shard(tmp, tmp_index, [Segment(0, info["bytes"] - len(fmt.TAR_END), 0, count)], first, final, final_index)
            tmp.unlink(missing_ok=True)
            tmp_index.unlink(missing_ok=True)
        else:  # rebuilt by an earlier, interrupted assembly (killed before its temporary index was removed?)
            tmp_index.unlink(missing_ok=True)
            got = {"count": count, "bytes": _size(final), **file_digests(final), "index_bytes": _size(final_index),
                   "index_sha256": file_sha256(final_index)}
    else:
        if tmp_index.exists():
            replace_named(tmp_index, final_index)
        if tmp.exists():
            replace_named(tmp, final)
        got = info
        if _size(final) != info["bytes"] or _size(final_index) != info["index_bytes"]:
            raise FormatError(f"{final}: {_size(final)} bytes (index {_size(final_index)}), the job journal recorded "
                              f"{info['bytes']} ({info['index_bytes']}); the folder was changed during the pack; "
                              "run the pack again with --overwrite")
    entry = {"file": final.name, "count": count, "bytes": got["bytes"], "sha256": got["sha256"],
             "index": {"file": final_index.name, "bytes": got["index_bytes"], "sha256": got["index_sha256"]}}
    if got.get("xxh3"):
        entry["xxh3"] = got["xxh3"]
    return entry


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        raise FormatError(f"{path}: missing; the job journal says it was written (the folder was changed during the "
                          "pack; run the pack again with --overwrite)") from None
    except OSError as exc:
        raise StorageError(f"{path}: {exc.strerror or exc}") from None
