"""What runs in each fresh benchmark subprocess: create one approach's files, or measure it.

Run as ``python -m benchmarks.measure`` with a JSON request on stdin; the last line of
stdout is ``@@RESULT {json}``. A fresh process per (approach, case, pass) keeps one
approach's memory, imports and caches from another's figures.

``create``: write the case's samples in each listed approach's format, one after the other,
each timed on its own ("first run").

``measure``, in order:

1. evict the approach's files from the page cache, then build its dataset object, timed
   ("subsequent runs": what a later training run pays before the first batch);
2. for each configuration, in order ``(0 workers, cold)``, ``(0, warm)``, ``(W, cold)``,
   ``(W, warm)``: for a cold one, evict the files first
   (``os.posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)`` after an ``fsync``); then run one
   epoch at the batch size, timed from building the DataLoader (workers start inside
   the epoch, as in train.py, where workers are re-forked every epoch) to the last
   batch. The warm epoch follows the cold one with the files left in the page cache (with
   no cold one before it, ``--cache warm``, the files are read once first); a
   short one (under :data:`WARM_SECONDS`) is run again, up to :data:`WARM_EPOCHS` epochs in
   all, and the fastest kept: a 0.1 s epoch on a shared machine is mostly its noise.
   Every batch is checked (every sample exactly once, its own target, float32 inputs);
   the check's own time is subtracted.
3. report peak RSS (``VmHWM`` of this process; ``ru_maxrss`` of its largest worker), the
   anonymous memory the dataset object holds (``RssAnon`` after building it minus before),
   and disk use (allocated blocks of the approach's files).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

RESULT_TAG = "@@RESULT "
#: A warm configuration is repeated while its epochs so far took less than this (seconds) ...
WARM_SECONDS = 1.0
#: ... up to this many epochs; the fastest is reported, with ``epochs`` saying how many ran.
WARM_EPOCHS = 5


def proc_status() -> dict[str, int]:
    """VmHWM (peak RSS), VmRSS, RssAnon, RssFile of this process in bytes (Linux; zeros elsewhere).

    VmHWM, not ``ru_maxrss``: after ``exec`` the latter starts from the parent's peak
    (the benchmark runner's), while VmHWM belongs to this process's own address space.
    """
    out = {"VmHWM": 0, "VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in out:
                    out[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


def max_rss_children() -> int:
    """Peak RSS in bytes of the largest waited-for child (DataLoader worker) of this process.

    A forked worker's figure counts the pages it shares with this process, from the fork on.
    """
    kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return int(kb) * (1 if sys.platform == "darwin" else 1024)


def evict(paths: list[Path]) -> None:
    """Drop ``paths`` from the page cache (fsync first: dirty pages cannot be dropped)."""
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def prewarm(paths: list[Path]) -> None:
    """Read ``paths`` once, so that they are in the page cache."""
    buf = bytearray(1 << 20)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def disk_usage(paths: list[Path]) -> tuple[int, int]:
    """(allocated bytes, apparent bytes) of ``paths``."""
    alloc = apparent = 0
    for p in paths:
        st = os.stat(p)
        alloc += st.st_blocks * 512
        apparent += st.st_size
    return alloc, apparent


class Checker:
    """Checks an epoch's batches: every sample exactly once, each with its own target."""

    def __init__(self, case: Any, sig: np.ndarray) -> None:
        self.case, self.sig = case, sig
        self.seen = np.zeros(case.n, np.int64)
        self.bad_targets = 0
        self.bad_ids = 0
        self.problem = ""
        self.seconds = 0.0

    def batch(self, item: Any) -> int:
        from .cases import sample_ids, target_signature

        t = time.perf_counter()
        x, y = item
        if not self.problem and (str(getattr(x, "dtype", "")) != "torch.float32" or tuple(x.shape[1:]) != self.case.x_shape):
            self.problem = f"inputs are {getattr(x, 'dtype', type(x))} {tuple(x.shape)}, expected float32 (B, {self.case.x_shape})"
        ids = sample_ids(x)
        ok = (ids >= 0) & (ids < self.case.n)
        self.bad_ids += int((~ok).sum())
        ids = ids[ok]
        np.add.at(self.seen, ids, 1)
        sig = target_signature(y, self.case.y_kind)[ok]
        self.bad_targets += int((sig != self.sig[ids]).sum())
        self.seconds += time.perf_counter() - t
        return len(x)

    def verdict(self) -> str:
        problems = [self.problem] if self.problem else []
        missing, repeated = int((self.seen == 0).sum()), int((self.seen > 1).sum())
        if missing or repeated:
            problems.append(f"{missing} samples missing, {repeated} delivered more than once")
        if self.bad_ids:
            problems.append(f"{self.bad_ids} inputs with an impossible sample number (wrong bytes or normalization)")
        if self.bad_targets:
            problems.append(f"{self.bad_targets} samples with another sample's target")
        return "; ".join(problems) or "ok"


def _cpu() -> float:
    """CPU seconds of this process (all its threads) and of its waited-for children (DataLoader workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_epoch(approach: Any, ds: Any, case: Any, sig: np.ndarray, workers: int, batch: int, epoch: int) -> dict[str, Any] | None:
    t0, c0 = time.perf_counter(), _cpu()
    loader = approach.loader(ds, case, workers, batch, epoch)
    if loader is None:
        return None
    check = Checker(case, sig)
    samples = 0
    for item in loader:
        if isinstance(item, tuple) and item and item[0] == "raw":
            samples += item[1]
            continue
        samples += check.batch(item)
    del loader  # DataLoader workers are reaped, so their CPU time is counted
    seconds = time.perf_counter() - t0 - check.seconds
    cpu = _cpu() - c0 - check.seconds
    verdict = check.verdict() if approach.kind != "raw" else "ok (bytes only)"
    return {"seconds": seconds, "samples": samples, "rate": samples / seconds if seconds > 0 else 0.0, "check": verdict,
            "cpu_per_sample": cpu / samples if samples else None}


def create(req: dict[str, Any], approach: Any, case: Any) -> dict[str, Any]:
    out = Path(req["dir"])
    if out.exists():  # a first run starts from nothing (and MDS refuses a non-empty folder)
        shutil.rmtree(out)
    approach.imports()
    t0 = time.perf_counter()
    approach.create(case, req["src"], out)
    seconds = time.perf_counter() - t0
    files = approach.files(out)
    alloc, apparent = disk_usage(files)
    return {"create_s": seconds, "disk_alloc": alloc, "disk_apparent": apparent, "files": len(files)}


def measure(req: dict[str, Any], approach: Any, case: Any) -> dict[str, Any]:
    out = Path(req["dir"])
    sig = np.load(req["src"]["sig"])
    files = approach.files(out)
    alloc, apparent = disk_usage(files)
    approach.imports()
    before = proc_status()
    evict(files)
    t0 = time.perf_counter()
    ds = approach.open(case, out, req["batch"])
    open_s = time.perf_counter() - t0
    after = proc_status()
    runs: dict[str, Any] = {}
    epoch = req["epoch"]
    cached = False  # evicted above
    for workers, cache in req["configs"]:
        name = f"w{workers}-{cache}"
        if cache == "cold":
            evict(files)
        elif not cached:
            prewarm(files)
        cached = True
        best: dict[str, Any] | None = None
        spent, epochs = 0.0, 0
        while True:
            try:
                r = run_epoch(approach, ds, case, sig, workers, req["batch"], epoch)
            except Exception as exc:
                r = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
            epoch += 1
            if r is None:
                break
            epochs += 1
            bad = "error" in r or not r["check"].startswith("ok")
            if best is None or bad or r["rate"] > best["rate"]:
                best = r  # a failed epoch is reported whatever the others did
            spent += r.get("seconds", WARM_SECONDS)
            if bad or cache != "warm" or spent >= WARM_SECONDS or epochs >= WARM_EPOCHS:
                break
        if best is not None:
            best["epochs"] = epochs
            runs[name] = best
    del ds
    end = proc_status()
    return {
        "open_s": open_s,
        "rss_base": before["VmRSS"],
        "anon_base": before["RssAnon"],
        "anon_open": after["RssAnon"],
        "rss_open": after["VmRSS"],
        "peak_rss": end["VmHWM"] or end["VmRSS"],
        "peak_rss_workers": max_rss_children(),
        "disk_alloc": alloc,
        "disk_apparent": apparent,
        "files": len(files),
        "runs": runs,
    }


def main() -> int:
    req = json.loads(sys.stdin.read())
    import torch

    torch.set_num_threads(1)
    from .approaches import registry
    from .cases import Case

    approaches = registry()
    case = Case.from_json(req["case"])
    if req["action"] == "create":  # several approaches, one after the other, each timed on its own
        result = {}
        for key, folder in req["create"].items():
            try:
                result[key] = create({**req, "dir": folder}, approaches[key], case)
            except Exception as exc:
                result[key] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-3000:]}
    else:
        try:
            result = measure(req, approaches[req["approach"]], case)
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-3000:]}
    sys.stdout.write("\n" + RESULT_TAG + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
