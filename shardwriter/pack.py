"""Drive a source through worker processes into ShardWriters; resume; progress; manifest.

The order of samples is fixed by the source's plan, and worker results are consumed in
that order, so ``workers=N`` writes the same bytes as ``workers=1``. Progress is kept in
``OUT/.ai8x-shards-job.json`` (rewritten atomically after every completed shard): a
re-run of the same command after a crash skips the complete shards and writes the rest,
giving the same dataset as an uninterrupted run. Manifests are written last.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from . import format as fmt
from .errors import BadInput, PackError
from .sources.base import OutputSpec, Sample, Source
from .writer import DEFAULT_MAX_BYTES, DEFAULT_MAX_COUNT, ShardInfo, ShardWriter, write_atomic

JOB_FILE = ".ai8x-shards-job.json"


@dataclass
class _OutState:
    """Progress of one output in one split, as saved in the job file."""

    shards: list[dict[str, Any]] = field(default_factory=list)
    next_sample: int = 0
    resume: tuple[int, int] = (0, 0)  # (item index, sample number within the item)
    histogram: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"shards": self.shards, "next_sample": self.next_sample, "resume": list(self.resume), "histogram": self.histogram}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> _OutState:
        return cls(d["shards"], d["next_sample"], tuple(d["resume"]), d["histogram"])  # type: ignore[arg-type]


_SOURCE: Source | None = None


def _init_worker(source: Source) -> None:
    global _SOURCE
    _SOURCE = source
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def _load(item: Any) -> tuple[str, Any]:
    assert _SOURCE is not None
    try:
        return "ok", _SOURCE.load_checked(item)
    except BadInput as exc:
        return "bad", (exc.name, exc.reason)


def pool_context() -> Any:
    """The start method of the worker pool: the platform's, but never a fork of a threaded process.

    Where the default is ``fork`` (Linux before Python 3.14) and this process runs no other
    Python thread, workers are forked (fast; the source is inherited, not pickled). With
    other threads running (a notebook's, a server's, a DataLoader's queue feeders), a
    forked child could inherit a lock one of them held and deadlock (Python 3.12+ warns),
    so the pool uses ``forkserver`` (or ``spawn``) instead: sources pickle, and the output
    is the same bytes either way. A start method set by the application is used as set.
    """
    ctx = mp.get_context()
    if ctx.get_start_method() != "fork" or threading.active_count() == 1:
        return ctx
    return mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")


def _results(source: Source, items: list[Any], workers: int) -> Iterator[tuple[str, Any]]:
    if workers <= 1 or len(items) < 2:
        _init_worker(source)
        yield from map(_load, items)
        return
    chunk = max(1, min(16, len(items) // (workers * 4)))
    with pool_context().Pool(workers, _init_worker, (source,)) as pool:
        yield from pool.imap(_load, items, chunksize=chunk)


def _progress(total: int, desc: str, quiet: bool | None) -> Any:
    show = sys.stderr.isatty() if quiet is None else not quiet
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="input", dynamic_ncols=True, file=sys.stderr)


_OURS = re.compile(r"^\.?(manifest\.json|\.ai8x-shards-job\.json|(train|test|val)-\d{6}\.(tar|idx))(\.tmp)?$")


def _our_files(directory: Path) -> list[Path]:
    """Files in ``directory`` that this package writes (never anything else)."""
    if not directory.is_dir():
        return []
    return [p for p in directory.iterdir() if p.is_file() and _OURS.match(p.name)]


def _histogram(spec: OutputSpec, y: Any, hist: list[int]) -> None:
    if spec.target_kind == "class":
        hist[int(y)] += 1
    elif spec.target_kind == "mask":
        counts = np.bincount(np.asarray(y).ravel(), minlength=len(spec.classes))
        for c, n in enumerate(counts.tolist()):
            hist[c] += n


def pack(
    source: Source,
    out: str | os.PathLike[str],
    *,
    workers: int = 1,
    max_count: int = DEFAULT_MAX_COUNT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    skip_bad: bool = False,
    quiet: bool | None = None,
    overwrite: bool = False,
) -> list[fmt.Manifest]:
    """Pack ``source`` into ``out``; returns the manifest of each output folder.

    Raises :class:`PackError` on bad input (naming the item and the problem) unless
    ``skip_bad``, in which case the item is skipped and recorded in the manifest.
    ``quiet=None`` shows a progress bar only when stderr is a terminal.
    """
    out = Path(out)
    specs = source.outputs()
    fp = source.fingerprint()
    dirs = {s.subdir: out / s.subdir if s.subdir else out for s in specs}
    job_path = out / JOB_FILE

    existing = [d / fmt.MANIFEST_NAME for d in dirs.values() if (d / fmt.MANIFEST_NAME).exists()]
    job: dict[str, Any] | None = json.loads(job_path.read_text()) if job_path.exists() else None
    if job is None and len(existing) == len(dirs):
        manifests = [fmt.parse_manifest(p.read_bytes(), str(p)) for p in existing]
        if all(m.fingerprint == fp for m in manifests):
            return manifests  # already complete: nothing to do
    stale = (job is not None and job.get("fingerprint") != fp) or (job is None and existing)
    if not stale and job is None:
        stale = any(_our_files(d) for d in dirs.values())
    if stale:
        if not overwrite:
            raise PackError(
                f"{out} already holds a different (or partial) dataset; pass --overwrite to replace it, "
                "or choose another output folder"
            )
        for d in dirs.values():
            for p in _our_files(d):
                p.unlink()
        job_path.unlink(missing_ok=True)
        job = None
    out.mkdir(parents=True, exist_ok=True)
    if job is None:
        job = {"fingerprint": fp, "splits": {}}
        write_atomic(job_path, json.dumps(job).encode())

    plan = source.plan()
    for split in ("train", "test"):
        plan.setdefault(split, [])  # loaders and train.py expect both, even if empty
    skipped: list[dict[str, Any]] = []
    for split in fmt.SPLITS:
        if split not in plan:
            continue
        items = plan[split]
        saved = job["splits"].get(split, {})
        states = {
            s.subdir: _OutState.from_json(saved["outputs"][s.subdir]) if saved else _OutState(histogram=[0] * len(s.classes))
            for s in specs
        }
        split_skipped = list(saved.get("skipped", []))
        if saved.get("done"):
            skipped += split_skipped
            continue
        start = min(st.resume[0] for st in states.values())
        split_skipped = [r for r in split_skipped if r["item"] < start]
        for sub, st in states.items():
            for sh in st.shards:
                p = dirs[sub] / sh["file"]
                if not p.exists() or p.stat().st_size != sh["bytes"]:
                    raise PackError(f"{p}: listed as complete in {job_path} but missing or changed; rerun with --overwrite")
        _write_split(source, specs, dirs, split, items, start, states, split_skipped, job, job_path, workers, max_count, max_bytes, skip_bad, quiet)
        skipped += split_skipped

    manifests = []
    for spec in specs:
        path = dirs[spec.subdir] / fmt.MANIFEST_NAME
        m = fmt.manifest_from_json(_manifest(spec, source, fp, job, skipped), str(path))  # what a reader will accept
        write_atomic(path, m.dump())
        manifests.append(m)
    job_path.unlink()
    return manifests


def _write_split(
    source: Source,
    specs: list[OutputSpec],
    dirs: dict[str, Path],
    split: str,
    items: list[Any],
    start: int,
    states: dict[str, _OutState],
    skipped: list[dict[str, Any]],
    job: dict[str, Any],
    job_path: Path,
    workers: int,
    max_count: int,
    max_bytes: int,
    skip_bad: bool,
    quiet: bool | None,
) -> None:
    spec_of = {s.subdir: s for s in specs}
    pos: dict[str, tuple[int, int]] = {}

    def save(done: bool = False) -> None:
        job["splits"][split] = {
            "done": done,
            "skipped": skipped,
            "outputs": {sub: st.to_json() for sub, st in states.items()},
        }
        write_atomic(job_path, json.dumps(job).encode())

    def on_shard(sub: str) -> Any:
        def record(info: ShardInfo) -> None:
            st = states[sub]
            st.shards.append(info.to_json())
            st.next_sample = sum(s["count"] for s in st.shards)
            st.resume = pos[sub]
            save()

        return record

    writers = {
        sub: ShardWriter(
            dirs[sub],
            split,
            max_count=max_count,
            max_bytes=max_bytes,
            first_shard=len(st.shards),
            first_sample=st.next_sample,
            on_shard=on_shard(sub),
        )
        for sub, st in states.items()
    }
    # Histograms restart from the last complete shard, like the writers.
    bar = _progress(len(items) - start, f"{split}", quiet)
    try:
        for i, (status, result) in enumerate(_results(source, items[start:], workers), start):
            if status == "bad":
                name, reason = result
                if not skip_bad:
                    raise PackError(f"bad input {name}: {reason} (pass --skip-bad to skip and record such inputs)")
                skipped.append({"split": split, "item": i, "name": name, "reason": reason})
            else:
                per_output: dict[str, int] = {}
                sample: Sample
                for sample in result:
                    j = per_output.get(sample.output, 0)
                    per_output[sample.output] = j + 1
                    st = states[sample.output]
                    if (i, j) < st.resume:
                        continue  # already in a complete shard of this output
                    pos[sample.output] = (i, j)
                    writers[sample.output].write(sample.x, spec_of[sample.output].target_kind, sample.y, sample.name)
                    _histogram(spec_of[sample.output], sample.y, st.histogram)
            if bar is not None:
                bar.update(1)
        for sub, w in writers.items():
            pos[sub] = (len(items), 0)
            w.close()
        for st in states.values():
            st.resume = (len(items), 0)
        save(done=True)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    finally:
        if bar is not None:
            bar.close()


def _manifest(spec: OutputSpec, source: Source, fp: str, job: dict[str, Any], skipped: list[dict[str, Any]]) -> dict[str, Any]:
    splits = {}
    for split, saved in job["splits"].items():
        st = saved["outputs"][spec.subdir]
        entry: dict[str, Any] = {"count": sum(s["count"] for s in st["shards"]), "shards": st["shards"]}
        if spec.target_kind != "regression":
            entry["class_histogram"] = st["histogram"]
            entry["class_weights"] = fmt.class_weights(st["histogram"])
        splits[split] = entry
    return {
        "format": fmt.FORMAT_NAME,
        "format_version": fmt.FORMAT_VERSION,
        "created_by": f"ai8x-shards {__version__}",
        "name": spec.name,
        "variant": spec.variant,
        "preprocessing": spec.preprocessing,
        "input_shape": list(spec.input_shape),
        "input_dtype": "uint8",
        "target": {
            "kind": spec.target_kind,
            "dtype": fmt.TARGET_DTYPES[spec.target_kind],
            "shape": list(spec.target_shape) if spec.target_shape is not None else None,
        },
        "classes": list(spec.classes),
        "regression": spec.target_kind == "regression",
        "splits": splits,
        "source": {"kind": source.kind, "fingerprint": fp},
        "skipped": {"count": len(skipped), "inputs": [{k: r[k] for k in ("split", "name", "reason")} for r in skipped]},
        "sample_hash": fmt.SAMPLE_HASH,
    }
