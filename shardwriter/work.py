"""What a worker process does: load a piece's items, encode them, write them at their planned offsets.

:func:`run_piece` is the whole job of a worker for one :class:`PieceTask`: it loads the
items a batch at a time through the source (decode, preprocess, check), frames the
samples of every output with :class:`~shardwriter.format.MemberEncoder`, and writes the
bytes straight into each output's temporary shard file at the planned offset (and the
index rows at their planned slots). A task that covers a whole shard finishes it too
(end-of-archive marker, index header, sha256, fsync). Nothing but a small summary goes
back to the main process: counts, bytes, the class histogram, skipped inputs and, for
sources whose fingerprint covers the samples, a digest of their content.

The content digest of a piece is a sum, modulo 2^128, of one XXH3-128 per sample (of
its split position in the plan, name and per-sample hashes) and per skipped input, so
the digests of pieces add up to the digest of their shard however the shard was cut.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from . import format as fmt
from .errors import PackError
from .sources.base import Source
from .writer import Segment, ShardDigest, _open_rw, _sync, _truncate, pwrite_all, seal, temp_names

_MOD = 1 << 128


@dataclass
class Context:
    """What every task of a pack needs; set once per worker process."""

    source: Source
    dirs: list[Path]  # per output
    encoders: list[fmt.MemberEncoder]
    subdirs: list[str]
    num_classes: list[int]
    kinds: list[str]


def make_context(source: Source, dirs: list[Path]) -> Context:
    specs = source.outputs()
    return Context(source, dirs, [fmt.MemberEncoder(s.schema) for s in specs], [s.subdir for s in specs],
                   [len(s.classes) for s in specs], [s.target_kind for s in specs])


@dataclass(frozen=True)
class PieceTask:
    """Items ``start:stop`` (split positions) of planned shard ``shard``: where their bytes go."""

    split: str
    shard: int
    start: int
    stop: int
    items: list[Any]
    names: list[list[str]]  # the planned sample names of each item
    first_key: int  # planned key of the piece's first sample
    first_row: int  # planned row of its first sample inside the shard
    offsets: tuple[int, ...]  # per output: planned byte offset inside the shard
    planned: tuple[int, ...]  # per output: planned bytes of the piece
    count: int  # planned samples per output
    whole: bool  # the piece is the whole shard: finish it
    check: bool = False  # only compute the digest (a re-run checking content); write nothing


def sample_digest(split: str, position: int, j: int, name: str, x_hash: int, y_hash: int, label: int) -> int:
    return xxhash.xxh3_128_intdigest(f"{split}\0{position}\0{j}\0{name}\0{x_hash}\0{y_hash}\0{label}".encode("utf-8", "surrogatepass"))


def skip_digest(split: str, position: int, name: str, reason: str) -> int:
    return xxhash.xxh3_128_intdigest(f"{split}\0{position}\0skipped\0{name}\0{reason}".encode("utf-8", "surrogatepass"))


def run_piece(ctx: Context, task: PieceTask, progress: Any = None, digest: bool = False) -> dict[str, Any]:
    """Write (or, with ``task.check``, only read and digest) one piece; its summary for the journal."""
    n_out = len(ctx.encoders)
    write = not task.check
    paths = [temp_names(d, task.split, task.shard) for d in ctx.dirs]
    fds: list[tuple[int, int]] = []
    try:
        if write:
            for shard_path, index_path in paths:
                fds.append((_open_rw(shard_path), _open_rw(index_path)))
        offs = list(task.offsets)
        row = task.first_row
        key = task.first_key
        shas = [ShardDigest() for _ in range(n_out)] if task.whole and write else []
        kept: list[list[tuple[int, ...]]] = [[] for _ in range(n_out)]
        hist = [np.zeros(k, np.int64) for k in ctx.num_classes]
        skipped: list[list[str]] = []
        total = 0
        source = ctx.source
        step = source.batch_items()
        count = 0
        for a in range(0, len(task.items), step):
            chunk = task.items[a : a + step]
            loaded = source.load_batch(chunk)
            bad = {p for p, _, _ in loaded.bad}
            for p, name, reason in sorted(loaded.bad):
                skipped.append([name, reason])
                if digest:
                    total += skip_digest(task.split, task.start + a + p, name, reason)
            planned = task.names[a : a + step]
            good = [p for p in range(len(chunk)) if p not in bad] if bad else range(len(chunk))
            names_of = [planned[p] for p in good] if bad else planned
            expect = [n for ns in names_of for n in ns]
            for o, enc in enumerate(ctx.encoders):
                cols = loaded.columns[ctx.subdirs[o]]
                if cols.names != expect:
                    raise PackError(f"{type(source).__name__}: loaded samples {cols.names[:3]}... but sample_names() planned "
                                    f"{expect[:3]}...; a source's samples must be the ones it names")
                parts: list[Any] = []
                rows: list[tuple[int, ...]] = []
                end = enc.encode(key, offs[o], cols.x, cols.y, cols.names, parts, rows)
                if write:
                    blob = b"".join(parts)
                    if end - task.offsets[o] > task.planned[o]:
                        raise PackError(f"{paths[o][0]}: piece {task.start}:{task.stop} takes more bytes than planned "
                                        "(a source's samples differ from what it named); nothing was written past its share")
                    pwrite_all(fds[o][0], blob, offs[o], paths[o][0])
                    if task.whole:
                        shas[o].update(blob)
                        kept[o] += rows
                    elif rows:
                        pwrite_all(fds[o][1], np.array(rows, dtype=fmt.INDEX_DTYPE).tobytes(),
                                   fmt.INDEX_HEADER + row * fmt.INDEX_DTYPE.itemsize, paths[o][1])
                if len(cols.y):
                    if ctx.kinds[o] == "class":
                        hist[o] += np.bincount(cols.y, minlength=ctx.num_classes[o])[: ctx.num_classes[o]]
                    elif ctx.kinds[o] == "mask":
                        hist[o] += np.bincount(cols.y.reshape(-1), minlength=ctx.num_classes[o])[: ctx.num_classes[o]]
                if digest:
                    pos = [(task.start + a + p, j) for p, ns in zip(good, names_of) for j in range(len(ns))]
                    for (ip, j), nm, r in zip(pos, cols.names, rows):
                        total += sample_digest(task.split, ip, j, nm, r[7], r[8], r[6])
                offs[o] = end
            key += len(expect)
            row += len(expect)
            count += len(expect)
            if progress is not None:
                progress(len(chunk))
        outputs = []
        for o in range(n_out):
            nbytes = offs[o] - task.offsets[o]
            if not skipped and nbytes != task.planned[o]:
                raise PackError(f"{paths[o][0]}: piece {task.start}:{task.stop} took {nbytes} bytes, {task.planned[o]} "
                                "were planned (a source's samples differ from what it named)")
            out: dict[str, Any] = {"count": count, "bytes": nbytes, "hist": hist[o].tolist()}
            if write and task.whole:
                shard_path, index_path = paths[o]
                fd, ifd = fds[o]
                pwrite_all(fd, fmt.TAR_END, offs[o], shard_path)
                shas[o].update(fmt.TAR_END)
                _truncate(fd, offs[o] + len(fmt.TAR_END), shard_path)
                index = fmt.encode_index(np.array(kept[o], dtype=fmt.INDEX_DTYPE))
                pwrite_all(ifd, index, 0, index_path)
                _truncate(ifd, len(index), index_path)
                _sync(fd, shard_path)
                _sync(ifd, index_path)
                out.update({"bytes": offs[o] + len(fmt.TAR_END), **shas[o].result(),
                            "index_bytes": len(index), "index_sha256": hashlib.sha256(index).hexdigest()})
            elif write:
                _sync(fds[o][0], paths[o][0])
                _sync(fds[o][1], paths[o][1])
            outputs.append(out)
        return {"split": task.split, "shard": task.shard, "start": task.start, "stop": task.stop, "whole": task.whole,
                "outputs": outputs, "skipped": skipped, "digest": f"{total % _MOD:032x}"}
    finally:
        for fd, ifd in fds:
            os.close(fd)
            os.close(ifd)


def run_seal(ctx: Context, split: str, shard: int, segments: list[list[Segment]], first_key: int) -> list[dict[str, Any]]:
    """Seal a shard written in pieces, in every output (:func:`~shardwriter.writer.seal`)."""
    out = []
    for o, d in enumerate(ctx.dirs):
        shard_path, index_path = temp_names(d, split, shard)
        out.append(seal(shard_path, index_path, segments[o], first_key))
    return out


# --------------------------------------------------------------------------- worker processes

_CTX: Context | None = None
_PROGRESS: Any = None


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the pack process ends, however it ends (no orphan keeps writing)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        parent = os.getppid()
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)
    except (OSError, AttributeError):  # pragma: no cover - no prctl
        pass


def init_worker(ctx: Context, progress: Any = None) -> None:
    """Initializer of each worker process: die with the parent, hold the context, let the source prepare."""
    global _CTX, _PROGRESS
    _die_with_parent()
    _CTX, _PROGRESS = ctx, progress

    torch = sys.modules.get("torch")  # only when the source brought torch along: importing it costs a second
    if torch is not None:
        torch.set_num_threads(1)
    ctx.source.prepare_worker()


def _count(n: int) -> None:
    if _PROGRESS is not None:
        with _PROGRESS.get_lock():
            _PROGRESS.value += n


def piece_in_worker(task: PieceTask, digest: bool) -> dict[str, Any]:
    assert _CTX is not None
    return run_piece(_CTX, task, _count, digest)


def seal_in_worker(split: str, shard: int, segments: list[list[Segment]], first_key: int) -> list[dict[str, Any]]:
    assert _CTX is not None
    return run_seal(_CTX, split, shard, segments, first_key)


__all__ = ["Context", "PieceTask", "init_worker", "make_context", "piece_in_worker", "run_piece", "run_seal", "seal_in_worker"]
